"""The store: SQLite through aiosqlite. Every SQL statement of Stockade lives in this package:
`database` owns the connection and the write-behind queue, one repository module per domain."""

from __future__ import annotations

from .alerts import AlertsRepo
from .audit import AuditRepo
from .database import Database, StoreError
from .enforcement import EnforcementRepo
from .feeds import FeedRepo
from .inventory import InventoryRepo
from .outputs import OutputsRepo
from .profiles import ProfilesRepo


class Store:
    """The repositories over one database connection."""

    def __init__(self, path: str) -> None:
        self.db = Database(path)
        self.inventory = InventoryRepo(self.db)
        self.audit = AuditRepo(self.db)
        self.profiles = ProfilesRepo(self.db)
        self.alerts = AlertsRepo(self.db)
        self.feeds = FeedRepo(self.db)
        self.enforcement = EnforcementRepo(self.db)
        self.outputs = OutputsRepo(self.db)

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()


__all__ = ["Store", "StoreError", "Database"]
