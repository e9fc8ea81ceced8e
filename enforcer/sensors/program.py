"""Building and loading the sensors' BPF program: one text (bpf/common.h, then every
sensor's .c file) compiled once with bcc, so that all sensors share the watch, policy and
novelty maps. bcc is imported here only: without it the enforcer still runs, and the hub
reports the sensors as not loaded with the reason."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from . import layout
from .paths import bpf_defines

SENSOR_FILES: tuple[str, ...] = ("process.c", "network.c", "file.c", "syscall.c")


class SensorLoadError(Exception):
    """The program could not be built or attached; the message is one line."""


def _bpf_dir() -> Path:
    return Path(str(resources.files("enforcer.sensors") / "bpf"))


def _has_tracepoint(category: str, name: str) -> bool:
    for base in ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"):
        if os.path.isdir(f"{base}/{category}/{name}"):
            return True
    return False


def program_text() -> str:
    """The full C text, with the generated constants in front."""
    folder = _bpf_dir()
    defines = [bpf_defines()]
    cases = " ".join(f"case {nr}:" for nr in sorted(set(layout.DANGEROUS_SYSCALLS.values())))
    defines.append(f"#define DANGEROUS_CASES {cases}\n")
    if _has_tracepoint("syscalls", "sys_enter_fchmodat2"):
        defines.append("#define HAVE_FCHMODAT2 1\n")
    parts = ["".join(defines), (folder / "common.h").read_text()]
    parts += [f"/* ---- {name} ---- */\n" + (folder / name).read_text() for name in SENSOR_FILES]
    return "\n".join(parts)


def load_program() -> Any:
    """Compile and attach every sensor (TRACEPOINT_PROBEs attach themselves). Blocking:
    a few seconds of clang; call it from a thread."""
    try:
        from bcc import BPF  # noqa: PLC0415 - optional, from Debian's python3-bpfcc
    except ImportError as e:
        raise SensorLoadError(f"bcc is not importable ({e}); install python3-bpfcc and run make setup") from None
    if not os.path.exists("/sys/kernel/tracing/events") and not os.path.exists("/sys/kernel/debug/tracing/events"):
        raise SensorLoadError("tracefs is not mounted at /sys/kernel/tracing (run make setup)")
    text = program_text()
    try:
        # -w: the 6.1 headers warn about things this program never touches.
        return BPF(text=text.encode(), cflags=["-w", "-Wno-macro-redefined"])
    except Exception as e:  # noqa: BLE001 - bcc raises bare Exception for compile/load errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SensorLoadError(f"cannot load the BPF sensors: {first}") from None
