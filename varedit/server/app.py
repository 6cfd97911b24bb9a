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
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from .. import __version__
from . import images as I
from . import schemas as S
from .config import ServerConfig
from .guard import API, Guard
from .jobs import QueueFull, Worker
from .prepare import TASKS, Tasks, body_doc, failure, label_json, result_json
from .reading import ApiError, read_body, validate

log = logging.getLogger(__name__)


def _err(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": S.short_detail(detail)}, status_code=status, headers=headers)


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


class _TaskRunner:
    """One task request from body to answer: read and validate it, prepare its job (refusing before the
    queue what would fail), queue it, then answer with JSON, a PNG or an event stream, within the
    per-request deadline, cancelling the job when the client goes away."""

    def __init__(self, editor: Any, cfg: ServerConfig, worker: Worker, previews: bool):
        self.editor, self.cfg, self.worker, self.previews = editor, cfg, worker, previews
        self.tasks = Tasks(editor, cfg)

    async def __call__(self, request: Request, task: str, stream: bool, fmt: str | None, preview: bool
                       ) -> Response:
        model, image_fields, _ = TASKS[task]
        fields, files = await read_body(request, self.cfg, image_fields)
        params = validate(model, fields)
        want_preview = stream and preview and self.previews
        prepare = getattr(self.tasks, task.replace("-", "_"))
        try:
            fn = await run_in_threadpool(prepare, params, files, want_preview)
        except (ValueError, TypeError, MemoryError) as e:
            raise failure(e) from None
        del files
        try:
            job = self.worker.submit(task, fn, want_preview=want_preview)
        except QueueFull as e:
            raise ApiError(503, str(e), {"Retry-After": str(e.retry_after)}) from None
        top = getattr(params, "top", None)
        if stream:
            return self._stream(job, task, top)
        ev = await self._wait(job, request)
        if ev is None:
            return _err(499, "client closed the request")
        out = await self._finish(job, task, ev, top)
        return self._answer(out, job, task, fmt, request.headers.get("accept", ""))

    def _deadline(self, job: Any) -> float:
        return job.submitted + self.cfg.timeout_s

    def _timed_out(self, job: Any) -> ApiError:
        self.worker.cancel(job)
        return ApiError(504, f"the request took longer than this server's limit of {self.cfg.timeout_s:g} s "
                             f"(queue wait included) and was abandoned")

    async def _finish(self, job: Any, task: str, ev: Any, top: int | None) -> dict[str, Any]:
        """The JSON of a finished job (its failure as an ApiError)."""
        if ev.error is not None:
            raise failure(ev.error)
        elapsed = (job.finished or time.monotonic()) - (job.started or job.submitted)
        if task == "infer-label":
            return label_json(self.editor, ev.result, top or 1, elapsed)
        return await run_in_threadpool(result_json, task, ev.result, elapsed)

    def _stream(self, job: Any, task: str, top: int | None) -> Response:
        """The job's events as server-sent events: queued (with the position), start, progress, then result
        or error; the job is cancelled when the stream ends before it does."""
        worker, deadline = self.worker, self._deadline(job)

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
                        e = self._timed_out(job)
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
                            yield _sse("result", await self._finish(job, task, ev, top))
                        except ApiError as e:
                            yield _sse("error", {"status": e.status, "detail": e.detail})
                        return
            finally:
                if not job.done:
                    worker.cancel(job)  # the client went away, or the deadline passed

        return _JobStream(lambda: None if job.done else worker.cancel(job), events(),
                          media_type="text/event-stream",
                          headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Job": job.id})

    async def _wait(self, job: Any, request: Request) -> Any:
        """The job's final event, or None when the client went away first (the job is then cancelled);
        a 504 past the deadline."""
        # the body was read: the next message the server hands over is the client going away (or, once
        # the answer is sent, the end of the exchange); it is watched beside the job's events, however
        # often those come
        deadline = self._deadline(job)
        gone = asyncio.ensure_future(_disconnected(request.receive))
        next_event: asyncio.Future[Any] | None = None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timed_out(job)
                if next_event is None:
                    next_event = asyncio.ensure_future(job.events.get())
                await asyncio.wait((next_event, gone), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if next_event.done():
                    ev, next_event = next_event.result(), None
                    if ev.kind == "done":
                        return ev
                elif gone.done():
                    self.worker.cancel(job)
                    return None
        finally:
            for f in (gone, next_event):
                if f is not None and not f.done():
                    f.cancel()
            if not job.done:
                self.worker.cancel(job)

    @staticmethod
    def _answer(out: dict[str, Any], job: Any, task: str, fmt: str | None, accept: str) -> Response:
        """JSON, or the best image as PNG (``format=png``, or a client that accepts only PNG)."""
        if task == "infer-label":
            return JSONResponse(out)
        headers = {"X-Seed": str(out["seed"]), "X-Job": job.id}
        if fmt == "png" or (fmt is None and "image/png" in accept and "application/json" not in accept):
            score = out["scores"][0] if out["scores"] else None
            headers.update({"X-Settings": json.dumps(out["settings"], separators=(",", ":"), ensure_ascii=True),
                            "X-Candidates": str(len(out["images"]))})
            if score is not None:
                headers["X-Score"] = f"{score:.6f}"
            return Response(I.b64decode(out["images"][0], "image"), media_type="image/png", headers=headers)
        return JSONResponse(out, headers=headers)


RESPONSES: dict[int | str, dict[str, Any]] = {
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


def _add_task_route(app: FastAPI, task: str, run_task: _TaskRunner) -> None:
    """``POST /api/v1/{task}`` (and a 405 for the other methods)."""
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
    resp = dict(RESPONSES)
    if task == "infer-label":
        resp[200] = {"description": "The inferred class",
                     "content": {"application/json": {"schema": S.LabelResult.model_json_schema()}}}
    app.add_api_route(f"{API}/{task}", endpoint, methods=["POST"], summary=summary,
                      openapi_extra=body_doc(model, image_fields), responses=resp)

    async def wrong_method(request: Request) -> Response:  # else the editor's files would answer 404
        return _err(405, f"use POST for {request.url.path}", {"Allow": "POST"})

    app.add_api_route(f"{API}/{task}", wrong_method, methods=["GET", "PUT", "DELETE", "PATCH"],
                      include_in_schema=False)


def _add_info_routes(app: FastAPI, editor: Any, cfg: ServerConfig, worker: Worker, previews: bool) -> None:
    """``GET /api/v1/health``, ``/model`` and ``/schema``."""

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

    @app.get(f"{API}/schema", summary="The JSON schema of every task's JSON body (what a client may send): the "
                                      "options of the task's request type and its base64 images.")
    async def task_schemas() -> dict[str, Any]:
        return {task: body_doc(model, images)["requestBody"]["content"]["application/json"]["schema"]
                for task, (model, images, _) in TASKS.items()}


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"detail": one line}``."""

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


def create_app(editor: Any, config: ServerConfig | None = None) -> FastAPI:
    """The server for one loaded model (an :class:`varedit.tasks.Editor` of any backend).

    The app owns a :class:`Worker` thread (``app.state.worker``) that runs every model call; it is
    stopped when the app shuts down."""
    cfg = config or ServerConfig()
    worker = Worker(editor, cfg.queue_size,
                    encode_preview=lambda c: I.b64(I.preview_png(c, cfg.preview_max_side)))
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

    _add_error_handlers(app)
    _add_info_routes(app, editor, cfg, worker, previews)
    runner = _TaskRunner(editor, cfg, worker, previews)
    for t in TASKS:
        _add_task_route(app, t, runner)
    _add_fallbacks(app)
    return app


def _add_fallbacks(app: FastAPI) -> None:
    """A one-line 404 for any other ``/api/`` path, and the browser editor's static files at ``/``."""

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def no_such_endpoint(request: Request) -> Response:
        return _err(404, f"no such endpoint: {request.url.path} (see /docs)")

    static = resources.files("varedit.server").joinpath("static")
    app.mount("/", StaticFiles(directory=str(static), html=True), name="editor")
