"""`stockade-enforcer --uninstall`: remove what outlives the enforcer on purpose.

A stopped or crashed enforcer leaves its kernel state in force (docs/failsafe.md): the
nftables table (inet and bridge, with every set in it) and the pins in bpffs (policy maps
and program links: kill-on-exec keeps working). This removes both for one instance (the
table named by `nft_table`, the pins under `Settings.pin_root()`), and refuses while an
enforcer of that instance runs (it holds the table's lock).
"""

from __future__ import annotations

import logging
import os

from .config import Settings
from .enforce.firewall import LOCK_DIR, Firewall, NftError
from .sensors.pins import PinDir

log = logging.getLogger(__name__)


async def uninstall(settings: Settings) -> list[str]:
    """Remove the instance's table and pins; returns one line per thing removed."""
    done: list[str] = []
    fw = Firewall(settings.nft_table)
    try:
        await fw.open()  # takes the table's lock: fails while an enforcer holds it
    except NftError as e:
        if "owned by another enforcer" in str(e):
            raise RuntimeError(f"{e}: stop it first") from None
        log.warning("uninstall: nftables: %s", e)
    else:
        await fw.remove()
        await fw.stop()
        done.append(f"nftables table {settings.nft_table} (inet, bridge)")
    lock = os.path.join(LOCK_DIR, f"nft-{settings.nft_table}.lock")
    if os.path.exists(lock):
        os.unlink(lock)
    root = settings.pin_root()
    if root and os.path.exists(root):
        removed = PinDir(root).remove()
        done.append(f"{len(removed)} pins under {root} (programs detached)")
    return done
