"""What a task request may ask for, defined once for every front-end (torch-free).

The Python API (:class:`varedit.tasks.Editor`), the command line, the HTTP server, the ComfyUI nodes and
the plugins read their numbers with these rules and limits, so the same numbers mean the same canvas and
fail with the same message everywhere:

* outpaint amounts: :func:`varedit.processing.outpaint_amount` (an int is pixels, a float below 1 a
  ratio of the side, ``"150%"`` a percentage; a float of 1 or more is refused as ambiguous);
* boxes: :func:`varedit.processing.box_pixels` (ints are pixels, floats fractions in [0, 1]);
* the region of a masked task: :func:`varedit.processing.region_mask` (a mask, a box or the alpha);
* the largest upscale factor: :data:`MAX_UPSCALE`;
* the top classes of an inferred label: :func:`top_classes`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

from .options import SamplingOptions
from .validation import check_int, check_number, check_seed

if TYPE_CHECKING:
    import numpy as np

# the largest upscale factor any front-end accepts; the pixel and window limits bound the work further
MAX_UPSCALE = 16.0
# how many classes the settings of a fill with an inferred label list, and the rounding of posteriors
SETTINGS_TOP_CLASSES = 3
POSTERIOR_DIGITS = 6


def check_scale(scale: Any) -> float:
    """An upscale factor in (0, MAX_UPSCALE]."""
    return check_number(scale, "scale", lo=0, lo_open=True, hi=MAX_UPSCALE)


def top_classes(posterior: "Sequence[float] | np.ndarray", class_name: Callable[[int], str], k: int
                ) -> list[list[Any]]:
    """The ``k`` most likely classes of ``posterior`` as ``[[name, probability], ...]``, most likely first
    (ties in index order), probabilities rounded to ``POSTERIOR_DIGITS`` digits."""
    import numpy as np  # here: the command line reads the limits above without loading numpy

    p = np.asarray(posterior, np.float64)
    order = np.argsort(-p, kind="stable")[:k]
    return [[class_name(int(i)), round(float(p[i]), POSTERIOR_DIGITS)] for i in order]


# ---- one request type per task ------------------------------------------------------------------------
# Each holds a task's options beside the sampling overrides (None = the model's default, as
# :class:`varedit.options.SamplingOptions` fills them in); ``validate`` checks every limit and unit rule
# that can be checked without the model's weights, and ``Editor.run(request)`` runs it.
STRATEGIES = ("auto", "crop", "resize", "original")
MODES = ("default", "official")
FILLS = ("blur", "edge", "mean", "gray")
MAX_CANDIDATES = 64
MAX_CANDIDATE_PIXELS = 400_000_000
MAX_GENERATE = 100_000


def check_candidates(n: Any, wh: tuple[int, int] | None = None) -> int:
    """``n`` candidates (1..MAX_CANDIDATES) of an image of size ``wh`` within MAX_CANDIDATE_PIXELS."""
    n = check_int(n, "n", lo=1, hi=MAX_CANDIDATES)
    if wh is not None and n * wh[0] * wh[1] > MAX_CANDIDATE_PIXELS:
        raise ValueError(f"{n} candidates of a {wh[0]}x{wh[1]} image are {n * wh[0] * wh[1] / 1e6:.0f} MP of "
                         f"working images, above the limit of {MAX_CANDIDATE_PIXELS / 1e6:.0f} MP: ask for fewer")
    return n


@dataclass
class Sampling:
    """Sampling overrides of one request; None keeps the model's default (see SamplingOptions)."""

    cfg: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    more_smooth: bool | None = None
    guidance: str | None = None

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def validate(self) -> None:
        SamplingOptions().replace(**self.overrides())


@dataclass
class _Request:
    seed: int | None = None
    sampling: Sampling = field(default_factory=Sampling)
    output_type: str = "pil"

    task: ClassVar[str] = ""

    def _check_common(self) -> None:
        check_seed(self.seed)
        self.sampling.validate()
        if self.output_type not in ("pil", "np"):
            raise ValueError(f"output_type must be 'pil' or 'np', not {self.output_type!r}")


@dataclass
class _MaskedRequest(_Request):
    label: int | str | None = "auto"
    strategy: str | None = None          # None: the task's default (crop; outpaint auto)
    mode: str = "default"
    n: int = 1
    rank: bool = True
    keep_scales: int = 0
    grow_tokens: int = 0
    feather: float | None = None         # None: the default paste-back feather
    prefill: str | None = None           # None: the task's default prefill
    harmonize: bool = True
    paste_back: bool = True
    coverage: float | None = None        # None: the task's default coverage

    def _check_masked(self, num_scales: int | None, wh: tuple[int, int] | None) -> None:
        from .processing import FILL_METHODS
        self._check_common()
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.prefill is not None and self.prefill not in FILL_METHODS + ("none",):
            raise ValueError(f"unknown prefill {self.prefill!r}; use {', '.join(FILL_METHODS)}")
        check_candidates(self.n, wh)
        check_int(self.keep_scales, "keep_scales", lo=0, hi=num_scales)
        check_int(self.grow_tokens, "grow_tokens", lo=0)
        if self.feather is not None:
            check_number(self.feather, "feather", lo=0)
        if self.coverage is not None:
            check_number(self.coverage, "coverage", lo=0, lo_open=True, hi=1)

    def masked_kwargs(self) -> dict[str, Any]:
        kw = {k: getattr(self, k) for k in ("label", "mode", "n", "rank", "seed", "keep_scales", "grow_tokens",
                                            "feather", "harmonize", "paste_back", "coverage", "output_type")}
        if self.strategy is not None:
            kw["strategy"] = self.strategy
        if self.prefill is not None:
            kw["prefill"] = self.prefill
        return {**kw, **self.sampling.overrides()}


@dataclass
class InpaintRequest(_MaskedRequest):
    """Regenerate a region: a ``mask`` (white = regenerate), a ``box`` (ints pixels, floats fractions) or,
    when both are None, the image's transparent pixels."""

    image: Any = None
    mask: Any = None
    box: Sequence[float] | None = None
    invert: bool = False
    threshold: float = 0.5

    task: ClassVar[str] = "inpaint"

    def validate(self, num_scales: int | None = None, image_size: tuple[int, int] | None = None) -> None:
        self._check_masked(num_scales, image_size)
        if self.mask is not None and self.box is not None:
            raise ValueError("give a mask or a box, not both")
        if self.box is not None and image_size is not None:
            from .processing import box_pixels
            box_pixels(image_size, self.box)
        check_number(self.threshold, "threshold", lo=0, hi=1)

    def kwargs(self) -> dict[str, Any]:
        return dict(mask=self.mask, box=self.box, invert=self.invert, threshold=self.threshold,
                    **self.masked_kwargs())


@dataclass
class EditRequest(InpaintRequest):
    """Redraw a ``box`` (or a ``mask``) as ``class_`` (an index or a name)."""

    class_: int | str = 0

    task: ClassVar[str] = "edit"

    def validate(self, num_scales: int | None = None, image_size: tuple[int, int] | None = None) -> None:
        super().validate(num_scales, image_size)
        if self.mask is None and self.box is None:
            raise ValueError("give the region to redraw: a box or a mask")

    def kwargs(self) -> dict[str, Any]:
        kw = super().kwargs()
        kw.pop("label")
        return kw


@dataclass
class OutpaintRequest(_MaskedRequest):
    """Extend the canvas: amounts as :func:`varedit.processing.outpaint_amount` reads them."""

    image: Any = None
    left: Any = 0
    right: Any = 0
    top: Any = 0
    bottom: Any = 0
    fill: str = "blur"

    task: ClassVar[str] = "outpaint"

    def validate(self, num_scales: int | None = None, image_size: tuple[int, int] | None = None) -> None:
        from .processing import extended_size, outpaint_amount
        amounts = [outpaint_amount(getattr(self, s), s) for s in ("left", "right", "top", "bottom")]
        if not any(amounts):
            raise ValueError("nothing to extend: left, right, top and bottom are all 0 (ints are pixels, floats "
                             "below 1 a ratio of the side, '150%' a percentage)")
        if self.fill not in FILLS:
            raise ValueError(f"unknown fill {self.fill!r}; use {', '.join(FILLS)}")
        size = None if image_size is None else extended_size(image_size, *amounts)
        self._check_masked(num_scales, size)

    def kwargs(self) -> dict[str, Any]:
        return dict(left=self.left, right=self.right, top=self.top, bottom=self.bottom, fill=self.fill,
                    **self.masked_kwargs())


@dataclass
class UpscaleRequest(_Request):
    """Upscale by ``scale`` in (0, MAX_UPSCALE]; ``keep_scales`` None = the model's upscale default."""

    image: Any = None
    scale: float = 2.0
    keep_scales: int | None = None
    label: int | str | None = None
    back_project: bool = True

    task: ClassVar[str] = "upscale"

    def validate(self, num_scales: int | None = None, image_size: tuple[int, int] | None = None) -> None:
        self._check_common()
        check_scale(self.scale)
        if self.keep_scales is not None:
            check_int(self.keep_scales, "keep_scales", lo=0, hi=num_scales)
        if image_size is not None:
            from .processing import limit_pixels
            limit_pixels((max(1, round(image_size[0] * self.scale)), max(1, round(image_size[1] * self.scale))),
                         what="the upscaled image")

    def kwargs(self) -> dict[str, Any]:
        return dict(scale=self.scale, keep_scales=self.keep_scales, seed=self.seed, label=self.label,
                    back_project=self.back_project, output_type=self.output_type, **self.sampling.overrides())


@dataclass
class GenerateRequest(_Request):
    """``class_``: an index, a name, a list of them (one image each) or None (unconditional)."""

    class_: int | str | Sequence[int | str] | None = None
    n: int = 1
    batch_size: int = 8

    task: ClassVar[str] = "generate"

    def validate(self, num_scales: int | None = None, image_size: tuple[int, int] | None = None) -> None:
        self._check_common()
        check_int(self.n, "n", lo=1, hi=MAX_GENERATE)
        check_int(self.batch_size, "batch_size", lo=1)
        if isinstance(self.class_, (list, tuple)) and not self.class_:
            raise ValueError("the list of classes is empty")

    def kwargs(self) -> dict[str, Any]:
        return dict(n=self.n, seed=self.seed, batch_size=self.batch_size, output_type=self.output_type,
                    **self.sampling.overrides())


@dataclass
class InferLabelRequest:
    """The class the model finds most likely for what lies outside a ``mask`` or ``box`` (or the image's
    transparent pixels)."""

    image: Any = None
    mask: Any = None
    box: Sequence[float] | None = None
    strategy: str = "crop"

    task: ClassVar[str] = "infer-label"

    def validate(self, num_scales: int | None = None, image_size: tuple[int, int] | None = None) -> None:
        if self.mask is not None and self.box is not None:
            raise ValueError("give a mask or a box, not both")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.box is not None and image_size is not None:
            from .processing import box_pixels
            box_pixels(image_size, self.box)

    def kwargs(self) -> dict[str, Any]:
        return dict(mask=self.mask, box=self.box, strategy=self.strategy)


Request = InpaintRequest | OutpaintRequest | EditRequest | UpscaleRequest | GenerateRequest | InferLabelRequest
REQUESTS: dict[str, type] = {r.task: r for r in (InpaintRequest, OutpaintRequest, EditRequest, UpscaleRequest,
                                                   GenerateRequest, InferLabelRequest)}
