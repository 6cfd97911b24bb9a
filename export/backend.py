"""The onnxruntime backend for varedit's image-level tasks (numpy + onnxruntime only).

``OnnxBackend`` implements the small interface of :class:`varedit.tasks.Backend`, so
``varedit.tasks.Editor`` runs inpaint / outpaint / edit / upscale / generate with exactly the same
pre- and post-processing as the torch path.  Noise: numpy PCG64 uniforms drawn per batch and scale
from one stream per call, the same stream as the torch backend's ``sampler="portable"``, so both
backends give the same tokens for the same seed.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

from varedit.editing.inputs import model_images, plan_images, plan_keep_maps, sampler_inputs
from varedit.options import SamplingOptions

from .errors import OnnxRuntimeError

if TYPE_CHECKING:  # the runtime imports this module: it stays light (plans bring the image processing)
    from varedit.editing.plan import CanvasPlan


class ExportedModel(Protocol):
    """What the backend uses of an export (:class:`varedit_onnx.runtime.OnnxVAR`).  Written out here so
    that the dependency points one way: the runtime imports this module for ``OnnxVAR.editor()``, this
    module never imports the runtime."""

    name: str
    image_size: int
    latent_size: int
    patch_nums: tuple[int, ...]
    num_classes: int
    class_names: list[list[str]] | None
    precision: str
    manifest: dict[str, Any]

    @property
    def has_cell_logprob(self) -> bool: ...

    @property
    def has_scorer(self) -> bool: ...

    def tokenize(self, img: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]: ...

    def sample(self, labels: Any, keep_maps: Sequence[Any] | None = None, known_tokens: Sequence[Any] | None = None,
               uniforms: Sequence[Any] | None = None, *, f_known: np.ndarray | None = None,
               pool_w: Sequence[Any | None] | None = None, cfg: float = ..., guidance: Any = ...,
               top_k: int = ..., top_p: float = ...) -> Any: ...

    def decode(self, f_hat: np.ndarray) -> np.ndarray: ...

    def class_log_likelihood(self, f: np.ndarray, keep_maps: Sequence[Any], tokens: Sequence[Any] | None = None
                             ) -> np.ndarray: ...


class OnnxBackend:
    name = "onnx"

    def __init__(self, model: ExportedModel):
        self.model = model

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.model.patch_nums

    @property
    def downsample(self) -> int:
        return self.model.image_size // self.model.latent_size

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def precision(self) -> str:
        """The export's (fp32, fp16 or int8): recorded in the settings of what it made when not fp32."""
        return self.model.precision

    def stream(self, seed: int) -> np.random.Generator:
        return np.random.default_rng(seed)

    def encode_tokens(self, rgb_BHW3: np.ndarray) -> list[np.ndarray]:
        return self.model.tokenize(model_images(rgb_BHW3))[1]

    @property
    def can_score_labels(self) -> bool:
        return self.model.has_cell_logprob or self.model.has_scorer

    def score_labels(self, plans: Sequence[CanvasPlan]) -> np.ndarray:
        """(B, num_classes) log-likelihood of each plan's known cells under every class, as the torch
        backend's (the export's scorer graph; older exports: one sampler run per class)."""
        f, toks = self.model.tokenize(plan_images(plans))
        return self.model.class_log_likelihood(f, plan_keep_maps(plans), tokens=toks)

    def run(self, plans: Sequence[CanvasPlan], labels: Sequence[int], opts: SamplingOptions, stream: Any,
            callback: Callable[[int, int, np.ndarray | None], None] | None = None, preview: bool = False,
            timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        if opts.more_smooth:
            raise OnnxRuntimeError("Gumbel smoothing (--smooth) is not in the ONNX graph: drop it, or use the "
                                   "torch backend")
        SN = len(self.patch_nums)
        try:
            inp = sampler_inputs(plans, labels, self.patch_nums, uniforms_from=stream)
        except ValueError as e:
            raise OnnxRuntimeError(str(e)) from None
        kw: dict[str, Any] = dict(cfg=opts.cfg, guidance=opts.guidance, top_k=opts.top_k, top_p=opts.top_p,
                                  uniforms=inp.uniforms)
        t0 = t1 = time.perf_counter()
        if inp.image is None:
            out = self.model.sample(inp.labels, **kw)
        else:
            f, toks = self.model.tokenize(inp.image)
            t1 = time.perf_counter()
            if inp.loop == "closed":
                out = self.model.sample(inp.labels, inp.keep, f_known=f, pool_w=inp.pool_w, **kw)
            else:
                out = self.model.sample(inp.labels, inp.keep, known_tokens=toks, **kw)
        t2 = time.perf_counter()
        img = self.model.decode(out.f_hat).transpose(0, 2, 3, 1)
        if timings is not None:  # onnxruntime's run returns when its outputs are ready: no sync needed
            for k, v in (("tokenize_s", t1 - t0), ("sample_s", t2 - t1), ("decode_s", time.perf_counter() - t2)):
                timings[k] = timings.get(k, 0.0) + v
        if callback is not None:  # the graph is unrolled: progress arrives when the run is done
            for s in range(SN):
                callback(s, SN, None)
        return np.ascontiguousarray(img), out.logprob


def onnx_editor(model: ExportedModel) -> Any:
    """A :class:`varedit.tasks.Editor` serving the exported model."""
    from varedit.tasks import Editor
    d = model.manifest.get("defaults") or {}  # validated by read_manifest
    return Editor(OnnxBackend(model), class_names=model.class_names,
                  defaults=SamplingOptions().replace(**d), model_name=model.name)
