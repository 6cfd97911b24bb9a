"""Request and response bodies of the HTTP API (pydantic). The task parameters are generated from the
request types (:mod:`varedit.requests`); images are not fields of these models: they come as base64
strings in JSON (``image``, ``mask``) or as files in multipart, and are checked against the limits before
they are decoded (see :mod:`varedit.server.reading`)."""
from __future__ import annotations

import dataclasses as dc
import math
import re
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from .. import requests as R
from ..validation import MAX_ECHO, clip, parse_number

Number = int | float

# what an error message may repeat of its input: a value (validation.MAX_ECHO), the errors listed, the
# whole detail
MAX_ERRORS = 5
MAX_DETAIL = 1000
_LONG_RUN = re.compile(r"[^\s…]{%d,}" % (MAX_ECHO + 1))  # "…" ends a clipped run: clipping twice is once
_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


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
        out: list[Number] = []
        for p in v.replace(";", ",").split(","):
            try:
                out.append(parse_number(p))
            except ValueError:
                raise ValueError(f"expected numbers x0,y0,x1,y1, got {clip(repr(v))}") from None
        return out
    return v


def _check_box(v: Any) -> Any:
    if v is not None:
        if len(v) != 4:
            raise ValueError(f"box needs 4 numbers x0,y0,x1,y1, got {len(v)}")
        if not all(math.isfinite(x) for x in v):
            raise ValueError("box values must be finite")
    return v


# ---- the task parameters, generated from the request types ----------------------------------------------
# Every option a client may send is a field of its task's request type (varedit.requests), with the same
# name, default and description; its limits appear in the JSON schema, and the request type's validate()
# checks them, so a bad value gets the message it gets from the Python API and the command line. pydantic
# only reads the JSON types (and form fields' text). Images travel beside these fields (base64 in JSON,
# files in multipart: see _body_doc in app.py); the server chooses the output type.
class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _schema_extra(f: dc.Field) -> dict[str, Any]:  # type: ignore[type-arg]
    md, extra = f.metadata, {}
    if md.get("kind") in ("int", "number"):
        if md["lo"] is not None:
            extra["exclusiveMinimum" if md["lo_open"] else "minimum"] = md["lo"]
        if isinstance(md["hi"], (int, float)):
            extra["maximum"] = md["hi"]
    if md.get("choices") is not None:
        extra["enum"] = [*R.choices_of(f), *([None] if f.default is None else [])]
    return extra


def _fields(request_type: type) -> dict[str, tuple[Any, Any]]:
    hints = typing.get_type_hints(request_type)
    out: dict[str, tuple[Any, Any]] = {}
    for f in dc.fields(request_type):
        if f.name == "sampling":
            out.update(_fields(R.Sampling))
            continue
        if not f.metadata.get("http", True):
            continue
        default = f.default if f.default is not dc.MISSING else ...
        typ = f.metadata.get("json") or hints[f.name]
        out[f.name] = (typ, Field(default, alias=f.metadata.get("alias"), description=f.metadata.get("doc") or None,
                                  json_schema_extra=_schema_extra(f) or None))
    return out


def request_model(request_type: type, name: str, **transport: tuple[Any, Any]) -> type[BaseModel]:
    """The pydantic model of a request type's HTTP parameters: its fields (and the sampling options) less
    those marked ``http=False``, plus the ``transport`` fields (``name=(type, Field(...))``) the server
    itself reads."""
    fields = {**_fields(request_type), **transport}
    validators = {}
    if "box" in fields:
        validators = {"_box_pre": field_validator("box", mode="before")(_split_numbers),
                      "_box_chk": field_validator("box")(_check_box)}
    model = create_model(name, __base__=_Base, __validators__=validators, __doc__=request_type.__doc__,  # type: ignore[call-overload]
                         **fields)
    return model


def to_request(request_type: type, params: BaseModel, **inputs: Any) -> Any:
    """The request of validated parameters (transport fields left out) and the server's ``inputs``
    (image, mask, output type)."""
    names = {f.name for f in dc.fields(request_type)}
    data = {k: getattr(params, k) for k in type(params).model_fields}
    own = {k: v for k, v in data.items() if k in names}
    if "sampling" in names:
        own["sampling"] = R.Sampling(**{k: data[k] for k in R.SAMPLING_NAMES})
    return request_type(**own, **inputs)


InpaintParams = request_model(R.InpaintRequest, "InpaintParams")
OutpaintParams = request_model(R.OutpaintRequest, "OutpaintParams")
EditParams = request_model(R.EditRequest, "EditParams")
UpscaleParams = request_model(R.UpscaleRequest, "UpscaleParams")
GenerateParams = request_model(R.GenerateRequest, "GenerateParams")
InferLabelParams = request_model(
    R.InferLabelRequest, "InferLabelParams",
    top=(int, Field(5, ge=1, le=1000, description="How many classes of the posterior to return.")))
PARAMS: dict[str, type[BaseModel]] = {"inpaint": InpaintParams, "outpaint": OutpaintParams, "edit": EditParams,
                                      "upscale": UpscaleParams, "generate": GenerateParams,
                                      "infer-label": InferLabelParams}


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
