"""sha256 of executed binaries and written files, off the event loop, each file once.

A file is known by (device, inode, mtime, size): the same binary executed a thousand
times is hashed once, a file rewritten is hashed again. Requests for a file that is being
hashed wait for that one job instead of starting another.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .multicall import MultiCallScan

FileKey = tuple[int, int, int, int]  # st_dev, st_ino, st_mtime_ns, st_size


@dataclass(slots=True)
class HashResult:
    sha256: str  # "" when not hashed (too large, unreadable)
    size: int
    error: str = ""
    multicall: bool = False  # busybox-like: argv[0] picks the applet (sensors/multicall.py)


def file_key(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class FileHasher:
    def __init__(self, max_bytes: int = 32 << 20, workers: int = 1, cache_size: int = 4096,
                 max_inflight: int = 2048) -> None:
        self.max_bytes = max_bytes
        self.max_inflight = max_inflight
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stockade-hash")
        self._lock = threading.Lock()
        self._cache: OrderedDict[FileKey, HashResult] = OrderedDict()
        self._cache_size = cache_size
        self._inflight: dict[FileKey, Future[HashResult]] = {}
        self.hashed = 0  # files actually read (for tests and stats)
        self.cache_hits = 0
        self.skipped = 0  # not hashed because too many were waiting

    def submit_fd(self, fd: int) -> Future[HashResult]:
        """Hash an open file (the fd is taken over and closed). Returns at once."""
        try:
            st = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            return _done(HashResult("", 0, e.strerror or str(e)))
        key = file_key(st)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                os.close(fd)
                return _done(cached)
            running = self._inflight.get(key)
            if running is not None:
                os.close(fd)
                return running
            if len(self._inflight) >= self.max_inflight:
                # A flood of distinct binaries: the event goes on without its sha256 (the
                # path still decides) rather than queue without bound behind the hasher.
                os.close(fd)
                self.skipped += 1
                return _done(HashResult("", st.st_size, "hash queue full: not hashed"))
            if st.st_size > self.max_bytes:
                os.close(fd)
                result = HashResult("", st.st_size, f"larger than {self.max_bytes >> 20} MiB: not hashed")
                self._remember(key, result)
                return _done(result)
            future: Future[HashResult] = self._pool.submit(self._hash, fd, key, st.st_size)
            self._inflight[key] = future
            return future

    def _hash(self, fd: int, key: FileKey, size: int) -> HashResult:
        try:
            h = hashlib.sha256()
            scan = MultiCallScan()  # classified in the same read, once per binary
            with os.fdopen(fd, "rb", closefd=True) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    scan.update(chunk)
            result = HashResult(h.hexdigest(), size, multicall=scan.found)
        except OSError as e:
            result = HashResult("", size, e.strerror or str(e))
        with self._lock:
            self.hashed += 1
            self._inflight.pop(key, None)
            if not result.error:
                self._remember(key, result)
        return result

    def _remember(self, key: FileKey, result: HashResult) -> None:
        self._cache[key] = result
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _done(result: HashResult) -> Future[HashResult]:
    f: Future[HashResult] = Future()
    f.set_result(result)
    return f
