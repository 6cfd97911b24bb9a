"""The varedit nodes for ComfyUI, written once and registered both ways ComfyUI loads packs.

Each node class declares its inputs and outputs as data (:class:`Param`, :class:`Out`) and does its
work in the class method ``compute``. From that one declaration come the classic attributes
(``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION``, ``CATEGORY`` ...) used through
``NODE_CLASS_MAPPINGS``, and the ``comfy_api`` schema (:mod:`.v3`) used through
``comfy_entrypoint()``. The nodes are thin shells over varedit's Python API
(:class:`varedit.tasks.Editor`).

Batches: every image of an IMAGE batch is edited on its own, image ``i`` with seed ``seed + i``
(modulo 2**63: the seed widget spans ComfyUI's 64 bits, a request takes 0..2**63-1), so it equals a run
of that image alone with that seed. A MASK batch of 1 applies to
every image. Sampling inputs set to -1 take the model's default.

An input that is an option of the task's request (:mod:`varedit.requests`) is made from it
(:func:`request_param`): its tooltip, default, choices and limits are the request's, so the nodes
say what ``varedit --help`` and the HTTP schema say; where the request's default is None (the model's
or the task's), the widget shows -1 for it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from varedit import processing as P
from varedit import requests as R
from varedit.validation import MAX_SEED as REQUEST_MAX_SEED

from . import convert
from .loader import BACKENDS, DEVICES, VarEditModel, load_model, model_key

log = logging.getLogger(__name__)

CATEGORY = "varedit"
MODEL_TYPE = "VAREDIT_MODEL"
MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF  # ComfyUI's seed widget range
MAX_SIDE = 16384


@dataclass(frozen=True)
class Param:
    """One node input. ``kind`` is a ComfyUI type: INT, FLOAT, STRING, BOOLEAN, COMBO, IMAGE, MASK or
    VAREDIT_MODEL."""

    name: str
    kind: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()
    tooltip: str = ""
    optional: bool = False
    seed: bool = False        # show ComfyUI's "control after generate" widget

    def v1(self) -> tuple[Any, ...]:
        extra: dict[str, Any] = {k: v for k, v in (("default", self.default), ("min", self.min), ("max", self.max),
                                                  ("step", self.step), ("tooltip", self.tooltip or None))
                                 if v is not None}
        if self.seed:
            extra["control_after_generate"] = True
        if self.kind == "COMBO":
            return (list(self.options), extra)
        return (self.kind, extra) if extra else (self.kind,)


@dataclass(frozen=True)
class Out:
    name: str
    kind: str
    tooltip: str = ""
    is_list: bool = False


UNSET = -1  # the widget value of an option left to its default (the request's None)


def request_param(request: type, name: str, kind: str, *, widget: str | None = None, note: str = "",
                  **over: Any) -> Param:
    """The input that is the option ``name`` of ``request`` (:func:`varedit.requests.option_info`): its tooltip
    is the option's description (``note``: what the node adds), its default, choices and numeric limits the
    option's; an option whose default is None shows ``UNSET`` for it. ``widget``: the input's name where it
    differs; ``over``: what ComfyUI needs besides (a step, a widget's own bound)."""
    info = R.option_info(request, name)
    unset = kind in ("INT", "FLOAT") and info.default is None
    tip = " ".join(filter(None, (info.doc, f"{UNSET} = the default." if unset else "", note)))
    num: Callable[[Any], Any] = int if kind == "INT" else float
    default = "" if info.required else (UNSET if unset else info.default)
    p = Param(widget or name, kind, num(default) if kind in ("INT", "FLOAT") else default, tooltip=tip)
    if info.choices is not None:
        p = replace(p, kind="COMBO", options=info.choices)
    elif kind in ("INT", "FLOAT"):
        lo = UNSET if unset else info.lo
        p = replace(p, min=None if lo is None else num(lo), max=None if info.max is None else num(info.max))
    return replace(p, **over)


def _model_param() -> Param:
    return Param("model", MODEL_TYPE, tooltip="A model from the VarEdit Model Loader node.")


def _sampling_params() -> tuple[Param, ...]:
    return (
        # the node's own seed: a ComfyUI widget always holds one, and image i of a batch uses seed + i
        Param("seed", "INT", 0, 0, MAX_SEED, seed=True,
              tooltip="Random seed; image i of a batch uses seed + i."),
        request_param(R.Sampling, "cfg", "FLOAT", step=0.1),
        request_param(R.Sampling, "top_k", "INT", max=1_000_000),  # a widget needs a bound
        request_param(R.Sampling, "top_p", "FLOAT", step=0.01),
    )


def _edit_params(request: type) -> tuple[Param, ...]:
    return (
        request_param(request, "n", "INT", widget="candidates", note="The image output is the best."),
        request_param(request, "keep_scales", "INT", max=32),  # a widget needs a bound: the model checks its own
        request_param(request, "mode", "COMBO"),
        request_param(request, "feather", "FLOAT", step=0.5),
    )


def _label_param(request: type) -> Param:
    return request_param(request, "label", "STRING")


def _sampling(kw: dict[str, Any]) -> dict[str, Any]:
    """Widget values -> Editor keywords (-1 means the model's default, i.e. not given)."""
    out: dict[str, Any] = {}
    if kw["cfg"] != UNSET:
        out["cfg"] = float(kw["cfg"])
    if kw["top_k"] != UNSET:
        out["top_k"] = int(kw["top_k"])
    if kw["top_p"] != UNSET:
        out["top_p"] = float(kw["top_p"])
    for k, v in out.items():
        if v < 0:
            raise ValueError(f"{k} must be -1 (model default) or >= 0, got {v}")
    return out


def _seed(seed: int, i: int) -> int:
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be in 0..{MAX_SEED}, got {seed}")
    # folded into the seeds a request takes (validation.MAX_SEED): a randomised widget draws from 64 bits
    return (int(seed) + i) % (REQUEST_MAX_SEED + 1)


def _check_model(model: Any) -> VarEditModel:
    if not isinstance(model, VarEditModel):
        raise TypeError(f"model must come from the VarEdit Model Loader node, got {type(model).__name__}")
    model.ready()  # inside ComfyUI: weights it unloaded to free memory are loaded again
    return model


def _info(results: Sequence[Any]) -> str:
    rows = [{**r.settings, "scores": [round(float(s), 4) for s in r.scores]} for r in results]
    return json.dumps(rows, default=str)


def progress_callback(bar: Any, item: int, items: int) -> Callable[[int, int, Any], None]:
    """varedit's ``callback(step, total, preview)`` for image ``item`` of ``items`` -> a ComfyUI
    ``ProgressBar`` (``bar.update_absolute(value, total)``) over the whole batch; between scales a
    cancel in ComfyUI (``comfy.model_management``) stops the run."""
    try:
        from comfy.model_management import throw_exception_if_processing_interrupted as check
    except ImportError:
        check = None

    def cb(step: int, total: int, _preview: Any = None) -> None:
        if bar is not None:
            bar.update_absolute(item * total + step + 1, items * total)
        if check is not None:
            check()
    return cb


def comfy_progress_bar(items: int) -> Any:
    """ComfyUI's progress bar when ComfyUI is there, else None (no progress reporting)."""
    try:
        from comfy.utils import ProgressBar
    except ImportError:
        return None
    return ProgressBar(items)


# ------------------------------------------------------------------------------------------------------
class VarEditNode:
    """Base: the classic ComfyUI attributes, derived from ``PARAMS`` and ``OUTPUTS``."""

    NODE_ID: ClassVar[str]
    DISPLAY_NAME: ClassVar[str]
    DESCRIPTION: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    OUTPUTS: ClassVar[tuple[Out, ...]] = ()
    CATEGORY: ClassVar[str] = CATEGORY
    FUNCTION: ClassVar[str] = "run"
    RETURN_TYPES: ClassVar[tuple[str, ...]] = ()
    RETURN_NAMES: ClassVar[tuple[str, ...]] = ()
    OUTPUT_TOOLTIPS: ClassVar[tuple[str, ...]] = ()
    OUTPUT_IS_LIST: ClassVar[tuple[bool, ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.RETURN_TYPES = tuple(o.kind for o in cls.OUTPUTS)
        cls.RETURN_NAMES = tuple(o.name for o in cls.OUTPUTS)
        cls.OUTPUT_TOOLTIPS = tuple(o.tooltip for o in cls.OUTPUTS)
        cls.OUTPUT_IS_LIST = tuple(o.is_list for o in cls.OUTPUTS)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, tuple[Any, ...]]]:
        req = {p.name: p.v1() for p in cls.PARAMS if not p.optional}
        opt = {p.name: p.v1() for p in cls.PARAMS if p.optional}
        return {"required": req, **({"optional": opt} if opt else {})}

    def run(self, **kw: Any) -> tuple[Any, ...]:
        return self.compute(**kw)

    @classmethod
    def compute(cls, **kw: Any) -> tuple[Any, ...]:
        raise NotImplementedError


class ModelLoader(VarEditNode):
    NODE_ID = "VarEditModelLoader"
    DISPLAY_NAME = "VarEdit Model Loader"
    DESCRIPTION = ("Loads a VAR model for the varedit nodes (kept in a small cache between runs): a preset "
                   "(demo, var-d16 ... var-d36), a varedit file, an official VAR .pth with its VQVAE, or an "
                   "ONNX export folder (backend onnx).")
    PARAMS = (
        Param("model", "STRING", "demo",
              tooltip="Preset name (demo, var-d16, var-d20, var-d24, var-d30, var-d36), a varedit model file, "
                      "an official VAR .pth, or (backend onnx) a folder made by `varedit export onnx`."),
        Param("backend", "COMBO", "torch", options=BACKENDS, tooltip="torch, or onnxruntime for an ONNX export."),
        Param("device", "COMBO", "auto", options=DEVICES, tooltip="auto: CUDA when available, else CPU."),
        Param("vae", "STRING", "", optional=True,
              tooltip="The official VQVAE .pth for an official VAR .pth (default: vae_ch160v4096z32.pth beside it)."),
        Param("weights_dir", "STRING", "", optional=True,
              tooltip="Folder holding official weight files for the presets (else $VAREDIT_WEIGHTS and the "
                      "Hugging Face cache)."),
        Param("threads", "INT", 0, 0, 256, optional=True, tooltip="onnxruntime CPU threads; 0 = its default."),
    )
    OUTPUTS = (Out("model", MODEL_TYPE, "The loaded model."),)

    @classmethod
    def compute(cls, model: str = "demo", backend: str = "torch", device: str = "auto", vae: str = "",
                weights_dir: str = "", threads: int = 0) -> tuple[Any, ...]:
        return (load_model(model, backend=backend, vae=vae or "", weights_dir=weights_dir or "", device=device,
                           threads=int(threads or 0)),)

    @classmethod
    def fingerprint(cls, model: str = "demo", backend: str = "torch", device: str = "auto", vae: str = "",
                    weights_dir: str = "", threads: int = 0) -> str:
        """What identifies the loaded weights (the cache key: a file by path, size and mtime), so ComfyUI
        runs the loader again when a model file is replaced under the same name."""
        try:
            return repr(model_key(backend, (model or "").strip(), (vae or "").strip(), (weights_dir or "").strip(),
                                  device, int(threads or 0)))
        except OSError as e:  # an unreadable path: let the run report it
            return f"unreadable: {e}"

    @classmethod
    def IS_CHANGED(cls, **kw: Any) -> str:  # noqa: N802 (ComfyUI's name)
        return cls.fingerprint(**kw)


_EDIT_OUTPUTS = (
    Out("image", "IMAGE", "The best candidate of every input image."),
    Out("candidates", "IMAGE", "Every candidate: for each input image its candidates, best first."),
    Out("mask", "MASK", "The region that was regenerated (1 = regenerated)."),
    Out("info", "STRING", "The settings of every image as JSON (seed, class and its source, scores)."),
)


def _edit_outputs(results: Sequence[Any], masks: Sequence[np.ndarray]) -> tuple[Any, ...]:
    best = [r.images[0] for r in results]
    every = [im for r in results for im in r.images]
    return convert.to_image(best), convert.to_image(every), convert.to_mask(masks), _info(results)


def _edit_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """Widget values -> the options of a masked request (varedit.requests)."""
    return dict(n=int(kw["candidates"]), keep_scales=int(kw["keep_scales"]), mode=kw["mode"],
                feather=None if kw["feather"] == UNSET else float(kw["feather"]), output_type="np",
                sampling=R.Sampling(**_sampling(kw)))


class Inpaint(VarEditNode):
    NODE_ID = "VarEditInpaint"
    DISPLAY_NAME = "VarEdit Inpaint"
    DESCRIPTION = ("Regenerates the masked part of each image by masked next-scale prediction (MASK 1 = "
                   "regenerate). Pixels farther than the feather width from the mask are returned unchanged.")
    PARAMS = (_model_param(), Param("image", "IMAGE"), Param("mask", "MASK", tooltip="1 = regenerate."),
              _label_param(R.InpaintRequest), *_sampling_params(), *_edit_params(R.InpaintRequest))
    OUTPUTS = _EDIT_OUTPUTS

    @classmethod
    def compute(cls, **kw: Any) -> tuple[Any, ...]:
        m = _check_model(kw["model"])
        images = convert.image_batch(kw["image"])
        masks = convert.mask_batch(kw["mask"], len(images), images[0].shape[:2])  # an empty mask: one clear error
        label = m.editor.check_label(kw["label"])  # an unknown class fails before any work
        opts = _edit_kwargs(kw)
        bar = comfy_progress_bar(len(images))
        results = [m.editor.run(R.InpaintRequest(image=img, mask=mk, label=label, seed=_seed(kw["seed"], i), **opts),
                                callback=progress_callback(bar, i, len(images)))
                   for i, (img, mk) in enumerate(zip(images, masks))]
        return _edit_outputs(results, masks)


class Outpaint(VarEditNode):
    NODE_ID = "VarEditOutpaint"
    DISPLAY_NAME = "VarEdit Outpaint"
    DESCRIPTION = "Extends each image by the given pixels on each side and fills the new area."
    PARAMS = (_model_param(), Param("image", "IMAGE"),
              *(Param(side, "INT", 0, 0, MAX_SIDE, 8, tooltip=f"Pixels added on the {side}.")
                for side in ("left", "right", "top", "bottom")),
              request_param(R.OutpaintRequest, "fill", "COMBO"),
              _label_param(R.OutpaintRequest), *_sampling_params(), *_edit_params(R.OutpaintRequest))
    OUTPUTS = (Out("image", "IMAGE", "The best candidate of every extended image."),
               Out("candidates", "IMAGE", "Every candidate: for each input image its candidates, best first."),
               Out("mask", "MASK", "The new area (1), on the extended canvas."),
               Out("info", "STRING", "The settings of every image as JSON."))

    @classmethod
    def compute(cls, **kw: Any) -> tuple[Any, ...]:
        m = _check_model(kw["model"])
        images = convert.image_batch(kw["image"])
        sides = {s: int(kw[s]) for s in ("left", "right", "top", "bottom")}
        h, w = images[0].shape[:2]
        P.outpaint_pads((w, h), **sides)  # the rule and the message of every front-end, before any work
        label = m.editor.check_label(kw["label"])
        opts = _edit_kwargs(kw)
        bar = comfy_progress_bar(len(images))
        results = [m.editor.run(R.OutpaintRequest(image=img, **sides, fill=kw["fill"], label=label,
                                                  seed=_seed(kw["seed"], i), **opts),
                                callback=progress_callback(bar, i, len(images)))
                   for i, img in enumerate(images)]
        return _edit_outputs(results, [r.mask for r in results])


class ClassEdit(VarEditNode):
    NODE_ID = "VarEditClassEdit"
    DISPLAY_NAME = "VarEdit Class Edit"
    DESCRIPTION = ("Regenerates a region as the given class: the MASK when connected, else the box "
                   "x, y, width, height (pixels).")
    PARAMS = (_model_param(), Param("image", "IMAGE"),
              request_param(R.EditRequest, "class_", "STRING", widget="class_name"),
              Param("x", "INT", 0, 0, MAX_SIDE, tooltip="Box left edge (pixels)."),
              Param("y", "INT", 0, 0, MAX_SIDE, tooltip="Box top edge (pixels)."),
              Param("width", "INT", 0, 0, MAX_SIDE, tooltip="Box width (pixels); 0 = use the mask."),
              Param("height", "INT", 0, 0, MAX_SIDE, tooltip="Box height (pixels); 0 = use the mask."),
              *_sampling_params(), *_edit_params(R.EditRequest),
              Param("mask", "MASK", optional=True, tooltip="The region (1 = regenerate), instead of the box."))
    OUTPUTS = _EDIT_OUTPUTS

    @classmethod
    def compute(cls, **kw: Any) -> tuple[Any, ...]:
        m = _check_model(kw["model"])
        images = convert.image_batch(kw["image"])
        if not str(kw["class_name"]).strip():
            raise ValueError("class_name is empty: give the class to draw (a name or an index)")
        cls_idx = m.editor.class_index(kw["class_name"])
        has_box = int(kw["width"]) > 0 or int(kw["height"]) > 0
        mask = kw.get("mask")
        h, w = images[0].shape[:2]
        box = None
        if has_box:
            x0, y0, bw, bh = int(kw["x"]), int(kw["y"]), int(kw["width"]), int(kw["height"])
            if bw <= 0 or bh <= 0:
                raise ValueError(f"the box needs a width and a height > 0, got {bw}x{bh}")
            box = (x0, y0, x0 + bw, y0 + bh)
        if mask is not None:
            P.region_mask((w, h), np.zeros((h, w), bool), box)  # a mask and a box: the shared message
            masks = convert.mask_batch(mask, len(images), (h, w))
        else:
            masks = [P.region_mask((w, h), None, box)] * len(images)
        if not any(mk.any() for mk in masks):
            raise ValueError("the mask is empty: nothing to edit (MASK 1 = regenerate)")
        opts = _edit_kwargs(kw)
        bar = comfy_progress_bar(len(images))
        # Editor.edit with the region as a mask: the class edit's own plan (every token cell the region
        # touches is regenerated), as the CLI's and the server's edits
        results = [m.editor.run(R.EditRequest(image=img, mask=mk, class_=cls_idx, seed=_seed(kw["seed"], i), **opts),
                                callback=progress_callback(bar, i, len(images)))
                   for i, (img, mk) in enumerate(zip(images, masks))]
        return _edit_outputs(results, masks)


class Upscale(VarEditNode):
    NODE_ID = "VarEditUpscale"
    DISPLAY_NAME = "VarEdit Upscale"
    DESCRIPTION = ("Zero-shot restoration and upscaling: Lanczos to the target size, then per model-size tile "
                   "the coarse scales are kept from the image and the fine scales sampled.")
    PARAMS = (_model_param(), Param("image", "IMAGE"),
              request_param(R.UpscaleRequest, "scale", "FLOAT", min=0.25, step=0.25),  # the widget's steps
              request_param(R.UpscaleRequest, "keep_scales", "INT", max=32),
              request_param(R.UpscaleRequest, "back_project", "BOOLEAN"),
              *_sampling_params())
    OUTPUTS = (Out("image", "IMAGE", "The upscaled images."),
               Out("info", "STRING", "The settings of every image as JSON."))

    @classmethod
    def compute(cls, **kw: Any) -> tuple[Any, ...]:
        m = _check_model(kw["model"])
        images = convert.image_batch(kw["image"])
        keep = None if int(kw["keep_scales"]) == UNSET else int(kw["keep_scales"])
        bar = comfy_progress_bar(len(images))
        results = [m.editor.run(R.UpscaleRequest(image=img, scale=float(kw["scale"]), keep_scales=keep,
                                                 back_project=bool(kw["back_project"]), seed=_seed(kw["seed"], i),
                                                 output_type="np", sampling=R.Sampling(**_sampling(kw))),
                                callback=progress_callback(bar, i, len(images)))
                   for i, img in enumerate(images)]
        return convert.to_image([r.images[0] for r in results]), _info(results)


class Generate(VarEditNode):
    NODE_ID = "VarEditGenerate"
    DISPLAY_NAME = "VarEdit Generate"
    DESCRIPTION = "Class-conditional generation at the model's size."
    PARAMS = (_model_param(),
              Param("class_name", "STRING", "0",
                    tooltip="The class: a name or an index (none = unconditional)."),
              request_param(R.GenerateRequest, "n", "INT", widget="batch_size", max=64),  # one batch: at most 64
              *_sampling_params())
    OUTPUTS = (Out("image", "IMAGE", "The generated images."),
               Out("info", "STRING", "The settings as JSON."))

    @classmethod
    def compute(cls, **kw: Any) -> tuple[Any, ...]:
        m = _check_model(kw["model"])
        spec = str(kw["class_name"]).strip()
        if not spec:
            raise ValueError("class_name is empty: give a class name or index (none = unconditional)")
        class_ = None if spec.lower() == "none" else m.editor.class_index(spec)
        bar = comfy_progress_bar(1)
        r = m.editor.run(R.GenerateRequest(class_=class_, n=int(kw["batch_size"]), seed=_seed(kw["seed"], 0),
                                           output_type="np", sampling=R.Sampling(**_sampling(kw))),
                         callback=progress_callback(bar, 0, 1))
        return convert.to_image(r.images), _info([r])


class InferLabel(VarEditNode):
    NODE_ID = "VarEditInferLabel"
    DISPLAY_NAME = "VarEdit Infer Class"
    DESCRIPTION = ("The class the model finds most likely for what lies outside the mask (the class that "
                   "label auto guides a fill with), per image.")
    PARAMS = (_model_param(), Param("image", "IMAGE"), Param("mask", "MASK", tooltip="1 = hole (not read)."))
    OUTPUTS = (Out("class_name", "STRING", "The most likely class of every image.", is_list=True),
               Out("class_index", "INT", "Its index.", is_list=True),
               Out("probability", "FLOAT", "Its posterior probability.", is_list=True),
               Out("posterior", "STRING", "The five most likely classes and their posteriors, as JSON.",
                   is_list=True))

    @classmethod
    def compute(cls, **kw: Any) -> tuple[Any, ...]:
        m = _check_model(kw["model"])
        images = convert.image_batch(kw["image"])
        masks = convert.mask_batch(kw["mask"], len(images), images[0].shape[:2])
        names: list[str] = []
        idxs: list[int] = []
        probs: list[float] = []
        posts: list[str] = []
        for i, (img, mk) in enumerate(zip(images, masks)):
            if not mk.any():
                raise ValueError(f"the mask of image {i} is empty: the class is inferred around a hole (MASK 1 = "
                                 f"hole); paint it in the mask editor")
            if mk.all():
                raise ValueError("the mask covers the whole image: nothing is known to infer a class from")
            g = m.editor.run(R.InferLabelRequest(image=img, mask=mk))
            names.append(m.editor.class_name(g.label))
            idxs.append(int(g.label))
            probs.append(float(g.posterior[g.label]))
            posts.append(json.dumps(m.editor.top_classes(g, 5)))
        return names, idxs, probs, posts


NODES: tuple[type[VarEditNode], ...] = (ModelLoader, Inpaint, Outpaint, ClassEdit, Upscale, Generate, InferLabel)
NODE_CLASS_MAPPINGS: dict[str, type[VarEditNode]] = {n.NODE_ID: n for n in NODES}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {n.NODE_ID: n.DISPLAY_NAME for n in NODES}
