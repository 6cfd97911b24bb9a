"""Request and response bodies of the HTTP API (pydantic). Images are not fields of these models:
they come as base64 strings in JSON (``image``, ``mask``) or as files in multipart, and are checked
against the limits before they are decoded (see :mod:`varedit.server.app`)."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ..processing import FILL_METHODS, outpaint_amount
from ..requests import MAX_UPSCALE, check_scale

Strategy = Literal["auto", "crop", "resize", "original"]
Mode = Literal["default", "official"]
Prefill = Literal[FILL_METHODS + ("none",)]  # type: ignore[valid-type]
Fill = Literal["blur", "edge", "mean", "gray"]
Number = int | float
Amount = int | float | str  # an outpaint amount: pixels, a ratio below 1, or a percentage string
ClassSpec = int | str

SEED_MAX = 2 ** 63 - 1

# what an error message may repeat of its input: a value, the errors listed, the whole detail
MAX_ECHO = 200
MAX_ERRORS = 5
MAX_DETAIL = 1000
_LONG_RUN = re.compile(r"[^\s…]{%d,}" % (MAX_ECHO + 1))  # "…" ends a clipped run: clipping twice is once
_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def clip(value: Any, limit: int = MAX_ECHO) -> str:
    """``value`` as text of at most about ``limit`` characters, for an error message to repeat."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def short_detail(detail: str) -> str:
    """An error detail as one line that repeats no long input: whitespace collapsed, Python object reprs
    (with their heap addresses) dropped, every run of more than ``MAX_ECHO`` non-space characters cut,
    and the whole at most ``MAX_DETAIL`` characters. Applying it twice changes nothing more."""
    text = " ".join(_REPR.sub("the upload", detail).split())
    text = _LONG_RUN.sub(lambda m: clip(m.group()), text)
    if len(text) > MAX_DETAIL:
        mark = "… (cut)"
        text = text[:MAX_DETAIL - len(mark)] + mark
    return text or "error"


def _split_numbers(v: Any) -> Any:
    """``"10,20,30,40"`` (a multipart form field) -> [10, 20, 30, 40]; ints stay ints (pixels), numbers
    with a point are floats (fractions), as on the command line."""
    if isinstance(v, str):
        parts = [p.strip() for p in v.replace(";", ",").split(",")]
        out: list[Number] = []
        for p in parts:
            try:
                out.append(float(p) if any(c in p for c in ".eE") else int(p))
            except ValueError:
                raise ValueError(f"expected numbers x0,y0,x1,y1, got {clip(repr(v))}") from None
        return out
    return v


class Params(BaseModel):
    """Sampling settings shared by every task; None means the model's default (``GET /api/v1/model``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="Random seed (default: drawn and returned).")
    cfg: float | None = Field(None, ge=0, le=100, allow_inf_nan=False, description="Guidance scale.")
    top_k: int | None = Field(None, ge=0, le=1_000_000, description="Top-k filter (1 = greedy, 0 = off).")
    top_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False, description="Top-p (nucleus) filter.")
    more_smooth: bool | None = Field(None, description="Gumbel-softmax smoothing (torch backend only).")
    guidance: Literal["linear", "constant"] | None = Field(None, description="Guidance schedule over scales.")

    def sampling(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("cfg", "top_k", "top_p", "more_smooth", "guidance")}


class MaskedParams(Params):
    n: int = Field(1, ge=1, description="Candidates, ranked by the model's log-likelihood unless rank is false.")
    rank: bool = True
    mode: Mode = Field("default", description="default, or official (the notebook method).")
    strategy: Strategy | None = Field(None, description="Size strategy (default: crop; outpaint auto).")
    keep_scales: int = Field(0, ge=0, description="Keep the input's first k scales inside the hole: the layout "
                                                  "is kept and the detail re-rolled.")
    feather: float | None = Field(None, ge=0, le=4096, allow_inf_nan=False,
                                  description="Paste-back feather in pixels of the output (default: 4).")
    prefill: Prefill | None = Field(None, description="How the hole is filled before tokenising.")
    harmonize: bool = True


def _check_box(v: Any) -> Any:
    if v is not None:
        if len(v) != 4:
            raise ValueError(f"box needs 4 numbers x0,y0,x1,y1, got {len(v)}")
        if not all(math.isfinite(x) for x in v):
            raise ValueError("box values must be finite")
    return v


class InpaintParams(MaskedParams):
    """``image`` plus a ``mask`` (white = regenerate, the image's size), a ``box``, or neither when the
    image has transparent pixels to fill."""

    box: list[Number] | None = Field(None, description="x0,y0,x1,y1: pixels (ints) or fractions (floats).")
    invert: bool = False
    label: ClassSpec | None = Field("auto", description="Class guiding the fill: index or name, auto, infer "
                                                        "or none.")

    _box_pre = field_validator("box", mode="before")(_split_numbers)
    _box_chk = field_validator("box")(_check_box)


_AMOUNT_DOC = ("Whole pixels (64), a ratio of the side below 1 (0.5) or a percentage string (\"150%\"); a "
               "number of 1 or more with a point (64.0) is refused as ambiguous.")


class OutpaintParams(MaskedParams):
    left: Amount = Field(0, description=_AMOUNT_DOC)
    right: Amount = Field(0, description=_AMOUNT_DOC)
    top: Amount = Field(0, description=_AMOUNT_DOC)
    bottom: Amount = Field(0, description=_AMOUNT_DOC)
    fill: Fill = "blur"
    label: ClassSpec | None = Field("auto", description="Class guiding the fill: index or name, auto, infer "
                                                        "or none.")

    @field_validator("left", "right", "top", "bottom")
    @classmethod
    def _amount(cls, v: Amount, info: ValidationInfo) -> Amount:
        # the one rule of every front-end (processing.outpaint_amount): ints pixels, floats below 1 ratios
        return outpaint_amount(v, str(info.field_name))


class EditParams(MaskedParams):
    box: list[Number] = Field(..., description="x0,y0,x1,y1: pixels (ints) or fractions (floats).")
    class_: ClassSpec = Field(..., alias="class", description="Target class: index or name.")

    _box_pre = field_validator("box", mode="before")(_split_numbers)
    _box_chk = field_validator("box")(_check_box)


class UpscaleParams(Params):
    scale: float = Field(2.0, description=f"Output size / input size, above 0 and at most {MAX_UPSCALE:g}.",
                         json_schema_extra={"exclusiveMinimum": 0, "maximum": MAX_UPSCALE})
    keep_scales: int | None = Field(None, ge=0, description="Scales forced from the input (default: the model's "
                                                            "upscale default).")
    back_project: bool = True
    label: ClassSpec | None = Field(None, description="Class (default: unconditional).")

    _scale = field_validator("scale")(lambda v: check_scale(v))  # the limit and message of every front-end


class GenerateParams(Params):
    class_: ClassSpec | list[ClassSpec] | None = Field(
        None, alias="class", description="Class index or name, a list of them (one image each), or null "
                                         "(unconditional).")
    n: int = Field(1, ge=1, description="Images (ignored when class is a list).")


class InferLabelParams(BaseModel):
    """``image`` plus a ``mask`` or a ``box`` (or transparent pixels): the class the model finds most
    likely for what is outside."""

    model_config = ConfigDict(extra="forbid")

    box: list[Number] | None = None
    strategy: Strategy = "crop"
    top: int = Field(5, ge=1, le=1000, description="How many classes of the posterior to return.")

    _box_pre = field_validator("box", mode="before")(_split_numbers)
    _box_chk = field_validator("box")(_check_box)


class TaskResult(BaseModel):
    """The JSON answer of every image task (and the ``result`` event of a stream)."""

    task: str
    seed: int
    images: list[str] = Field(description="Base64 PNGs, best candidate first when ranked.")
    scores: list[float] = Field(description="Mean log-likelihood of the regenerated tokens, per image.")
    settings: dict[str, Any] = Field(description="Every setting and the seed: what reproduces the result.")
    mask: str | None = Field(None, description="Base64 PNG of the regenerated region (white), output size.")
    width: int
    height: int
    elapsed_s: float = Field(description="Seconds the model worked on it (queue wait not included).")


class LabelResult(BaseModel):
    label: int
    name: str
    posterior: list[tuple[str, float]] = Field(description="The top classes and their posterior, best first.")
    elapsed_s: float


class ClassInfo(BaseModel):
    index: int
    names: list[str]


class ModelInfo(BaseModel):
    name: str
    backend: str
    image_size: int
    patch_nums: list[int]
    num_classes: int
    classes: list[ClassInfo]
    defaults: dict[str, Any] = Field(description="Sampling defaults of generate and upscale.")
    edit_defaults: dict[str, Any] = Field(description="Sampling defaults of inpaint, outpaint and edit.")
    can_infer_label: bool
    previews: bool = Field(description="Whether progress events carry decoded previews (torch backend).")
    limits: dict[str, Any]
    auth: bool


class ErrorBody(BaseModel):
    detail: str


def error_text(e: ValidationError) -> str:
    """A pydantic error as one line: ``field: message; field: message`` (the first ``MAX_ERRORS``)."""
    return errors_text(e.errors(include_url=False))


def errors_text(errors: Sequence[Any], skip: int = 0) -> str:
    """Validation errors (pydantic's dicts) as one line: the first ``MAX_ERRORS`` of them, then how many
    more; field names and messages cut at ``MAX_ECHO`` characters. ``skip``: leading location parts to
    leave out (FastAPI's ``query``, ``body``)."""
    parts = []
    for err in errors[:MAX_ERRORS]:
        full = tuple(err.get("loc", ()))[skip:]
        loc = ".".join(str(x) for x in full if not isinstance(x, int) or len(full) > 1)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{clip(loc)}: {clip(msg)}" if loc else clip(msg))
    if len(errors) > MAX_ERRORS:
        parts.append(f"and {len(errors) - MAX_ERRORS} more")
    return "; ".join(parts) or "invalid request"
