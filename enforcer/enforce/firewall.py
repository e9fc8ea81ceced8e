"""The firewall: Stockade's own nftables table, kept equal to a desired ruleset.

Only the table named by the setting `nft_table` (in the inet and bridge families) is ever
created, changed, listed or deleted; Docker's iptables-nft tables beside it are never
touched, and nothing is flushed globally.

libnftables calls block (netlink round trips): they run on one worker thread, in order,
and an asyncio lock makes every change a diff against what was last applied, so the
kernel and `applied` never disagree. A change is one transaction: either all of it is in
force or none. If a diff is refused (someone edited or deleted the table), the whole
table is rewritten from the desired state, again in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from . import ruleset as R
from .nft import Nft, NftError

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCK_DIR = "/run/stockade"  # nft-<table>.lock: which enforcer owns a table


@dataclass(slots=True)
class ReconcileReport:
    """What a start (or a repair) found in the kernel compared with the desired state."""

    table_existed: bool = False
    missing: int = 0  # elements that were not in the kernel and were put back
    stale: int = 0  # elements in the kernel that should not be there, removed
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"table_existed": self.table_existed, "missing": self.missing, "stale": self.stale,
                "seconds": round(self.seconds, 4)}


@dataclass(slots=True)
class FirewallStats:
    transactions: int = 0
    repairs: int = 0
    last_apply_ms: float = 0.0
    errors: int = 0
    last_error: str = ""
    last_reconcile: ReconcileReport = field(default_factory=ReconcileReport)


class Firewall:
    def __init__(self, table: str, families: tuple[str, ...] = R.FAMILIES,
                 nft_factory: Callable[[], Nft] = Nft) -> None:
        if not table or not table.replace("_", "").replace("-", "").isalnum() or len(table) > 64:
            raise ValueError(f"nftables table name {table!r}: letters, digits, - and _ only")
        self.table = table
        self.families = families
        self._nft_factory = nft_factory
        self._nft: Nft | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock_fd: int | None = None
        self._lock = asyncio.Lock()
        self.applied: R.Ruleset = R.empty_ruleset()
        self.available = False
        self.error = ""
        self.stats = FirewallStats()

    # -- life cycle -------------------------------------------------------------------------
    async def open(self) -> ReconcileReport:
        """Open libnftables and make sure the layout exists, adopting the elements the kernel
        already holds (a restart lifts nothing); `reconcile` later makes them right."""
        self._claim()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nftables")
        try:
            self._nft = await self._call(self._nft_factory)
            async with self._lock:
                try:
                    found = await self.kernel_state()
                except NftError as e:  # an older layout: it is rewritten from the database
                    log.warning("firewall: %s", e)
                    for fam in self.families:
                        with contextlib.suppress(NftError):
                            await self._call(self._run, R.delete_table_commands(self.table, [fam]))
                    found = {}
                present = [state[0] for state in found.values() if state is not None]
                kept = present[0] if present else R.empty_ruleset()
                # Layout and the adopted elements in every family, in one transaction.
                await self._call(self._run, R.layout_commands(self.table, self.families)
                                 + R.replace_commands(self.table, kept, self.families))
                self.applied = dict(kept)
        except NftError as e:
            self.error = str(e)
            raise
        self.available = True
        self.error = ""
        report = ReconcileReport(table_existed=bool(present))
        self.stats.last_reconcile = report
        return report

    def _claim(self) -> None:
        """One enforcer per table: two would each rewrite it to their own database's state."""
        os.makedirs(LOCK_DIR, mode=0o755, exist_ok=True)
        path = os.path.join(LOCK_DIR, f"nft-{self.table}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            self.error = f"table {self.table} is owned by another enforcer (pid {holder})"
            raise NftError(self.error) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    async def stop(self) -> None:
        """Close the library; the table stays: blocks remain enforced while the enforcer is down."""
        if self._nft is not None:
            nft = self._nft
            self._nft = None
            await self._call(nft.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        self.available = False

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None, "firewall not started"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        assert self._nft is not None, "firewall not started"
        return self._nft.run(commands)

    # -- reading ----------------------------------------------------------------------------
    def _read_family(self, family: str) -> tuple[R.Ruleset, dict[str, int]] | None:
        try:
            listing = self._run([{"list": {"table": {"family": family, "name": self.table}}}])
        except NftError as e:
            if e.errno_name == "ENOENT" or "no such file" in str(e).lower():
                return None
            raise
        try:
            return R.parse_listing(listing)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise NftError(f"table {self.table} ({family}) has elements of another layout: {e}") from None

    async def kernel_state(self) -> dict[str, tuple[R.Ruleset, dict[str, int]] | None]:
        """Per family: the sets' elements and the rule counters, or None if the table is gone."""
        return {fam: await self._call(self._read_family, fam) for fam in self.families}

    async def counters(self) -> dict[str, int]:
        """Packets dropped per rule (summed over families), e.g. {"from-container4": 12}."""
        total: dict[str, int] = {}
        for state in (await self.kernel_state()).values():
            if state:
                for name, n in state[1].items():
                    total[name] = total.get(name, 0) + n
        return total

    def _chain_counters(self, chains: tuple[str, ...]) -> dict[str, int]:
        total: dict[str, int] = {}
        for chain in chains:
            listing = self._run([{"list": {"chain": {"family": R.POLICY_FAMILY, "table": self.table, "name": chain}}}])
            for name, n in R.parse_listing(listing)[1].items():
                total[name] = total.get(name, 0) + n
        return total

    async def unlogged_refusals(self) -> int:
        """Inbound packets the default-deny refused over the log limit (not logged one by
        one), since the rules were last written; only the two small chains are listed."""
        chains = tuple(f"{R.POLICY_CHAIN}-in{v}" for v in (4, 6))
        counters = await self._call(self._chain_counters, chains)
        return sum(n for name, n in counters.items() if name.endswith(R.UNLOGGED))

    # -- changing ---------------------------------------------------------------------------
    async def reconcile(self, desired: R.Ruleset) -> ReconcileReport:
        """Compare the kernel with `desired`, then rewrite layout and sets in one transaction."""
        async with self._lock:
            return await self._reconcile(desired)

    async def _reconcile(self, desired: R.Ruleset) -> ReconcileReport:
        started = time.monotonic()
        report = ReconcileReport()
        try:
            found = await self.kernel_state()
        except NftError as e:
            log.warning("firewall: cannot list table %s (%s); rewriting it", self.table, e)
            found = {}
        kernel = [(fam, state[0]) for fam, state in found.items() if state is not None]
        report.table_existed = bool(kernel)
        for fam, fam_sets in kernel or [(R.POLICY_FAMILY, R.empty_ruleset())]:
            d = R.diff(fam_sets, {k: v for k, v in desired.items() if k in R.sets_of(fam)})
            added, deleted = d.count()
            report.missing = max(report.missing, added)
            report.stale = max(report.stale, deleted)
        commands = R.layout_commands(self.table, self.families) + R.replace_commands(self.table, desired, self.families)
        try:
            await self._call(self._run, commands)
        except NftError as e:
            # A table of an older layout (a set type changed): replace it whole, atomically.
            log.warning("firewall: rewriting table %s: %s", self.table, e)
            existing = [fam for fam, state in found.items() if state is not None]
            await self._call(self._run, R.delete_table_commands(self.table, existing) + commands)
            self.stats.repairs += 1
        self.applied = {k: frozenset(v) for k, v in desired.items()}
        self.stats.transactions += 1
        report.seconds = time.monotonic() - started
        self.stats.last_reconcile = report
        return report

    async def apply(self, desired: R.Ruleset) -> tuple[int, int]:
        """Make the kernel hold `desired`, changing only what differs; (added, deleted)."""
        async with self._lock:
            d = R.diff(self.applied, desired)
            if d.empty:
                return 0, 0
            started = time.perf_counter()
            try:
                await self._call(self._run, R.diff_commands(self.table, d, self.families))
            except NftError as e:
                self.stats.errors += 1
                self.stats.last_error = str(e)
                log.warning("firewall: change refused (%s); rewriting table %s from the desired state", e, self.table)
                repair = True
            else:
                repair = False
            if repair:
                await self._reconcile(desired)
                self.stats.repairs += 1
            else:
                self.applied = {k: frozenset(v) for k, v in desired.items()}
                self.stats.transactions += 1
            self.stats.last_apply_ms = (time.perf_counter() - started) * 1000
            return d.count()

    async def verify(self) -> bool:
        """True if the kernel still holds what was applied (someone may have flushed our table)."""
        async with self._lock:
            found = await self.kernel_state()
            for fam, state in found.items():
                # Each family holds only its own sets (the policy sets are inet only).
                if state is None or any(state[0].get(k, frozenset()) != v for k, v in self.applied.items()
                                        if k in R.sets_of(fam)):
                    return False
            return True

    async def remove(self) -> None:
        """Delete Stockade's table (both families): for tests and uninstalling only."""
        async with self._lock:
            found = await self.kernel_state()
            existing = [fam for fam, state in found.items() if state is not None]
            if existing:
                await self._call(self._run, R.delete_table_commands(self.table, existing))
            self.applied = R.empty_ruleset()

    def element_count(self) -> int:
        return sum(len(v) for v in self.applied.values())
