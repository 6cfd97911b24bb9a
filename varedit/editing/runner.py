"""The model windows of one job, run over any backend (torch-free): every candidate of a masked task
regenerated window by window (later windows see the earlier ones' results as known context), and the
class log-likelihood of the known pixels summed over windows (label inference), the paste-back of
the candidates, the upscale tiles and the batches of generation."""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .. import processing as P
from ..options import SamplingOptions
from .plan import COVERAGE, make_plan

ProgressCallback = Callable[[int, int, "np.ndarray | None"], None]
LABEL_CHUNK = 16   # windows scored at once by label inference (bounded memory on large images)


def batches(n: int, size: int) -> int:
    return -(-n // size)


class Progress:
    """Maps each model pass's per-scale callback onto one running count over the whole job (windows or
    batches of windows, times scales), and collects the backend's phase timings."""

    def __init__(self, callback: ProgressCallback | None, passes: int):
        self.callback, self.passes, self.done = callback, max(1, passes), 0
        self.timings: dict[str, float] = {}

    def step(self) -> ProgressCallback | None:
        """The callback for the next pass."""
        if self.callback is None:
            return None
        k, cb = self.done, self.callback
        self.done += 1

        def one(si: int, sn: int, prev: np.ndarray | None) -> None:
            cb(min(k, self.passes - 1) * sn + si, self.passes * sn, prev)
        return one


def regenerate(backend: Any, loaded: P.LoadedImage, mask: np.ndarray, windows: Sequence[P.Window], label: int, *,
               mode: str, n: int, seed: int, opts: SamplingOptions, keep_scales: int, grow_tokens: int,
               prefill: str, callback: ProgressCallback | None, preview: bool = False, harmonize: bool = True,
               timings: dict[str, float] | None = None, coverage: float = COVERAGE
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """n candidate RGB images (float [0,1], full size) regenerated inside ``mask``, window by window; and
    their scores. ``timings`` receives the backend's phase timings."""
    progress = Progress(callback, len(windows))
    if timings is not None:
        progress.timings = timings
    stream = backend.stream(seed)
    work = [loaded.rgb.copy() for _ in range(n)]
    plan_kw = dict(mode=mode, keep_first=keep_scales, grow_tokens=grow_tokens, prefill=prefill, coverage=coverage)
    remaining = mask.copy()
    scores = np.zeros(n)
    for win in windows:
        if not remaining[win.slices].any():
            continue
        scores += run_window(backend, win, work, remaining, label, opts, stream, plan_kw, harmonize, progress,
                             preview, whole=len(windows) == 1)
        remaining[win.slices] = False
    return work, scores / max(len(windows), 1)


def run_window(backend: Any, win: P.Window, work: list[np.ndarray], mask: np.ndarray, label: int,
               opts: SamplingOptions, stream: Any, plan_kw: dict[str, Any], harmonize: bool, progress: Progress,
               preview: bool, whole: bool) -> np.ndarray:
    """Sample one window for every candidate (one batch) and write it into ``work``: the whole window
    (its feather ring then blends decoded pixels), or only its masked pixels, which later windows see
    as known context.  Returns the candidates' scores."""
    plans, canvases, canvas_mask = [], [], None
    for w in work:
        canvas, canvas_mask = P.extract(win, w, mask)
        canvases.append(canvas)
        plans.append(make_plan(canvas, canvas_mask, backend.patch_nums, backend.downsample, **plan_kw))
    out, lp = backend.run(plans, [label] * len(work), opts, stream, callback=progress.step(),
                          preview=preview, timings=progress.timings)
    region = mask[win.slices]
    for c, w in enumerate(work):
        dec = P.harmonize(out[c], canvases[c], canvas_mask) if harmonize else out[c]
        rgb, _ = P.place(win, dec, w.shape, taper=False)
        if whole:
            w[win.slices] = rgb
        else:
            w[win.slices][region] = rgb[region]
    return np.asarray(lp, np.float64)


def class_log_likelihood(backend: Any, rgb: np.ndarray, mask: np.ndarray, windows: Sequence[P.Window],
                         chunk: int = LABEL_CHUNK) -> np.ndarray:
    """(num_classes,) log-likelihood of the known cells of every window, summed: each window planned as the
    default mode plans it (the hole prefilled from known pixels, so its content is never read) and scored
    by ``backend.score_labels`` in chunks of ``chunk`` windows (bounded memory)."""
    plans = []
    for win in windows:
        canvas, cmask = P.extract(win, rgb, mask)
        if cmask.any():
            plans.append(make_plan(canvas, cmask, backend.patch_nums, backend.downsample))
    ll = np.zeros(backend.num_classes)
    for i in range(0, len(plans), chunk):
        ll = ll + np.asarray(backend.score_labels(plans[i:i + chunk]), np.float64).sum(axis=0)
    return ll


def paste_back(loaded: P.LoadedImage, cands: list[np.ndarray], scores: np.ndarray, mask: np.ndarray, *,
               rank: bool, feather: float, paste_back: bool, output_type: str,
               edited_alpha: np.ndarray | None = None) -> tuple[list[Any], list[float]]:
    """The candidates as outputs of the input's size, mode and bit depth, best first when ``rank``: each
    blended into the input with ``mask`` feathered by ``feather`` pixels (or taken whole without
    ``paste_back``); and their scores in the same order."""
    order = list(np.argsort(-scores, kind="stable")) if rank else list(range(len(cands)))
    weight = P.feather(mask, feather) if paste_back else np.ones(mask.shape, np.float32)
    outs = [P.to_output(cands[i], loaded, as_numpy=output_type == "np", weight=weight, edited_alpha=edited_alpha)
            for i in order]
    return outs, [float(scores[i]) for i in order]


def upscale_tiles(backend: Any, up: np.ndarray, windows: Sequence[P.Window], keep_scales: int, label: int,
                  opts: SamplingOptions, seed: int, window_batch: int, callback: ProgressCallback | None,
                  preview: bool) -> tuple[np.ndarray, dict[str, float]]:
    """The Lanczos-upscaled ``up`` re-sampled tile by tile (``window_batch`` independent tiles at once):
    the first ``keep_scales`` scales teacher-forced from it, the finer ones sampled; the tiles merged.
    Returns the image and the backend's phase timings."""
    H, W = up.shape[:2]
    everything = np.ones((H, W), bool)
    stream = backend.stream(seed)
    progress = Progress(callback, batches(len(windows), window_batch))
    canvases = []
    for b0 in range(0, len(windows), window_batch):
        plans = []
        for win in windows[b0:b0 + window_batch]:
            canvas, cmask = P.extract(win, up, everything)
            plans.append(make_plan(canvas, np.ones_like(cmask), backend.patch_nums, backend.downsample,
                                   mode="default", keep_first=keep_scales, grow_tokens=0))
        out, _ = backend.run(plans, [label] * len(plans), opts, stream, callback=progress.step(),
                             preview=preview, timings=progress.timings)
        canvases.extend(out)
    rgb, _ = P.merge_windows(windows, canvases, (H, W, 3))
    return rgb, progress.timings


def generate_batches(backend: Any, labels: list[int], seed: int, batch_size: int, opts: SamplingOptions,
                     output_type: str, callback: ProgressCallback | None, preview: bool) -> Iterator[list[Any]]:
    """Images of ``labels`` sampled ``batch_size`` at a time with nothing forced (not even the 1x1 scale)."""
    S, n = backend.image_size, len(labels)
    stream = backend.stream(seed)
    hole = np.ones((S, S), bool)
    plan = make_plan(np.zeros((S, S, 3), np.float32), hole, backend.patch_nums, backend.downsample, mode="official")
    plan.keep_maps = [np.zeros_like(k) for k in plan.keep_maps]
    like = P.load_image(np.zeros((S, S, 3), np.uint8))
    starts = range(0, n, batch_size)
    for bi, s in enumerate(starts):
        b = min(batch_size, n - s)
        cb = None
        if callback is not None:
            def cb(si: int, sn: int, prev: np.ndarray | None, _bi: int = bi) -> None:
                callback(_bi * sn + si, len(starts) * sn, prev)
        out, _ = backend.run([plan] * b, labels[s:s + b], opts, stream, callback=cb, preview=preview)
        yield [P.to_output(im, like, as_numpy=output_type == "np") for im in out]
