"""``varedit inpaint|outpaint|edit|upscale``: batch image editing from the command line.

IMAGE arguments are files or folders.  Every argument is checked before a model is loaded (files
readable and decodable from their headers, masks, boxes, classes, option ranges, the canvas each job
makes, output names), so a bad call fails at once with one line.  A batch goes on past an input that
fails while it runs and reports every failure at the end (exit status 1).  Output names and collisions:
:mod:`varedit.commands.outputs`.
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

from .. import requests as R
from ..requests import MAX_UPSCALE, check_scale
from .common import (GroupedCommand, ModelSpec, backend_options, check_class, model_options, opt, pop_sampling,
                     sampling_options)
from .outputs import (IMAGE_SUFFIXES, candidate_names, check_not_stdout, check_outputs, is_image_name,
                      report_failures, write_result)

log = logging.getLogger(__name__)

LABEL_KEYWORDS = ("auto", "infer", "none")


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
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
                raise click.ClickException(_one_line(e)) from None
            failures.append(f"{src}: {_one_line(e)}")
    return jobs


def _one_line(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return s or type(e).__name__


def plan_outputs(out: str, jobs: list[Job], n: int, inputs: list[Path], *, overwrite: bool, skip_existing: bool,
                 own: list[Job] | None = None) -> Any:
    from .. import processing as P
    check_not_stdout(out)
    o = Path(out)
    single_file = is_image_name(o)
    if single_file and len(inputs) > 1:
        raise click.ClickException(f"{len(inputs)} inputs need an output folder, not the file {o}")
    if single_file:
        P.output_format(o)  # a suffix nothing can write is an error now, not after the work
    elif o.exists() and not o.is_dir():
        raise click.ClickException(f"-o {o} is a file; give a folder for the outputs, or a name with an image "
                                   f"suffix ({', '.join(IMAGE_SUFFIXES)}) for one input")
    targets = {j.src: candidate_names(o if single_file else o / f"{j.src.stem}.png", n) for j in jobs}
    protected = [*inputs, *{j.mask for j in jobs if j.mask is not None}]
    return check_outputs(targets, protected, overwrite=overwrite, skip_existing=skip_existing,
                         label={j.src: str(j.src) for j in jobs}, own=None if own is None else {j.src for j in own})


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------
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
                failures.append(f"{job.src}: {_one_line(e)}")
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


# --------------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------------
def output_options(f: Any) -> Any:
    for o in reversed([
        opt("--out", "-o", group="Output", required=True, type=click.Path(),
            help="Output file (one input) or folder; outputs are named after the inputs."),
        opt("--overwrite", group="Output", is_flag=True, help="Replace outputs that exist (they are listed)."),
        opt("--skip-existing", group="Output", is_flag=True, help="Skip inputs whose outputs exist (resume)."),
    ]):
        f = o(f)
    return f


def editing_options(f: Any) -> Any:
    for o in reversed([
        opt("--n", "-n", group="Editing", type=click.IntRange(1, 64), default=1, show_default=True,
            help="Candidates per input (ranked by the model's log-likelihood; at most 64)."),
        opt("--no-rank", group="Editing", is_flag=True, help="Keep candidates in sampling order."),
        opt("--mode", group="Editing", type=click.Choice(["default", "official"]), default="default",
            show_default=True,
            help="default: prefill, coverage keep maps, open loop, harmonize, paste-back; official: the "
                 "notebook method."),
        opt("--strategy", group="Editing", type=click.Choice(["auto", "crop", "resize", "original"]),
            default=None, help="Size strategy: crop (a square around the mask, resized to the model), resize "
                               "(the whole image), original (native-size tiles in order); auto = crop."),
        opt("--keep-scales", group="Editing", type=click.IntRange(min=0), default=0, show_default=True,
            help="Keep the input's first k scales inside the hole (structure kept, detail regenerated)."),
        opt("--feather", group="Editing", type=click.FloatRange(min=0, max=1e4), default=None,
            help="Paste-back feather width in pixels of the output: the edit blends into the picture over "
                 "this band outside the mask; pixels farther away are returned unchanged [default: 4]."),
        opt("--harmonize/--no-harmonize", group="Editing", default=True, show_default=True,
            help="Remove the tokeniser's colour error from the fill (membrane correction)."),
        max_windows_option,
        batch_size_option,
    ]):
        f = o(f)
    return f


max_windows_option = opt("--max-windows", group="Editing", type=click.IntRange(min=1), default=512, show_default=True,
                         help="Refuse jobs that need more model windows (sampling passes) per image.")


batch_size_option = opt("--batch-size", group="Editing", type=click.IntRange(1, 256), default=1, show_default=True,
                        help="Images edited at once (their model calls run as one batch; each image keeps its "
                             "own random stream, so its result does not depend on the batch).")


def _images_argument(f: Any) -> Any:
    return click.argument("images", nargs=-1, required=True, type=click.Path())(f)


def _common(f: Any) -> Any:
    return _images_argument(output_options(editing_options(sampling_options(model_options(backend_options(f))))))


def label_option(f: Any) -> Any:
    return opt("--class", "-c", "class_", group="Task", default="auto", show_default=True,
               help="Class that guides the fill: index or name; auto = the class the model finds most likely for "
                    "the known pixels (models with at most 100 classes, else none); infer = always infer; "
                    "none = unconditional.")(f)


# varedit.processing.FILL_METHODS, written out: importing processing (OpenCV) would slow `varedit --help`
# (a test checks that the two agree)
PREFILL_CHOICES = ("ns", "telea", "edge", "mean", "gray", "blur", "pushpull")


def prefill_option(f: Any) -> Any:
    return opt("--prefill", group="Editing", type=click.Choice(list(PREFILL_CHOICES)), default=None,
               help="How the hole is filled from known pixels before tokenising (default per task: inpaint/edit "
                    "ns = OpenCV Navier-Stokes, outpaint pushpull).")(f)


def parse_box(s: str | None) -> tuple[float, ...] | None:
    if s is None:
        return None
    parts = [p.strip() for p in s.split(",")]
    try:
        vals = tuple(float(p) if ("." in p or "e" in p.lower()) else int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"box must be x0,y0,x1,y1 numbers, got {s!r}", param_hint="--box") from None
    if len(vals) != 4:
        raise click.BadParameter(f"box needs 4 numbers x0,y0,x1,y1, got {len(vals)}", param_hint="--box")
    return vals


def parse_amount(value: str | None, name: str) -> int | float:
    """An outpaint amount, read as every front-end reads it (:func:`varedit.processing.outpaint_amount`):
    whole pixels (``64``), a ratio of the side below 1 (``0.5``) or a percentage (``50%``, ``350%``)."""
    if value is None:
        return 0
    from ..processing import outpaint_amount
    try:
        return outpaint_amount(value, name)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=f"--{name}") from None


def _masked(kw: dict[str, Any], sampling: dict[str, Any]) -> dict[str, Any]:
    """The options of a masked request (:mod:`varedit.requests`) from the command's options."""
    return dict(n=kw["n"], rank=not kw["no_rank"], mode=kw["mode"], strategy=kw["strategy"],
                keep_scales=kw["keep_scales"], feather=kw["feather"], harmonize=kw["harmonize"], seed=kw["seed"],
                prefill=kw["prefill"], output_type="np", sampling=R.Sampling(**sampling))


def _scale_option(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """``--scale`` with the limit and message of every front-end (:func:`varedit.requests.check_scale`)."""
    try:
        return check_scale(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _say_windows(src: Path, windows: list[Any], size: int) -> None:
    """A large job says what it will take before it starts."""
    if len(windows) > 8:
        click.echo(f"{src.name}: {len(windows)} model windows of {size} px", err=True)


def _keep_scales_check(keep: int | None) -> Callable[[Any], None]:
    def setup(info: Any) -> None:
        if keep is not None and info.num_scales is not None and keep > info.num_scales:
            raise click.BadParameter(f"{keep} is more than the model's {info.num_scales} scales",
                                     param_hint="--keep-scales")
    return setup


def _class_check(spec: str, keywords: tuple[str, ...], then: Callable[[Any], None]) -> Callable[[Any], Any]:
    def setup(info: Any) -> None:
        check_class(spec, info, keywords)  # an unknown class fails now, before the model loads
        then(info)
    return setup


def register(main: click.Group) -> None:

    @main.command(cls=GroupedCommand)
    @opt("--mask", group="Input", type=click.Path(), default=None,
         help="Mask file for all inputs, or a folder of masks paired by file stem (white = regenerate).")
    @opt("--box", group="Input", type=str, default=None, help="Region x0,y0,x1,y1 (pixels, or fractions 0-1).")
    @opt("--invert", group="Input", is_flag=True, help="Invert the mask (black = regenerate).")
    @label_option
    @prefill_option
    @_common
    def inpaint(**kw: Any) -> None:
        """Regenerate the masked part of each image (white = regenerate; no mask: the transparent pixels)."""
        s = pop_sampling(kw)
        box, n = parse_box(kw["box"]), kw["n"]
        if box is not None and kw["mask"] is not None:
            raise click.UsageError("give --mask or --box, not both")

        def check(src: Path, header: Any) -> tuple[int, int]:
            from ..tasks import check_candidates
            if box is not None:
                from ..processing import box_pixels
                box_pixels(header.size, box)
            elif kw["mask"] is None and not header.has_alpha:
                raise ValueError("no mask: give --mask, --box, or an image with transparent pixels to fill")
            check_candidates(n, header.size)
            return header.size

        def call(ed: Any, loaded: Any, mask: Path | None, bar: Any) -> Any:
            return ed.run(R.InpaintRequest(image=loaded, mask=None if mask is None else str(mask), box=box,
                                           invert=kw["invert"], label=kw["class_"], **_masked(kw, s)), callback=bar)

        edit_command("inpaint", kw, n, check, call, kw["mask"],
                     _class_check(kw["class_"], LABEL_KEYWORDS, _keep_scales_check(kw["keep_scales"])))

    @main.command(cls=GroupedCommand)
    @opt("--left", group="Task", default=None, help="Pixels (64), a ratio of the width below 1 (0.5), or a "
                                                    "percentage (150%).")
    @opt("--right", group="Task", default=None, help="Pixels, ratio of the width below 1, or percentage.")
    @opt("--top", group="Task", default=None, help="Pixels, ratio of the height below 1, or percentage.")
    @opt("--bottom", group="Task", default=None, help="Pixels, ratio of the height below 1, or percentage.")
    @opt("--fill", group="Task", type=click.Choice(["blur", "edge", "mean", "gray"]), default="blur",
         show_default=True, help="What fills the new canvas before encoding.")
    @label_option
    @prefill_option
    @_common
    def outpaint(**kw: Any) -> None:
        """Extend each image and fill the new area."""
        s = pop_sampling(kw)
        amounts = {k: parse_amount(kw[k], k) for k in ("left", "right", "top", "bottom")}
        if not any(amounts.values()):
            raise click.UsageError("nothing to extend: give --left, --right, --top and/or --bottom")
        n = kw["n"]

        def check(src: Path, header: Any) -> tuple[int, int]:
            from ..processing import extended_size
            from ..tasks import check_candidates, plan_windows
            size = extended_size(header.size, **amounts)
            check_candidates(n, size)
            S = kw["model_info"].image_size
            if S:  # the windows this canvas needs, counted now rather than after the model loaded
                import numpy as np

                from ..processing import outpaint_pads
                w, h = header.size
                l, _, t, _ = outpaint_pads(header.size, **amounts)
                new_area = np.ones((size[1], size[0]), bool)
                new_area[t:t + h, l:l + w] = False
                _say_windows(src, plan_windows(kw["strategy"] or "auto", new_area, size, S, kw["max_windows"]), S)
            return size

        def call(ed: Any, loaded: Any, mask: Path | None, bar: Any) -> Any:
            return ed.run(R.OutpaintRequest(image=loaded, **amounts, fill=kw["fill"], label=kw["class_"],
                                            **_masked(kw, s)), callback=bar)

        edit_command("outpaint", kw, n, check, call, None,
                     _class_check(kw["class_"], LABEL_KEYWORDS, _keep_scales_check(kw["keep_scales"])))

    @main.command(cls=GroupedCommand)
    @opt("--box", group="Task", type=str, default=None,
         help="Region x0,y0,x1,y1 (pixels, or fractions 0-1); or give --mask.")
    @opt("--mask", group="Task", type=click.Path(), default=None,
         help="Or the region as a mask file for all inputs, or a folder of masks paired by file stem "
              "(white = redraw).")
    @opt("--invert", group="Task", is_flag=True, help="Invert the mask (black = redraw).")
    @opt("--class", "-c", "class_", group="Task", required=True, help="Target class index or name.")
    @prefill_option
    @_common
    def edit(**kw: Any) -> None:
        """Class-conditional edit: redraw a box (or a masked region) as another class."""
        s = pop_sampling(kw)
        box, n = parse_box(kw["box"]), kw["n"]
        if (box is None) == (kw["mask"] is None):
            raise click.UsageError("give the region to redraw: --box or --mask (one of them)")

        def check(src: Path, header: Any) -> tuple[int, int]:
            from ..processing import box_pixels
            from ..tasks import check_candidates
            if box is not None:
                box_pixels(header.size, box)
            check_candidates(n, header.size)
            return header.size

        def call(ed: Any, loaded: Any, mask: Path | None, bar: Any) -> Any:
            return ed.run(R.EditRequest(image=loaded, box=box, class_=kw["class_"],
                                        mask=None if mask is None else str(mask), invert=kw["invert"],
                                        **_masked(kw, s)), callback=bar)

        edit_command("edit", kw, n, check, call, kw["mask"],
                     _class_check(kw["class_"], (), _keep_scales_check(kw["keep_scales"])))

    @main.command(cls=GroupedCommand)
    @opt("--scale", group="Task", type=float, default=2.0, callback=_scale_option, show_default=True,
         help=f"Output size over input size (above 0, at most {MAX_UPSCALE:g}).")
    @opt("--keep-scales", group="Task", type=click.IntRange(min=0), default=None,
         help="Scales forced from the input (default: all but the last third; 0 samples every scale).")
    @opt("--no-back-project", group="Task", is_flag=True, help="Do not re-impose the input's low frequencies.")
    @max_windows_option
    @batch_size_option
    @_images_argument
    @output_options
    @sampling_options
    @model_options
    @backend_options
    def upscale(**kw: Any) -> None:
        """Zero-shot restoration/upscaling: coarse scales from the input, fine scales sampled."""
        s = pop_sampling(kw)

        def check(src: Path, header: Any) -> tuple[int, int]:
            from ..tasks import plan_windows, upscaled_size
            size = upscaled_size(header.size, kw["scale"])
            S = kw["model_info"].image_size
            if S:
                _say_windows(src, plan_windows("original", None, size, S, kw["max_windows"]), S)
            return size

        def call(ed: Any, loaded: Any, mask: Path | None, bar: Any) -> Any:
            return ed.run(R.UpscaleRequest(image=loaded, scale=kw["scale"], keep_scales=kw["keep_scales"],
                                           seed=kw["seed"], back_project=not kw["no_back_project"], output_type="np",
                                           sampling=R.Sampling(**s)), callback=bar)

        edit_command("upscale", kw, 1, check, call, None, _keep_scales_check(kw["keep_scales"]))
