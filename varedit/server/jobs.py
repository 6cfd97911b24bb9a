"""One worker thread that owns the loaded model, and the bounded queue in front of it.

Sampling is not re-entrant across threads for one model, so every call into the editor runs on the
worker thread, one job at a time. Requests wait in a queue of at most ``queue_size`` jobs (the running
one not counted); a full queue refuses at once (:class:`QueueFull`, served as 503 with Retry-After).
Each job reports to the asyncio loop of the request that submitted it: ``start``, ``progress`` (after
every scale) and ``done``. A job is cancelled by setting its ``cancel`` event: before it starts it is
skipped, while it runs it stops at the next scale (:class:`JobCancelled` raised from the progress
callback).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Progress = Callable[[int, int, "np.ndarray | None"], None]
JobFn = Callable[[Any, Progress], Any]  # (editor, progress) -> result, run on the worker thread


class QueueFull(Exception):
    """The queue holds ``queue_size`` waiting jobs; ``retry_after`` is an estimate in seconds."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"the server is busy: {waiting} requests are waiting; retry in about {retry_after} s")
        self.retry_after = retry_after


class JobCancelled(Exception):
    """Raised inside a job (from its progress callback) once it was cancelled."""


@dataclass
class Event:
    kind: str                     # start | progress | done
    step: int = 0
    total: int = 0
    preview: Any = None           # whatever ``encode_preview`` made of the decoded canvas
    result: Any = None
    error: BaseException | None = None


@dataclass
class Job:
    task: str
    fn: JobFn
    loop: asyncio.AbstractEventLoop
    want_preview: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    cancel: threading.Event = field(default_factory=threading.Event)
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None

    def post(self, ev: Event) -> None:
        """Hand an event to the submitting request's loop (thread-safe; dropped if that loop closed)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, ev)
        except RuntimeError:
            self.cancel.set()

    @property
    def done(self) -> bool:
        return self.finished is not None


class Worker:
    """The model's thread and its bounded queue. ``editor`` is handed to every job function."""

    def __init__(self, editor: Any, queue_size: int,
                 encode_preview: Callable[[np.ndarray], Any] | None = None):
        self.editor = editor
        self.queue_size = queue_size
        self.encode_preview = encode_preview
        self._waiting: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._running: Job | None = None
        self._closed = False
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self.peak_waiting = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.rejected = 0
        self._thread = threading.Thread(target=self._loop, name="varedit-worker", daemon=True)
        self._thread.start()

    # -- submission (event loop side) -----------------------------------------------------------------
    def submit(self, task: str, fn: JobFn, *, want_preview: bool = False) -> Job:
        """Queue a job for the running event loop's request, or raise :class:`QueueFull`."""
        job = Job(task, fn, asyncio.get_running_loop(), want_preview)
        with self._cond:
            if self._closed:
                raise QueueFull(len(self._waiting), 5)
            if self._running is None:
                # idle: the job is the worker's at once, under this lock, so it never counts as waiting
                # (were it queued until the worker thread wakes up, a second request arriving before that
                # thread gets the CPU would see it as waiting and be counted, or refused, against the limit)
                self._running = job
            else:
                if len(self._waiting) >= self.queue_size:
                    self.rejected += 1
                    raise QueueFull(len(self._waiting), self.retry_after())
                self._waiting.append(job)
                self.peak_waiting = max(self.peak_waiting, len(self._waiting))
            self._cond.notify()
        return job

    def position(self, job: Job) -> int:
        """How many jobs run or wait ahead of ``job`` (0: it runs)."""
        with self._cond:
            if self._running is job:
                return 0
            try:
                return self._waiting.index(job) + (1 if self._running is not None else 0)
            except ValueError:
                return 0

    def cancel(self, job: Job) -> None:
        """Abandon ``job``: a waiting job leaves the queue at once (freeing its place), a running one stops
        at its next scale."""
        job.cancel.set()
        with self._cond:
            try:
                self._waiting.remove(job)
            except ValueError:
                return
            self.cancelled += 1
            job.finished = time.monotonic()

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: mean recent job time times the jobs ahead."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return max(1, math.ceil(mean * (len(self._waiting) + 1)))

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"waiting": len(self._waiting), "running": self._running is not None,
                    "queue_size": self.queue_size, "peak_waiting": self.peak_waiting,
                    "completed": self.completed, "failed": self.failed, "cancelled": self.cancelled,
                    "rejected": self.rejected}

    def close(self, timeout: float = 5.0) -> None:
        """Cancel everything and stop the thread (the running job stops at its next scale)."""
        with self._cond:
            self._closed = True
            for j in self._waiting:
                j.cancel.set()
            if self._running is not None:
                self._running.cancel.set()
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the worker thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        # ``_running`` is the job this thread owns: set by ``submit`` when idle, or here, under the lock,
        # from the head of the queue the moment the previous job ends, so ``_waiting`` is never non-empty
        # while ``_running`` is None and the queue's count never includes a job that is about to run.
        while True:
            with self._cond:
                while self._running is None and not self._closed:
                    self._cond.wait()
                job = self._running
            if job is None:  # closed, and nothing left
                return
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running = self._waiting.popleft() if self._waiting else None

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            job.finished = time.monotonic()
            with self._cond:
                self.cancelled += 1
            job.post(Event("done", error=JobCancelled("cancelled before it started")))
            return
        job.started = time.monotonic()
        job.post(Event("start"))

        def progress(step: int, total: int, preview: np.ndarray | None) -> None:
            if job.cancel.is_set():
                raise JobCancelled("cancelled")
            enc = None
            if job.want_preview and preview is not None and self.encode_preview is not None:
                enc = self.encode_preview(preview)
            job.post(Event("progress", step=step + 1, total=total, preview=enc))

        try:
            result = job.fn(self.editor, progress)
        except BaseException as e:  # every failure goes back to its request
            job.finished = time.monotonic()
            with self._cond:
                if isinstance(e, JobCancelled):
                    self.cancelled += 1
                else:
                    self.failed += 1
            if not isinstance(e, (JobCancelled, ValueError, TypeError)):
                log.error("job %s (%s) failed", job.id, job.task, exc_info=e)
            job.post(Event("done", error=e))
            if not isinstance(e, Exception):
                raise
            return
        job.finished = time.monotonic()
        with self._cond:
            self.completed += 1
            self._durations.append(job.finished - job.started)
        job.post(Event("done", result=result))
