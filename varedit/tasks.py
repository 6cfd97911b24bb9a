"""Image-level tasks over any backend (torch-free): inpaint, outpaint, edit, upscale, generate.

Data flow: image + mask -> normalise (white = regenerate; alpha; boxes) -> size strategy (crop,
resize, original/tiled) -> per-window canvas plan (prefill, keep maps) -> backend (tokenise, masked
next-scale sampling, decode) -> paste-back with a feathered mask -> image of the input's size, mode
and bit depth.  Every pixel farther than ``feather`` pixels from the mask (default 4) is bit-identical to the input.

Size strategies (the model always runs at its native size S):
``crop``      a square around the mask's bounding box with context (default for inpaint and edit);
``resize``    the whole image letterboxed into one canvas (default for upscale of small images);
``original``  native-resolution tiles of S with 50% overlap, processed in order, each seeing the
              previous tiles' results (sliding windows).
``auto``      crop (outpaint's default): ``original``'s tiles each see too little context and make a
              patchwork, and take several times longer (measured: docs/editing.md, "Sizes").
"""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from . import processing as P
from .classes import resolve_class
from .editing.plan import COVERAGE, MODES, CanvasPlan, make_plan
from .editing.runner import LABEL_CHUNK, Progress, ProgressCallback, batches, class_log_likelihood, regenerate  # noqa: F401
from .options import SamplingOptions
from .requests import (MAX_CANDIDATE_PIXELS, MAX_CANDIDATES, SETTINGS_TOP_CLASSES, EditRequest,  # noqa: F401
                       GenerateRequest, InferLabelRequest, Request, UpscaleRequest, check_candidates, check_scale,
                       top_classes)
from .processing.blending import DEFAULT_FEATHER_PX
from .processing.upscale import back_project as back_project_to
from .processing.upscale import lanczos, resized_like
from .validation import check_class_names, check_int, check_number, check_seed

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "crop", "resize", "original")
LABEL_KEYWORDS = ("auto", "infer", "none")  # besides a class index or name
# the official notebook's guidance for class-conditional editing; also where the demo model's fills
# with an inferred label measured best (a stronger guidance over-commits to a guess: docs/quality.md)
EDIT_CFG = 3.0
# the hole's prefill before tokenising (processing.prefill_hole), per task: Navier-Stokes inpainting
# continues what a hole cuts through, so the coarse tokens see a plausible layout; an outpainted area
# has known pixels on one side only, where it drags streaks across, and the push-pull membrane measured
# better there (docs/quality.md, "Why each default")
INPAINT_PREFILL = "ns"
OUTPAINT_PREFILL = "pushpull"
# the keep-map coverage (editing.plan.make_plan) per task: a fill keeps every latent cell that is mostly
# known (0.25: a cell is regenerated when more than three quarters of it is hole); a class edit asks for
# a new object in the box, so every cell the box touches is regenerated (1.0) and the coarse scales can
# lay it out: the asked class is then read about twice as often (docs/quality.md, "Class edits")
EDIT_COVERAGE = 1.0
TASK_COVERAGE = {"inpaint": COVERAGE, "outpaint": COVERAGE, "edit": EDIT_COVERAGE}
# limits on what one call may ask for (candidates, and candidates x pixels: each candidate is a full-size
# float working copy) are the requests' (varedit.requests), the same for every front-end
MAX_WINDOWS = 512  # model windows (sampling passes) per image: outpaint and upscale tiles
WINDOW_BATCH = 8   # independent windows (upscale tiles) sampled in one batch


class Backend(Protocol):
    name: str
    image_size: int
    patch_nums: tuple[int, ...]
    downsample: int
    num_classes: int

    def stream(self, seed: int) -> Any: ...

    def run(self, plans: Sequence[CanvasPlan], labels: Sequence[int], opts: SamplingOptions, stream: Any,
            callback: ProgressCallback | None = None, preview: bool = False,
            timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    # optional: ``score_labels(plans) -> (B, num_classes)`` log-likelihood of the known cells per class
    # (and ``can_score_labels``, when that depends on the model); backends without it serve
    # ``label="auto"`` unconditionally


@dataclass
class LabelGuess:
    """The class the model finds most likely for the known pixels (``Editor.infer_label``)."""

    label: int
    posterior: np.ndarray          # (num_classes,), softmax of the summed log-likelihoods (overconfident)
    log_likelihood: np.ndarray     # (num_classes,)


@dataclass
class EditResult:
    """``images``: outputs (PIL, or numpy with output_type='np'), best candidate first when ranked."""

    images: list[Any]
    seed: int
    settings: dict[str, Any]
    scores: list[float] = field(default_factory=list)   # mean log-likelihood of the regenerated tokens
    mask: np.ndarray | None = None                      # the regenerated region, image coordinates
    timings: dict[str, float] = field(default_factory=dict)  # seconds: label, tokenize, sample, decode, post

    @property
    def image(self) -> Any:
        return self.images[0]


def draw_seed(seed: int | None) -> int:
    """The given seed (an int in [0, 2**63 - 1]), or a fresh one, reported in the settings."""
    seed = check_seed(seed)
    return seed if seed is not None else secrets.randbelow(2 ** 31)


def check_output_type(output_type: str) -> None:
    if output_type not in ("pil", "np"):
        raise ValueError(f"output_type must be 'pil' or 'np', not {output_type!r}")


class Editor:
    """The tasks, written once for every backend."""

    def __init__(self, backend: Backend, *, class_names: Sequence[Sequence[str]] | None = None,
                 defaults: SamplingOptions | None = None, model_name: str = "custom",
                 edit_defaults: SamplingOptions | None = None, auto_label_max_classes: int = 100,
                 max_windows: int | None = MAX_WINDOWS, window_batch: int = WINDOW_BATCH):
        """``defaults``: sampling settings of generation (the model's); ``edit_defaults``: of the masked
        tasks (inpaint, outpaint, edit), by default ``defaults`` with cfg 3.  ``label="auto"`` infers the
        class from the known pixels when the model has at most ``auto_label_max_classes`` classes (one
        teacher-forced pass per class; ``label="infer"`` always does).  ``max_windows`` bounds the model
        windows (sampling passes) one image may need (None: no bound); ``window_batch`` how many independent
        windows (upscale tiles) run in one batch (recorded in the settings: the random stream depends on it)."""
        self.backend = backend
        self.class_names = check_class_names(class_names or None, backend.num_classes, "class names")
        self.defaults = defaults or SamplingOptions()
        self.edit_defaults = edit_defaults or self.defaults.replace(cfg=EDIT_CFG)
        self.model_name = model_name
        self.auto_label_max_classes = auto_label_max_classes
        self.max_windows = max_windows
        self.window_batch = check_int(window_batch, "window_batch", lo=1)

    def with_backend(self, backend: Backend) -> "Editor":
        """The same tasks and settings over another backend (e.g. a batching wrapper of this one)."""
        return Editor(backend, class_names=self.class_names, defaults=self.defaults, model_name=self.model_name,
                      edit_defaults=self.edit_defaults, auto_label_max_classes=self.auto_label_max_classes,
                      max_windows=self.max_windows, window_batch=self.window_batch)

    @property
    def image_size(self) -> int:
        return self.backend.image_size

    @property
    def null_class(self) -> int:
        return self.backend.num_classes

    def class_index(self, spec: int | str) -> int:
        return resolve_class(spec, self.class_names, self.backend.num_classes)

    def class_name(self, i: int) -> str:
        return self.class_names[i][0] if self.class_names and 0 <= i < len(self.class_names) else str(i)

    # ------------------------------------------------------------------------------------------------
    def _windows(self, strategy: str, mask: np.ndarray, wh: tuple[int, int]) -> list[P.Window]:
        return plan_windows(strategy, mask, wh, self.image_size, self.max_windows)

    def _regenerate(self, loaded: P.LoadedImage, mask: np.ndarray, label: int, *, strategy: str,
                    **kw: Any) -> tuple[list[np.ndarray], np.ndarray]:
        """n candidate RGB images (float [0,1], full size) regenerated inside ``mask``; and their scores
        (:func:`varedit.editing.runner.regenerate` over this strategy's windows)."""
        return regenerate(self.backend, loaded, mask, self._windows(strategy, mask, loaded.size), label, **kw)

    def _finish(self, loaded: P.LoadedImage, cands: list[np.ndarray], scores: np.ndarray, mask: np.ndarray, *,
                rank: bool, feather: float | None, paste_back: bool, output_type: str,
                edited_alpha: np.ndarray | None = None) -> tuple[list[Any], list[float]]:
        order = list(np.argsort(-scores, kind="stable")) if rank else list(range(len(cands)))
        feather = self.feather_px(loaded.size) if feather is None else feather
        weight = P.feather(mask, feather) if paste_back else np.ones(mask.shape, np.float32)
        outs = [P.to_output(cands[i], loaded, as_numpy=output_type == "np", weight=weight, edited_alpha=edited_alpha)
                for i in order]
        return outs, [float(scores[i]) for i in order]

    def feather_px(self, wh: tuple[int, int]) -> float:
        """Default paste-back feather for an image of size ``wh``, in its own pixels: ``DEFAULT_FEATHER_PX``
        (4 px) whatever the size, measured on whole photos (a wider one, such as half a token, blurs the
        sharp surroundings into the resized fill)."""
        return DEFAULT_FEATHER_PX

    def half_token_px(self, wh: tuple[int, int]) -> float:
        """Half a token in the pixels of an image of size ``wh`` (a token covers more pixels when the image
        is larger than the canvas)."""
        return 0.5 * self.backend.downsample * max(1.0, max(wh) / self.image_size)

    def _settings(self, task: str, **kw: Any) -> dict[str, Any]:
        # a reduced precision (bf16 / fp16 autocast, e.g. picked by --precision auto) is part of what made the image
        prec = getattr(self.backend, "precision", None)
        extra = {"precision": prec} if prec not in (None, "fp32") else {}
        return {"task": task, "model": self.model_name, "backend": self.backend.name, **extra, **kw}

    # ------------------------------------------------------------------------------------------------
    def run(self, request: Request, *, callback: ProgressCallback | None = None, preview: bool = False
            ) -> "EditResult | LabelGuess":
        """Run a task request (:mod:`varedit.requests`): checked first against this model's scales and the
        image's size (every limit and unit rule of the request type), then the task.  ``infer-label``
        returns a :class:`LabelGuess`, every other task an :class:`EditResult`."""
        image = getattr(request, "image", None)
        loaded = None
        if image is not None:
            loaded = image if isinstance(image, P.LoadedImage) else P.load_image(image)
        request.validate(len(self.backend.patch_nums), None if loaded is None else loaded.size)
        if isinstance(request, InferLabelRequest):
            return self.infer_label(loaded, **request.kwargs())
        progress = dict(callback=callback, preview=preview)
        if isinstance(request, GenerateRequest):
            return self.generate(request.class_, **request.kwargs(), **progress)
        if loaded is None:
            raise ValueError(f"{request.task}: no image")
        if isinstance(request, UpscaleRequest):
            return self.upscale(loaded, **request.kwargs(), **progress)
        if isinstance(request, EditRequest):
            kw = request.kwargs()
            return self.edit(loaded, kw.pop("box"), request.class_, **kw, **progress)
        return getattr(self, request.task)(loaded, **request.kwargs(), **progress)

    def inpaint(self, image: Any, mask: Any = None, *, box: Sequence[float] | None = None, invert: bool = False,
                threshold: float = 0.5, mask_mismatch: str = "resize", label: int | str | None = "auto",
                strategy: str = "crop", mode: str = "default", n: int = 1, rank: bool = True,
                seed: int | None = None, keep_scales: int = 0, grow_tokens: int = 0, feather: float | None = None,
                prefill: str = INPAINT_PREFILL, harmonize: bool = True, paste_back: bool = True,
                coverage: float | None = None, output_type: str = "pil",
                callback: ProgressCallback | None = None, preview: bool = False, _task: str = "inpaint",
                **sampling: Any) -> EditResult:
        """Regenerate the masked region (white / 255 / True = regenerate).

        The mask comes from ``mask`` (image, array or path; alpha channels honoured), a ``box``
        (x0, y0, x1, y1: pixels as ints, fractions as floats) or, when both are None, from the
        image's own transparency.  ``callback(step, total, preview)`` is called after every scale of
        every window; with ``preview=True`` it gets the decoded canvas so far ((n, S, S, 3) in [0, 1]:
        coarse to fine), at the cost of one decode per scale.  ``keep_scales`` keeps the input's first k scales inside the hole
        (structure kept, detail regenerated).  ``label``: a class (index or name), ``"auto"`` (default:
        the class the model finds most likely for the known pixels, see :meth:`infer_label`, when the
        model has at most ``auto_label_max_classes`` classes, else unconditional), ``"infer"`` (always
        infer) or None / ``"none"`` (unconditional, the null class).
        ``harmonize`` removes the tokeniser's colour error from the fill (:func:`processing.harmonize`).
        ``prefill``: how the hole is filled from known pixels before tokenising (a
        :func:`processing.prefill_hole` method; default Navier-Stokes, ``INPAINT_PREFILL``).
        ``coverage`` (default mode): a latent cell is regenerated when more than ``1 - coverage`` of it
        is hole, in (0, 1]; None = the task's measured default (``TASK_COVERAGE``: 0.25 for fills, 1 for
        class edits, where every cell the box touches is regenerated).
        """
        check_output_type(output_type)
        loaded = image if isinstance(image, P.LoadedImage) else P.load_image(image)
        m = self._mask(loaded, mask, box, invert, threshold, mask_mismatch)
        where = {"box": list(box)} if box is not None else {}
        return self._edit_masked(loaded, m, label=label, strategy=strategy, mode=mode, n=n, rank=rank, seed=seed,
                                 keep_scales=keep_scales, grow_tokens=grow_tokens, feather=feather, prefill=prefill,
                                 harmonize=harmonize, paste_back=paste_back, coverage=coverage, output_type=output_type,
                                 callback=callback, preview=preview, task=_task,
                                 extra={**where, "invert": invert, "threshold": threshold}, **sampling)

    def infer_label(self, image: Any, mask: Any = None, *, box: Sequence[float] | None = None,
                    strategy: str = "crop") -> LabelGuess:
        """The class the model finds most likely for what is *outside* the mask.

        Every window of ``strategy`` is planned as the default mode plans it (hole prefilled from known
        pixels, so the hole's content is never read), and the log-likelihood of its known token cells is
        summed per class (:func:`varedit.editing.sampler.class_log_likelihood`, uniform prior).  The
        demo model's fills guided by this label beat its unconditional ones (README, measured quality).
        """
        loaded = image if isinstance(image, P.LoadedImage) else P.load_image(image)
        m = self._mask(loaded, mask, box, False, 0.5, "resize")
        return self._infer(loaded, m, strategy)

    def can_infer_label(self) -> bool:
        """Whether this backend (and, for exports, this export) can score classes for ``label="auto"``."""
        return hasattr(self.backend, "score_labels") and bool(getattr(self.backend, "can_score_labels", True))

    def _infer(self, loaded: P.LoadedImage, m: np.ndarray, strategy: str) -> LabelGuess:
        if not self.can_infer_label():
            raise ValueError(f"the {self.backend.name} backend cannot score classes: give a class, or label none")
        ll = class_log_likelihood(self.backend, loaded.rgb, m, self._windows(strategy, m, loaded.size))
        post = np.exp(ll - ll.max())
        return LabelGuess(int(np.argmax(ll)), post / post.sum(), ll)

    def check_label(self, label: int | str | None) -> int | str:
        """The class index of a class (index or name; an unknown one is a ``ValueError``), else the
        keyword (``auto``, ``infer``, ``none``; None means ``none``)."""
        if label is None:
            return "none"
        if isinstance(label, bool) or not isinstance(label, (int, str, np.integer)):
            raise TypeError(f"label must be a class index or name, 'auto', 'infer' or 'none', not "
                            f"{type(label).__name__} {label!r}")
        label = int(label) if isinstance(label, np.integer) else label
        key = label.strip().lower() if isinstance(label, str) else label
        return key if key in LABEL_KEYWORDS else self.class_index(label)

    def _resolve_label(self, label: int | str | None, loaded: P.LoadedImage, m: np.ndarray, strategy: str
                       ) -> tuple[int, dict[str, Any]]:
        key = self.check_label(label)
        if not isinstance(key, str):
            return key, {"label_source": "given"}
        if key == "none":
            return self.null_class, {"label_source": "unconditional"}
        if key == "auto":
            if not self.can_infer_label():
                log.info("label auto: the %s backend cannot score classes; filling unconditionally", self.backend.name)
                return self.null_class, {"label_source": "unconditional (backend cannot infer)"}
            if self.backend.num_classes > self.auto_label_max_classes:
                log.info("label auto: %d classes is more than %d passes; filling unconditionally "
                         "(label='infer' infers anyway)", self.backend.num_classes, self.auto_label_max_classes)
                return self.null_class, {"label_source": "unconditional (too many classes to infer)"}
        if not m.any():
            return self.null_class, {"label_source": "unconditional (empty mask)"}
        if m.all():
            return self.null_class, {"label_source": "unconditional (nothing known: the whole image is masked)"}
        g = self._infer(loaded, m, strategy)
        log.info("inferred class %s (p %.2f)", self.class_name(g.label), g.posterior[g.label])
        return g.label, {"label_source": "inferred", "label_posterior": self.top_classes(g, SETTINGS_TOP_CLASSES)}

    def top_classes(self, guess: LabelGuess, k: int) -> list[list[Any]]:
        """The ``k`` most likely classes of ``guess`` as ``[[name, probability], ...]``, most likely first."""
        return top_classes(guess.posterior, self.class_name, k)

    def _mask(self, loaded: P.LoadedImage, mask: Any, box: Sequence[float] | None, invert: bool, threshold: float,
              mismatch: Any) -> np.ndarray:
        return P.region_mask(loaded.size, mask, box, alpha=loaded.alpha, invert=invert, threshold=threshold,
                             on_size_mismatch=mismatch)

    def _edit_masked(self, loaded: P.LoadedImage, m: np.ndarray, *, label: int | str | None, strategy: str, mode: str,
                     n: int, rank: bool, seed: int | None, keep_scales: int, grow_tokens: int, feather: float | None,
                     prefill: str, harmonize: bool, paste_back: bool, output_type: str,
                     callback: ProgressCallback | None, task: str,
                     preview: bool = False, coverage: float | None = None,
                     edited_alpha: np.ndarray | None = None, extra: dict[str, Any] | None = None,
                     **sampling: Any) -> EditResult:
        if prefill not in P.FILL_METHODS and prefill != "none":
            raise ValueError(f"unknown prefill {prefill!r}; use {', '.join(P.FILL_METHODS)}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        n = check_candidates(n, loaded.size)
        keep_scales = check_int(keep_scales, "keep_scales", lo=0, hi=len(self.backend.patch_nums))
        grow_tokens = check_int(grow_tokens, "grow_tokens", lo=0, hi=max(self.backend.patch_nums))
        opts = self.edit_defaults.replace(**sampling)
        seed = draw_seed(seed)
        feather = self.feather_px(loaded.size) if feather is None else check_number(feather, "feather", lo=0)
        coverage = (TASK_COVERAGE.get(task, COVERAGE) if coverage is None
                    else check_number(coverage, "coverage", lo=0, lo_open=True, hi=1))
        t0 = time.perf_counter()
        lab, label_info = self._resolve_label(label, loaded, m, strategy)
        timings = {"label_s": time.perf_counter() - t0}
        # the official mode encodes the canvas as it is: no prefill, no coverage rule (the sidecar must say
        # what was done)
        used_prefill = None if mode == "official" else prefill
        used_coverage = None if mode == "official" else coverage
        settings = self._settings(task, seed=seed, label=lab, **label_info, strategy=strategy, mode=mode, n=n, rank=rank,
                                  keep_scales=keep_scales, grow_tokens=grow_tokens, feather=feather,
                                  prefill=used_prefill, coverage=used_coverage, harmonize=harmonize,
                                  paste_back=paste_back, **opts.as_dict(),
                                  **(extra or {}))
        if not m.any():
            log.warning("the mask is empty: nothing to regenerate, returning the input unchanged")
            outs = [P.to_output(loaded.rgb, loaded, as_numpy=output_type == "np",
                                weight=np.zeros(m.shape, np.float32)) for _ in range(n)]
            return EditResult(outs, seed, settings, [0.0] * n, m, timings)
        cands, scores = self._regenerate(loaded, m, lab, strategy=strategy, mode=mode, n=n, seed=seed, opts=opts,
                                         timings=timings,
                                         keep_scales=keep_scales, grow_tokens=grow_tokens, prefill=prefill,
                                         callback=callback, preview=preview, harmonize=harmonize,
                                         coverage=coverage)
        t1 = time.perf_counter()
        outs, sc = self._finish(loaded, cands, scores, m, rank=rank, feather=feather, paste_back=paste_back,
                                output_type=output_type, edited_alpha=edited_alpha)
        timings["post_s"] = time.perf_counter() - t1
        return EditResult(outs, seed, settings, sc, m, timings)

    def outpaint(self, image: Any, *, left: float = 0, right: float = 0, top: float = 0, bottom: float = 0,
                 fill: str = "blur", strategy: str = "auto", **kw: Any) -> EditResult:
        """Extend the canvas (pixels as ints, or ratios of the side as floats) and fill the new area.

        The new area is first filled with ``fill`` (default: edge-replicate then a heavy blur) so the
        tokeniser sees a plausible continuation; only the new area is regenerated (plus the feather ring
        into the original), and the original pixels are kept exactly.
        """
        loaded = image if isinstance(image, P.LoadedImage) else P.load_image(image)
        ext, new_area = P.extend_loaded(loaded, left, right, top, bottom, fill=fill)
        alpha = None if ext.alpha is None else np.ones(new_area.shape, np.float32)
        n, rank = kw.pop("n", 1), kw.pop("rank", True)
        defaults = dict(label="auto", mode="default", seed=None, keep_scales=0, grow_tokens=0, feather=None,
                        prefill=OUTPAINT_PREFILL, harmonize=True, paste_back=True, coverage=None, output_type="pil",
                        callback=None)
        defaults.update({k: kw.pop(k) for k in list(kw) if k in defaults})
        return self._edit_masked(ext, new_area, strategy=strategy, n=n, rank=rank, task="outpaint",
                                 edited_alpha=alpha, extra=dict(left=left, right=right, top=top, bottom=bottom,
                                                                fill=fill), **defaults, **kw)

    def edit(self, image: Any, box: Sequence[float], class_: int | str, **kw: Any) -> EditResult:
        """Class-conditional edit: regenerate ``box`` as class ``class_`` (index or name)."""
        kw.setdefault("mode", "default")
        return self.inpaint(image, box=box, label=class_, _task="edit", **kw)

    def upscale(self, image: Any, *, scale: float = 2.0, keep_scales: int | None = None, seed: int | None = None,
                label: int | str | None = None, back_project: bool = True, output_type: str = "pil",
                callback: ProgressCallback | None = None, preview: bool = False, **sampling: Any) -> EditResult:
        """Zero-shot restoration: Lanczos to the target size (``scale`` in (0, ``MAX_UPSCALE``]), then per
        model-size tile the first ``keep_scales`` scales are teacher-forced from the input and the finer
        scales sampled.
        ``back_project`` makes the result's downsampled version match the input again.
        ``callback(step, total, preview)`` is called after every scale of every batch of tiles; with
        ``preview=True`` it gets the batch's tiles decoded so far ((tiles, S, S, 3) in [0, 1])."""
        scale = check_scale(scale)
        check_output_type(output_type)
        loaded = image if isinstance(image, P.LoadedImage) else P.load_image(image)
        W, H = upscaled_size(loaded.size, scale)
        SN = len(self.backend.patch_nums)
        k = default_upscale_keep(SN) if keep_scales is None else check_int(keep_scales, "keep_scales", lo=0, hi=SN)
        up = lanczos(loaded.rgb, (W, H))
        opts = self.defaults.replace(**sampling)
        seed = draw_seed(seed)
        lab = self.null_class if label is None else self.class_index(label)
        everything = np.ones((H, W), bool)
        windows = self._windows("original", everything, (W, H))
        stream = self.backend.stream(seed)
        progress = Progress(callback, batches(len(windows), self.window_batch))
        canvases = []
        for b0 in range(0, len(windows), self.window_batch):  # tiles are independent: batched
            plans = []
            for win in windows[b0:b0 + self.window_batch]:
                canvas, cmask = P.extract(win, up, everything)
                plans.append(make_plan(canvas, np.ones_like(cmask), self.backend.patch_nums, self.backend.downsample,
                                       mode="default", keep_first=k, grow_tokens=0))
            out, _ = self.backend.run(plans, [lab] * len(plans), opts, stream, callback=progress.step(),
                                      preview=preview, timings=progress.timings)
            canvases.extend(out)
        rgb, _ = P.merge_windows(windows, canvases, (H, W, 3))
        if back_project:
            rgb = back_project_to(rgb, loaded.rgb)
        like = resized_like(loaded, W, H)
        out_img = P.to_output(rgb.astype(np.float32), like, as_numpy=output_type == "np")
        settings = self._settings("upscale", seed=seed, scale=scale, keep_scales=k, label=lab,
                                  window_batch=self.window_batch,
                                  back_project=back_project, **opts.as_dict())
        return EditResult([out_img], seed, settings, [], None, progress.timings)

    def generate(self, class_: int | str | Sequence[int | str] | None = None, *, n: int = 1,
                 seed: int | None = None, batch_size: int = 8, output_type: str = "pil",
                 callback: ProgressCallback | None = None, preview: bool = False, **sampling: Any) -> EditResult:
        """Class-conditional generation through the backend: the masked sampler with nothing forced.

        ``class_``: an index, a name, a list of them (one image each; ``n`` is then the list's length)
        or None (unconditional, the null class). ``settings["labels"]`` holds the label of every image.
        All images are held in memory: :meth:`generate_batches` yields them batch by batch instead.
        """
        settings: dict[str, Any] = {}
        images: list[Any] = []
        for batch in self.generate_batches(class_, n=n, seed=seed, batch_size=batch_size, output_type=output_type,
                                           callback=callback, preview=preview, settings=settings, **sampling):
            images.extend(batch)
        return EditResult(images, settings["seed"], settings)

    def generate_batches(self, class_: int | str | Sequence[int | str] | None = None, *, n: int = 1,
                         seed: int | None = None, batch_size: int = 8, output_type: str = "pil",
                         callback: ProgressCallback | None = None, preview: bool = False,
                         settings: dict[str, Any] | None = None, **sampling: Any) -> Iterator[list[Any]]:
        """:meth:`generate` as a generator of batches (the same images for the same seed), so that any
        number of images can be written as they come.  Every argument is checked before the first batch;
        ``settings`` (a dict) is filled with the run's settings (seed, labels, ...) at once."""
        check_int(n, "n", lo=1)
        batch_size = check_int(batch_size, "batch_size", lo=1)
        check_output_type(output_type)
        if isinstance(class_, (list, tuple)):
            if not class_:
                raise ValueError("the list of classes is empty")
            labels = [self.class_index(c) for c in class_]
        else:
            labels = [self.null_class if class_ is None else self.class_index(class_)] * n
        n = len(labels)
        opts = self.defaults.replace(**sampling)
        seed = draw_seed(seed)
        if settings is not None:
            settings.update(self._settings("generate", seed=seed, labels=labels, n=n, batch_size=batch_size,
                                           **opts.as_dict()))
        return self._generate(labels, seed, batch_size, opts, output_type, callback, preview)

    def _generate(self, labels: list[int], seed: int, batch_size: int, opts: SamplingOptions, output_type: str,
                  callback: ProgressCallback | None, preview: bool) -> Iterator[list[Any]]:
        S, n = self.image_size, len(labels)
        stream = self.backend.stream(seed)
        hole = np.ones((S, S), bool)
        plan = make_plan(np.zeros((S, S, 3), np.float32), hole, self.backend.patch_nums, self.backend.downsample,
                         mode="official")
        plan.keep_maps = [np.zeros_like(k) for k in plan.keep_maps]  # nothing forced, not even the 1x1 scale
        like = P.load_image(np.zeros((S, S, 3), np.uint8))
        batches = range(0, n, batch_size)
        for bi, s in enumerate(batches):
            b = min(batch_size, n - s)
            cb = None
            if callback is not None:
                def cb(si: int, sn: int, prev: np.ndarray | None, _bi: int = bi) -> None:
                    callback(_bi * sn + si, len(batches) * sn, prev)
            out, _ = self.backend.run([plan] * b, labels[s:s + b], opts, stream, callback=cb, preview=preview)
            yield [P.to_output(im, like, as_numpy=output_type == "np") for im in out]


def resolve_strategy(strategy: str) -> str:
    """``auto`` is ``crop`` (measured: the module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    return "crop" if strategy == "auto" else strategy


def plan_windows(strategy: str, mask: np.ndarray | None, wh: tuple[int, int], model_size: int,
                 max_windows: int | None = None) -> list[P.Window]:
    """The model windows of a size strategy (see the module docstring) for ``mask`` on an image of size
    ``wh``; more than ``max_windows`` is a ValueError before any work (each window is a sampling pass: a
    100,000-pixel outpaint or a 64x upscale would run for hours)."""
    S = model_size
    strategy = resolve_strategy(strategy)
    if strategy == "crop":
        windows = [P.plan_crop(mask, wh, S)]
    elif strategy == "resize":
        windows = [P.plan_resize(wh, S)]
    else:
        windows = P.plan_tiles(wh, S, overlap=0.5, mask=mask)
    if max_windows is not None and len(windows) > max_windows:
        raise ValueError(f"this job needs {len(windows)} model windows of {S} px, more than the limit of "
                         f"{max_windows} (max_windows / --max-windows): ask for a smaller extension or scale, or "
                         f"raise the limit")
    if len(windows) > 1:
        log.info("%d model windows of %d px", len(windows), S)
    return windows


def upscaled_size(wh: tuple[int, int], scale: float, max_pixels: int | None = P.DEFAULT_MAX_PIXELS
                  ) -> tuple[int, int]:
    """The output size of an upscale by ``scale`` (in (0, ``MAX_UPSCALE``]; checked with the pixel limit
    before any work)."""
    scale = check_scale(scale)
    W, H = max(1, round(wh[0] * scale)), max(1, round(wh[1] * scale))
    P.limit_pixels((W, H), max_pixels, "the upscaled image")
    return W, H


def default_upscale_keep(num_scales: int) -> int:
    """Scales forced from the low-resolution input: all but the last third (measured on the demo model,
    see README: the coarse scales of an image and of its Lanczos-upscaled copy mostly agree)."""
    return max(1, num_scales - max(1, num_scales // 3))

