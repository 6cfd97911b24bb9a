"""The onnxruntime backend for varedit's image-level tasks (numpy + onnxruntime only).

``OnnxBackend`` implements the small interface of :class:`varedit.tasks.Backend`, so
``varedit.tasks.Editor`` runs inpaint / outpaint / edit / upscale / generate with exactly the same
pre- and post-processing as the torch path.  Noise: numpy PCG64 uniforms drawn per batch and scale
from one stream per call, the same stream as the torch backend's ``sampler="portable"``, so both
backends give the same tokens for the same seed.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from varedit.editing.noise import portable_draws
from varedit.editing.plan import CanvasPlan
from varedit.options import SamplingOptions

from .session import OnnxRuntimeError

if TYPE_CHECKING:  # the runtime imports this module (OnnxVAR.editor); this one needs OnnxVAR for types only
    from .runtime import OnnxVAR


class OnnxBackend:
    name = "onnx"

    def __init__(self, model: "OnnxVAR"):
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
        x = np.ascontiguousarray(np.asarray(rgb_BHW3, np.float32).transpose(0, 3, 1, 2)) * 2 - 1
        return self.model.tokenize(x)[1]

    @property
    def can_score_labels(self) -> bool:
        return self.model.has_cell_logprob or self.model.has_scorer

    def score_labels(self, plans: Sequence[CanvasPlan]) -> np.ndarray:
        """(B, num_classes) log-likelihood of each plan's known cells under every class, as the torch
        backend's (the export's scorer graph; older exports: one sampler run per class)."""
        x = np.ascontiguousarray(np.stack([p.encode_rgb for p in plans]).transpose(0, 3, 1, 2)) * 2 - 1
        f, toks = self.model.tokenize(x.astype(np.float32))
        keep = [np.concatenate([p.keep_maps[s] for p in plans]) for s in range(len(self.patch_nums))]
        return self.model.class_log_likelihood(f, keep, tokens=toks)

    def run(self, plans: Sequence[CanvasPlan], labels: Sequence[int], opts: SamplingOptions, stream: Any,
            callback: Callable[[int, int, np.ndarray | None], None] | None = None, preview: bool = False,
            timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        if opts.more_smooth:
            raise OnnxRuntimeError("Gumbel smoothing (--smooth) is not in the ONNX graph: drop it, or use the "
                                   "torch backend")
        B, pns, SN = len(plans), self.patch_nums, len(self.patch_nums)
        closed = {p.closed_loop for p in plans}
        if len(closed) != 1:
            raise OnnxRuntimeError("a batch mixes closed- and open-loop plans")
        keep = [np.concatenate([p.keep_maps[s] for p in plans]) for s in range(SN)]
        u = portable_draws(stream, B, pns)
        kw: dict[str, Any] = dict(cfg=opts.cfg, guidance=opts.guidance, top_k=opts.top_k, top_p=opts.top_p)
        t0 = t1 = time.perf_counter()
        if not any(k.any() for k in keep):
            out = self.model.sample(list(labels), uniforms=u, **kw)
        else:
            x = np.ascontiguousarray(np.stack([p.encode_rgb for p in plans]).transpose(0, 3, 1, 2)) * 2 - 1
            f, toks = self.model.tokenize(x.astype(np.float32))
            t1 = time.perf_counter()
            if closed.pop():
                h = pns[-1]
                pool = []
                for s in range(SN):
                    ws = [p.pool_w[s] for p in plans]
                    pool.append(None if all(w is None for w in ws) else np.concatenate(
                        [w if w is not None else np.ones((1, 1, h, h), np.float32) for w in ws]))
                out = self.model.sample(list(labels), keep, uniforms=u, f_known=f, pool_w=pool, **kw)
            else:
                out = self.model.sample(list(labels), keep, known_tokens=toks, uniforms=u, **kw)
        t2 = time.perf_counter()
        img = self.model.decode(out.f_hat).transpose(0, 2, 3, 1)
        if timings is not None:  # onnxruntime's run returns when its outputs are ready: no sync needed
            for k, v in (("tokenize_s", t1 - t0), ("sample_s", t2 - t1), ("decode_s", time.perf_counter() - t2)):
                timings[k] = timings.get(k, 0.0) + v
        if callback is not None:  # the graph is unrolled: progress arrives when the run is done
            for s in range(SN):
                callback(s, SN, None)
        return np.ascontiguousarray(img), out.logprob


def onnx_editor(model: "OnnxVAR") -> Any:
    """A :class:`varedit.tasks.Editor` serving the exported model."""
    from varedit.tasks import Editor
    d = model.manifest.get("defaults") or {}  # validated by read_manifest
    return Editor(OnnxBackend(model), class_names=model.class_names,
                  defaults=SamplingOptions().replace(**d), model_name=model.name)
