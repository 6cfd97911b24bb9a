"""The FastAPI application: the HTTP API over :class:`varedit.tasks.Editor` and the browser editor.

    from varedit.loading import EditorSpec, load_editor
    from varedit.server import ServerConfig, create_app
    app = create_app(load_editor(EditorSpec("demo")), ServerConfig())

Every task endpoint (``POST /api/v1/{inpaint,outpaint,edit,upscale,generate,infer-label}``) takes its
parameters and images as JSON (images as base64 strings) or as multipart form data (images as
files), validates everything and decodes the images *before* the job is queued (so bad input is a
4xx at once and never occupies the model), then answers with JSON (``TaskResult``), with the best
image as PNG (``?format=png``), or with a server-sent event stream (``?stream=true``) that reports
the queue position, every scale (with the decoded coarse-to-fine preview) and the result.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from .. import processing as P
from .. import requests as R
from . import images as I
from . import schemas as S
from .config import ServerConfig
from .jobs import QueueFull, Worker

log = logging.getLogger(__name__)

API = "/api/v1"
PUBLIC_API = (f"{API}/health",)


class ApiError(Exception):
    """An answer other than 200: status, one-line detail, extra headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        detail = S.short_detail(detail)
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


class BodyTooLarge(Exception):
    pass


def _err(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": S.short_detail(detail)}, status_code=status, headers=headers)


def _plain(o: Any) -> Any:
    """JSON for numpy scalars and arrays in settings."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _jsonable(d: Any) -> Any:
    return json.loads(json.dumps(d, default=_plain))


# ---- access control and body limit (plain ASGI, so streamed responses pass untouched) ---------------
# The editor's page loads its script and style sheet from this server and shows images from data: and
# blob: URLs; nothing inline, nothing from elsewhere, no framing.
EDITOR_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
              "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
              "frame-ancestors 'none'")
# /docs and /redoc (Swagger UI, ReDoc) start with an inline script or style and draw with inline styles
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    """Headers added to every answer: no MIME sniffing, no framing, no Referer (a page URL may carry
    ``?token=``), and a content security policy."""
    csp = DOCS_CSP if path in DOCS_PATHS else EDITOR_CSP
    return [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"), (b"content-security-policy", csp.encode())]


class Guard:
    """Host check (DNS rebinding), same-origin check and token for ``/api/``, request body limit, and the
    security headers on every answer."""

    def __init__(self, app: ASGIApp, config: ServerConfig):
        self.app = app
        self.config = config

    async def _reply(self, send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"detail": S.short_detail(detail)}).encode()
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(scope["path"])

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self._check(scope, receive, secured)

    async def _check(self, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = self.config
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if cfg.allowed_hosts is not None:
            name = urlsplit(f"//{host}").hostname or ""
            if name not in cfg.allowed_hosts and f"[{name}]" not in cfg.allowed_hosts:
                await self._reply(send, 400, f"unexpected Host header {S.clip(repr(host))}: this server answers "
                                             f"only to {', '.join(cfg.allowed_hosts)}")
                return
        path: str = scope["path"]
        if not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            await self._reply(send, 403, f"cross-origin request from {S.clip(repr(origin))} refused")
            return
        if cfg.token is not None and path not in PUBLIC_API:
            given = None
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            else:
                given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [None])[0]
            if given is None or not secrets.compare_digest(given.encode(), cfg.token.encode()):
                await self._reply(send, 401, "missing or wrong access token: send 'Authorization: Bearer TOKEN' "
                                             "(the token `varedit serve` printed)",
                                  {"WWW-Authenticate": "Bearer"})
                return
        limit = cfg.max_upload_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reply(send, 413, f"request body is {int(length) / 1e6:.1f} MB, above this server's limit "
                                         f"of {limit / 1e6:.1f} MB")
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"request body is above this server's limit of {limit / 1e6:.1f} MB")
            return msg

        await self.app(scope, counted, send)


# ---- reading a request -----------------------------------------------------------------------------
async def _read(request: Request, cfg: ServerConfig, image_fields: tuple[str, ...]
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


def _validate(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        raise ApiError(422, S.error_text(e)) from None


# ---- the tasks ---------------------------------------------------------------------------------------
Prepared = Callable[[Any, Callable[..., None]], Any]  # (editor, progress) -> EditResult | LabelGuess


class Tasks:
    """Turns a validated request into a job function, refusing what would fail or exceed the limits."""

    def __init__(self, editor: Any, cfg: ServerConfig):
        self.ed = editor
        self.cfg = cfg
        self.scales = tuple(editor.backend.patch_nums)

    # helpers
    def _image(self, files: dict[str, bytes]) -> P.LoadedImage:
        if "image" not in files:
            raise ApiError(422, "image: missing (send it as a base64 string in JSON or as a file in multipart)")
        return I.load_image(files["image"], self.cfg.max_pixels)

    def _mask(self, files: dict[str, bytes], loaded: P.LoadedImage) -> np.ndarray | None:
        return I.load_mask(files["mask"], loaded.size, self.cfg.max_pixels) if "mask" in files else None

    def _n(self, n: int) -> None:
        if n > self.cfg.max_candidates:
            raise ApiError(422, f"n: {n} candidates asked, this server allows at most {self.cfg.max_candidates}")

    def _out_size(self, w: int, h: int, what: str) -> None:
        if w * h > self.cfg.max_pixels:
            raise ApiError(422, f"the {what} would be {w}x{h} = {w * h / 1e6:.1f} MP, above this server's limit "
                                f"of {self.cfg.max_pixels / 1e6:.1f} MP")

    def _job(self, req: Any, preview: bool, size: tuple[int, int] | None) -> Prepared:
        """Every limit and unit rule of the request type checked now (a 422 before the queue), then the job."""
        req.validate(self.scales, size)
        return lambda ed, cb: ed.run(req, callback=cb, preview=preview)

    @staticmethod
    def _output_type(loaded: P.LoadedImage) -> str:
        """PIL keeps the ICC profile; 16-bit images come back as arrays, which PIL would cut to 8 bits."""
        return "np" if loaded.bit_depth == 16 else "pil"

    def _region(self, p: Any, files: dict[str, bytes]) -> dict[str, Any]:
        """The image and the region of a task with one: the mask checked against the image, and the checks
        the Editor makes on the region (one source: a mask, a box or the alpha), made now."""
        loaded = self._image(files)
        mask = self._mask(files, loaded)
        P.region_mask(loaded.size, mask, p.box, alpha=loaded.alpha)
        return dict(image=loaded, mask=mask)

    # tasks: each translates its parameters into a request (varedit.requests) and returns the job function;
    # class names are resolved now, so an unknown one is a 422 before the queue
    def inpaint(self, p: Any, files: dict[str, bytes], preview: bool) -> Prepared:
        self._n(p.n)
        region = self._region(p, files)
        p.label = self.ed.check_label(p.label)
        req = S.to_request(R.InpaintRequest, p, **region, output_type=self._output_type(region["image"]))
        return self._job(req, preview, region["image"].size)

    def outpaint(self, p: Any, files: dict[str, bytes], preview: bool) -> Prepared:
        self._n(p.n)
        loaded = self._image(files)
        p.label = self.ed.check_label(p.label)
        req = S.to_request(R.OutpaintRequest, p, image=loaded, output_type=self._output_type(loaded))
        w, h = P.extended_size(loaded.size, *req.amounts())
        self._out_size(w, h, "outpainted image")
        return self._job(req, preview, loaded.size)

    def edit(self, p: Any, files: dict[str, bytes], preview: bool) -> Prepared:
        self._n(p.n)
        loaded = self._image(files)
        p.class_ = self.ed.class_index(p.class_)
        req = S.to_request(R.EditRequest, p, image=loaded, output_type=self._output_type(loaded))
        return self._job(req, preview, loaded.size)

    def upscale(self, p: Any, files: dict[str, bytes], preview: bool) -> Prepared:
        loaded = self._image(files)
        self._out_size(*R.upscaled_size(loaded.size, p.scale, None), "upscaled image")
        p.label = None if p.label is None else self.ed.class_index(p.label)
        req = S.to_request(R.UpscaleRequest, p, image=loaded, output_type=self._output_type(loaded))
        return self._job(req, preview, loaded.size)

    def generate(self, p: Any, files: dict[str, bytes], preview: bool) -> Prepared:
        if isinstance(p.class_, list):
            self._n(len(p.class_))
            p.class_ = [self.ed.class_index(c) for c in p.class_]
        else:
            self._n(p.n)
            p.class_ = None if p.class_ is None else self.ed.class_index(p.class_)
        return self._job(S.to_request(R.GenerateRequest, p), preview, None)

    def infer_label(self, p: Any, files: dict[str, bytes], preview: bool) -> Prepared:
        if not self.ed.can_infer_label():
            raise ApiError(422, f"the {self.ed.backend.name} backend of this server cannot score classes")
        region = self._region(p, files)
        return self._job(S.to_request(R.InferLabelRequest, p, **region), preview, region["image"].size)


TASKS: dict[str, tuple[type[BaseModel], tuple[str, ...], str]] = {
    "inpaint": (S.InpaintParams, ("image", "mask"), "Regenerate the masked region (white = regenerate)."),
    "outpaint": (S.OutpaintParams, ("image",), "Extend the image on any side and fill the new area."),
    "edit": (S.EditParams, ("image",), "Regenerate a box as another class."),
    "upscale": (S.UpscaleParams, ("image",), "Zero-shot upscaling: coarse scales from the input, detail sampled."),
    "generate": (S.GenerateParams, (), "Class-conditional generation."),
    "infer-label": (S.InferLabelParams, ("image", "mask"),
                    "The class the model finds most likely for what lies outside the mask."),
}


def _body_doc(model: type[BaseModel], image_fields: tuple[str, ...]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    props = dict(schema.get("properties", {}))
    json_props, form_props = dict(props), dict(props)
    for f in image_fields:
        desc = "The input image (PNG, JPEG, ...)" if f == "image" else "Mask, the image's size, white = regenerate"
        json_props[f] = {"type": "string", "contentEncoding": "base64", "description": f"{desc}, base64."}
        form_props[f] = {"type": "string", "format": "binary", "description": f"{desc}, as a file."}
    req = list(schema.get("required", [])) + (["image"] if "image" in image_fields else [])
    return {"requestBody": {"required": bool(image_fields), "content": {
        "application/json": {"schema": {**schema, "properties": json_props, "required": req}},
        "multipart/form-data": {"schema": {**schema, "properties": form_props, "required": req}},
    }}}


def _result_json(task: str, res: Any, elapsed: float) -> dict[str, Any]:
    """A TaskResult (or LabelResult) as JSON; PNG encoding happens here, off the model's thread."""
    settings = _jsonable(res.settings)
    images = [I.encode_png(im, {**settings, "candidate": i, "score": res.scores[i] if i < len(res.scores) else None})
              for i, im in enumerate(res.images)]
    first = res.images[0]
    w, h = (first.shape[1], first.shape[0]) if isinstance(first, np.ndarray) else first.size
    return {"task": task, "seed": int(res.seed), "images": [I.b64(b) for b in images],
            "scores": [float(s) for s in res.scores], "settings": settings,
            "mask": I.b64(I.mask_png(res.mask)), "width": int(w), "height": int(h), "elapsed_s": round(elapsed, 4)}


def _label_json(editor: Any, g: Any, top: int, elapsed: float) -> dict[str, Any]:
    return {"label": int(g.label), "name": editor.class_name(int(g.label)), "posterior": editor.top_classes(g, top),
            "elapsed_s": round(elapsed, 4)}


def _failure(e: BaseException) -> ApiError:
    """The answer for an exception raised by a job."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, I.TooLarge):
        return ApiError(413, str(e))
    if isinstance(e, (ValueError, TypeError)):
        return ApiError(422, " ".join(str(e).split()) or type(e).__name__)
    if isinstance(e, MemoryError):
        return ApiError(413, "not enough memory for this request: send a smaller image or fewer candidates")
    if isinstance(e, RuntimeError) and "out of memory" in str(e).lower():
        return ApiError(503, "the device ran out of memory: retry later, or send a smaller request",
                        {"Retry-After": "10"})
    return ApiError(500, f"internal error ({type(e).__name__}: {' '.join(str(e).split())[:200]})")


async def _disconnected(receive: Receive) -> None:
    """Returns when the server reports the client gone (``http.disconnect``); call it once the body is read."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _JobStream(StreamingResponse):
    """An event stream that calls ``on_close`` when it ends for any reason: finished, failed, or the
    client went away (Starlette then stops the stream at once, whatever the generator is waiting on)."""

    def __init__(self, on_close: Callable[[], None], *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def create_app(editor: Any, config: ServerConfig | None = None) -> FastAPI:
    """The server for one loaded model (an :class:`varedit.tasks.Editor` of any backend).

    The app owns a :class:`Worker` thread (``app.state.worker``) that runs every model call; it is
    stopped when the app shuts down."""
    cfg = config or ServerConfig()
    worker = Worker(editor, cfg.queue_size,
                    encode_preview=lambda c: I.b64(I.preview_png(c, cfg.preview_max_side)))
    tasks = Tasks(editor, cfg)
    previews = getattr(editor.backend, "name", "") == "torch"  # per-scale previews are torch-only (README)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        worker.close()

    try:  # /docs and /redoc with their scripts served from the package, not a CDN: they work offline
        from fastapi_offline import FastAPIOffline as make_fastapi
    except ImportError:  # pragma: no cover - the server extra installs it
        make_fastapi = FastAPI
    app = make_fastapi(title="varedit", version=__version__, lifespan=lifespan,
                       description="Image editing with VAR (next-scale prediction): inpaint, outpaint, class edits, "
                                   "upscaling and generation, with the coarse-to-fine preview streamed. The editor "
                                   "is at `/`.")
    app.state.worker = worker
    app.state.config = cfg
    app.state.editor = editor
    app.add_middleware(Guard, config=cfg)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return _err(e.status, e.detail, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return _err(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return _err(422, S.errors_text(e.errors(), skip=1))  # skip "query", "body": the name is enough

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=e)
        return _err(500, f"internal error ({type(e).__name__})")

    # -- information ---------------------------------------------------------------------------------
    @app.get(f"{API}/health", summary="Liveness and queue state (no token needed).")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": editor.model_name, "version": __version__, "queue": worker.stats()}

    @app.get(f"{API}/model", response_model=S.ModelInfo, summary="The loaded model: classes, size, defaults, "
                                                                 "limits.")
    async def model_info() -> dict[str, Any]:
        n = editor.backend.num_classes
        classes = [{"index": i, "names": list(editor.class_names[i]) if editor.class_names else [str(i)]}
                   for i in range(n)]
        return {"name": editor.model_name, "backend": editor.backend.name, "image_size": editor.image_size,
                "patch_nums": list(editor.backend.patch_nums), "num_classes": n, "classes": classes,
                "defaults": editor.defaults.as_dict(), "edit_defaults": editor.edit_defaults.as_dict(),
                "can_infer_label": editor.can_infer_label(), "previews": previews,
                "limits": {"max_upload_bytes": cfg.max_upload_bytes, "max_pixels": cfg.max_pixels,
                           "max_candidates": cfg.max_candidates, "queue_size": cfg.queue_size,
                           "timeout_s": cfg.timeout_s},
                "auth": cfg.token is not None}

    @app.get(f"{API}/schema", summary="The JSON schema of every task's parameters (what a client may send).")
    async def task_schemas() -> dict[str, Any]:
        return {task: model.model_json_schema(by_alias=True) for task, (model, _, _) in TASKS.items()}

    # -- the tasks -----------------------------------------------------------------------------------
    async def run_task(request: Request, task: str, stream: bool, fmt: str | None, preview: bool) -> Response:
        model, image_fields, _ = TASKS[task]
        fields, files = await _read(request, cfg, image_fields)
        params = _validate(model, fields)
        want_preview = stream and preview and previews
        prepare = getattr(tasks, task.replace("-", "_"))
        try:
            fn = await run_in_threadpool(prepare, params, files, want_preview)
        except (ValueError, TypeError, MemoryError) as e:
            raise _failure(e) from None
        del files
        try:
            job = worker.submit(task, fn, want_preview=want_preview)
        except QueueFull as e:
            raise ApiError(503, str(e), {"Retry-After": str(e.retry_after)}) from None
        deadline = job.submitted + cfg.timeout_s

        async def finish(ev: Any) -> dict[str, Any]:
            if ev.error is not None:
                raise _failure(ev.error)
            elapsed = (job.finished or time.monotonic()) - (job.started or job.submitted)
            if task == "infer-label":
                return _label_json(editor, ev.result, params.top, elapsed)
            return await run_in_threadpool(_result_json, task, ev.result, elapsed)

        def timed_out() -> ApiError:
            worker.cancel(job)
            return ApiError(504, f"the request took longer than this server's limit of {cfg.timeout_s:g} s "
                                 f"(queue wait included) and was abandoned")

        if stream:
            async def events() -> AsyncIterator[bytes]:
                last_pos = -1
                last_beat = time.monotonic()
                try:
                    while True:
                        pos = worker.position(job)
                        if last_pos < 0 or (job.started is None and pos != last_pos):
                            last_pos = pos
                            yield _sse("queued", {"job": job.id, "position": pos})
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            e = timed_out()
                            yield _sse("error", {"status": e.status, "detail": e.detail})
                            return
                        try:
                            ev = await asyncio.wait_for(job.events.get(), timeout=min(remaining, 1.0))
                        except asyncio.TimeoutError:
                            if time.monotonic() - last_beat > 15:
                                last_beat = time.monotonic()
                                yield b": keep-alive\n\n"
                            continue
                        if ev.kind == "start":
                            yield _sse("start", {"job": job.id})
                        elif ev.kind == "progress":
                            yield _sse("progress", {"step": ev.step, "total": ev.total, "preview": ev.preview})
                        else:
                            try:
                                yield _sse("result", await finish(ev))
                            except ApiError as e:
                                yield _sse("error", {"status": e.status, "detail": e.detail})
                            return
                finally:
                    if not job.done:
                        worker.cancel(job)  # the client went away, or the deadline passed

            return _JobStream(lambda: None if job.done else worker.cancel(job), events(),
                              media_type="text/event-stream",
                              headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Job": job.id})

        # the body was read: the next message the server hands over is the client going away (or, once
        # the answer is sent, the end of the exchange); it is watched beside the job's events, however
        # often those come
        gone = asyncio.ensure_future(_disconnected(request.receive))
        next_event: asyncio.Future[Any] | None = None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise timed_out()
                if next_event is None:
                    next_event = asyncio.ensure_future(job.events.get())
                await asyncio.wait((next_event, gone), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if next_event.done():
                    ev, next_event = next_event.result(), None
                    if ev.kind == "done":
                        break
                elif gone.done():
                    worker.cancel(job)
                    return _err(499, "client closed the request")
        finally:
            for f in (gone, next_event):
                if f is not None and not f.done():
                    f.cancel()
            if not job.done:
                worker.cancel(job)
        out = await finish(ev)
        if task == "infer-label":
            return JSONResponse(out)
        headers = {"X-Seed": str(out["seed"]), "X-Job": job.id}
        accept = request.headers.get("accept", "")
        if fmt == "png" or (fmt is None and "image/png" in accept and "application/json" not in accept):
            score = out["scores"][0] if out["scores"] else None
            headers.update({"X-Settings": json.dumps(out["settings"], separators=(",", ":"), ensure_ascii=True),
                            "X-Candidates": str(len(out["images"]))})
            if score is not None:
                headers["X-Score"] = f"{score:.6f}"
            return Response(I.b64decode(out["images"][0], "image"), media_type="image/png", headers=headers)
        return JSONResponse(out, headers=headers)

    responses: dict[int | str, dict[str, Any]] = {
        200: {"description": "JSON (TaskResult), PNG of the best image (format=png), or an event stream "
                             "(stream=true: events queued, start, progress, result, error)",
              "content": {"application/json": {"schema": S.TaskResult.model_json_schema()},
                          "image/png": {}, "text/event-stream": {}}},
        400: {"model": S.ErrorBody, "description": "Malformed body"},
        401: {"model": S.ErrorBody, "description": "Token missing or wrong"},
        413: {"model": S.ErrorBody, "description": "Body or image over the limits"},
        422: {"model": S.ErrorBody, "description": "Invalid parameter or image"},
        503: {"model": S.ErrorBody, "description": "Queue full (see Retry-After)"},
        504: {"model": S.ErrorBody, "description": "Took longer than the per-request timeout"},
    }

    def add(task: str) -> None:
        model, image_fields, summary = TASKS[task]

        async def endpoint(request: Request,
                           stream: bool = Query(False, description="Answer with server-sent events: queued, start, "
                                                                   "progress (with previews), result or error."),
                           format: Literal["json", "png"] | None = Query(None, description="png: the best image "
                                                                                           "alone, settings in "
                                                                                           "X-Settings."),
                           preview: bool = Query(True, description="Include decoded previews in progress events.")
                           ) -> Response:
            return await run_task(request, task, stream, format, preview)

        endpoint.__name__ = task.replace("-", "_")
        resp = dict(responses)
        if task == "infer-label":
            resp[200] = {"description": "The inferred class",
                         "content": {"application/json": {"schema": S.LabelResult.model_json_schema()}}}
        app.add_api_route(f"{API}/{task}", endpoint, methods=["POST"], summary=summary,
                          openapi_extra=_body_doc(model, image_fields), responses=resp)

        async def wrong_method(request: Request) -> Response:  # else the editor's files would answer 404
            return _err(405, f"use POST for {request.url.path}", {"Allow": "POST"})

        app.add_api_route(f"{API}/{task}", wrong_method, methods=["GET", "PUT", "DELETE", "PATCH"],
                          include_in_schema=False)

    for t in TASKS:
        add(t)

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def no_such_endpoint(request: Request) -> Response:
        return _err(404, f"no such endpoint: {request.url.path} (see /docs)")

    static = resources.files("varedit.server").joinpath("static")
    app.mount("/", StaticFiles(directory=str(static), html=True), name="editor")
    return app
