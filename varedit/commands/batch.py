"""The batch loop every editing command shares: inputs collected and probed (headers only), the task's
checks run on each before a model loads, outputs planned (:mod:`varedit.commands.outputs`), then the
model loaded once and the jobs run, one image or ``--batch-size`` images at a time, each result written
with its sidecar.  A single input that fails stops the command with one line; a batch goes on and
reports every failure at the end (exit status 1).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from .common import ModelSpec
from .outputs import IMAGE_SUFFIXES, plan_outputs, report_failures, write_result

log = logging.getLogger("varedit.commands.edit")

#: builds the task request of one input: (the loaded image, its mask file or None) -> a request
RequestFactory = Callable[[Any, "Path | None"], Any]


def collect_inputs(images: tuple[str, ...]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted)."""
    out: list[Path] = []
    for s in images:
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise click.ClickException(f"no images in folder {p} (looked for {', '.join(IMAGE_SUFFIXES)})")
            out.extend(files)
        else:
            out.append(p)  # a missing or unreadable file is reported per input
    return out


def mask_for(mask: str | None, image: Path) -> Path | None:
    if mask is None:
        return None
    m = Path(mask)
    if m.is_dir():
        for suf in IMAGE_SUFFIXES:
            for cand in (m / f"{image.stem}{suf}", m / f"{image.stem}_mask{suf}"):
                if cand.is_file():
                    return cand
        raise FileNotFoundError(f"no mask for {image.name} in {m} (looked for {image.stem}.png / "
                                f"{image.stem}_mask.png)")
    return m


@dataclass
class Job:
    src: Path
    mask: Path | None
    size: tuple[int, int]        # the input's size
    out_size: tuple[int, int]    # the output's (outpaint and upscale make another)


def prepare_jobs(inputs: list[Path], check: Callable[[Path, Any], tuple[int, int]], mask: str | None,
                 failures: list[str]) -> list[Job]:
    """Probe every input (header only) and run the task's own checks; a single input fails the command
    at once, in a batch the bad ones are reported at the end."""
    from .. import processing as P
    shared_mask: Path | None = None
    if mask is not None and not Path(mask).is_dir():
        P.probe_image(mask, what="mask")  # one mask for all inputs: a bad one fails the command
        shared_mask = Path(mask)
    jobs = []
    for src in inputs:
        try:
            header = P.probe_image(src)
            m = shared_mask or mask_for(mask, src)
            if m is not None and m is not shared_mask:
                P.probe_image(m, what="mask")
            jobs.append(Job(src, m, header.size, check(src, header)))
        except (ValueError, OSError) as e:
            if len(inputs) == 1:
                raise click.ClickException(one_line(e)) from None
            failures.append(f"{src}: {one_line(e)}")
    return jobs


def one_line(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return s or type(e).__name__


class _ScaleBar:
    """A progress bar over scales and windows for one image (the Editor's callback)."""

    def __init__(self, desc: str, enabled: bool):
        self.desc, self.enabled, self.bar = desc, enabled, None

    def __call__(self, step: int, total: int, preview: Any) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=self.desc, unit="scale", file=sys.stderr, leave=False)
        self.bar.n = step + 1
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class PhaseTimer:
    """Wall-clock seconds per phase of one command (``varedit bench`` reads them through the file named by
    ``$VAREDIT_TIMINGS``): validate, load and edit (every job), and within edit the jobs' read, label,
    tokenize, sample, decode, post and write (summed over jobs)."""

    def __init__(self) -> None:
        self.t = time.time()
        self.phases: dict[str, float] = {"start_time": self.t}

    def lap(self, name: str) -> None:
        now = time.time()
        self.add(name, now - self.t)
        self.t = now

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    def write(self) -> None:
        path = os.environ.get("VAREDIT_TIMINGS")
        if path:
            from ..io import save_json
            save_json({**self.phases, "end_time": time.time()}, path)


def shard(jobs: list[Job]) -> list[Job]:
    """Under ``torchrun`` (``RANK``/``WORLD_SIZE``), this process's share: every rank plans the same jobs
    and takes every WORLD_SIZE-th one, so no output is written twice."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        log.info("rank %d of %d: %d of %d inputs", rank, world, len(jobs[rank::world]), len(jobs))
    return jobs[rank::world]


def run_jobs(task: str, jobs: list[Job], plan: Any, spec: ModelSpec, failures: list[str], total: int,
             call: Callable[[Any, Any, Path | None, Callable[..., None]], Any], max_windows: int,
             timer: PhaseTimer, batch_size: int = 1) -> None:
    """Edit every job not skipped (``batch_size`` images at once: their model calls are batched) and
    write each result with its sidecar; failures of a batch run are collected, a single input raises."""
    import threading

    from .. import __version__
    from .. import processing as P
    todo = [j for j in jobs if j.src not in plan.skip]
    for j in jobs:
        if j.src in plan.skip:
            log.info("skip %s (its outputs exist)", j.src)
    if not todo:
        timer.write()
        report_failures(failures, total)
        return
    editor = spec.editor()
    editor.max_windows = max_windows
    timer.lap("load_s")
    lock = threading.Lock()
    from tqdm import tqdm
    from .common import quiet
    hush = quiet()  # read here: the jobs may run on other threads
    bar = tqdm(total=len(todo), desc=task, unit="img", disable=len(todo) < 2 or hush, file=sys.stderr)

    def one(job: Job, ed: Any) -> None:
        scale_bar = _ScaleBar(job.src.name, enabled=len(todo) == 1 and sys.stderr.isatty() and not hush)
        try:
            t0 = time.perf_counter()
            loaded = P.load_image(job.src)
            t1 = time.perf_counter()
            res = call(ed, loaded, job.mask, scale_bar)
            t2 = time.perf_counter()
            written = []
            for i, (t, raw) in enumerate(zip(plan.paths(job.src), res.images)):
                data = P.encode_image(raw, P.output_format(t), loaded.icc_profile)
                side = {**res.settings, "input": str(job.src), "mask": str(job.mask) if job.mask else None,
                        "candidate": i, "score": res.scores[i] if i < len(res.scores) else None,
                        "output": str(t), "varedit_version": __version__}
                write_result(data, t, side)
                written.append(t)
            with lock:
                for k, v in (*res.timings.items(), ("read_s", t1 - t0), ("write_s", time.perf_counter() - t2)):
                    timer.add(k, v)
                for t in written:
                    click.echo(str(t))
        except (ValueError, OSError, RuntimeError, MemoryError) as e:
            if total == 1:
                raise
            with lock:
                failures.append(f"{job.src}: {one_line(e)}")
        finally:
            scale_bar.close()
            with lock:
                bar.update(1)

    workers = min(batch_size, len(todo))
    if workers == 1:
        for job in todo:
            one(job, editor)
    else:  # one thread per image of a batch; their model calls run together (varedit.editing.batching)
        from ..editing.batching import BatchingBackend
        batching = BatchingBackend(editor.backend, workers)
        ed = editor.with_backend(batching)
        queue = iter(todo)

        def worker() -> None:
            with batching.worker():
                while True:
                    with lock:
                        job = next(queue, None)
                    if job is None:
                        return
                    one(job, ed)

        threads = [threading.Thread(target=worker, name=f"varedit-{i}") for i in range(workers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    bar.close()
    timer.lap("edit_s")
    timer.write()
    report_failures(failures, total)


def edit_command(task: str, kw: dict[str, Any], n: int, check: Callable[[Path, Any], tuple[int, int]],
                 call: Callable[..., Any], mask: str | None = None, setup: Callable[[Any], None] | None = None
                 ) -> None:
    """The shape of every editing command: model facts (torch-free), every argument checked, outputs
    planned, then the model loaded and the jobs run.  ``kw["model_info"]`` holds the facts for ``check``."""
    timer = PhaseTimer()
    spec = ModelSpec.pop(kw)
    info = kw["model_info"] = spec.info()
    if setup is not None:
        setup(info)
    inputs = collect_inputs(kw["images"])
    failures: list[str] = []
    jobs = prepare_jobs(inputs, check, mask, failures)
    if not jobs:
        report_failures(failures, len(inputs))
    plan = plan_outputs(kw["out"], jobs, n, inputs, overwrite=kw["overwrite"], skip_existing=kw["skip_existing"],
                        own=shard(jobs))
    timer.lap("validate_s")
    run_jobs(task, shard(jobs), plan, spec, failures, len(inputs), call, kw["max_windows"], timer,
             kw.get("batch_size", 1))


def run_request(request: RequestFactory) -> Callable[[Any, Any, Path | None, Callable[..., None]], Any]:
    """The job call of a command that only translates its options: the input's request, run by the Editor."""
    def call(ed: Any, loaded: Any, mask: Path | None, bar: Callable[..., None]) -> Any:
        return ed.run(request(loaded, mask), callback=bar)
    return call
