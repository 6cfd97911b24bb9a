"""Image-level tasks over any backend (torch-free): inpaint, outpaint, edit, upscale, generate, and label
inference, behind one facade, :class:`Editor`.

Every task is a request (:mod:`varedit.requests`: its options, defaults and limits, defined once);
``Editor.run(request)`` checks it against the model and the image, prepares the image and the region,
runs the window loop (:mod:`varedit.editing.runner`) and post-processes the candidates. The keyword
methods (``inpaint``, ``outpaint``, ``edit``, ``upscale``, ``generate``, ``infer_label``) build the
request of their keywords and run it.

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
from .editing import labels as L
from .editing.labels import LabelGuess
from .editing.plan import CanvasPlan
from .editing.runner import ProgressCallback, generate_batches, paste_back, regenerate, upscale_tiles
from .options import SamplingOptions
from .requests import (SETTINGS_TOP_CLASSES, STRATEGIES, EditRequest, GenerateRequest, InferLabelRequest,
                       InpaintRequest, OutpaintRequest, Request, UpscaleRequest, top_classes, upscaled_size)
from .processing.blending import DEFAULT_FEATHER_PX
from .processing.upscale import back_project as back_project_to
from .processing.upscale import lanczos, resized_like
from .validation import check_class_names, check_int, check_seed

log = logging.getLogger(__name__)

# the official notebook's guidance for class-conditional editing; also where the demo model's fills
# with an inferred label measured best (a stronger guidance over-commits to a guess: docs/quality.md)
EDIT_CFG = 3.0
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


class Editor:
    """The tasks, written once for every backend: a facade that checks a request, prepares the image and
    the region, runs the window loop and post-processes the candidates."""

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

    def feather_px(self, wh: tuple[int, int]) -> float:
        """Default paste-back feather for an image of size ``wh``, in its own pixels: ``DEFAULT_FEATHER_PX``
        (4 px) whatever the size, measured on whole photos (a wider one, such as half a token, blurs the
        sharp surroundings into the resized fill)."""
        return DEFAULT_FEATHER_PX

    def half_token_px(self, wh: tuple[int, int]) -> float:
        """Half a token in the pixels of an image of size ``wh`` (a token covers more pixels when the image
        is larger than the canvas)."""
        return 0.5 * self.backend.downsample * max(1.0, max(wh) / self.image_size)

    def can_infer_label(self) -> bool:
        """Whether this backend (and, for exports, this export) can score classes for ``label="auto"``."""
        return L.can_score(self.backend)

    def check_label(self, label: int | str | None) -> int | str:
        """The class index of a class (index or name; an unknown one is a ``ValueError``), else the
        keyword (``auto``, ``infer``, ``none``; None means ``none``)."""
        return L.label_key(label, self.class_index)

    def top_classes(self, guess: LabelGuess, k: int) -> list[list[Any]]:
        """The ``k`` most likely classes of ``guess`` as ``[[name, probability], ...]``, most likely first."""
        return top_classes(guess.posterior, self.class_name, k)

    # -- the keyword API: each method builds its task's request (every option, default and limit is the
    # request type's, varedit.requests) and runs it ------------------------------------------------------
    def inpaint(self, image: Any, mask: Any = None, *, callback: ProgressCallback | None = None,
                preview: bool = False, **options: Any) -> EditResult:
        """Regenerate the masked region (white / 255 / True = regenerate).

        The region comes from ``mask`` (image, array or path; alpha channels honoured), a ``box``
        (x0, y0, x1, y1: pixels as ints, fractions as floats) or, when both are None, from the
        image's own transparency.  ``options``: the fields of :class:`varedit.requests.InpaintRequest`
        (``box``, ``label``, ``strategy``, ``n``, ``seed``, ``keep_scales``, ``prefill``, ``coverage``,
        ``feather`` ...) and the sampling options (``cfg``, ``top_k``, ``top_p``, ``more_smooth``,
        ``guidance``).  ``label``: a class (index or name), ``"auto"`` (default: the class the model finds
        most likely for the known pixels, see :meth:`infer_label`, when the model has at most
        ``auto_label_max_classes`` classes, else unconditional), ``"infer"`` (always infer) or None /
        ``"none"`` (unconditional, the null class).  ``callback(step, total, preview)`` is called after
        every scale of every window; with ``preview=True`` it gets the decoded canvas so far ((n, S, S, 3)
        in [0, 1]: coarse to fine), at the cost of one decode per scale.
        """
        return self.run(InpaintRequest.of(image=image, mask=mask, **options), callback=callback, preview=preview)

    def outpaint(self, image: Any, *, callback: ProgressCallback | None = None, preview: bool = False,
                 **options: Any) -> EditResult:
        """Extend the canvas by ``left``, ``right``, ``top``, ``bottom`` (ints pixels, floats below 1 ratios of
        the side, ``"150%"`` percentages) and fill the new area; the other options are the fields of
        :class:`varedit.requests.OutpaintRequest` and the sampling options.

        The new area is first filled with ``fill`` (default: edge-replicate then a heavy blur) so the
        tokeniser sees a plausible continuation; only the new area is regenerated (plus the feather ring
        into the original), and the original pixels are kept exactly.
        """
        return self.run(OutpaintRequest.of(image=image, **options), callback=callback, preview=preview)

    def edit(self, image: Any, box: Sequence[float] | None, class_: int | str, *,
             callback: ProgressCallback | None = None, preview: bool = False, **options: Any) -> EditResult:
        """Class-conditional edit: regenerate ``box`` (or a ``mask=``) as class ``class_`` (index or name);
        the other options are the fields of :class:`varedit.requests.EditRequest`."""
        return self.run(EditRequest.of(image=image, box=box, class_=class_, **options), callback=callback,
                        preview=preview)

    def upscale(self, image: Any, *, callback: ProgressCallback | None = None, preview: bool = False,
                **options: Any) -> EditResult:
        """Zero-shot restoration: Lanczos to the target size (``scale`` in (0, ``MAX_UPSCALE``]), then per
        model-size tile the first ``keep_scales`` scales are teacher-forced from the input and the finer
        scales sampled; ``back_project`` makes the result's downsampled version match the input again
        (the fields of :class:`varedit.requests.UpscaleRequest`).  ``callback(step, total, preview)`` is
        called after every scale of every batch of tiles; with ``preview=True`` it gets the batch's tiles
        decoded so far ((tiles, S, S, 3) in [0, 1])."""
        return self.run(UpscaleRequest.of(image=image, **options), callback=callback, preview=preview)

    def generate(self, class_: int | str | Sequence[int | str] | None = None, *,
                 callback: ProgressCallback | None = None, preview: bool = False, **options: Any) -> EditResult:
        """Class-conditional generation through the backend: the masked sampler with nothing forced.

        ``class_``: an index, a name, a list of them (one image each; ``n`` is then the list's length)
        or None (unconditional, the null class); the other options are the fields of
        :class:`varedit.requests.GenerateRequest`. ``settings["labels"]`` holds the label of every image.
        All images are held in memory: :meth:`generate_batches` yields them batch by batch instead.
        """
        return self.run(GenerateRequest.of(class_=class_, **options), callback=callback, preview=preview)

    def generate_batches(self, class_: int | str | Sequence[int | str] | None = None, *,
                         callback: ProgressCallback | None = None, preview: bool = False,
                         settings: dict[str, Any] | None = None, **options: Any) -> Iterator[list[Any]]:
        """:meth:`generate` as a generator of batches (the same images for the same seed), so that any
        number of images can be written as they come.  Every option is checked before the first batch;
        ``settings`` (a dict) is filled with the run's settings (seed, labels, ...) at once."""
        return self.run_batches(GenerateRequest.of(class_=class_, **options), settings=settings,
                                callback=callback, preview=preview)

    def infer_label(self, image: Any, mask: Any = None, **options: Any) -> LabelGuess:
        """The class the model finds most likely for what is *outside* the mask (or ``box``, or the
        transparent pixels; the fields of :class:`varedit.requests.InferLabelRequest`).

        Every window of ``strategy`` is planned as the default mode plans it (hole prefilled from known
        pixels, so the hole's content is never read), and the log-likelihood of its known token cells is
        summed per class (:func:`varedit.editing.runner.class_log_likelihood`, uniform prior).
        """
        return self.run(InferLabelRequest.of(image=image, mask=mask, **options))

    # -- check, prepare, loop, post-process ---------------------------------------------------------------
    def check(self, request: Request) -> P.LoadedImage | None:
        """Every limit and unit rule of ``request`` against this model's scales and its image (loaded
        here; returned, None for generation), before any model work."""
        image = getattr(request, "image", None)
        loaded = None
        if image is not None:
            loaded = image if isinstance(image, P.LoadedImage) else P.load_image(image)
        request.validate(tuple(self.backend.patch_nums), None if loaded is None else loaded.size)
        if loaded is None and not isinstance(request, GenerateRequest):
            raise ValueError(f"{request.task}: no image")
        return loaded

    def run(self, request: Request, *, callback: ProgressCallback | None = None, preview: bool = False
            ) -> "EditResult | LabelGuess":
        """Run a task request (:mod:`varedit.requests`), checked first (:meth:`check`).  ``infer-label``
        returns a :class:`LabelGuess`, every other task an :class:`EditResult`."""
        loaded = self.check(request)
        if isinstance(request, GenerateRequest):
            settings: dict[str, Any] = {}
            images = [im for batch in self._generate(request, settings, callback, preview) for im in batch]
            return EditResult(images, settings["seed"], settings)
        assert loaded is not None
        if isinstance(request, InferLabelRequest):
            m = P.region_mask(loaded.size, request.mask, request.box, alpha=loaded.alpha)
            return self._guess(loaded, m, request.strategy)
        if isinstance(request, UpscaleRequest):
            return self._upscale(request, loaded, callback, preview)
        if isinstance(request, OutpaintRequest):
            ext, new_area = P.extend_loaded(loaded, *request.sides(), fill=request.fill)
            alpha = None if ext.alpha is None else np.ones(new_area.shape, np.float32)
            return self._masked(request, ext, new_area, request.label, callback, preview, edited_alpha=alpha,
                                extra=dict(left=request.left, right=request.right, top=request.top,
                                           bottom=request.bottom, fill=request.fill))
        m = P.region_mask(loaded.size, request.mask, request.box, alpha=loaded.alpha, invert=request.invert,
                          threshold=request.threshold, on_size_mismatch=request.mask_mismatch)
        where = {"box": list(request.box)} if request.box is not None else {}
        label = self.class_index(request.class_) if isinstance(request, EditRequest) else request.label
        return self._masked(request, loaded, m, label, callback, preview,
                            extra={**where, "invert": request.invert, "threshold": request.threshold})

    def run_batches(self, request: GenerateRequest, *, settings: dict[str, Any] | None = None,
                    callback: ProgressCallback | None = None, preview: bool = False) -> Iterator[list[Any]]:
        """A generation request's images batch by batch, checked before the first; ``settings`` (a dict)
        is filled with the run's settings at once."""
        self.check(request)
        return self._generate(request, {} if settings is None else settings, callback, preview)

    def _windows(self, strategy: str, mask: np.ndarray, wh: tuple[int, int]) -> list[P.Window]:
        return plan_windows(strategy, mask, wh, self.image_size, self.max_windows)

    def _guess(self, loaded: P.LoadedImage, m: np.ndarray, strategy: str) -> LabelGuess:
        return L.infer(self.backend, loaded.rgb, m, self._windows(strategy, m, loaded.size))

    def _settings(self, task: str, **kw: Any) -> dict[str, Any]:
        # a reduced precision (bf16 / fp16 autocast, e.g. picked by --precision auto) is part of what made the image
        prec = getattr(self.backend, "precision", None)
        extra = {"precision": prec} if prec not in (None, "fp32") else {}
        return {"task": task, "model": self.model_name, "backend": self.backend.name, **extra, **kw}

    def _masked(self, req: Any, loaded: P.LoadedImage, m: np.ndarray, label: Any,
                callback: ProgressCallback | None, preview: bool, *, edited_alpha: np.ndarray | None = None,
                extra: dict[str, Any] | None = None) -> EditResult:
        """A checked masked request (inpaint, outpaint, edit) on ``loaded``, regenerating ``m``."""
        opts = self.edit_defaults.replace(**req.sampling.overrides())
        seed = draw_seed(req.seed)
        feather = self.feather_px(loaded.size) if req.feather is None else float(req.feather)
        t0 = time.perf_counter()
        lab, label_info, guess = L.resolve(self.backend, self.check_label(label), m,
                                           lambda: self._guess(loaded, m, req.strategy), self.auto_label_max_classes)
        if guess is not None:
            log.info("inferred class %s (p %.2f)", self.class_name(guess.label), guess.posterior[guess.label])
            label_info["label_posterior"] = self.top_classes(guess, SETTINGS_TOP_CLASSES)
        timings = {"label_s": time.perf_counter() - t0}
        # the official mode encodes the canvas as it is: no prefill, no coverage rule (the sidecar must say
        # what was done)
        official = req.mode == "official"
        settings = self._settings(req.task, seed=seed, label=lab, **label_info, strategy=req.strategy,
                                  mode=req.mode, n=req.n, rank=req.rank, keep_scales=req.keep_scales,
                                  grow_tokens=req.grow_tokens, feather=feather,
                                  prefill=None if official else req.prefill,
                                  coverage=None if official else req.coverage, harmonize=req.harmonize,
                                  paste_back=req.paste_back, **opts.as_dict(), **(extra or {}))
        as_np = req.output_type == "np"
        if not m.any():
            log.warning("the mask is empty: nothing to regenerate, returning the input unchanged")
            outs = [P.to_output(loaded.rgb, loaded, as_numpy=as_np, weight=np.zeros(m.shape, np.float32))
                    for _ in range(req.n)]
            return EditResult(outs, seed, settings, [0.0] * req.n, m, timings)
        cands, scores = regenerate(self.backend, loaded, m, self._windows(req.strategy, m, loaded.size), lab,
                                   mode=req.mode, n=req.n, seed=seed, opts=opts, timings=timings,
                                   keep_scales=req.keep_scales, grow_tokens=req.grow_tokens, prefill=req.prefill,
                                   callback=callback, preview=preview, harmonize=req.harmonize,
                                   coverage=req.coverage)
        t1 = time.perf_counter()
        outs, sc = paste_back(loaded, cands, scores, m, rank=req.rank, feather=feather, paste_back=req.paste_back,
                              output_type=req.output_type, edited_alpha=edited_alpha)
        timings["post_s"] = time.perf_counter() - t1
        return EditResult(outs, seed, settings, sc, m, timings)

    def _upscale(self, req: UpscaleRequest, loaded: P.LoadedImage, callback: ProgressCallback | None,
                 preview: bool) -> EditResult:
        W, H = upscaled_size(loaded.size, req.scale)
        k = default_upscale_keep(len(self.backend.patch_nums)) if req.keep_scales is None else req.keep_scales
        opts = self.defaults.replace(**req.sampling.overrides())
        seed = draw_seed(req.seed)
        lab = self.null_class if req.label is None else self.class_index(req.label)
        up = lanczos(loaded.rgb, (W, H))
        windows = self._windows("original", np.ones((H, W), bool), (W, H))
        rgb, timings = upscale_tiles(self.backend, up, windows, k, lab, opts, seed, self.window_batch, callback,
                                     preview)
        if req.back_project:
            rgb = back_project_to(rgb, loaded.rgb)
        out = P.to_output(rgb.astype(np.float32), resized_like(loaded, W, H), as_numpy=req.output_type == "np")
        settings = self._settings("upscale", seed=seed, scale=float(req.scale), keep_scales=k, label=lab,
                                  window_batch=self.window_batch, back_project=req.back_project, **opts.as_dict())
        return EditResult([out], seed, settings, [], None, timings)

    def _generate(self, req: GenerateRequest, settings: dict[str, Any], callback: ProgressCallback | None,
                  preview: bool) -> Iterator[list[Any]]:
        """Fills ``settings`` at once and returns the generator of batches."""
        if isinstance(req.class_, (list, tuple)):
            labels = [self.class_index(c) for c in req.class_]
        else:
            labels = [self.null_class if req.class_ is None else self.class_index(req.class_)] * req.n
        opts = self.defaults.replace(**req.sampling.overrides())
        seed = draw_seed(req.seed)
        settings.update(self._settings("generate", seed=seed, labels=labels, n=len(labels),
                                       batch_size=req.batch_size, **opts.as_dict()))
        return generate_batches(self.backend, labels, seed, req.batch_size, opts, req.output_type, callback, preview)


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


def default_upscale_keep(num_scales: int) -> int:
    """Scales forced from the low-resolution input: all but the last third (measured on the demo model,
    see README: the coarse scales of an image and of its Lanczos-upscaled copy mostly agree)."""
    return max(1, num_scales - max(1, num_scales // 3))

