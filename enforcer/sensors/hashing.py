"""sha256 of executed binaries and written files: regular files only, capped, with a
deadline, served from one bounded queue per container in turn.

Every file hashed here was chosen by a container, so a container must not be able to
make the hasher work forever or make another container wait:

- only regular files: `fstat` on the fd actually opened must say S_ISREG (a device such
  as /dev/zero, a FIFO or a socket has no content to hash and may never end); a file
  handed over as an O_PATH fd is reopened for reading only once it is known to be regular;
- at most `max_bytes`, and never more than the size the file had when it was submitted;
- a deadline per file: a read still going `deadline` seconds after it started gives up
  (checked between chunks, and by a watchdog for a read blocked in the kernel: that
  thread is abandoned and replaced, and until it returns its container's files are not
  hashed, so a container holds at most one stuck thread); a job that waited `deadline`
  in its queue gives up too: every future resolves within about 2 x deadline;
- a byte budget per container (`rate_bytes` a second, a bucket of two capped files): a
  container that writes big files all the time has the rest answered "over_budget", so
  the CPU it can make the enforcer spend on hashing is bounded, and said (executed
  binaries are always hashed, and pay);
- a fair queue: one bounded queue per container (`owner`, the cgroup id), executed
  binaries before written files, served round robin, at most one job of a container at
  a time, so one container's slow or huge files keep at most one worker busy and never
  delay another container's verdict. A full queue answers at once, unhashed ("queue_full"):
  the caller reports the event unhashed, never drops it.

Whatever is not hashed resolves with sha256 "" and a `reason` (a stats key) and an `error`
(the text an alert shows). A file is known by (device, inode, mtime, ctime, size): the
same binary executed a thousand times is hashed once, a file rewritten is hashed again
(ctime, unlike mtime, cannot be set back by the container).
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections import Counter, OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from .multicall import MultiCallScan

FileKey = tuple[int, int, int, int, int]  # st_dev, st_ino, st_mtime_ns, st_ctime_ns, st_size
CHUNK = 1 << 20

# Why a file was not hashed (the `reason` of a HashResult, the keys of `skipped`).
NOT_REGULAR = "not_regular"
TOO_LARGE = "too_large"
QUEUE_FULL = "queue_full"
STALLED = "stalled"
OVER_BUDGET = "over_budget"
UNREADABLE = "unreadable"
REASONS = (NOT_REGULAR, TOO_LARGE, QUEUE_FULL, STALLED, OVER_BUDGET, UNREADABLE)


@dataclass(slots=True)
class HashResult:
    sha256: str  # "" when not hashed
    size: int
    error: str = ""  # why not, as an alert says it
    reason: str = ""  # why not, one of REASONS
    multicall: bool = False  # busybox-like: argv[0] picks the applet (sensors/multicall.py)


def file_key(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISLNK, "symbolic link")):
        if test(mode):
            return name
    return "special file"


class _Stalled(Exception):
    pass


@dataclass(slots=True, eq=False)
class _Job:
    owner: int
    key: FileKey
    fd: int
    size: int
    future: Future[HashResult]
    queued_at: float
    started: float = 0.0
    abandoned: bool = False


@dataclass(slots=True, eq=False)
class _Owner:
    execs: deque[_Job] = field(default_factory=deque)
    files: deque[_Job] = field(default_factory=deque)
    running: _Job | None = None
    stuck: _Job | None = None  # a read given up on, still blocked in the kernel

    def queued(self) -> int:
        return len(self.execs) + len(self.files)


class FileHasher:
    def __init__(self, max_bytes: int = 32 << 20, workers: int = 2, cache_size: int = 4096,
                 max_queue: int = 64, deadline: float = 5.0, max_stuck: int = 16,
                 rate_bytes: int = 64 << 20, read: Callable[[int, int], bytes] = os.read) -> None:
        self.max_bytes = max_bytes
        self.max_queue = max_queue  # per container and kind (exec, file)
        self.deadline = deadline
        self.max_stuck = max_stuck  # threads blocked in a read, over all containers
        self.workers = max(1, workers)
        self._read = read
        self.rate_bytes = rate_bytes  # per container and second
        self._burst = max(rate_bytes, 2 * max_bytes)
        # owner -> (tokens, when): kept apart from the queues (an idle container keeps its
        # spent budget); pruned once full again.
        self._budgets: dict[int, tuple[float, float]] = {}
        self._cond = threading.Condition()
        self._cache: OrderedDict[FileKey, HashResult] = OrderedDict()
        self._cache_size = cache_size
        self._owners: dict[int, _Owner] = {}
        self._turn: deque[int] = deque()  # owners with queued jobs and none running, in turn
        self._inflight: dict[tuple[int, FileKey], Future[HashResult]] = {}
        self._live = 0  # worker threads not abandoned
        self._stuck_threads = 0
        self._closed = False
        self._started = False
        self.hashed = 0  # files actually read (for tests and stats)
        self.cache_hits = 0
        self.skipped: Counter[str] = Counter()
        self.stalled_reads = 0  # reads given up on at their deadline

    # -- submitting ---------------------------------------------------------------------
    def submit_fd(self, fd: int, owner: int = 0, exec_: bool = False) -> Future[HashResult]:
        """Hash an open file (the fd is taken over and closed). Returns at once; the
        future resolves within about 2 x deadline whatever the file does."""
        if not self._started:
            self.start()
        try:
            st = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            return self.skip(UNREADABLE, e.strerror or str(e), 0)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return self.skip(NOT_REGULAR, f"not a regular file ({_kind(st.st_mode)})", 0)
        key = file_key(st)
        with self._cond:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                os.close(fd)
                if cached.reason:
                    self.skipped[cached.reason] += 1
                return _done(cached)
            if st.st_size > self.max_bytes:
                os.close(fd)
                result = HashResult("", st.st_size, f"over {self.max_bytes / (1 << 20):g} MiB "
                                                    f"({st.st_size} bytes)", TOO_LARGE)
                self._remember(key, result)
                self.skipped[TOO_LARGE] += 1
                return _done(result)
            running = self._inflight.get((owner, key))
            if running is not None:
                os.close(fd)
                return running
            o = self._owners.setdefault(owner, _Owner())
            if o.stuck is not None:
                os.close(fd)
                self.skipped[STALLED] += 1
                return _done(HashResult("", st.st_size, f"an earlier read of this container stalled "
                                                        f"(over {self.deadline:g} s)", STALLED))
            if self._closed or self._live == 0:
                os.close(fd)
                self.skipped[QUEUE_FULL] += 1
                return _done(HashResult("", st.st_size, "hasher unavailable (every worker stalled)", QUEUE_FULL))
            q = o.execs if exec_ else o.files
            if len(q) >= self.max_queue:
                os.close(fd)
                self.skipped[QUEUE_FULL] += 1
                return _done(HashResult("", st.st_size, f"hash queue of this container full ({len(q)} waiting)",
                                        QUEUE_FULL))
            if not self._spend(owner, st.st_size, exec_):
                os.close(fd)
                self.skipped[OVER_BUDGET] += 1
                return _done(HashResult("", st.st_size, f"this container's hash budget "
                                                        f"({self.rate_bytes / (1 << 20):g} MiB/s) is spent",
                                        OVER_BUDGET))
            future: Future[HashResult] = Future()
            q.append(_Job(owner, key, fd, st.st_size, future, time.monotonic()))
            self._inflight[(owner, key)] = future
            if o.running is None and owner not in self._turn:
                self._turn.append(owner)
            self._cond.notify()
            return future

    def _spend(self, owner: int, size: int, exec_: bool) -> bool:
        """Take `size` bytes from the container's bucket (lock held); False if it has not.
        An executed binary is always hashed (its verdict depends on it) but pays, in debt
        if need be: a container cannot spend the budget on execs and then write for free."""
        now = time.monotonic()
        tokens, when = self._budgets.get(owner, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - when) * self.rate_bytes)
        if tokens < size and not exec_:
            self._budgets[owner] = (tokens, now)
            return False
        self._budgets[owner] = (tokens - size, now)
        if len(self._budgets) > 4096:  # containers gone: forget the full buckets
            self._budgets = {k: v for k, v in self._budgets.items()
                             if v[0] + (now - v[1]) * self.rate_bytes < self._burst}
        return True

    def skip(self, reason: str, error: str, size: int = 0) -> Future[HashResult]:
        """A file that could not even be handed over: counted, answered at once."""
        with self._cond:
            self.skipped[reason] += 1
        return _done(HashResult("", size, error, reason))

    # -- workers ------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._started or self._closed:
                return
            self._started = True
            for _ in range(self.workers):
                self._spawn()
        threading.Thread(target=self._watchdog, name="stockade-hash-watchdog", daemon=True).start()

    def _spawn(self) -> None:
        self._live += 1
        threading.Thread(target=self._work, name="stockade-hash", daemon=True).start()

    def _next(self) -> _Job | None:
        """The next job, round robin over containers (called with the lock held)."""
        while self._turn:
            owner = self._turn.popleft()
            o = self._owners.get(owner)
            if o is None or o.running is not None:
                continue
            q = o.execs or o.files
            if not q:
                continue
            job = q.popleft()
            job.started = time.monotonic()
            o.running = job
            return job
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                job = self._next()
                while job is None:
                    if self._closed:
                        self._live -= 1
                        return
                    self._cond.wait()
                    job = self._next()
            result = self._hash(job)
            with self._cond:
                self._inflight.pop((job.owner, job.key), None)
                o = self._owners.get(job.owner)
                if job.abandoned:
                    # Replaced when it was given up on: this thread ends here.
                    self._stuck_threads -= 1
                    if o is not None and o.stuck is job:
                        o.stuck = None
                        self._requeue(job.owner, o)
                    self._cond.notify()
                    return
                self.hashed += 1
                if result.sha256:
                    self._remember(job.key, result)
                elif result.reason:
                    self.skipped[result.reason] += 1
                if result.reason == STALLED:
                    self.stalled_reads += 1
                if o is not None:
                    o.running = None
                    self._requeue(job.owner, o)
                self._cond.notify()
            job.future.set_result(result)

    def _requeue(self, owner: int, o: _Owner) -> None:
        if o.queued() and o.running is None and o.stuck is None:
            if owner not in self._turn:
                self._turn.append(owner)
        elif not o.queued() and o.running is None and o.stuck is None:
            self._owners.pop(owner, None)

    def _hash(self, job: _Job) -> HashResult:
        fd = -1
        try:
            fd = _readable(job.fd, job.key)
            h = hashlib.sha256()
            scan = MultiCallScan()  # classified in the same read, once per binary
            left = job.size
            while left > 0:
                if job.abandoned or time.monotonic() - job.started > self.deadline:
                    raise _Stalled
                chunk = self._read(fd, min(CHUNK, left))
                if not chunk:
                    break  # truncated meanwhile: what was there is what is hashed
                h.update(chunk)
                scan.update(chunk)
                left -= len(chunk)
            return HashResult(h.hexdigest(), job.size, multicall=scan.found)
        except _Stalled:
            return HashResult("", job.size, f"read stalled after {self.deadline:g} s", STALLED)
        except OSError as e:
            return HashResult("", job.size, e.strerror or str(e), UNREADABLE)
        finally:
            for f in {fd, job.fd} - {-1}:
                try:
                    os.close(f)
                except OSError:
                    pass

    # -- the watchdog: deadlines of blocked reads and of queued jobs ---------------------
    def _watchdog(self) -> None:
        tick = max(0.05, min(0.5, self.deadline / 8))
        while True:
            late: list[tuple[_Job, HashResult]] = []
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                for owner, o in list(self._owners.items()):
                    job = o.running
                    if job is not None and now - job.started > self.deadline + tick:
                        # Blocked in the kernel (a checked read would have given up): answer
                        # now, leave the thread to its read, and replace it.
                        job.abandoned = True
                        o.running, o.stuck = None, job
                        self._inflight.pop((owner, job.key), None)
                        self._live -= 1
                        self._stuck_threads += 1
                        self.stalled_reads += 1
                        self.skipped[STALLED] += 1
                        late.append((job, HashResult("", job.size, f"read stalled after {self.deadline:g} s",
                                                     STALLED)))
                        if self._stuck_threads <= self.max_stuck:
                            self._spawn()
                        # The rest of this container's queue is not hashed while its read is stuck.
                        for q in (o.execs, o.files):
                            while q:
                                j = q.popleft()
                                late.append((j, self._drop(j, "an earlier read of this container stalled "
                                                                  f"(over {self.deadline:g} s)")))
                    for q in (o.execs, o.files):
                        while q and now - q[0].queued_at > self.deadline:
                            j = q.popleft()
                            late.append((j, self._drop(j, f"waited over {self.deadline:g} s in the hash queue")))
                    self._requeue(owner, o)
                self._cond.notify_all()
            for job, result in late:
                if not job.future.done():
                    job.future.set_result(result)
            time.sleep(tick)

    def _drop(self, job: _Job, error: str) -> HashResult:
        """A queued job given up on (lock held)."""
        self._inflight.pop((job.owner, job.key), None)
        self.skipped[STALLED] += 1
        try:
            os.close(job.fd)
        except OSError:
            pass
        return HashResult("", job.size, error, STALLED)

    # -- state ----------------------------------------------------------------------------
    def _remember(self, key: FileKey, result: HashResult) -> None:
        self._cache[key] = result
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def queue_depths(self) -> dict[int, int]:
        """Per container (cgroup id): jobs queued or running."""
        with self._cond:
            return {owner: o.queued() + (o.running is not None) for owner, o in self._owners.items()}

    def stats(self) -> dict[str, object]:
        with self._cond:
            depths = {owner: o.queued() + (o.running is not None) for owner, o in self._owners.items()}
            return {"hashed": self.hashed, "cache_hits": self.cache_hits,
                    "skipped": {r: self.skipped[r] for r in REASONS}, "skipped_total": sum(self.skipped.values()),
                    "stalled_reads": self.stalled_reads, "stuck_reads": self._stuck_threads,
                    "workers": self._live, "queued": sum(depths.values()), "depths": depths,
                    "max_bytes": self.max_bytes, "deadline": self.deadline, "max_queue": self.max_queue}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            jobs = [j for o in self._owners.values() for q in (o.execs, o.files) for j in q]
            for o in self._owners.values():
                o.execs.clear()
                o.files.clear()
            self._cond.notify_all()
        for j in jobs:
            try:
                os.close(j.fd)
            except OSError:
                pass
            j.future.cancel()


def _readable(fd: int, key: FileKey) -> int:
    """An fd to read: an O_PATH fd (opened without touching the file) is reopened for
    reading through /proc/self/fd, and must still be the same regular file."""
    if not (_flags(fd) & getattr(os, "O_PATH", 0)):
        return fd
    new = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    st = os.fstat(new)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != key[:2]:
        os.close(new)
        raise OSError(0, "not the file that was checked")
    return new


def _flags(fd: int) -> int:
    import fcntl  # noqa: PLC0415 - Linux only, as the whole sensor side is
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def _done(result: HashResult) -> Future[HashResult]:
    f: Future[HashResult] = Future()
    f.set_result(result)
    return f
