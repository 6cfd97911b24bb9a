"""The server's tasks: each turns validated parameters into its task request (:mod:`varedit.requests`),
refusing before the queue what would fail or exceed this server's limits, and returns the job the
worker runs; and the answers of finished jobs as JSON."""
from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel

from .. import processing as P
from .. import requests as R
from . import images as I
from . import schemas as S
from .config import ServerConfig
from .reading import ApiError


def _plain(o: Any) -> Any:
    """JSON for numpy scalars and arrays in settings."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _jsonable(d: Any) -> Any:
    return json.loads(json.dumps(d, default=_plain))


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

    def _mask(self, files: dict[str, bytes], loaded: P.LoadedImage, options: dict[str, Any]) -> np.ndarray | None:
        if "mask" not in files:
            return None
        return I.load_mask(files["mask"], loaded.size, self.cfg.max_pixels, **options)

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
        threshold = getattr(p, "threshold", None)  # a grey mask is read with the request's threshold
        mask = self._mask(files, loaded, {} if threshold is None else {"threshold": threshold})
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
        w, h = P.extended_size(loaded.size, *req.sides())
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


def body_doc(model: type[BaseModel], image_fields: tuple[str, ...]) -> dict[str, Any]:
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


def result_json(task: str, res: Any, elapsed: float) -> dict[str, Any]:
    """A TaskResult (or LabelResult) as JSON; PNG encoding happens here, off the model's thread."""
    settings = _jsonable(res.settings)
    images = [I.encode_png(im, {**settings, "candidate": i, "score": res.scores[i] if i < len(res.scores) else None})
              for i, im in enumerate(res.images)]
    first = res.images[0]
    w, h = (first.shape[1], first.shape[0]) if isinstance(first, np.ndarray) else first.size
    return {"task": task, "seed": int(res.seed), "images": [I.b64(b) for b in images],
            "scores": [float(s) for s in res.scores], "settings": settings,
            "mask": I.b64(I.mask_png(res.mask)), "width": int(w), "height": int(h), "elapsed_s": round(elapsed, 4)}


def label_json(editor: Any, g: Any, top: int, elapsed: float) -> dict[str, Any]:
    return {"label": int(g.label), "name": editor.class_name(int(g.label)), "posterior": editor.top_classes(g, top),
            "elapsed_s": round(elapsed, 4)}


def failure(e: BaseException) -> ApiError:
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
