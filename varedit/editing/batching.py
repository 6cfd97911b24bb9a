"""Batching independent images: the model calls of tasks running side by side, run together.

A folder run edits many images, each through the ordinary image-level task (:class:`varedit.tasks.Editor`),
so every option, window strategy and post-processing step stays exactly what a single image gets.
:class:`BatchingBackend` wraps a backend for ``workers`` threads that each run such tasks: when every
thread still working is waiting for the model, their pending calls (sampling passes, label scoring)
run as one batch on the wrapped backend and each thread gets its own rows back.  The batches are
deterministic (they form in lock-step, rows ordered by worker), and each request keeps its own random
stream (the backends draw per stream: :func:`varedit.editing.noise.stream_groups`), so an image's
tokens are those it gets when edited alone (up to the float rounding of a larger matrix product).

Only one thread calls the wrapped backend at a time, so a torch model is never used concurrently.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["BatchingBackend"]


@dataclass
class _Request:
    worker: int
    kind: str                         # "run" or "score"
    plans: Sequence[Any]
    labels: Sequence[int] = ()
    opts: Any = None
    stream: Any = None
    result: Any = None
    error: BaseException | None = None
    done: bool = False
    timings: dict[str, float] = field(default_factory=dict)


class BatchingBackend:
    """A backend for ``workers`` threads whose calls are run together (see the module docstring).

    Every worker thread must call :meth:`worker_done` when it has no more work (also after an error), so
    that the others stop waiting for it; use :meth:`worker` as a context manager.
    """

    def __init__(self, backend: Any, workers: int):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.inner = backend
        self._cond = threading.Condition()
        self._active = workers
        self._pending: list[_Request] = []
        self._busy = False
        self._ids: dict[int, int] = {}

    # the Backend interface (varedit.tasks.Backend) ---------------------------------------------------
    name = property(lambda self: self.inner.name)
    image_size = property(lambda self: self.inner.image_size)
    patch_nums = property(lambda self: self.inner.patch_nums)
    downsample = property(lambda self: self.inner.downsample)
    num_classes = property(lambda self: self.inner.num_classes)

    @property
    def can_score_labels(self) -> bool:
        return hasattr(self.inner, "score_labels") and bool(getattr(self.inner, "can_score_labels", True))

    def stream(self, seed: int) -> Any:
        return self.inner.stream(seed)

    def run(self, plans: Sequence[Any], labels: Sequence[int], opts: Any, stream: Any,
            callback: Callable[[int, int, Any], None] | None = None, preview: bool = False,
            timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        req = self._submit(_Request(self._worker_id(), "run", plans, labels, opts, stream))
        if timings is not None:
            for k, v in req.timings.items():
                timings[k] = timings.get(k, 0.0) + v
        if callback is not None:  # the batch ran as a whole: progress arrives when it is done
            for si in range(len(self.patch_nums)):
                callback(si, len(self.patch_nums), None)
        return req.result

    def score_labels(self, plans: Sequence[Any]) -> np.ndarray:
        return self._submit(_Request(self._worker_id(), "score", plans)).result

    # workers ----------------------------------------------------------------------------------------
    def worker(self) -> "_WorkerScope":
        """``with batching.worker(): ...`` around a worker thread's whole job loop."""
        return _WorkerScope(self)

    def worker_done(self) -> None:
        with self._cond:
            self._active -= 1
            self._flush_if_ready()

    def _worker_id(self) -> int:
        with self._cond:
            return self._ids.setdefault(threading.get_ident(), len(self._ids))

    # coalescing -------------------------------------------------------------------------------------
    def _submit(self, req: _Request) -> _Request:
        with self._cond:
            self._pending.append(req)
            self._flush_if_ready()
            while not req.done:
                self._cond.wait()
        if req.error is not None:
            raise req.error
        return req

    def _flush_if_ready(self) -> None:
        """Called with the lock held: when every active worker waits, run their requests (lock released
        meanwhile; the calling thread does the work, the others sleep)."""
        while self._pending and not self._busy and len(self._pending) >= self._active:
            batch = sorted(self._pending, key=lambda r: r.worker)
            self._pending = []
            self._busy = True
            self._cond.release()
            try:
                self._execute(batch)
            finally:
                self._cond.acquire()
                self._busy = False
                for r in batch:
                    r.done = True
                self._cond.notify_all()

    def _execute(self, batch: list[_Request]) -> None:
        groups: dict[Any, list[_Request]] = {}
        for r in batch:  # one inner call per kind of work that can share a batch
            key = ("score",) if r.kind == "score" else ("run", repr(r.opts), {p.closed_loop for p in r.plans}.pop())
            groups.setdefault(key, []).append(r)
        for key, reqs in groups.items():
            try:
                plans = [p for r in reqs for p in r.plans]
                if key[0] == "score":
                    out = self.inner.score_labels(plans)
                    parts = _split(out, [len(r.plans) for r in reqs])
                    for r, part in zip(reqs, parts):
                        r.result = part
                    continue
                labels = [lab for r in reqs for lab in r.labels]
                streams = [r.stream for r in reqs for _ in r.plans]
                timings: dict[str, float] = {}
                img, lp = self.inner.run(plans, labels, reqs[0].opts, streams, timings=timings)
                sizes = [len(r.plans) for r in reqs]
                for r, im, l_ in zip(reqs, _split(img, sizes), _split(lp, sizes)):
                    r.result = (im, l_)
                    r.timings = {k: v * len(r.plans) / len(plans) for k, v in timings.items()}  # its share
            except BaseException as e:  # noqa: BLE001 - handed to every waiting request
                for r in reqs:
                    r.error = e


def _split(a: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return list(np.split(a, np.cumsum(sizes)[:-1]))


class _WorkerScope:
    def __init__(self, b: BatchingBackend):
        self.b = b

    def __enter__(self) -> BatchingBackend:
        return self.b

    def __exit__(self, *exc: Any) -> None:
        self.b.worker_done()
