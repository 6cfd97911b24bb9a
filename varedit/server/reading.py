"""Reading a task request: its parameters and images from a JSON or multipart body (malformed bodies,
oversized integers and deep nesting refused with one line), and the parameters validated."""
from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import images as I
from . import schemas as S
from .config import ServerConfig
from .guard import BodyTooLarge


class ApiError(Exception):
    """An answer other than 200: status, one-line detail, extra headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        detail = S.short_detail(detail)
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


async def read_body(request: Request, cfg: ServerConfig, image_fields: tuple[str, ...]
                ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(parameters, images) from a JSON or multipart body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    try:
        if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            try:
                form = await request.form(max_files=8, max_fields=64, max_part_size=cfg.max_upload_bytes)
            except BodyTooLarge:
                raise
            except StarletteHTTPException as e:  # starlette's own limits
                raise ApiError(400, f"malformed form data: {e.detail}") from None
            except Exception as e:  # malformed multipart: the parser raises several types
                raise ApiError(400, f"malformed form data: {' '.join(str(e).split()) or type(e).__name__}") from None
            for key, value in form.multi_items():
                if key in fields or key in files:
                    raise ApiError(422, f"{S.clip(key)}: given more than once")
                if isinstance(value, UploadFile):
                    if key not in image_fields:
                        raise ApiError(422, f"{S.clip(key)}: unexpected file (this endpoint takes files "
                                            f"{', '.join(image_fields) or 'none'})")
                    files[key] = await value.read()
                elif key in image_fields:
                    files[key] = I.b64decode(value, key)
                else:
                    fields[key] = value
            return fields, files
        body = await request.body()
    except BodyTooLarge as e:
        raise ApiError(413, str(e)) from None
    except ValueError as e:
        raise ApiError(422, str(e)) from None
    if not body.strip():
        return fields, files
    if ctype not in ("application/json", "") and not ctype.endswith("+json"):
        raise ApiError(415, f"unsupported content type {ctype!r}: send application/json or multipart/form-data")
    return await run_in_threadpool(_parse_json, body, image_fields)  # large bodies: off the event loop


MAX_JSON_DEPTH = 32     # arrays and objects inside each other; a request needs 3
MAX_INT_DIGITS = 100    # digits of an integer in a JSON body; a seed has at most 19


class _LongInt(ValueError):
    pass


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:  # before int(), whose own limit (4300 digits) raises a bare ValueError
        raise _LongInt(f"the body has an integer of {digits} digits (this server reads at most {MAX_INT_DIGITS})")
    return int(text)


def _too_deep(data: Any, limit: int) -> bool:
    """Whether ``data`` nests lists and dicts more than ``limit`` levels deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _load_json(body: bytes) -> Any:
    """``json.loads`` for untrusted bodies: malformed JSON, integers too long to convert and nesting
    too deep for the parser (or anything after it) are each a 400 with one line."""
    deep = ApiError(400, f"the body nests arrays or objects more than {MAX_JSON_DEPTH} levels deep "
                         f"(this server's limit)")
    try:
        data = json.loads(body, parse_int=_parse_int)
    except _LongInt as e:
        raise ApiError(400, str(e)) from None
    except RecursionError:  # deeper than the interpreter's recursion limit
        raise deep from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ApiError(400, f"the body is not valid JSON: {e}") from None
    if isinstance(data, (dict, list)) and _too_deep(data, MAX_JSON_DEPTH):
        raise deep
    return data


def _parse_json(body: bytes, image_fields: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, bytes]]:
    data = _load_json(body)
    if not isinstance(data, dict):
        raise ApiError(422, f"the body must be a JSON object, not {type(data).__name__}")
    files: dict[str, bytes] = {}
    for key in image_fields:
        if key in data and data[key] is not None:
            v = data.pop(key)
            if not isinstance(v, str):
                raise ApiError(422, f"{key}: must be a base64 string (PNG or JPEG), not {type(v).__name__}")
            try:
                files[key] = I.b64decode(v, key)
            except ValueError as e:
                raise ApiError(422, str(e)) from None
        else:
            data.pop(key, None)
    return data, files


def validate(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        raise ApiError(422, S.error_text(e)) from None
