"""Freezing every process of a container with the cgroup freezer, on v1 or v2.

- cgroup v1 (and the hybrid layout, where Docker's cgroups are v1): the container's
  `freezer.state` (`/sys/fs/cgroup/freezer/docker/<id>/freezer.state`), the same file
  `docker pause` writes. Reads back FREEZING, FROZEN or THAWED.
- cgroup v2: `cgroup.freeze` in the container's own cgroup (`1` freezes); the state is the
  `frozen` line of `cgroup.events`.
On a hybrid host both exist; v1 is used (the controller runc manages), v2 on request.

Blocking file I/O: call from a worker thread. Frozen tasks stay in the kernel with their
memory, sockets and files intact, which is what forensics needs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..inventory.cgroups import freezer_v1_state_file
from ..models import Container

FROZEN = "FROZEN"
THAWED = "THAWED"
FREEZING = "FREEZING"


class FreezerError(Exception):
    """The freezer cannot be used for this container; the message is one line."""


@dataclass(frozen=True, slots=True)
class Freezer:
    backend: str  # v1 | v2
    path: str  # v1: the freezer.state file; v2: the cgroup directory

    def state(self) -> str:
        try:
            if self.backend == "v1":
                with open(self.path) as f:
                    return f.read().strip()
            with open(os.path.join(self.path, "cgroup.events")) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "frozen":
                        return FROZEN if value.strip() == "1" else self._v2_pending()
        except FileNotFoundError:
            raise FreezerError("the container's cgroup is gone (did it stop?)") from None
        except OSError as e:
            raise FreezerError(f"cannot read the freezer state: {e.strerror}") from None
        return THAWED

    def _v2_pending(self) -> str:
        # cgroup.freeze says what was asked; cgroup.events what is done.
        with open(os.path.join(self.path, "cgroup.freeze")) as f:
            return FREEZING if f.read().strip() == "1" else THAWED

    def _write(self, frozen: bool) -> None:
        if self.backend == "v1":
            target, value = self.path, FROZEN if frozen else THAWED
        else:
            target, value = os.path.join(self.path, "cgroup.freeze"), "1" if frozen else "0"
        try:
            with open(target, "w") as f:
                f.write(value)
        except FileNotFoundError:
            raise FreezerError("the container's cgroup is gone (did it stop?)") from None
        except OSError as e:
            raise FreezerError(f"cannot write {target}: {e.strerror}") from None

    def freeze(self, timeout: float = 5.0) -> str:
        """Freeze and wait until every task is frozen; returns FROZEN (or raises)."""
        self._write(True)
        return self._wait(FROZEN, timeout)

    def thaw(self, timeout: float = 5.0) -> str:
        self._write(False)
        return self._wait(THAWED, timeout)

    def _wait(self, want: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            state = self.state()
            if state == want:
                return state
            if time.monotonic() > deadline:
                raise FreezerError(f"freezer still {state} after {timeout:g}s (a task in uninterruptible sleep?)")
            # v1 re-evaluates FREEZING on each read; a short back-off is enough.
            if self.backend == "v1" and want == FROZEN:
                self._write(True)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def freezer_for(c: Container, prefer: str = "v1") -> Freezer:
    """The freezer of a running container: v1 if it has one (unless `prefer="v2"`), else v2."""
    if c.state not in ("running", "paused") or not c.pid:
        raise FreezerError(f"container {c.name} is {c.state}, not running")
    v1 = freezer_v1_state_file(c.id, c.pid)
    v2 = c.cgroup_path if c.cgroup_path and os.path.exists(os.path.join(c.cgroup_path, "cgroup.freeze")) else ""
    if prefer == "v2" and v2:
        return Freezer("v2", v2)
    if v1:
        return Freezer("v1", v1)
    if v2:
        return Freezer("v2", v2)
    raise FreezerError(f"no cgroup freezer found for container {c.name} (neither v1 freezer.state nor v2 cgroup.freeze)")


def find_freezer(c: Container, backend: str) -> Freezer | None:
    """The freezer a freeze was made with (stored backend), if it still exists."""
    try:
        f = freezer_for(c, prefer=backend or "v1")
    except FreezerError:
        return None
    return f if not backend or f.backend == backend else None


def is_frozen(c: Container) -> bool:
    """Frozen by either freezer (v1 or v2): what listings show as `frozen`."""
    if c.state not in ("running", "paused") or not c.pid:
        return False
    for prefer in ("v1", "v2"):
        try:
            if freezer_for(c, prefer=prefer).state() == FROZEN:
                return True
        except FreezerError:
            continue
    return False
