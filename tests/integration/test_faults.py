"""Faults against the real thing (docs/failsafe.md): kill -9 of the enforcer in the middle of
learning, of a block and of a freeze; the Docker engine restarting under it; the disk
holding its database filling up; and what stays enforced in the kernel when it is stopped
(SIGTERM) or crashes (SIGKILL).

Every check reads the kernel and the database independently of the code under test: `nft`
for the table, the cgroup freezer files, and the SQLite file opened with Python's sqlite3.
The figures (write-behind losses, recovery times) are printed; run with -s to see them.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.enforce import (host_fetch, ip_of, nft_elements, sensors_loaded, v1_state, wait_active, wait_known,
                             wait_reconciled, web)
from support.harness import EnforcerProcess, container_info, docker, exec_in, sh, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Counts in a file; frozen, the count stands still.
COUNTER = ["sh", "-c", "mkdir -p /tmp; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"]


def report(line: str) -> None:
    print(f"\nFAULTS: {line}")


# -- reading state independently ----------------------------------------------------------
@contextmanager
def open_db(path: str) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def integrity(path: str) -> str:
    with open_db(path) as conn:
        return ",".join(r[0] for r in conn.execute("PRAGMA integrity_check"))


def db_rows(path: str, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    with open_db(path) as conn:
        return list(conn.execute(sql, params))


def start_and_load(e: EnforcerProcess) -> float:
    """Start (or restart) with sensors; seconds until the sensors are in the kernel."""
    t0 = time.monotonic()
    e.start()
    wait_for(lambda: sensors_loaded(e), timeout=180, interval=0.5, what="the sensors to load")
    return time.monotonic() - t0


def send_only(path: str, op: str, **args: Any) -> socket.socket:
    """Issue a request without waiting for its answer (the enforcer is killed meanwhile)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall((json.dumps({"id": 7, "op": op, **args}) + "\n").encode())
    return s


class AlertSubscriber:
    """A socket client subscribed to `alert`: every event it receives, in order."""

    def __init__(self, path: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._sock.sendall(b'{"id": 1, "op": "subscribe", "topics": ["alert"]}\n')
        self._file = self._sock.makefile("r", encoding="utf-8")
        if not json.loads(self._file.readline()).get("ok"):
            raise RuntimeError("subscribe failed")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self._file:
                msg = json.loads(line)
                if msg.get("event") == "alert":
                    self.events.append(msg["data"])
        except (OSError, ValueError):
            pass

    def latest(self) -> dict[int, dict[str, Any]]:
        """Per incident id, the last state published."""
        return {a["id"]: a for a in list(self.events)}

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


# -- 1. kill -9 in the middle of a block and of a freeze ------------------------------------
def _blocked_in_kernel(e: EnforcerProcess, ip_a: str, ip_b: str) -> bool:
    found = []
    for family in ("inet", "bridge"):
        elements = json.dumps(nft_elements(family, e.nft_table, "blkx4"))
        found.append(ip_a in elements and ip_b in elements)
    assert found[0] == found[1], f"inet and bridge tables disagree: {found}"
    return found[0]


def _stored_block(e: EnforcerProcess, a: str, b: str) -> bool:
    return bool(db_rows(e.db, "SELECT id FROM blocks WHERE container_name = ? AND peer = ?", (a, b)))


def _stored_freeze(e: EnforcerProcess, cid: str) -> bool:
    return bool(db_rows(e.db, "SELECT container_id FROM freezes WHERE container_id = ?", (cid,)))


@pytest.mark.nftables
def test_kill_9_in_the_middle_of_blocks_and_freezes_leaves_kernel_and_store_agreeing(dockerx, busybox_image,
                                                                                      make_enforcer):
    e = make_enforcer("--no-sensors")
    net = dockerx.network()
    a, b = web(dockerx, net), web(dockerx, net)
    f = dockerx.run(command=COUNTER)
    wait_known(e, a, b)
    wait_known_any(e, f)
    wait_reconciled(e)
    ip_a, ip_b, fid = ip_of(a), ip_of(b), container_info(f)["Id"]
    rng = random.Random(9)
    # Right after issuing the op, then small random delays (the op takes ~5-40 ms here).
    delays = [0.0, 0.0, 0.001, 0.003, 0.006, 0.01, 0.02, 0.05] + [rng.uniform(0, 0.04) for _ in range(6)]
    outcomes: dict[str, int] = {}
    recoveries: list[float] = []
    for i, delay in enumerate(delays):
        for kind in ("block", "freeze"):
            if kind == "block":
                op = "unblock" if _stored_block(e, a, b) else "block"
                conn = send_only(e.socket, op, target=a, peer=b)
            else:
                op = "unfreeze" if _stored_freeze(e, fid) else "freeze"
                conn = send_only(e.socket, op, target=f)
            time.sleep(delay)
            e.kill9()
            conn.close()
            assert integrity(e.db) == "ok"
            if kind == "freeze":
                # At every instant: frozen only with a record (stored before freezing, dropped after thawing).
                frozen_now, recorded_now = v1_state(f) == "FROZEN", _stored_freeze(e, fid)
                assert recorded_now or not frozen_now, f"round {i}: {f} frozen with no record after kill -9 in {op}"
            t0 = time.monotonic()
            e.start()
            wait_reconciled(e)
            recoveries.append(time.monotonic() - t0)
            if kind == "block":
                stored = _stored_block(e, a, b)
                assert _blocked_in_kernel(e, ip_a, ip_b) == stored, f"round {i} ({op} killed after {delay:.3f}s)"
                assert [x["active"] for x in e.call("blocks", target=a)] == ([True] if stored else [])
                outcome = f"{op}:{'stored' if stored else 'absent'}"
            else:
                stored = _stored_freeze(e, fid)
                state = wait_for(lambda: (s := v1_state(f)) in ("FROZEN", "THAWED") and s, what="the freezer to settle")
                assert (state == "FROZEN") == stored, f"round {i} ({op} killed after {delay:.3f}s): {state}, record {stored}"
                assert e.call("container", target=f)["frozen"] is stored
                outcome = f"{op}:{'frozen' if stored else 'thawed'}"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    report(f"kill -9 during block/unblock/freeze/unfreeze: {len(delays) * 2} kills, outcomes {outcomes}; "
           f"restart to reconciled median {statistics.median(recoveries):.2f}s max {max(recoveries):.2f}s")
    # Both outcomes of an interrupted action were seen (it is a race, not a fixed order).
    assert e.call("status")["enforcement"]["reconciled"]


def wait_known_any(e: EnforcerProcess, name: str) -> None:
    """Known and running (a container without networks counts too)."""
    wait_for(lambda: any(c["name"] == name and c["state"] == "running" for c in e.call("containers")),
             timeout=20, what=f"the enforcer to know {name}")


# -- 3a. disk full: the store itself, on a real full filesystem ------------------------------
@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            sh("umount", "-l", str(path), check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem says ENOSPC; returns it (remove it to free the space)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1 << 9, 1):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    return filler


def test_store_holds_writes_while_the_disk_is_full_and_counts_what_it_drops(tmp_path):
    from enforcer.store import Database

    async def scenario(mnt: Path) -> dict[str, int]:
        db = Database(str(mnt / "t.db"))
        db.MAX_PENDING = 300  # small, to see the bound
        await db.open()
        try:
            await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
            for i in range(50):
                db.enqueue("INSERT INTO t (id, body) VALUES (?, ?)", (i, "x" * 2000))
            assert await db.flush()
            filler = fill(mnt)
            for i in range(50, 1000):
                db.enqueue("INSERT INTO t (id, body) VALUES (?, ?)", (i, "x" * 2000))
            assert not await db.flush(), "a write succeeded on a full disk"
            assert db.failing_since and "full" in db.last_error
            held, dropped = db.pending, db.dropped
            assert (held, dropped) == (300, 650)
            filler.unlink()
            assert await db.flush()
            assert not db.failing_since and db.pending == 0
            n = (await db.fetchone("SELECT COUNT(*) AS n FROM t"))["n"]
            ok = (await db.fetchone("PRAGMA integrity_check"))[0]
            assert ok == "ok"
            return {"held": held, "dropped": dropped, "rows": n}
        finally:
            await db.close()

    with small_tmpfs(tmp_path / "full", "2m") as mnt:
        result = asyncio.run(scenario(mnt))
    assert result["rows"] == 50 + 300  # everything held is written once space returns
    report(f"store on a full 2 MB tmpfs: {result['held']} writes held, {result['dropped']} dropped and counted, "
           f"{result['rows']} rows after space returned")


# -- 4. fail-safe: what holds in the kernel while the enforcer is down ---------------------
def count(name: str) -> int:
    pid = container_info(name)["State"]["Pid"]
    with open(f"/proc/{pid}/root/tmp/count") as f:
        return int(f.read().strip() or 0)


@pytest.mark.bpf
@pytest.mark.nftables
def test_what_stays_enforced_when_the_enforcer_is_stopped_or_crashes(dockerx, busybox_image, make_enforcer):
    e = make_enforcer("--learn-seconds", "5", start=False)
    start_and_load(e)
    net = dockerx.network()
    a, b = web(dockerx, net), web(dockerx, net)
    f = dockerx.run(command=COUNTER)
    wait_known(e, a, b)
    wait_known_any(e, f)
    wait_reconciled(e)
    ip_b = ip_of(b)
    assert host_fetch(a, ip_b)
    wait_active(e, a)
    e.call("mode", target=a, mode="protect", scope="container")
    wait_for(lambda: exec_in(a, "cal").returncode == 137, timeout=30, what="kill-on-exec in protect mode")
    e.call("block", target=a, peer=b)
    assert not host_fetch(a, ip_b)
    e.call("freeze", target=f)
    assert v1_state(f) == "FROZEN"

    figures = []
    for how, sig in (("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL)):
        if sig == signal.SIGTERM:
            assert e.stop(sig) == 0
        else:
            e.kill9()
        # Stays: the table and its blocks, the frozen cgroup.
        assert _blocked_in_kernel(e, ip_of(a), ip_b), f"after {how}: the block left the kernel"
        assert not host_fetch(a, ip_b), f"after {how}: a reaches b"
        frozen_at = count(f)
        time.sleep(0.5)
        assert v1_state(f) == "FROZEN" and count(f) == frozen_at, f"after {how}: {f} runs again"
        # Stays too: the programs' links and the policy maps are pinned in bpffs (sensors/pins.py),
        # so a disallowed program is still killed with no enforcer (test_protect_persistence.py).
        assert exec_in(a, "cal").returncode == 137, f"after {how}: kill-on-exec went with the enforcer"
        assert db_rows(e.db, "SELECT COUNT(*) AS n FROM blocks")[0]["n"] == 1
        assert integrity(e.db) == "ok"
        # Restart: all of it is back (kill-on-exec never left: the pinned generation holds it).
        t0 = time.monotonic()
        e.start()
        answered = time.monotonic() - t0
        wait_reconciled(e)
        reconciled = time.monotonic() - t0
        wait_for(lambda: exec_in(a, "cal").returncode == 137, timeout=180, interval=0.5,
                 what=f"kill-on-exec after {how}")
        protected = time.monotonic() - t0
        figures.append(f"{how}: socket {answered:.1f}s, reconciled {reconciled:.1f}s, kill-on-exec checked {protected:.1f}s")
        status = e.call("status")["enforcement"]
        assert status["reconcile"]["table_existed"] is True and status["reconcile"]["missing"] == 0
        assert e.call("container", target=f)["frozen"] is True and v1_state(f) == "FROZEN"
        assert not host_fetch(a, ip_b)
    e.call("unfreeze", target=f)
    report("restart after stop/crash: " + "; ".join(figures))


# -- 1b. kill -9 in the middle of learning, with alerts flowing -----------------------------
# A new listening port all the time: each is a new profile entry (learning) or a new alert (active).
BUSY = ("i=0; while true; do i=$((i+1)); nc -l -p $(({base} + i % 20000)) & p=$!; sleep {pause}; kill $p; "
        "wait $p 2>/dev/null; done")


def _memory(e: EnforcerProcess, learner: str) -> tuple[dict[int, int], set[tuple[str, str]], int]:
    """What the running enforcer holds: incidents (id -> count), the learner's entries, its profile id."""
    alerts = {a["id"]: a["count"] for a in e.call("alerts", limit=100_000)}
    p = e.call("profile", target=learner)["profile"]
    entries = {(kind, x["key"]) for kind, rows in p["entries"].items() for x in rows}
    return alerts, entries, p["id"]


def _stored(db: str, profile_id: int) -> tuple[dict[int, int], set[tuple[str, str]]]:
    alerts = {r["id"]: r["count"] for r in db_rows(db, "SELECT id, count FROM alerts")}
    entries = {(r["kind"], r["key"]) for r in db_rows(db, "SELECT kind, key FROM profile_entries WHERE profile_id = ?",
                                                       (profile_id,))}
    return alerts, entries


def _missing(before: dict[int, int], after: dict[int, int]) -> tuple[list[int], int]:
    """Incidents of `before` not in `after`, and how many occurrences the others fell short."""
    gone = sorted(set(before) - set(after))
    short = sum(max(0, n - after[i]) for i, n in before.items() if i in after)
    return gone, short


@pytest.mark.bpf
@pytest.mark.nftables
def test_kill_9_while_learning_keeps_the_database_whole_and_loses_only_the_write_behind_window(
        dockerx, busybox_image, make_enforcer):
    e = make_enforcer("--learn-seconds", "600", start=False)
    alerter = f"stfa{os.urandom(4).hex()}"
    Path(e.env["STOCKADE_CONFIG"]).write_text(f"[apps.{alerter}]\nlearn_seconds = 3\n")
    start_and_load(e)
    learner = dockerx.run(command=["sh", "-c", BUSY.format(base=20000, pause="0.02")])
    dockerx.run(name=alerter, command=["sh", "-c", "sleep 6; " + BUSY.format(base=40000, pause="0.3")])
    wait_for(lambda: len(_memory(e, learner)[1]) > 30, timeout=60, what="the learner to learn")
    wait_for(lambda: len([a for a in e.call("alerts", container=alerter)]) > 5, timeout=60, what="alerts")
    rng = random.Random(1)
    figures = []
    for round_ in range(2):
        old_alerts, old_entries, profile_id = _memory(e, learner)
        committed_alerts, committed_entries = _stored(e.db, profile_id)
        time.sleep(3)  # 15 times the store's flush interval: all of `old_*` must be on disk by the kill
        new_alerts, new_entries, _ = _memory(e, learner)
        pending = e.call("status")["store"]["pending_writes"]
        time.sleep(rng.uniform(0, 0.2))
        e.kill9()
        assert integrity(e.db) == "ok"
        after_alerts, after_entries = _stored(e.db, profile_id)
        # Committed before the kill: all there, counts never lower.
        assert _missing(committed_alerts, after_alerts) == ([], 0)
        assert committed_entries <= after_entries
        assert _missing(old_alerts, after_alerts) == ([], 0), "alerts older than 3 s were lost"
        assert old_entries <= after_entries, f"entries older than 3 s lost: {sorted(old_entries - after_entries)[:5]}"
        gone, short = _missing(new_alerts, after_alerts)
        lost_entries = len(new_entries - after_entries)
        rate = (len(new_entries) - len(old_entries)) / 3
        recovery = start_and_load(e)
        q = wait_for(lambda: e.call("profile", target=learner)["profile"], timeout=30, what="the learner's profile")
        assert q["id"] == profile_id and q["state"] == "learning"  # the same profile, still learning
        back_alerts, back_entries, _ = _memory(e, learner)
        assert after_entries <= back_entries
        assert set(after_alerts) <= set(back_alerts)
        wait_for(lambda: len(_memory(e, learner)[1]) > len(back_entries) + 10, timeout=60,
                 what="learning to go on after the restart")
        status = e.call("status")
        assert status["enforcement"]["reconciled"] and status["store"]["error"] == ""
        figures.append(f"round {round_ + 1}: {pending} writes queued at the kill; lost {len(gone)} new incidents, "
                       f"{short} folded occurrences, {lost_entries} of {len(new_entries)} profile entries "
                       f"(learning ~{rate:.0f} entries/s); restart to sensors loaded {recovery:.1f}s")
    report("kill -9 while learning: " + "; ".join(figures))


# -- 3b. disk full under the real enforcer ---------------------------------------------------
def _truncate_wal(db: str) -> None:
    """Checkpoint and truncate the WAL from outside (test set-up): with no WAL space left to
    reuse, the enforcer's next commit needs new blocks, so a full disk shows at once."""
    def done() -> bool:
        with open_db(db) as conn:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        return busy == 0 and os.path.getsize(db + "-wal") == 0
    wait_for(done, timeout=30, interval=0.05, what="a WAL checkpoint")


@pytest.mark.bpf
@pytest.mark.nftables
def test_disk_full_alerts_still_reach_subscribers_and_the_log_and_are_stored_when_space_returns(
        tmp_path, dockerx, busybox_image, make_enforcer):
    with small_tmpfs(tmp_path / "dbfs", "64m") as mnt:
        e = make_enforcer("--learn-seconds", "3", start=False)
        e.db = str(mnt / "stockade.db")
        sub: AlertSubscriber | None = None
        try:
            start_and_load(e)
            sub = AlertSubscriber(e.socket)
            noisy = dockerx.run(command=["sh", "-c", "sleep 6; " + BUSY.format(base=30000, pause="0.5")])
            wait_for(lambda: any(a["container"] == noisy for a in sub.events), timeout=60, what="a first alert")
            stored_max = wait_for(lambda: max((r["id"] for r in db_rows(e.db, "SELECT id FROM alerts")), default=0),
                                  what="a first alert in the database")
            _truncate_wal(e.db)
            filler = fill(mnt)
            wait_for(lambda: not e.call("status")["store"]["writing"], timeout=60,
                     what="the store to say it cannot write")
            events_at_full = len(sub.events)
            # Meanwhile: alerts go on reaching the subscriber (new incidents and growing ones).
            # An action that must be on disk first is refused, clearly, and not half done.
            with pytest.raises(RuntimeError, match=r"disk is full.*not frozen \(unavailable\)"):
                e.call("freeze", target=noisy)
            assert e.call("container", target=noisy)["frozen"] is False
            for program in ("cal", "uptime", "free", "fdisk"):
                exec_in(noisy, program, "--help")
            wait_for(lambda: len([a for a in sub.events[events_at_full:] if a["container"] == noisy]) >= 10,
                     timeout=60, what="alerts to reach the subscriber while the disk is full")
            time.sleep(3)
            during = e.call("status")["store"]
            assert not during["writing"] and "full" in during["error"] and during["pending_writes"] > 0
            assert "CANNOT WRITE" in e.cli("status").stdout  # what an operator sees
            assert e.running
            held = during["pending_writes"]
            seen = sub.latest()
            new_ids = sorted(i for i in seen if i > stored_max)
            assert new_ids, "no new incident was opened while the disk was full"
            log = e.log()
            for alert_id in new_ids:
                assert f"alert {alert_id} " in log, f"alert {alert_id} is not in the log"
            assert not db_rows(e.db, "SELECT id FROM alerts WHERE id > ?", (stored_max,))
            # Space returns: what was held reaches the database, and nothing was dropped.
            filler.unlink()
            wait_for(lambda: e.call("status")["store"]["writing"], timeout=60, what="the store to write again")

            def all_stored() -> bool:
                stored = {r["id"]: r["count"] for r in db_rows(e.db, "SELECT id, count FROM alerts")}
                return all(i in stored and stored[i] >= a["count"] for i, a in seen.items())
            wait_for(all_stored, timeout=60, interval=0.5, what="the held alerts in the database")
            after = e.call("status")["store"]
            assert after["dropped_writes"] == 0 and after["error"] == ""
            log = e.log()
            assert log.count("store: cannot write to") == 1, "the store must say it once"
            assert log.count("store: writing to") == 1
            assert not db_rows(e.db, "SELECT * FROM freezes")
            assert integrity(e.db) == "ok"
            report(f"disk full: {len(sub.events) - events_at_full} alert events reached the subscriber while "
                   f"full, {len(new_ids)} new incidents logged and held, {held} writes held, "
                   f"{after['dropped_writes']} dropped; all stored after space returned")
        finally:
            if sub is not None:
                sub.close()
            e.stop()


# -- 2. the Docker engine restarting under the enforcer --------------------------------------
def _engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def _dockerd_pids() -> list[int]:
    return [int(p) for p in sh("pgrep", "-x", "dockerd", check=False).stdout.split()]


def _start_dockerd(cmdline: list[str]) -> None:
    """Start the engine the way scripts/setup.sh does (no systemd here), outliving the test."""
    with open("/var/log/dockerd.log", "ab") as log:
        subprocess.Popen(cmdline, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    wait_for(_engine_answers, timeout=120, interval=0.5, what="dockerd to answer")


def restart_dockerd() -> float:
    """Stop the running dockerd (by its pid) and start it again with its command line;
    seconds the engine did not answer."""
    [pid] = _dockerd_pids()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = [a.decode() for a in f.read().split(b"\0") if a]
    t0 = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=120, interval=0.2, what="dockerd to stop")
    _start_dockerd(cmdline)
    return time.monotonic() - t0


def _alert_on(e: EnforcerProcess, name: str, program: str) -> dict[str, Any]:
    exec_in(name, program, "--help")
    return wait_for(lambda: next((a for a in e.call("alerts", container=name)
                                  if a["kind"] == "process" and a["subject"].endswith("/" + program)), None),
                    timeout=30, interval=0.3, what=f"a process alert for {program} on {name}")


@pytest.mark.bpf
@pytest.mark.disruptive
@pytest.mark.nftables
def test_the_enforcer_survives_a_docker_engine_restart_and_watches_the_containers_again(
        dockerx, busybox_image, make_enforcer):
    """Disturbs every other Docker user of the host for ~10-20 s: run it rarely."""
    cmdline = ["dockerd"]
    if _dockerd_pids():
        with open(f"/proc/{_dockerd_pids()[0]}/cmdline", "rb") as f:
            cmdline = [a.decode() for a in f.read().split(b"\0") if a]
    try:
        e = make_enforcer("--learn-seconds", "4", start=False)
        start_and_load(e)
        net = dockerx.network()
        loop = ["sh", "-c", "while true; do sleep 1; done"]
        r = dockerx.run("--restart", "always", network=net, command=loop)
        s = dockerx.run(network=net, command=loop)
        wait_known(e, r, s)
        wait_active(e, r)
        wait_active(e, s)
        e.call("block", target=r, peer=s)
        _alert_on(e, r, "cal")
        old_pid = container_info(r)["State"]["Pid"]

        down = restart_dockerd()
        t0 = time.monotonic()
        assert e.running, "the enforcer died with the engine"
        wait_for(lambda: container_info(r)["State"]["Running"], timeout=60, what=f"{r} restarted by its policy")
        docker("start", s)
        assert container_info(r)["State"]["Pid"] != old_pid

        def watched_again() -> bool:
            rows = {c["name"]: c for c in e.call("containers")}
            return all(n in rows and rows[n]["state"] == "running" and rows[n]["cgroup_id"]
                       and rows[n]["pid"] == container_info(n)["State"]["Pid"] for n in (r, s))
        wait_for(watched_again, timeout=60, interval=0.5, what="both containers watched again")
        assert e.call("status")["docker"]["connected"] is True
        _alert_on(e, r, "uptime")
        _alert_on(e, s, "free")
        recovered = time.monotonic() - t0
        ip_r, ip_s = ip_of(r), ip_of(s)
        wait_for(lambda: _blocked_in_kernel(e, ip_r, ip_s), timeout=30, what="the block on the new addresses")
        assert "docker: engine went away" in e.log()
        assert e.running
        report(f"dockerd restart: engine away {down:.1f}s; back to containers watched and alerting in "
               f"{recovered:.1f}s; block re-applied to the new addresses")
    finally:
        if not _engine_answers():
            if not _dockerd_pids():
                _start_dockerd(cmdline)
            else:
                wait_for(_engine_answers, timeout=120, interval=0.5, what="dockerd to answer")
