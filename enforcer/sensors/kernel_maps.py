"""KernelMaps: Python's mirror of the sensors' kernel maps, and the policy API on it.

What it keeps in step with the inventory: the watched-cgroup map (every running
container, also those present at start) and the local-address map that attributes
inbound connections to the receiving container. Everything is kept in Python too, so
it can be written before the program is loaded and is re-applied whenever it (re)loads.

Kernel hooks for profiles and enforcement (call on the event loop thread; each call is
kept in Python too and re-applied if the program is (re)loaded later):

    maps.set_policy(cgroup_id, profile_id, mode)   # mode: "learn" | "alert" | "protect"
        Watch this cgroup with this profile's allow-lists. learn: novelties are sent
        (first exec of a path, first use of a syscall, new peers, files...). alert /
        protect: an exec or a syscall is sent only when the profile's allow-list misses it
        (files, network and DNS are still sent as novelties; research events - sensitive
        files, dangerous syscalls - always). protect: an exec whose path is not allowed is
        killed in the kernel before its first instruction (ExecEvent.killed = True), and so
        is a dangerous syscall (or qualified one, e.g. clone:newuser) the profile's
        syscall allow-list lacks, at sys_enter (SyscallEvent.killed = True). A child cgroup
        of a watched one is judged by this policy too (config[CFG_WATCH_LEVELS]).
    maps.allow_exec(profile_id, paths)             # exec identities: the path, or PATH:APPLET
    maps.mark_multicall(profile_id, paths)         # multi-call binaries: keyed "PATH:APPLET"
    maps.allow_syscalls(profile_id, nrs)           # syscall numbers (SyscallEvent.nr, qualified too)
    maps.clear_profile(profile_id)                 # drop a profile's allow-lists and multi-call paths
    maps.syscall_bitmap(cgroup_id) -> set[int]     # syscalls this container has used
    maps.reset_novelty(cgroup_id)                  # forget what was already sent (relearn)
    maps.policy(cgroup_id) -> (profile_id, mode) | None

Repeats of one (container, subject) are dropped in the kernel for `dedup_ttl` seconds
and sent again after it, so a repeated anomaly is still seen at a bounded rate. The
protect-mode kill never depends on that: it is decided for every exec.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
from typing import Any, Iterable

from ..inventory.cgroups import cgroup2_mount, cgroup_for_pid
from ..models import Container
from . import layout as L
from .exec_identity import ExecIdentities
from .paths import path_hash
from .rewrite_marks import RewriteMarks
from .stats import has_table

log = logging.getLogger(__name__)

LIVE_STATES = ("running", "paused", "restarting")


class KernelMaps:
    # process.c keys an exec of /proc/self/exe (and of every path marked multi-call) by
    # "PATH:" + basename(argv[0]), so profiles may allow one applet without allowing them all.
    self_exec_by_applet = True

    def __init__(self, own_cgroup_id: int | None = None) -> None:
        if own_cgroup_id is None:
            # Run as a container itself, the enforcer must not watch its own cgroup: its bpf()
            # calls would be "dangerous syscalls" and its reads of /proc alerts.
            own = cgroup_for_pid(os.getpid())
            own_cgroup_id = own.cgroup_id if own else 0
        self.own_cgroup_id = own_cgroup_id
        self.bpf: Any = None  # the loaded program's maps; None: kept in Python only
        self._watched: dict[int, str] = {}  # cgroup id -> container id
        self._self_logged: set[str] = set()  # own container ids already logged
        self._root_pids: dict[int, int] = {}  # cgroup id -> container init pid (for /proc/<pid>/root)
        self._policies: dict[int, tuple[int, int]] = {}  # cgroup id -> (profile id, mode)
        self._levels: dict[int, int] = {}  # cgroup id -> its level in the v2 hierarchy (root 0)
        self._levels_warned = False
        self._epoch = 0  # bumped whenever a cgroup is newly watched (bpf/common.h ALIAS_NONE)
        self._gens: dict[int, int] = {}
        self._ips: dict[bytes, int] = {}  # 16-byte address -> cgroup id
        self._exec_allow: dict[int, set[int]] = {}  # profile id -> path hashes
        self._multicall: dict[int, set[int]] = {}  # profile id -> path hashes keyed by applet
        self._syscall_allow: dict[int, set[int]] = {}
        self.rewrite_marks = RewriteMarks()
        self.exec_identities = ExecIdentities()
        self._exec_paths: dict[int, set[str]] = {}  # profile id -> its allow-list's keys, as strings

    # -- the program's maps come and go -------------------------------------------------
    def attach(self, bpf: Any, containers: Iterable[Container]) -> None:
        """The program is loaded: watch these containers and write everything kept so far."""
        self.bpf = bpf
        guard = has_table(bpf, "written_inodes")
        self.rewrite_marks.bpf = bpf if guard else None
        self.exec_identities.bpf = bpf if guard else None
        for c in list(containers):
            self.sync_container(c)
        self._reapply()

    def detach(self) -> None:
        self.bpf = None
        self.rewrite_marks.bpf = None
        self.exec_identities.bpf = None

    @property
    def watched_count(self) -> int:
        return len(self._watched)

    def container_id(self, cgroup_id: int) -> str | None:
        """The container id recorded for a watched cgroup ("" if watched by policy only)."""
        return self._watched.get(cgroup_id)

    def root_pid(self, cgroup_id: int) -> int:
        """Called from the poll thread: a plain dict read."""
        return self._root_pids.get(cgroup_id, 0)

    # -- inventory -> kernel maps -------------------------------------------------------
    def on_inventory_change(self, change: Any) -> None:
        if change.previous is not None and change.previous.cgroup_id and \
                change.previous.cgroup_id != change.container.cgroup_id:
            self._unwatch(change.previous.cgroup_id)
        if change.previous is not None:
            self._drop_ips(change.previous)
        if change.change == "removed" or change.container.state not in LIVE_STATES:
            if change.container.cgroup_id:
                self._unwatch(change.container.cgroup_id)
            self._drop_ips(change.container)
            return
        self.sync_container(change.container)

    def sync_container(self, c: Container) -> None:
        if not c.cgroup_id or c.state not in LIVE_STATES:
            return
        if c.cgroup_id == self.own_cgroup_id:
            if c.id not in self._self_logged:
                self._self_logged.add(c.id)
                log.info("sensors: %s is the enforcer's own container: not watched", c.name[:64].encode("unicode_escape").decode())
            return
        self._watched[c.cgroup_id] = c.id
        level = cgroup_level(c.cgroup_path)
        new_level = bool(level) and self._levels.get(c.cgroup_id) != level
        if new_level:
            self._levels[c.cgroup_id] = level
        if c.pid:
            self._root_pids[c.cgroup_id] = c.pid
            self.rewrite_marks.watched(c.cgroup_id, c.pid)
        self._write_policy(c.cgroup_id, keep_kernel=True)
        if new_level:
            self._write_levels()
        for ip in c.addresses():
            key = _ip_key(ip)
            if key is not None:
                self._ips[key] = c.cgroup_id
                self._map_set("local_ips", _ip_map_key(key), c.cgroup_id)

    def _drop_ips(self, c: Container) -> None:
        for ip in c.addresses():
            key = _ip_key(ip)
            if key is not None and self._ips.get(key) == c.cgroup_id:
                del self._ips[key]
                self._map_del("local_ips", _ip_map_key(key))

    def _unwatch(self, cgroup_id: int) -> None:
        self._watched.pop(cgroup_id, None)
        self._root_pids.pop(cgroup_id, None)
        self.rewrite_marks.unwatched(cgroup_id)
        self.exec_identities.forget(cgroup_id)
        self._policies.pop(cgroup_id, None)
        if self._levels.pop(cgroup_id, None) is not None:
            self._write_levels()
        self._gens[cgroup_id] = self._gens.get(cgroup_id, 0) + 1  # a reused inode starts fresh
        self._map_del("watched", cgroup_id)
        self._map_del("syscalls_seen", cgroup_id)

    # -- policy API (see the module docstring) ------------------------------------------
    def set_policy(self, cgroup_id: int, profile_id: int, mode: str | int) -> None:
        mode_id = L.MODES[mode] if isinstance(mode, str) else int(mode)
        if mode_id not in L.MODES.values():
            raise ValueError(f"unknown mode {mode!r}")
        if self.own_cgroup_id and cgroup_id == self.own_cgroup_id:
            # The profile book gives the enforcer's own container a profile like any other;
            # a policy would watch it after all (its bpf() calls, its reads of /proc).
            return
        old = self._policies.get(cgroup_id)
        self._policies[cgroup_id] = (int(profile_id), mode_id)
        self.exec_identities.pin(cgroup_id, self._root_pids.get(cgroup_id, 0),
                                 self._exec_paths.get(int(profile_id), set()))
        self._watched.setdefault(cgroup_id, "")
        if old is not None and old[1] != mode_id:
            # The kernel drops repeats of what it has already seen in this generation: a
            # connection seen in alert mode must reach user space again in protect mode.
            self.reset_novelty(cgroup_id)
        else:
            self._write_policy(cgroup_id)

    def policy(self, cgroup_id: int) -> tuple[int, str] | None:
        p = self._policies.get(cgroup_id)
        if p is None:
            return (0, "learn") if cgroup_id in self._watched else None
        return p[0], next(k for k, v in L.MODES.items() if v == p[1])

    def allow_exec(self, profile_id: int, paths: Iterable[str]) -> None:
        hashes = self._exec_allow.setdefault(int(profile_id), set())
        strings = self._exec_paths.setdefault(int(profile_id), set())
        paths = list(paths)
        for p in paths:
            h = path_hash(p)
            hashes.add(h)
            strings.add(p)
            self._map_set("exec_allow", L.ExecAllowKey(int(profile_id), 0, h), 1)
        self._pin_identities(int(profile_id), paths, refresh=False)

    def exec_paths_entered(self, profile_id: int, paths: Iterable[str]) -> None:
        """These paths just entered the profile's allow-list, checked (new, or back from
        suspect): the files now at them are the allowed ones (sensors/exec_identity.py)."""
        self._pin_identities(int(profile_id), list(paths), refresh=True)

    def _pin_identities(self, profile_id: int, paths: list[str], refresh: bool) -> None:
        for cg, (pid_, _mode) in list(self._policies.items()):
            if pid_ == profile_id:
                self.exec_identities.pin(cg, self._root_pids.get(cg, 0), paths, refresh=refresh)

    def mark_multicall(self, profile_id: int, paths: Iterable[str]) -> None:
        """These exec paths run multi-call binaries: the kernel keys them "PATH:APPLET"."""
        hashes = self._multicall.setdefault(int(profile_id), set())
        for p in paths:
            h = path_hash(p)
            hashes.add(h)
            self._map_set("exec_multicall", L.ExecAllowKey(int(profile_id), 0, h), 1)

    def allow_syscalls(self, profile_id: int, nrs: Iterable[int]) -> None:
        allowed = self._syscall_allow.setdefault(int(profile_id), set())
        allowed.update(int(n) for n in nrs if 0 <= int(n) < L.NR_SYSCALL_BITS)
        self._map_set("syscall_allow", int(profile_id), _bits(allowed))

    def clear_profile(self, profile_id: int) -> None:
        self._exec_paths.pop(int(profile_id), None)
        for h in self._exec_allow.pop(int(profile_id), set()):
            self._map_del("exec_allow", L.ExecAllowKey(int(profile_id), 0, h))
        for h in self._multicall.pop(int(profile_id), set()):
            self._map_del("exec_multicall", L.ExecAllowKey(int(profile_id), 0, h))
        if self._syscall_allow.pop(int(profile_id), None) is not None:
            self._map_del("syscall_allow", int(profile_id))

    def syscall_bitmap(self, cgroup_id: int) -> set[int]:
        if self.bpf is None:
            return set()
        table = self.bpf[b"syscalls_seen"]
        try:
            bits = table[table.Key(cgroup_id)]
        except KeyError:
            return set()
        return {w * 64 + b for w in range(L.NR_SYSCALL_BITS // 64) for b in range(64) if bits.w[w] >> b & 1}

    def reset_novelty(self, cgroup_id: int) -> None:
        self._gens[cgroup_id] = self._gens.get(cgroup_id, 0) + 1
        if cgroup_id in self._watched:
            self._write_policy(cgroup_id)
            self._map_set("syscalls_seen", cgroup_id, L.SyscallBits())

    def _write_policy(self, cgroup_id: int, keep_kernel: bool = False) -> None:
        if keep_kernel and cgroup_id not in self._policies and self._in_kernel("watched", cgroup_id):
            # Adopted from the pinned map: the last enforcer's policy (maybe protect) holds
            # until set_policy says otherwise; a default "learn" must not open it meanwhile.
            return
        profile_id, mode = self._policies.get(cgroup_id, (0, L.MODE_LEARN))
        gen = self._gens.setdefault(cgroup_id, 1)
        self._map_set("watched", cgroup_id, L.Policy(profile_id, mode, gen, 0))
        self._map_del("watched_alias", cgroup_id)  # a reused inode is no longer a nested cgroup
        # A new epoch, once the policy is in: the kernel's "no watched ancestor" verdicts
        # (watched_alias) of this cgroup's children die with the old one. Bumped before the
        # write, a child walked in between would stay unwatched for the whole new epoch.
        self._write_levels()
        if self.bpf is not None:
            seen = self.bpf[b"syscalls_seen"]
            if seen.Key(cgroup_id) not in seen:
                seen[seen.Key(cgroup_id)] = L.SyscallBits()

    def prune_stale(self) -> int:
        """Drop what pinned maps hold for cgroups and addresses this process does not watch
        (containers gone while no enforcer ran). Call once the inventory has synced: before,
        a live protected container would look stale. Allow-lists are left: an extra entry
        only allows what a profile once allowed, and a profile not yet loaded would lose its."""
        if self.bpf is None:
            return 0
        dropped = 0
        for name in ("watched", "syscalls_seen", "rewrite_full", "marks_per_cgroup", "exec_identity"):
            if not has_table(self.bpf, name):
                continue  # the rewrite guard's maps: not in a program built without it
            table = self.bpf[name.encode()]
            cgroup_of = (lambda k: k.cgroup) if name == "exec_identity" else (lambda k: k.value)
            stale = [k for k in table.keys() if cgroup_of(k) not in self._watched]
            for k in stale:
                with contextlib.suppress(KeyError):
                    del table[k]
                    dropped += name == "watched"
        ips = self.bpf[b"local_ips"]
        for k in [k for k in ips.keys() if bytes(k.addr) not in self._ips]:
            with contextlib.suppress(KeyError):
                del ips[k]
                dropped += 1
        return dropped

    @property
    def watch_levels(self) -> int:
        """The levels at which watched cgroups sit, one per byte, lowest first (at most
        WATCH_LEVELS): the kernel looks for a watched ancestor of an unwatched cgroup at
        these levels only (bpf/common.h watched_policy). A level beyond the bound is logged:
        containers there are watched by their exact id only."""
        levels = sorted(set(self._levels.values()))
        if len(levels) > WATCH_LEVELS and not self._levels_warned:
            self._levels_warned = True
            log.warning("sensors: watched cgroups at %d levels; nested cgroups below levels %s are not watched",
                        len(levels), levels[WATCH_LEVELS:])
        packed = 0
        for i, level in enumerate(levels[:WATCH_LEVELS]):
            packed |= level << (8 * i)
        return packed

    def _write_levels(self) -> None:
        # High half: the watch epoch. A new watched cgroup may be one the kernel remembers
        # as unwatched, or the ancestor of one: a new epoch makes it walk those again.
        self._epoch = (self._epoch + 1) & 0x7FFFFFFF
        self._map_set("config", L.CFG_WATCH_LEVELS, self.watch_levels | self._epoch << 32)

    def _reapply(self) -> None:
        for cg in list(self._watched):
            self._write_policy(cg, keep_kernel=True)
        self._write_levels()  # the levels, even when every policy was adopted
        for key, cg in self._ips.items():
            self._map_set("local_ips", _ip_map_key(key), cg)
        for pid, hashes in self._exec_allow.items():
            for h in hashes:
                self._map_set("exec_allow", L.ExecAllowKey(pid, 0, h), 1)
        for pid, hashes in self._multicall.items():
            for h in hashes:
                self._map_set("exec_multicall", L.ExecAllowKey(pid, 0, h), 1)
        for pid, nrs in self._syscall_allow.items():
            self._map_set("syscall_allow", pid, _bits(nrs))

    def _map_set(self, name: str, key: Any, value: Any) -> None:
        if self.bpf is None:
            return
        table = self.bpf[name.encode()]
        k = key if not isinstance(key, int) else table.Key(key)
        v = value if not isinstance(value, int) else table.Leaf(value)
        table[k] = v

    def _in_kernel(self, name: str, key: int) -> bool:
        if self.bpf is None:
            return False
        table = self.bpf[name.encode()]
        return table.Key(key) in table

    def _map_del(self, name: str, key: Any) -> None:
        if self.bpf is None:
            return
        table = self.bpf[name.encode()]
        k = key if not isinstance(key, int) else table.Key(key)
        try:
            del table[k]
        except KeyError:
            pass


MAX_WATCH_LEVEL = 256  # a level is one byte of config[CFG_WATCH_LEVELS]
WATCH_LEVELS = 4  # bpf/common.h: distinct levels the kernel looks at


def cgroup_level(path: str, mount: str | None = None) -> int:
    """The level of a v2 cgroup directory below the hierarchy's mount (root 0, /docker 1,
    /docker/<id> 2); 0 when unknown or out of the kernel's bound."""
    mount = mount if mount is not None else cgroup2_mount()
    if not path or not mount:
        return 0
    rel = os.path.relpath(path, mount)
    if rel == "." or rel.startswith(".."):
        return 0
    level = rel.count("/") + 1
    return level if level < MAX_WATCH_LEVEL else 0


def _ip_key(ip: str) -> bytes | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.version == 4:
        return b"\0" * 10 + b"\xff\xff" + addr.packed
    return addr.packed


def _ip_map_key(raw: bytes) -> L.IpKey:
    return L.IpKey((ctypes.c_uint8 * 16)(*raw))


def _bits(nrs: Iterable[int]) -> L.SyscallBits:
    bits = L.SyscallBits()
    for n in nrs:
        bits.w[n // 64] |= 1 << (n % 64)
    return bits
