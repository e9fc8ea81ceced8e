"""The hasher's limits (sensors/hashing.py): regular files only, a size cap, a deadline per
read, a bounded fair queue per container; and an empty sha256 never counting as known."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from enforcer.profiles.model import Profile, process_entry
from enforcer.sensors.hashing import NOT_REGULAR, OVER_BUDGET, QUEUE_FULL, STALLED, TOO_LARGE, FileHasher
from enforcer.sensors.paths import open_in_root

A, B = 101, 202  # two containers (cgroup ids)


def _file(tmp_path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def _fd(path: str, flags: int = os.O_RDONLY) -> int:
    return os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK)


class SlowReads:
    """os.read, except that files whose name contains `slow` take `delay` per call, and
    `stuck` ones block until released (a read blocked in the kernel, e.g. on FUSE)."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay = delay
        self.release = threading.Event()

    def __call__(self, fd: int, n: int) -> bytes:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "stuck" in name:
            self.release.wait(30)
        elif "slow" in name:
            time.sleep(self.delay)
            n = min(n, 4096)
        return os.read(fd, n)


def test_a_device_is_not_read(tmp_path):
    h = FileHasher()
    t0 = time.monotonic()
    r = h.submit_fd(_fd("/dev/zero"), owner=A).result(timeout=2)
    assert time.monotonic() - t0 < 1
    assert (r.sha256, r.reason) == ("", NOT_REGULAR)
    assert "character device" in r.error
    assert h.stats()["skipped"][NOT_REGULAR] == 1
    h.close()


def test_a_fifo_named_by_o_path_is_not_opened(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    h = FileHasher()
    r = h.submit_fd(_fd(str(fifo), os.O_PATH), owner=A).result(timeout=2)
    assert (r.reason, "FIFO" in r.error) == (NOT_REGULAR, True)
    h.close()


def test_written_files_are_named_in_the_root_by_o_path_and_only_regular_ones_are_read(tmp_path):
    """What the decoder does for a closed file: open_in_root(..., O_PATH), then the hasher."""
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    os.mkfifo(root / "dev" / "fifo")
    os.symlink("/dev/fifo", root / "link")  # absolute: resolved inside the root
    (root / "bin").mkdir()
    (root / "bin" / "x").write_bytes(b"x" * 10)
    h = FileHasher()
    fifo = h.submit_fd(open_in_root(str(root), "/link", os.O_PATH), owner=A).result(timeout=2)
    assert fifo.reason == NOT_REGULAR and "FIFO" in fifo.error
    ok = h.submit_fd(open_in_root(str(root), "/bin/x", os.O_PATH), owner=A).result(timeout=2)
    assert ok.sha256 == hashlib.sha256(b"x" * 10).hexdigest()
    h.close()


def test_a_large_sparse_file_is_skipped_at_once(tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(10 << 30)  # 10 GiB, sparse
    h = FileHasher(max_bytes=1 << 20)
    t0 = time.monotonic()
    r = h.submit_fd(_fd(str(big)), owner=A).result(timeout=2)
    assert time.monotonic() - t0 < 1
    assert (r.sha256, r.reason) == ("", TOO_LARGE)
    assert "over 1 MiB" in r.error
    h.close()


def test_a_regular_file_is_hashed_also_through_o_path(tmp_path):
    data = os.urandom(3 << 20)
    path = _file(tmp_path, "bin", data)
    h = FileHasher()
    assert h.submit_fd(_fd(path), owner=A).result(timeout=5).sha256 == hashlib.sha256(data).hexdigest()
    path2 = _file(tmp_path, "bin2", data[:1000])
    r = h.submit_fd(_fd(path2, os.O_PATH), owner=A).result(timeout=5)
    assert r.sha256 == hashlib.sha256(data[:1000]).hexdigest()
    h.close()


def test_a_rewrite_with_mtime_set_back_is_hashed_again(tmp_path):
    path = _file(tmp_path, "bin", b"a" * 100)
    h = FileHasher()
    first = h.submit_fd(_fd(path), owner=A).result(timeout=5).sha256
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"b" * 100)  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back: ctime moves on
    second = h.submit_fd(_fd(path), owner=A).result(timeout=5).sha256
    assert second == hashlib.sha256(b"b" * 100).hexdigest() != first
    h.close()


def test_a_quiet_container_does_not_wait_behind_a_noisy_one(tmp_path):
    reads = SlowReads(delay=0.3)
    h = FileHasher(workers=2, deadline=20, read=reads)
    noisy = [h.submit_fd(_fd(_file(tmp_path, f"slow{i}", os.urandom(64 << 10))), owner=A) for i in range(6)]
    time.sleep(0.1)
    t0 = time.monotonic()
    quiet = h.submit_fd(_fd(_file(tmp_path, "quiet", b"x" * 1000)), owner=B, exec_=True).result(timeout=5)
    waited = time.monotonic() - t0
    assert quiet.sha256 == hashlib.sha256(b"x" * 1000).hexdigest()
    assert waited < 0.5, f"the quiet container waited {waited:.2f} s"
    # The noisy container holds one worker at a time: its files are still going.
    assert not all(f.done() for f in noisy)
    assert h.stats()["depths"].get(A, 0) >= 1
    h.close()


def test_execs_of_a_container_go_before_its_written_files(tmp_path):
    reads = SlowReads(delay=0.2)
    h = FileHasher(workers=1, deadline=20, read=reads)
    files = [h.submit_fd(_fd(_file(tmp_path, f"slow{i}", os.urandom(8192))), owner=A) for i in range(4)]
    ex = h.submit_fd(_fd(_file(tmp_path, "exe", b"e")), owner=A, exec_=True)
    ex.result(timeout=5)
    assert sum(f.done() for f in files) <= 1  # only the one already running
    h.close()


def test_a_blocked_read_resolves_at_its_deadline_and_the_worker_is_replaced(tmp_path):
    reads = SlowReads()
    h = FileHasher(workers=1, deadline=0.5, read=reads)
    try:
        t0 = time.monotonic()
        stuck = h.submit_fd(_fd(_file(tmp_path, "stuck", b"s" * 100)), owner=A, exec_=True)
        r = stuck.result(timeout=5)
        took = time.monotonic() - t0
        assert (r.sha256, r.reason) == ("", STALLED)
        assert "stalled after 0.5 s" in r.error
        assert took < 2, took
        # Until that read returns, the container's files are not hashed (fail closed: said).
        again = h.submit_fd(_fd(_file(tmp_path, "other", b"o")), owner=A).result(timeout=1)
        assert again.reason == STALLED
        # Another container is served by the replacement worker.
        ok = h.submit_fd(_fd(_file(tmp_path, "b", b"b")), owner=B, exec_=True).result(timeout=2)
        assert ok.sha256 == hashlib.sha256(b"b").hexdigest()
        s = h.stats()
        assert s["stalled_reads"] == 1 and s["stuck_reads"] == 1 and s["workers"] == 1
    finally:
        reads.release.set()
    time.sleep(0.3)
    assert h.stats()["stuck_reads"] == 0
    assert h.submit_fd(_fd(_file(tmp_path, "later", b"l")), owner=A).result(timeout=2).sha256
    h.close()


def test_a_slow_read_gives_up_between_chunks(tmp_path):
    reads = SlowReads(delay=0.2)
    h = FileHasher(workers=1, deadline=0.5, read=reads)
    r = h.submit_fd(_fd(_file(tmp_path, "slow", os.urandom(1 << 20))), owner=A).result(timeout=5)
    assert r.reason == STALLED
    h.close()


def test_a_full_queue_answers_at_once_unhashed(tmp_path):
    reads = SlowReads()
    h = FileHasher(workers=1, deadline=30, max_queue=2, read=reads)
    try:
        h.submit_fd(_fd(_file(tmp_path, "stuck", b"s")), owner=A)
        time.sleep(0.1)
        queued = [h.submit_fd(_fd(_file(tmp_path, f"q{i}", b"q")), owner=A) for i in range(2)]
        t0 = time.monotonic()
        full = h.submit_fd(_fd(_file(tmp_path, "full", b"f")), owner=A).result(timeout=1)
        assert time.monotonic() - t0 < 0.5
        assert (full.sha256, full.reason) == ("", QUEUE_FULL)
        assert "queue of this container full" in full.error
        assert not any(f.done() for f in queued)
        assert h.stats()["depths"][A] == 3
    finally:
        reads.release.set()
    h.close()


def test_a_queued_job_gives_up_after_the_deadline(tmp_path):
    reads = SlowReads()
    h = FileHasher(workers=1, deadline=0.5, read=reads)
    try:
        h.submit_fd(_fd(_file(tmp_path, "stuck", b"s")), owner=A)
        time.sleep(0.05)
        waiting = h.submit_fd(_fd(_file(tmp_path, "w", b"w")), owner=A, exec_=True)
        r = waiting.result(timeout=3)
        assert r.reason == STALLED
    finally:
        reads.release.set()
    h.close()


def test_a_container_over_its_byte_budget_is_answered_at_once_and_execs_still_hashed(tmp_path):
    h = FileHasher(max_bytes=1 << 20, rate_bytes=1 << 20)  # 1 MiB/s, a bucket of 2 MiB
    data = os.urandom(700 << 10)
    results = [h.submit_fd(_fd(_file(tmp_path, f"f{i}", data + bytes([i]))), owner=A).result(timeout=5)
               for i in range(4)]
    assert [r.reason for r in results] == ["", "", OVER_BUDGET, OVER_BUDGET]
    assert "hash budget (1 MiB/s) is spent" in results[2].error
    ex = h.submit_fd(_fd(_file(tmp_path, "exe", data + b"e")), owner=A, exec_=True).result(timeout=5)
    assert ex.sha256  # an exec's verdict depends on its hash: hashed, and paid for
    other = h.submit_fd(_fd(_file(tmp_path, "b", data + b"b")), owner=B).result(timeout=5)
    assert other.sha256  # another container's budget is its own
    h.close()


def test_an_empty_sha256_is_never_known():
    p = Profile(1, "app", "svc", "sha256:x", state="active")
    p.add(process_entry("/bin/app", "aa" * 32))
    assert p.process_verdict("/bin/app", "aa" * 32) == "known"
    assert p.process_verdict("/bin/app", "") == "unverified"
    assert p.process_verdict("/bin/other", "") == "unknown"
    p.add(process_entry("/bin/seeded", "", source="seed"))
    assert p.process_verdict("/bin/seeded", "") == "unverified"


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
