#!/usr/bin/env python3
"""SSH transport benchmark (prints figures and ratios against a baseline in the same run;
asserts nothing). Needs root and Debian's openssh-server (scripts/setup.sh); runs a real
enforcer (--no-sensors) and a throwaway sshd on 127.0.0.1 (tests/support/sshd.py).

1. `stockade dial-stdio` start to exit (socket missing, so it exits at once) against a bare
   `python -c pass`: what dial-stdio adds to each SSH connection.
2. Connect + hello: over ssh:// against the local socket, and against a plain `ssh host true`
   (what SSH itself costs: key exchange, authentication, a remote shell).
3. One `status` call on an open connection: over ssh against the local socket.
4. A whole CLI command (`stockade status --json`): over ssh against the local socket.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from console.client import EnforcerClient  # noqa: E402
from support.harness import EnforcerProcess  # noqa: E402
from support.principals import open_workdir  # noqa: E402
from support.sshd import sshd  # noqa: E402

ROUNDS = 15


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed_run(argv: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(argv, capture_output=True, cwd=REPO, env=env, timeout=120)
    return time.perf_counter() - t


def line(label: str, value_ms: float, base_ms: float) -> None:
    print(f"  {label:<44} {value_ms:8.1f} ms   x{value_ms / base_ms:5.1f}")


async def connects(target: str) -> tuple[list[float], list[float]]:
    connect, call = [], []
    for _ in range(ROUNDS):
        client = EnforcerClient(target)
        t = time.perf_counter()
        await client.connect()
        connect.append(time.perf_counter() - t)
        for _ in range(5):
            t = time.perf_counter()
            await client.call("status")
            call.append(time.perf_counter() - t)
        await client.close()
    return connect, call


def main() -> None:
    workdir = open_workdir("stockade-bench-ssh-")
    e = EnforcerProcess(workdir / "e", "--no-sensors").start()
    try:
        with sshd() as s:
            os.environ["STOCKADE_SSH_OPTS"] = f"-F {s.client_config}"
            remote = s.target("root", e.socket)
            py = [sys.executable, "-c", "pass"]
            dial = [sys.executable, "-m", "console.cli", "dial-stdio", "--socket", str(workdir / "none.sock")]
            bare = [timed_run(py) for _ in range(ROUNDS)]
            dials = [timed_run(dial) for _ in range(ROUNDS)]
            print(f"SSH transport, median of {ROUNDS} (ratio: against the baseline above it)")
            print(f"  {'python -c pass (baseline)':<44} {median_ms(bare):8.1f} ms")
            line("stockade dial-stdio, start to exit", median_ms(dials), median_ms(bare))

            local_connect, local_call = asyncio.run(connects(e.socket))
            ssh_connect, ssh_call = asyncio.run(connects(remote))
            plain = [timed_run(["ssh", "-F", str(s.client_config), "-p", str(s.port), "root@127.0.0.1", "true"])
                     for _ in range(ROUNDS)]
            print(f"  {'connect + hello, unix socket (baseline)':<44} {median_ms(local_connect):8.1f} ms")
            line("connect + hello, ssh://root@127.0.0.1", median_ms(ssh_connect), median_ms(local_connect))
            print(f"  {'plain `ssh root@127.0.0.1 true` (baseline)':<44} {median_ms(plain):8.1f} ms")
            line("connect + hello, ssh://root@127.0.0.1", median_ms(ssh_connect), median_ms(plain))
            print(f"  {'status call, unix socket (baseline)':<44} {median_ms(local_call):8.1f} ms")
            line("status call, open ssh connection", median_ms(ssh_call), median_ms(local_call))

            env = s.env()
            cli = [sys.executable, "-m", "console.cli"]
            local_cli = [timed_run([*cli, "--socket", e.socket, "status", "--json"], env) for _ in range(ROUNDS)]
            ssh_cli = [timed_run([*cli, "--host", remote, "status", "--json"], env) for _ in range(ROUNDS)]
            print(f"  {'stockade status --json, local (baseline)':<44} {median_ms(local_cli):8.1f} ms")
            line("stockade --host ssh://... status --json", median_ms(ssh_cli), median_ms(local_cli))
    finally:
        e.stop()
        e.remove_nft_table()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
