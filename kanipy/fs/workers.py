"""Files created on a few threads while one thread decides what to create (issue 14).

Creating an inode on ext4 costs hundreds of microseconds of kernel CPU, far
more than parsing a tar header or deciding where a file goes, and a system call
releases the GIL: while one thread waits in ``openat`` another can read the
stream or make the next file, on another core. ``FileJobs`` runs the creating
and writing of small regular files on a pool of threads, in a bounded window:
at most ``max_jobs`` files and ``max_bytes`` of their contents in flight, so
memory stays flat however large the archive or tree.

The caller keeps every decision (where a file goes, what it replaces, which
directory is which) on its own thread, and keeps the rules that make it safe:
a path is submitted once its parent is a real directory, and nothing is
removed, replaced or looked up at a path still in flight (``pending``) before
``wait_all``. What a job reports back (``Job.result`` not None: something it
must not touch was in the way) is the caller's to handle after ``wait_all``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

# The default number of threads: the CPUs this process may use, at least 4, at
# most 8. Each thread spends most of its time in the kernel; on the 2-CPU
# development machine 4 threads beat 2 and 8 gave no more (docs/architecture.md,
# "Where a build's time goes"). ``KANIPY_FILE_THREADS`` overrides it and skips
# the probe below (1 turns the pool off): for the tests and for A/B measurements.
_MAX_THREADS = 8
_MIN_THREADS = 4
# A file larger than this is written by the caller's thread, as before.
MAX_FILE = 256 << 10
_MAX_BYTES = 4 << 20
_MAX_JOBS = 128
# The probe: the first files are created on the caller's thread and timed; the
# pool starts only when their creation took over 100 us each on average. On tmpfs
# (about 10 us a file) the pool's hand-offs made the Debian unpack 1.8 times
# slower; on this ext4 (200-900 us a file) it made it 0.8 times as long.
_PROBE_FILES = 32
_SLOW_CREATE_NS = 100_000


def file_threads() -> int:
    """How many threads create files: 1 means none (the caller does it all)."""
    given = os.environ.get("KANIPY_FILE_THREADS")
    if given:
        try:
            return max(1, min(64, int(given)))
        except ValueError:
            pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    if cpus < 2:
        return 1
    return min(_MAX_THREADS, max(_MIN_THREADS, cpus))


class ThreadChoice:
    """Whether the files of one archive or one copy go to file threads, and how many.

    ``open_new`` is ``os.open`` for a file being created; while the choice is
    open it times the call, and after ``_PROBE_FILES`` of them ``use_pool`` says
    whether creation is slow enough here for threads to pay.
    """

    def __init__(self) -> None:
        forced = bool(os.environ.get("KANIPY_FILE_THREADS"))
        self.threads = file_threads()
        self.use_pool = self.threads > 1 and forced
        self._left = _PROBE_FILES if self.threads > 1 and not forced else 0
        self._spent_ns = 0

    def open_new(self, path: str, flags: int, mode: int) -> int:
        if not self._left:
            return os.open(path, flags, mode)
        start = time.perf_counter_ns()
        fd = os.open(path, flags, mode)
        self._spent_ns += time.perf_counter_ns() - start
        self._left -= 1
        if not self._left:
            self.use_pool = self._spent_ns > _PROBE_FILES * _SLOW_CREATE_NS
        return fd


@dataclass
class Job:
    """One file in flight: its host path, the name errors use, what it carries."""

    path: str
    name: str
    nbytes: int
    payload: Any
    future: Future[Any]
    result: Any = None


class FileJobs:
    """A bounded window of file jobs on ``threads`` worker threads.

    ``fail(job, exc)`` makes the exception raised for a job that raised
    OSError (the caller's message, naming the entry; or ``exc`` itself). Not
    thread-safe: one thread submits and waits.
    """

    def __init__(self, threads: int, fail: Callable[[Job, OSError], Exception], *,
                 max_bytes: int = _MAX_BYTES, max_jobs: int = _MAX_JOBS) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="kanipy-files")
        self._fail = fail
        self._max_bytes = max_bytes
        self._max_jobs = max_jobs
        self._window: deque[Job] = deque()
        self._bytes = 0
        # Jobs that came back with something in the way, in submission order;
        # their paths stay pending until the caller has taken them.
        self._reported: list[Job] = []
        # host path -> jobs in flight or reported there.
        self.pending: dict[str, int] = {}

    @property
    def busy(self) -> bool:
        return bool(self._window or self._reported)

    def submit(self, path: str, name: str, nbytes: int, payload: Any,
               work: Callable[..., Any], *args: Any) -> None:
        """Run ``work(*args)`` on a thread; ``path`` is pending until it is done."""
        while self._window and (len(self._window) >= self._max_jobs
                                or self._bytes + nbytes > self._max_bytes):
            self._retire(self._window.popleft())
        future = self._pool.submit(work, *args)
        self._window.append(Job(path, name, nbytes, payload, future))
        self._bytes += nbytes
        self.pending[path] = self.pending.get(path, 0) + 1

    def _retire(self, job: Job) -> None:
        self._bytes -= job.nbytes
        try:
            job.result = job.future.result()
        except OSError as exc:
            self._unpend(job)
            error = self._fail(job, exc)
            if error is exc:
                raise
            raise error from exc
        if job.result is not None:
            self._reported.append(job)
        else:
            self._unpend(job)

    def _unpend(self, job: Job) -> None:
        left = self.pending[job.path] - 1
        if left:
            self.pending[job.path] = left
        else:
            del self.pending[job.path]

    def wait_all(self) -> list[Job]:
        """Wait for every job; the ones that reported back, in order (no longer pending).

        The first job that failed raises, once every job has ended: when this
        returns or raises, no thread is writing.
        """
        error: BaseException | None = None
        while self._window:
            try:
                self._retire(self._window.popleft())
            except BaseException as exc:  # keep waiting: nothing may run on after us
                if error is None:
                    error = exc
        reported, self._reported = self._reported, []
        for job in reported:
            self._unpend(job)
        if error is not None:
            raise error
        return reported

    def close(self) -> None:
        """End the pool: jobs not started are dropped, running ones waited for."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._window.clear()
        self._reported.clear()
        self.pending.clear()
