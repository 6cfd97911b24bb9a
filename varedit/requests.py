"""What a task request may ask for, defined once for every front-end (torch-free).

One request type per task (:class:`InpaintRequest`, :class:`OutpaintRequest`, :class:`EditRequest`,
:class:`UpscaleRequest`, :class:`GenerateRequest`, :class:`InferLabelRequest`) holds every option of the
task with its default, its limits and its description (:func:`opt`); ``validate`` checks them. The
Editor's keyword methods build these requests (:meth:`_Options.of`) and ``Editor.run`` runs them; the
command line, the ComfyUI nodes and the plugins build them from their inputs, and the HTTP server's
parameter models are generated from their fields (:mod:`varedit.server.schemas`). So the same numbers
mean the same canvas and fail with the same message everywhere:

* outpaint amounts: :func:`varedit.processing.outpaint_amount` (an int is pixels, a float below 1 a
  ratio of the side, ``"150%"`` a percentage; a float of 1 or more is refused as ambiguous);
* boxes: :func:`varedit.processing.box_pixels` (ints are pixels, floats fractions in [0, 1]);
* the region of a masked task: :func:`varedit.processing.region_mask` (a mask, a box or the alpha);
* the largest upscale factor: :data:`MAX_UPSCALE`;
* the top classes of an inferred label: :func:`top_classes`.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Sequence, Union

from .options import FILL_COVERAGE, GUIDANCE_SCHEDULES, LABEL_KEYWORDS, MAX_CFG, MODES, SamplingOptions  # noqa: F401
from .validation import check_int, check_number, check_seed, clip

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
# :class:`varedit.options.SamplingOptions` fills them in), every option with its default, its limits and
# its description in one place: ``validate`` checks them (and the rules between options) without the
# model's weights, ``Editor.run(request)`` runs a request, the Editor's keyword methods build one
# (:meth:`_Request.of`), and the HTTP server's parameter models are generated from these fields
# (:mod:`varedit.server.schemas`).
STRATEGIES = ("auto", "crop", "resize", "original")
FILLS = ("blur", "edge", "mean", "gray")
OUTPUT_TYPES = ("pil", "np")
MAX_CANDIDATES = 64
MAX_CANDIDATE_PIXELS = 400_000_000
MAX_GENERATE = 100_000
MAX_BATCH = 1024  # images sampled at once by generate: memory grows with it
MAX_FEATHER = 4096.0
# per-task defaults. The hole's prefill before tokenising (processing.prefill_hole): Navier-Stokes
# continues what a hole cuts through, so the coarse tokens see a plausible layout; an outpainted area has
# known pixels on one side only, where Navier-Stokes drags streaks across and the push-pull membrane does
# better (docs/quality.md, "Why each default").
INPAINT_PREFILL = "ns"
OUTPAINT_PREFILL = "pushpull"
# The keep-map coverage (editing.plan.make_plan): a fill keeps the planner's default (FILL_COVERAGE); a class
# edit asks for a new object in the box, so every cell the box touches is regenerated and the coarse scales
# can lay it out (docs/quality.md, "Class edits").
EDIT_COVERAGE = 1.0


def check_candidates(n: Any, wh: tuple[int, int] | None = None) -> int:
    """``n`` candidates (1..MAX_CANDIDATES) of an image of size ``wh`` within MAX_CANDIDATE_PIXELS."""
    n = check_int(n, "n", lo=1, hi=MAX_CANDIDATES)
    if wh is not None and n * wh[0] * wh[1] > MAX_CANDIDATE_PIXELS:
        raise ValueError(f"{n} candidates of a {wh[0]}x{wh[1]} image are {n * wh[0] * wh[1] / 1e6:.0f} MP of "
                         f"working images, above the limit of {MAX_CANDIDATE_PIXELS / 1e6:.0f} MP: ask for fewer")
    return n


# varedit.processing.FILL_METHODS, written out: the command line reads these choices without loading OpenCV
# (a test checks that the two agree); ``none`` leaves the hole as it is
PREFILL_METHODS = ("ns", "telea", "edge", "mean", "gray", "blur", "pushpull")
PREFILLS = PREFILL_METHODS + ("none",)


def opt(default: Any = MISSING, doc: str = "", *, kind: str | None = None, lo: float | None = None,
        hi: float | str | None = None, lo_open: bool = False,
        choices: "tuple[str, ...] | Callable[[], tuple[str, ...]] | None" = None, http: bool = True,
        json: Any = None, alias: str | None = None, factory: Any = MISSING) -> Any:
    """A request option: its default (none: required), its description, and its limits, read by
    :meth:`_Options._check_fields` (each request's ``validate``) and by the server's schema. ``kind``: ``int``, ``number`` or ``choice``
    (checked against ``lo``/``hi``/``choices``; ``hi`` may name ``"scales"``, the model's number of
    scales, or ``"patch"``, its largest token grid); None = checked by the request's own rules. A None
    value is allowed where the default is None (it means the model's or the task's default).
    ``http=False``: not a parameter of the HTTP API (an image travels as a file or base64; the server
    chooses the output type); ``json``: the type a JSON client sends, where the Python type is wider."""
    md = dict(doc=doc, kind=kind, lo=lo, hi=hi, lo_open=lo_open, choices=choices, http=http, json=json, alias=alias)
    return field(default=default, default_factory=factory, metadata=md)


def choices_of(f: Any) -> tuple[str, ...]:
    c = f.metadata.get("choices")
    return tuple(c() if callable(c) else c)


@dataclass(frozen=True)
class OptionInfo:
    """One request option as a front-end presents it (:func:`option_info`): the command line's options and
    the ComfyUI nodes' inputs take their help text, default and choices from here, so they read as the
    request (and the HTTP schema) does."""

    name: str
    doc: str
    default: Any  # MISSING: required; None: the task's or the model's default
    choices: tuple[str, ...] | None
    kind: str | None  # "int", "number", "choice" or None (checked by the request's own rules)
    lo: float | None
    hi: float | str | None  # a number, or "scales" / "patch": a limit of the model (see opt)
    lo_open: bool

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def max(self) -> float | None:
        """The upper limit when it is a number (not one that depends on the model)."""
        return self.hi if isinstance(self.hi, (int, float)) else None


def option_info(request: type, name: str) -> OptionInfo:
    """The option ``name`` of ``request`` (a request type, or :class:`Sampling`): its description, default,
    choices and limits. A request's sampling options are found by their own names (``cfg``, ``top_k`` ...).
    An unknown name is a KeyError."""
    own = {f.name: f for f in fields(request) if f.name != "sampling"}
    if "sampling" in {f.name for f in fields(request)}:
        own = {**{f.name: f for f in fields(Sampling)}, **own}
    if name not in own:
        raise KeyError(f"{getattr(request, 'task', '') or request.__name__} has no option {name!r}")
    f = own[name]
    md = f.metadata
    return OptionInfo(name=name, doc=md["doc"], default=f.default,
                      choices=choices_of(f) if md.get("choices") is not None else None, kind=md.get("kind"),
                      lo=md.get("lo"), hi=md.get("hi"), lo_open=bool(md.get("lo_open")))


@dataclass(kw_only=True)
class Sampling:
    """Sampling overrides of one request; None keeps the model's default. SamplingOptions checks them (the
    limits here are the ones it applies, for the server's schema)."""

    cfg: float | None = opt(None, f"Classifier-free guidance scale in [0, {MAX_CFG:g}] (0: purely conditional; "
                                  f"default: 3 for inpaint, outpaint and edit, else the model's).", kind="number",
                             lo=0, hi=MAX_CFG)
    top_k: int | None = opt(None, "Sample among the k most likely tokens (1 = greedy, 0 = off; default: the model's).",
                            kind="int", lo=0)
    top_p: float | None = opt(None, "Nucleus (top-p) filter in [0, 1] (0 = off; default: the model's).", kind="number",
                              lo=0, hi=1)
    more_smooth: bool | None = opt(None, "Gumbel-softmax smoothing of the code embeddings (torch backend only).")
    guidance: str | None = opt(None, "Guidance schedule over scales: linear (from 0 at the first scale) or "
                                     "constant (default: the model's).", choices=GUIDANCE_SCHEDULES)

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def validate(self) -> None:
        SamplingOptions().replace(**self.overrides())


SAMPLING_NAMES = tuple(f.name for f in fields(Sampling))


@dataclass(kw_only=True)
class _Options:
    """What every request type shares: options declared with :func:`opt`, built from keywords, checked."""

    task: ClassVar[str] = ""

    def __post_init__(self) -> None:
        # None for a limited option whose default is not None means the task's default (the command line
        # and the nodes pass None for an option left unset); a label of None keeps its own meaning
        for f in fields(self):
            if (f.metadata.get("kind") and f.default is not None and f.default is not MISSING
                    and getattr(self, f.name) is None):
                setattr(self, f.name, f.default)

    @classmethod
    def of(cls, **options: Any) -> Any:
        """The request of keyword options as the Editor's methods take them: the request's fields, and the
        sampling options (cfg, top_k, top_p, more_smooth, guidance) beside them. An unknown name is a
        TypeError that lists the known ones."""
        own = {f.name for f in fields(cls) if f.init}
        sampling = SAMPLING_NAMES if "sampling" in own else ()
        unknown = sorted(set(options) - own - set(sampling))
        if unknown:
            known = sorted((own - {"sampling"}) | set(sampling))
            raise TypeError(f"{cls.task}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                            f"known: {', '.join(known)}")
        kw = {k: v for k, v in options.items() if k in own}
        if sampling:
            given = {k: options[k] for k in sampling if k in options}
            if given:
                if "sampling" in kw:
                    raise TypeError(f"{cls.task}: give sampling options as a Sampling or as keywords, not both")
                kw["sampling"] = Sampling(**given)
        return cls(**kw)

    def _check_fields(self, scales: "int | Sequence[int] | None") -> None:
        """Every option with declared limits (see :func:`opt`)."""
        num_scales = max_patch = None
        if isinstance(scales, int):
            num_scales = scales
        elif scales is not None:
            num_scales, max_patch = len(scales), max(scales)
        bound = {"scales": num_scales, "patch": max_patch}
        for f in fields(self):
            kind, v = f.metadata.get("kind"), getattr(self, f.name)
            if kind is None or (v is None and f.default is None):
                continue
            hi = f.metadata["hi"]
            hi = bound[hi] if isinstance(hi, str) else hi
            if kind == "int":
                check_int(v, f.name, lo=f.metadata["lo"], hi=hi)
            elif kind == "number":
                check_number(v, f.name, lo=f.metadata["lo"], hi=hi, lo_open=f.metadata["lo_open"])
            elif kind == "choice":
                allowed = choices_of(f)
                if not isinstance(v, str) or v not in allowed:
                    raise ValueError(f"unknown {f.name} {clip(repr(v))}; choose from {', '.join(allowed)}")

    def options(self) -> dict[str, Any]:
        """The request's options as the Editor's keyword methods take them (sampling flattened; the inputs
        left out)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("image", "mask", "sampling")}
        sampling = getattr(self, "sampling", None)
        return {**d, **(sampling.overrides() if sampling is not None else {})}


@dataclass(kw_only=True)
class _Request(_Options):
    seed: int | None = opt(None, "Random seed, 0 to 2**63-1 (default: drawn at random and recorded with the result).")
    sampling: Sampling = opt(doc="Sampling overrides.", factory=Sampling, http=False)
    output_type: str = opt("pil", "pil (PIL images) or np (arrays; 16-bit inputs stay 16-bit).", kind="choice",
                           choices=OUTPUT_TYPES, http=False)

    def _check_common(self, scales: "int | Sequence[int] | None") -> None:
        check_seed(self.seed)
        self.sampling.validate()
        self._check_fields(scales)


_LABEL_DOC = ("Class that guides the fill: an index or a name; auto = the class the model finds most likely for "
              "the known pixels (models with at most 100 classes, else none); infer = always infer; none = "
              "unconditional.")


@dataclass(kw_only=True)
class _MaskedRequest(_Request):
    strategy: str = opt("crop", "Size strategy: crop (a square around the region, resized to the model), resize "
                                "(the whole image in one canvas), original (native-size tiles in order); auto = "
                                "crop.", kind="choice",
                        choices=STRATEGIES)
    mode: str = opt("default", "How the canvas is encoded: default = varedit's method (the hole prefilled, "
                               "coverage keep maps, open loop); official = the official notebook's (the canvas as "
                               "it is: no prefill, no coverage rule).",
                   kind="choice", choices=MODES)
    n: int = opt(1, f"Candidates per image (1 to {MAX_CANDIDATES}), best first by the model's log-likelihood "
                    f"unless ranking is off.", kind="int", lo=1, hi=MAX_CANDIDATES)
    rank: bool = opt(True, "Rank the candidates by the model's log-likelihood, best first (off: sampling order).")
    keep_scales: int = opt(0, "Keep the input's first k scales inside the hole: the layout is kept and the "
                              "detail regenerated (at most the model's number of scales).", kind="int", lo=0,
                           hi="scales")
    grow_tokens: int = opt(0, "Grow the regenerated token region by this many cells (at most the model's "
                              "largest token grid).", kind="int", lo=0, hi="patch")
    feather: float | None = opt(None, "Paste-back feather width in pixels of the output: the edit blends into the "
                                         "picture over this band outside the region; pixels farther away are "
                                         "returned unchanged (default: 4).", kind="number", lo=0, hi=MAX_FEATHER)
    prefill: str = opt(INPAINT_PREFILL, "How the hole is filled from the known pixels before tokenising (ns: "
                                         "OpenCV Navier-Stokes; pushpull: a smooth membrane; none: not filled).",
                       kind="choice", choices=PREFILLS)
    harmonize: bool = opt(True, "Remove the tokeniser's colour error from the fill (membrane correction).")
    paste_back: bool = opt(True, "Blend the result into the input with the feathered mask (false: the decoded "
                                 "window as it is).")
    coverage: float = opt(FILL_COVERAGE, "Default mode: a latent cell is regenerated when more than 1 - "
                                         "coverage of it is hole, in (0, 1].", kind="number", lo=0,
                          lo_open=True, hi=1)

    def _check_masked(self, scales: "int | Sequence[int] | None", wh: tuple[int, int] | None) -> None:
        self._check_common(scales)
        check_candidates(self.n, wh)


@dataclass(kw_only=True)
class _RegionRequest(_MaskedRequest):
    image: Any = opt(None, "The input image (a path, PIL image, array or LoadedImage).", http=False)
    mask: Any = opt(None, "White = regenerate (an image, array or path; alpha honoured).", http=False)
    box: Sequence[float] | None = opt(None, "The region x0,y0,x1,y1: pixels (ints) or fractions of the side (floats).",
                                      json=Optional[list[Union[int, float]]])
    invert: bool = opt(False, "Invert the mask: regenerate what it leaves black.")
    threshold: float = opt(0.5, "Mask threshold in [0, 1] for grey masks.", kind="number", lo=0, hi=1)
    mask_mismatch: str = opt("resize", "A mask of another size than the image: resize it, or error.",
                             kind="choice", choices=("resize", "error"), http=False)

    def _check_region(self, scales: "int | Sequence[int] | None", image_size: tuple[int, int] | None) -> None:
        self._check_masked(scales, image_size)
        if self.mask is not None and self.box is not None:
            raise ValueError("give a mask or a box, not both")
        if self.box is not None and image_size is not None:
            from .processing import box_pixels
            box_pixels(image_size, self.box)


@dataclass(kw_only=True)
class InpaintRequest(_RegionRequest):
    """Regenerate a region: a ``mask`` (white = regenerate), a ``box`` (ints pixels, floats fractions) or,
    when both are None, the image's transparent pixels."""

    label: int | str | None = opt("auto", _LABEL_DOC, json=Optional[Union[int, str]])

    task: ClassVar[str] = "inpaint"

    def validate(self, scales: "int | Sequence[int] | None" = None, image_size: tuple[int, int] | None = None
                 ) -> None:
        """Every limit and unit rule: ``scales`` is the model's number of scales or its scale list
        (patch_nums); ``image_size`` the input's (width, height). None skips the checks that need it."""
        self._check_region(scales, image_size)


@dataclass(kw_only=True)
class EditRequest(_RegionRequest):
    """Redraw a ``box`` (or a ``mask``) as ``class_`` (an index or a name)."""

    class_: int | str = opt(doc="Target class: an index or a name.", alias="class", json=Union[int, str])
    coverage: float = opt(EDIT_COVERAGE, "Default mode: a latent cell is regenerated when more than 1 - coverage "
                                         "of it is hole, in (0, 1] (1: every cell the region touches).",
                          kind="number", lo=0, lo_open=True, hi=1)

    task: ClassVar[str] = "edit"

    def validate(self, scales: "int | Sequence[int] | None" = None, image_size: tuple[int, int] | None = None
                 ) -> None:
        self._check_region(scales, image_size)
        if isinstance(self.class_, bool) or not isinstance(self.class_, (int, str)) and \
                type(self.class_).__module__ != "numpy":
            raise TypeError(f"class must be a class index or name, not {type(self.class_).__name__}")
        if self.mask is None and self.box is None:
            raise ValueError("give the region to redraw: a box or a mask")


_AMOUNT_DOC = ("Whole pixels (64), a ratio of the side below 1 (0.5) or a percentage (\"150%\"); a "
               "number of 1 or more with a point (64.0) is refused as ambiguous.")


@dataclass(kw_only=True)
class OutpaintRequest(_MaskedRequest):
    """Extend the canvas: amounts as :func:`varedit.processing.outpaint_amount` reads them."""

    image: Any = opt(None, "The input image (a path, PIL image, array or LoadedImage).", http=False)
    left: Any = opt(0, _AMOUNT_DOC, json=Union[int, float, str])
    right: Any = opt(0, _AMOUNT_DOC, json=Union[int, float, str])
    top: Any = opt(0, _AMOUNT_DOC, json=Union[int, float, str])
    bottom: Any = opt(0, _AMOUNT_DOC, json=Union[int, float, str])
    fill: str = opt("blur", "What the new area of the canvas holds at first: blur (its edges replicated, then "
                                "blurred), edge, mean (the image's mean colour) or gray.",
                   kind="choice", choices=FILLS)
    label: int | str | None = opt("auto", _LABEL_DOC, json=Optional[Union[int, str]])
    strategy: str = opt("auto", "Size strategy: auto (crop), crop, resize, original (native-size tiles, each "
                                "seeing less context).", kind="choice", choices=STRATEGIES)
    prefill: str = opt(OUTPAINT_PREFILL, "How the new area is filled from the known pixels before tokenising "
                                          "(pushpull: a smooth membrane; ns: OpenCV Navier-Stokes; none: not "
                                          "filled).", kind="choice", choices=PREFILLS)

    task: ClassVar[str] = "outpaint"

    def sides(self) -> tuple[Any, Any, Any, Any]:
        """left, right, top, bottom as given (:func:`varedit.processing.outpaint_amount` reads each)."""
        return self.left, self.right, self.top, self.bottom

    def validate(self, scales: "int | Sequence[int] | None" = None, image_size: tuple[int, int] | None = None
                 ) -> None:
        from .processing import extended_size, outpaint_amount
        amounts = [outpaint_amount(v, s) for v, s in zip(self.sides(), ("left", "right", "top", "bottom"))]
        if not any(amounts):
            raise ValueError("nothing to extend: left, right, top and bottom are all 0 (ints are pixels, floats "
                             "below 1 a ratio of the side, '150%' a percentage)")
        self._check_fields(scales)  # the fill, before the size
        size = None if image_size is None else extended_size(image_size, *self.sides())
        self._check_masked(scales, size)


@dataclass(kw_only=True)
class UpscaleRequest(_Request):
    """Upscale by ``scale`` in (0, MAX_UPSCALE]; ``keep_scales`` None = the model's upscale default."""

    image: Any = opt(None, "The input image (a path, PIL image, array or LoadedImage).", http=False)
    scale: float = opt(2.0, f"Output size / input size, above 0 and at most {MAX_UPSCALE:g}.", kind="number",
                       lo=0, lo_open=True, hi=MAX_UPSCALE)
    keep_scales: int | None = opt(None, "Scales forced from the input (default: all but the last third; 0 samples "
                                            "every scale).",
                                  kind="int", lo=0, hi="scales")
    label: int | str | None = opt(None, "Class: an index or a name (default: unconditional).",
                                  json=Optional[Union[int, str]])
    back_project: bool = opt(True, "Re-impose the input's low frequencies: the result's downscaled version matches the "
                                "input again.")

    task: ClassVar[str] = "upscale"

    def validate(self, scales: "int | Sequence[int] | None" = None, image_size: tuple[int, int] | None = None
                 ) -> None:
        self._check_common(scales)
        if image_size is not None:
            upscaled_size(image_size, self.scale)


def upscaled_size(wh: tuple[int, int], scale: float, max_pixels: int | None = -1) -> tuple[int, int]:
    """The output size of an upscale by ``scale`` (in (0, ``MAX_UPSCALE``]), checked against the pixel
    limit (``max_pixels``; -1: the default limit, None: none) before any work."""
    from .processing import DEFAULT_MAX_PIXELS, limit_pixels
    scale = check_scale(scale)
    W, H = max(1, round(wh[0] * scale)), max(1, round(wh[1] * scale))
    limit_pixels((W, H), DEFAULT_MAX_PIXELS if max_pixels == -1 else max_pixels, "the upscaled image")
    return W, H


@dataclass(kw_only=True)
class GenerateRequest(_Request):
    """``class_``: an index, a name, a list of them (one image each) or None (unconditional)."""

    class_: int | str | Sequence[int | str] | None = opt(
        None, "Class index or name, a list of them (one image each, whatever n), or null (unconditional).",
        alias="class", json=Optional[Union[int, str, list[Union[int, str]]]])
    n: int = opt(1, "Number of images.", kind="int", lo=1, hi=MAX_GENERATE)
    batch_size: int = opt(8, "Images sampled at once.", kind="int", lo=1, hi=MAX_BATCH)

    task: ClassVar[str] = "generate"

    def validate(self, scales: "int | Sequence[int] | None" = None, image_size: tuple[int, int] | None = None
                 ) -> None:
        self._check_common(scales)
        if isinstance(self.class_, (list, tuple)) and not self.class_:
            raise ValueError("the list of classes is empty")

    def count(self) -> int:
        """How many images: the list's length, else ``n``."""
        return len(self.class_) if isinstance(self.class_, (list, tuple)) else self.n


@dataclass(kw_only=True)
class InferLabelRequest(_Options):
    """The class the model finds most likely for what lies outside a ``mask`` or ``box`` (or the image's
    transparent pixels)."""

    image: Any = opt(None, "The input image (a path, PIL image, array or LoadedImage).", http=False)
    mask: Any = opt(None, "White = the region whose surroundings are read.", http=False)
    box: Sequence[float] | None = opt(None, "The region x0,y0,x1,y1: pixels (ints) or fractions of the side (floats).",
                                      json=Optional[list[Union[int, float]]])
    strategy: str = opt("crop", "Size strategy of the windows read.", kind="choice", choices=STRATEGIES)

    task: ClassVar[str] = "infer-label"

    def validate(self, scales: "int | Sequence[int] | None" = None, image_size: tuple[int, int] | None = None
                 ) -> None:
        if self.mask is not None and self.box is not None:
            raise ValueError("give a mask or a box, not both")
        self._check_fields(scales)
        if self.box is not None and image_size is not None:
            from .processing import box_pixels
            box_pixels(image_size, self.box)


Request = InpaintRequest | OutpaintRequest | EditRequest | UpscaleRequest | GenerateRequest | InferLabelRequest
REQUESTS: dict[str, type] = {r.task: r for r in (InpaintRequest, OutpaintRequest, EditRequest, UpscaleRequest,
                                                   GenerateRequest, InferLabelRequest)}
