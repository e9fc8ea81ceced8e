"""The one boundary between profiles and the kernel: policies and allow-lists in BPF maps.

The profiles layer decides, the sensors' kernel maps (`KernelMaps`) are written.
`KernelHooks` is everything the profiles need from the kernel side; `KernelMapHooks`
provides it over the sensors' maps, `NullKernelHooks` stands in when no sensors are
loaded (--no-sensors, unit tests), and `RecordingKernelHooks` lets tests see what was
pushed. The composition root picks one with `hooks_for_maps(maps)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class KernelHooks(Protocol):
    # True when the kernel keys an exec of /proc/self/exe by its applet too, hashing the
    # string "/proc/self/exe:" + basename(argv[0]) (FNV-1a continued over ":NAME", which is
    # what the hub's path_hash gives for the whole string): then "/proc/self/exe:wget"
    # entries can go into the allow-list without allowing every other applet.
    self_exec_by_applet: bool

    def set_policy(self, cgroup_id: int, profile_id: int, mode: str) -> None:
        """Which profile's allow-lists apply to this cgroup, in which mode (learn|alert|protect)."""

    def set_exec_allowlist(self, profile_id: int, paths: Iterable[str]) -> None:
        """Replace the paths the kernel lets run without reporting (and, in protect, without killing)."""

    def set_multicall_paths(self, profile_id: int, paths: Iterable[str]) -> None:
        """Replace the exec paths the kernel keys by applet ("PATH:" + basename(argv[0]))."""

    def set_syscall_allowlist(self, profile_id: int, numbers: Iterable[int]) -> None:
        """Replace the syscall numbers the kernel does not report as new."""

    def forget_novelty(self, cgroup_id: int) -> None:
        """Drop what the kernel remembers as already reported for this cgroup (relearn)."""

    def used_syscalls(self, cgroup_id: int) -> set[int]:
        """Syscall numbers this cgroup has used so far (merged into a profile as it activates)."""


class NullKernelHooks:
    """No kernel side: user space sees (and decides on) every event it is given."""

    self_exec_by_applet = False

    def set_policy(self, cgroup_id: int, profile_id: int, mode: str) -> None:
        pass

    def set_exec_allowlist(self, profile_id: int, paths: Iterable[str]) -> None:
        pass

    def set_multicall_paths(self, profile_id: int, paths: Iterable[str]) -> None:
        pass

    def set_syscall_allowlist(self, profile_id: int, numbers: Iterable[int]) -> None:
        pass

    def forget_novelty(self, cgroup_id: int) -> None:
        pass

    def used_syscalls(self, cgroup_id: int) -> set[int]:
        return set()


@dataclass
class RecordingKernelHooks:
    """Keeps the last value pushed for each key: what a test asserts against."""

    policies: dict[int, tuple[int, str]] = field(default_factory=dict)
    exec_allow: dict[int, set[str]] = field(default_factory=dict)
    multicall: dict[int, set[str]] = field(default_factory=dict)
    syscall_allow: dict[int, set[int]] = field(default_factory=dict)
    forgotten: list[int] = field(default_factory=list)
    used: dict[int, set[int]] = field(default_factory=dict)  # what used_syscalls answers
    self_exec_by_applet: bool = False

    def set_policy(self, cgroup_id: int, profile_id: int, mode: str) -> None:
        self.policies[cgroup_id] = (profile_id, mode)

    def set_exec_allowlist(self, profile_id: int, paths: Iterable[str]) -> None:
        self.exec_allow[profile_id] = set(paths)

    def set_multicall_paths(self, profile_id: int, paths: Iterable[str]) -> None:
        self.multicall[profile_id] = set(paths)

    def set_syscall_allowlist(self, profile_id: int, numbers: Iterable[int]) -> None:
        self.syscall_allow[profile_id] = set(numbers)

    def forget_novelty(self, cgroup_id: int) -> None:
        self.forgotten.append(cgroup_id)

    def used_syscalls(self, cgroup_id: int) -> set[int]:
        return set(self.used.get(cgroup_id, ()))


class KernelMaps(Protocol):
    """What the sensors keep in the kernel's maps (enforcer/sensors/kernel_maps.py)."""

    self_exec_by_applet: bool

    def set_policy(self, cgroup_id: int, profile_id: int, mode: str) -> None: ...

    def allow_exec(self, profile_id: int, paths: Iterable[str]) -> None: ...

    def mark_multicall(self, profile_id: int, paths: Iterable[str]) -> None: ...

    def allow_syscalls(self, profile_id: int, nrs: Iterable[int]) -> None: ...

    def clear_profile(self, profile_id: int) -> None: ...

    def syscall_bitmap(self, cgroup_id: int) -> set[int]: ...

    def reset_novelty(self, cgroup_id: int) -> None: ...


class KernelMapHooks:
    """The sensors' kernel maps (enforcer/sensors/kernel_maps.py) behind KernelHooks.

    The maps' allow-lists only grow (`allow_exec`, `allow_syscalls`); to take a path out
    (a binary written to, a relearn) the profile's lists are cleared and written again.
    A failing map update is logged once per kind and never raised into the event path:
    the user-space check still decides on whatever the kernel lets through.
    """

    def __init__(self, maps: KernelMaps) -> None:
        self.maps = maps
        self._exec: dict[int, set[str]] = {}
        self._multicall: dict[int, set[str]] = {}
        self._syscalls: dict[int, set[int]] = {}
        self._warned: set[str] = set()

    def _guard(self, kind: str, call: Callable[[], T]) -> T | None:
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - the kernel side is best effort
            if kind not in self._warned:
                self._warned.add(kind)
                log.warning("profiles: kernel map update %s failed: %s", kind, e)
            return None

    @property
    def self_exec_by_applet(self) -> bool:
        return bool(self.maps.self_exec_by_applet)

    def set_policy(self, cgroup_id: int, profile_id: int, mode: str) -> None:
        self._guard("set_policy", lambda: self.maps.set_policy(cgroup_id, profile_id, mode))

    def set_exec_allowlist(self, profile_id: int, paths: Iterable[str]) -> None:
        new = set(paths)
        old = self._exec.get(profile_id, set())
        if old - new:
            self._rewrite(profile_id, new, self._syscalls.get(profile_id, set()))
        elif new - old:
            self._allow_exec(profile_id, sorted(new - old))
        if new - old:
            # New, or back from suspect (checked): the files at them now are the allowed ones.
            entered = sorted(new - old)
            self._guard("exec_identity", lambda: self.maps.exec_paths_entered(profile_id, entered))
        self._exec[profile_id] = new

    def set_multicall_paths(self, profile_id: int, paths: Iterable[str]) -> None:
        new = set(paths)
        old = self._multicall.get(profile_id, set())
        self._multicall[profile_id] = new
        if old - new:
            self._rewrite(profile_id, self._exec.get(profile_id, set()), self._syscalls.get(profile_id, set()))
        elif new - old:
            self._guard("mark_multicall", lambda: self.maps.mark_multicall(profile_id, sorted(new - old)))

    def set_syscall_allowlist(self, profile_id: int, numbers: Iterable[int]) -> None:
        new = set(numbers)
        old = self._syscalls.get(profile_id, set())
        if old - new:
            self._rewrite(profile_id, self._exec.get(profile_id, set()), new)
        elif new - old:
            self._allow_syscalls(profile_id, sorted(new))
        self._syscalls[profile_id] = new

    def _allow_exec(self, profile_id: int, paths: list[str]) -> None:
        self._guard("allow_exec", lambda: self.maps.allow_exec(profile_id, paths))

    def _allow_syscalls(self, profile_id: int, numbers: list[int]) -> None:
        self._guard("allow_syscalls", lambda: self.maps.allow_syscalls(profile_id, numbers))

    def _rewrite(self, profile_id: int, paths: set[str], numbers: set[int]) -> None:
        self._guard("clear_profile", lambda: self.maps.clear_profile(profile_id))
        # Multi-call paths first: until they are marked, "/bin/sh" in the allow-list would
        # let every applet at that path through; the other order only kills for a moment.
        multicall = self._multicall.get(profile_id, set())
        if multicall:
            self._guard("mark_multicall", lambda: self.maps.mark_multicall(profile_id, sorted(multicall)))
        if paths:
            self._allow_exec(profile_id, sorted(paths))
        if numbers:
            self._allow_syscalls(profile_id, sorted(numbers))

    def forget_novelty(self, cgroup_id: int) -> None:
        self._guard("reset_novelty", lambda: self.maps.reset_novelty(cgroup_id))

    def used_syscalls(self, cgroup_id: int) -> set[int]:
        return set(self._guard("syscall_bitmap", lambda: self.maps.syscall_bitmap(cgroup_id)) or ())


def hooks_for_maps(maps: KernelMaps | None) -> KernelHooks:
    """The hooks over the sensors' kernel maps; without sensors, the null hooks."""
    return KernelMapHooks(maps) if maps is not None else NullKernelHooks()

