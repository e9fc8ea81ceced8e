"""Building and loading the sensors' BPF program: one text (bpf/common.h, then every
sensor's .c file) compiled once with bcc, so that all sensors share the watch, policy and
novelty maps. bcc is imported here only: without it the enforcer still runs, and the hub
reports the sensors as not loaded with the reason.

With a PinDir (sensors/pins.py) the policy maps are pinned in bpffs and every program is
attached through a pinned link, so kill-on-exec holds while no enforcer runs; a new load
attaches its programs before it unpins the previous generation's."""

from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from . import layout
from .btf import BtfError, inode_offsets
from .paths import bpf_defines
from .pins import PinDir, attach_raw_tracepoint_link, attach_tracepoint_link, map_layout

log = logging.getLogger(__name__)

SENSOR_FILES: tuple[str, ...] = ("process.c", "network.c", "file.c", "syscall.c")
# Program arrays and the programs they hold, by index: bodies that several tracepoints'
# programs tail-call, so the verifier walks each once (bpf/file.c file_tail).
TAIL_CALLS: dict[str, tuple[str, ...]] = {"file_tail": ("file_path_op", "file_open")}


class SensorLoadError(Exception):
    """The program could not be built or attached; the message is one line."""


def _bpf_dir() -> Path:
    return Path(str(resources.files("enforcer.sensors") / "bpf"))


def _has_tracepoint(category: str, name: str) -> bool:
    for base in ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"):
        if os.path.isdir(f"{base}/{category}/{name}"):
            return True
    return False


def program_text(pin_maps: str = "") -> str:
    """The full C text, with the generated constants in front; `pin_maps`: the folder in
    bpffs where the policy maps are pinned (common.h POLICY_TABLE)."""
    folder = _bpf_dir()
    defines = [bpf_defines()]
    if pin_maps:
        defines.append(f'#define STOCKADE_PIN_MAPS "{pin_maps}"\n')
    cases = " ".join(f"case {nr}:" for nr in sorted(set(layout.DANGEROUS_SYSCALLS.values())))
    defines.append(f"#define DANGEROUS_CASES {cases}\n")
    if _has_tracepoint("syscalls", "sys_enter_fchmodat2"):
        defines.append("#define HAVE_FCHMODAT2 1\n")
    offsets, _why = rewrite_guard_offsets()
    defines += [f"#define {name} {off}\n" for name, off in offsets.items()]
    parts = ["".join(defines), (folder / "common.h").read_text()]
    parts += [f"/* ---- {name} ---- */\n" + (folder / name).read_text() for name in SENSOR_FILES]
    return "\n".join(parts)


@functools.lru_cache(maxsize=1)  # the running kernel's BTF does not change under us
def rewrite_guard_offsets() -> tuple[dict[str, int], str]:
    """The kernel struct offsets the rewrite guard reads (bpf/common.h), from the running
    kernel's BTF; ({}, why) when they cannot be had, and the guard is compiled out."""
    try:
        return inode_offsets(), ""
    except BtfError as e:
        return {}, str(e)


def load_program(pins: PinDir | None = None) -> Any:
    """Compile and attach every sensor. Blocking: seconds of clang; call it from a thread.
    Without pins, bcc attaches the programs itself (they end with the process)."""
    try:
        from bcc import BPF  # noqa: PLC0415 - optional, from Debian's python3-bpfcc
    except ImportError as e:
        raise SensorLoadError(f"bcc is not importable ({e}); install python3-bpfcc and run make setup") from None
    if not os.path.exists("/sys/kernel/tracing/events") and not os.path.exists("/sys/kernel/debug/tracing/events"):
        raise SensorLoadError("tracefs is not mounted at /sys/kernel/tracing (run make setup)")
    text = program_text()
    t0 = time.monotonic()
    try:
        # -w: the 6.1 headers warn about things this program never touches.
        cflags = ["-w", "-Wno-macro-redefined"]
        if pins is None:
            bpf = _unattached(BPF)(text=text.encode(), cflags=cflags)
            t1 = time.monotonic()
            verify_all(bpf)
            fill_tail_calls(bpf)
            BPF._trace_autoload(bpf)  # the loads are cached: this only attaches
            log.info("sensors: compiled in %.1f s; loaded, verified and attached in %.1f s", t1 - t0, time.monotonic() - t1)
            return bpf
        pins.prepare()
        bpf = _unattached(BPF)(text=program_text(pins.maps_dir).encode(), cflags=cflags)
        changed = _changed_layouts(bpf, pins)
        if changed:
            # An older release's maps: keep them (its programs still hold protect) and pin
            # this generation's in a new folder; the hub retires the old once it is written.
            log.warning("sensors: pinned maps %s have another layout: new maps in a new folder", ", ".join(changed))
            bpf.cleanup()
            pins.fresh_maps()
            bpf = _unattached(BPF)(text=program_text(pins.maps_dir).encode(), cflags=cflags)
    except Exception as e:  # noqa: BLE001 - bcc raises bare Exception for compile/load errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SensorLoadError(f"cannot load the BPF sensors: {first}") from None
    t1 = time.monotonic()
    try:
        attach_pinned(bpf, pins)
    except Exception as e:  # noqa: BLE001 - a PinError, or bcc's bare Exception from load_func
        bpf.cleanup()
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SensorLoadError(f"cannot attach the BPF sensors: {first}") from None
    log.info("sensors: compiled in %.1f s; loaded, verified and linked in %.1f s", t1 - t0, time.monotonic() - t1)
    return bpf


def _unattached(bpf_class: Any) -> Any:
    """bcc's BPF without its automatic attach: attach_pinned() links the programs itself."""

    class Unattached(bpf_class):  # type: ignore[misc, valid-type]
        def _trace_autoload(self) -> None:
            pass

    return Unattached


def _changed_layouts(bpf: Any, pins: PinDir) -> list[str]:
    """Pinned maps whose layout is not the one this program declares."""
    import ctypes  # noqa: PLC0415

    changed = []
    for name in sorted(os.listdir(pins.maps_dir)):
        try:
            table = bpf[name.encode()]
        except KeyError:
            continue  # a map this release no longer has
        _type, key, value, entries = map_layout(table.get_fd())
        if (key, value, entries) != (ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf), table.max_entries):
            changed.append(name)
    return changed


def _bcc() -> Any:
    from bcc import BPF  # noqa: PLC0415

    return BPF


def _program_type(name: str) -> int | None:
    if name.startswith("tracepoint__"):
        return int(_bcc().TRACEPOINT)
    if name.startswith("raw_tracepoint__"):
        return int(_bcc().RAW_TRACEPOINT)
    return None


def fill_tail_calls(bpf: Any) -> list[tuple[str, int]]:
    """Put the tail-called bodies in their program arrays (before anything that calls them
    is attached: a tail call into an empty slot falls through and the event is lost).
    Returns (array name, map fd) for the arrays this module has, to be pinned."""
    arrays = []
    for array, progs in TAIL_CALLS.items():
        try:
            table = bpf[array.encode()]
        except KeyError:
            continue  # an older text (bench_programs' A/B) without it
        for i, name in enumerate(progs):
            table[table.Key(i)] = table.Leaf(bpf.load_func(name.encode(), _bcc().TRACEPOINT).fd)
        arrays.append((array, table.get_fd()))
    return arrays


def verify_all(bpf: Any, workers: int | None = None) -> dict[str, float]:
    """Load every program of a compiled module into the kernel, on every CPU at once (the
    kernel verifies a privileged loader's programs in parallel; the verifier was 22 s of a
    29 s cold start before the file programs shared their bodies, docs/failsafe.md). bcc
    caches each loaded function, so attaching afterwards loads nothing again. Returns
    program -> seconds it took."""
    from bcc import lib  # noqa: PLC0415

    names = [lib.bpf_function_name(bpf.module, i).decode() for i in range(lib.bpf_num_functions(bpf.module))]
    todo = [(n, t) for n in names if (t := _program_type(n)) is not None]
    tails = {n for progs in TAIL_CALLS.values() for n in progs}
    todo += [(n, int(_bcc().TRACEPOINT)) for n in names if n in tails]
    # The biggest first (the tail-called bodies), so that no long one is left alone at the end.
    todo.sort(key=lambda nt: nt[0] not in tails)

    def load(item: tuple[str, int]) -> tuple[str, float]:
        t0 = time.monotonic()
        bpf.load_func(item[0].encode(), item[1])
        return item[0], time.monotonic() - t0

    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        took = dict(pool.map(load, todo))
    slowest = sorted(took.items(), key=lambda kv: -kv[1])[:3]
    log.info("sensors: slowest to verify: %s", ", ".join(f"{n} {t:.1f} s" for n, t in slowest))
    return took


def attach_pinned(bpf: Any, pins: PinDir) -> str:
    """Attach every program of a loaded module through a link and pin the links as a new
    generation. The caller unpins the older ones (PinDir.retire_others) once this
    generation's maps are written: no moment without kill-on-exec."""
    from bcc import BPF, lib  # noqa: PLC0415

    verify_all(bpf)
    tails = fill_tail_calls(bpf)
    links: list[tuple[str, int]] = []
    try:
        for i in range(lib.bpf_num_functions(bpf.module)):
            name = lib.bpf_function_name(bpf.module, i).decode()
            if name.startswith("tracepoint__"):
                category, event = name[len("tracepoint__"):].split("__", 1)
                fn = bpf.load_func(name.encode(), BPF.TRACEPOINT)
                links.append((name, attach_tracepoint_link(fn.fd, category, event)))
            elif name.startswith("raw_tracepoint__"):
                fn = bpf.load_func(name.encode(), BPF.RAW_TRACEPOINT)
                links.append((name, attach_raw_tracepoint_link(fn.fd, name[len("raw_tracepoint__"):])))
        return pins.pin_links(links, tails)
    except Exception:
        for _name, fd in links:
            try:
                os.close(fd)  # not pinned: closing detaches it; the old generation still holds
            except OSError:
                pass
        raise
