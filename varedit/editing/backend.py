"""The torch backend: runs canvas plans through the VQVAE and the masked sampler.

A backend turns a batch of :class:`~varedit.editing.plan.CanvasPlan` into images; the image-level
tasks (:mod:`varedit.tasks`) are written against this small interface, so the onnxruntime runtime
serves the same tasks with the same pre- and post-processing.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..models.var import VAR
from ..models.vqvae import VQVAE
from ..options import SamplingOptions
from .inputs import model_images, plan_images, plan_keep_maps, sampler_inputs
from .plan import CanvasPlan
from .sampler import (IMPLS, Known, ScaleCallback, ScaleState, class_log_likelihood, decode_fhat, masked_sample,
                      new_generator)

SAMPLERS = ("torch", "portable")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}



class TorchBackend:
    """``sampler='torch'``: torch.multinomial from a torch.Generator (the official random stream);
    ``sampler='portable'``: inverse-CDF sampling from numpy PCG64 uniforms, identical to the ONNX runtime.
    ``impl``: the sampler's ``fast`` path (default) or the ``eager`` reference (:func:`masked_sample`).
    ``precision``: ``fp32`` (default, exact), or ``bf16`` / ``fp16`` autocast of the transformer blocks (the
    head's logits and the sampling stay float32; the tokens may then differ from float32's where the model
    hesitates), or ``auto``: bf16 on CPUs with bf16 instructions and on GPUs that support it, else fp32
    (:func:`varedit.cpu.resolve_precision`; :attr:`precision` holds the resolved value)."""

    name = "torch"

    def __init__(self, var: VAR, vae: VQVAE, device: torch.device, sampler: str = "torch", impl: str = "fast",
                 precision: str = "fp32"):
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, not {sampler!r}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")
        if precision == "auto":  # bf16 where the hardware has it and it was measured to hold (varedit.cpu)
            from ..cpu import resolve_precision
            precision = resolve_precision(precision, device)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be auto or one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.var, self.vae, self.device, self.sampler, self.impl = var, vae, device, sampler, impl
        self.precision = precision
        self.amp_dtype = PRECISIONS[precision]

    @property
    def image_size(self) -> int:
        return self.vae.image_size

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return tuple(self.var.patch_nums)

    @property
    def downsample(self) -> int:
        return self.vae.downsample

    @property
    def num_classes(self) -> int:
        return self.var.num_classes

    def stream(self, seed: int) -> Any:
        if self.sampler == "portable":
            return np.random.default_rng(seed)
        return new_generator(seed, self.device)[0]

    def _to_tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self.device)

    @torch.no_grad()
    def encode_tokens(self, rgb_BHW3: np.ndarray) -> list[np.ndarray]:
        """Tokens per scale of images in [0, 1] (for analysis and tests)."""
        idx = self.vae.img_to_idx(self._to_tensor(model_images(rgb_BHW3)))
        return [i.cpu().numpy() for i in idx]

    @torch.no_grad()
    def score_labels(self, plans: Sequence[CanvasPlan]) -> np.ndarray:
        """(B, num_classes) log-likelihood of each plan's known cells under every class (see
        :func:`~varedit.editing.sampler.class_log_likelihood`): the tokens are the plain tokenisation of
        the prefilled canvas, the scored cells the plan's keep maps."""
        idx = self.vae.img_to_idx(self._to_tensor(plan_images(plans)))
        keep = [self._to_tensor(k) for k in plan_keep_maps(plans)]
        return class_log_likelihood(self.var, self.vae, idx, keep).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def _clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def run(self, plans: Sequence[CanvasPlan], labels: Sequence[int], opts: SamplingOptions, stream: Any,
            callback: Callable[[int, int, np.ndarray | None], None] | None = None, preview: bool = False,
            timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sample a batch (one plan per row). Returns (images (B, S, S, 3) float32 in [0, 1], logprob (B,)).
        ``stream``: one stream (:meth:`stream`) for all rows, or one per row (rows of independent images
        batched together: rows sharing a stream draw from it together).  ``timings`` (a dict) accumulates
        the seconds spent tokenising, sampling and decoding."""
        t0 = self._clock()
        inp = sampler_inputs(plans, labels, self.patch_nums,
                             uniforms_from=stream if self.sampler == "portable" else None)
        keep = [self._to_tensor(k) for k in inp.keep]
        known: Known | None = None
        if inp.image is not None:
            f = self.vae.encode(self._to_tensor(inp.image))
            if inp.loop == "closed":
                pool = [None if w is None else self._to_tensor(w) for w in inp.pool_w or []]
                known = Known(keep, f_BChw=f, pool_w_per_scale=pool)
            else:
                known = Known(keep, idx_per_scale=self.vae.quantize.f_to_idx_and_fhat(f)[0])
        uniforms = None if inp.uniforms is None else [torch.from_numpy(u) for u in inp.uniforms]
        cb: ScaleCallback | None = None
        if callback is not None:
            def cb(state: ScaleState) -> None:
                prev = state.preview().permute(0, 2, 3, 1).cpu().numpy() if preview else None
                callback(state.si, state.num_scales, prev)
        label_B = self._to_tensor(inp.labels)
        o = opts.as_dict()
        t1 = self._clock()
        r = masked_sample(self.var, self.vae, label_B, known=known, generator=stream if uniforms is None else None,
                          uniforms=uniforms, callback=cb, impl=self.impl, decode=False, amp_dtype=self.amp_dtype, **o)
        t2 = self._clock()
        out = decode_fhat(self.vae, r.fhat_per_scale[-1], self.impl).float().permute(0, 2, 3, 1).cpu().numpy()
        if timings is not None:
            t3 = self._clock()
            for k, v in (("tokenize_s", t1 - t0), ("sample_s", t2 - t1), ("decode_s", t3 - t2)):
                timings[k] = timings.get(k, 0.0) + v
        return out, r.logprob_B.cpu().numpy()
