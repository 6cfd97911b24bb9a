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
from .plan import CanvasPlan
from .noise import portable_draws
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

    def _to_tensor(self, rgb_BHW3: np.ndarray) -> torch.Tensor:
        # contiguous NCHW, as the official tokeniser gets its images: the permuted view is channels-last
        # in memory, and the encoder's CPU convolutions round differently for it (up to 2e-5 in f,
        # enough to flip a token whose nearest-code margin is smaller)
        x = torch.from_numpy(np.ascontiguousarray(rgb_BHW3, np.float32)).permute(0, 3, 1, 2).contiguous()
        return x.to(self.device)

    @torch.no_grad()
    def encode_tokens(self, rgb_BHW3: np.ndarray) -> list[np.ndarray]:
        """Tokens per scale of images in [0, 1] (for analysis and tests)."""
        idx = self.vae.img_to_idx(self._to_tensor(rgb_BHW3).mul(2).sub(1))
        return [i.cpu().numpy() for i in idx]

    @torch.no_grad()
    def score_labels(self, plans: Sequence[CanvasPlan]) -> np.ndarray:
        """(B, num_classes) log-likelihood of each plan's known cells under every class (see
        :func:`~varedit.editing.sampler.class_log_likelihood`): the tokens are the plain tokenisation of
        the prefilled canvas, the scored cells the plan's keep maps."""
        idx = self.vae.img_to_idx(self._to_tensor(np.stack([p.encode_rgb for p in plans])).mul(2).sub(1))
        return class_log_likelihood(self.var, self.vae, idx, self._keep(plans)).cpu().numpy().astype(np.float64)

    def _keep(self, plans: Sequence[CanvasPlan]) -> list[torch.Tensor]:
        """The plans' keep maps, one (B, pn*pn) bool tensor per scale."""
        return [torch.from_numpy(np.concatenate([p.keep_maps[si] for p in plans])).to(self.device)
                for si in range(len(self.patch_nums))]

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
        B = len(plans)
        pns = self.patch_nums
        closed = {p.closed_loop for p in plans}
        if len(closed) != 1:
            raise ValueError("a batch mixes closed- and open-loop plans")
        keep = self._keep(plans)
        known: Known | None = None
        if not any(bool(k.any()) for k in keep):
            closed = {None}  # nothing is forced: plain generation, no need to encode
        else:
            img = self._to_tensor(np.stack([p.encode_rgb for p in plans])).mul(2).sub(1)
            f = self.vae.encode(img)
        mode = closed.pop()
        if mode is True:
            pool: list[torch.Tensor | None] = []
            for si in range(len(pns)):
                ws = [p.pool_w[si] for p in plans]
                if all(w is None for w in ws):
                    pool.append(None)
                else:
                    shape = (1, 1, pns[-1], pns[-1])
                    pool.append(torch.from_numpy(np.concatenate(
                        [w if w is not None else np.ones(shape, np.float32) for w in ws])).to(self.device))
            known = Known(keep, f_BChw=f, pool_w_per_scale=pool)
        elif mode is False:
            idx = self.vae.quantize.f_to_idx_and_fhat(f)[0]
            known = Known(keep, idx_per_scale=idx)
        uniforms = None
        if self.sampler == "portable":
            uniforms = [torch.from_numpy(u) for u in portable_draws(stream, B, pns)]
        cb: ScaleCallback | None = None
        if callback is not None:
            def cb(state: ScaleState) -> None:
                prev = state.preview().permute(0, 2, 3, 1).cpu().numpy() if preview else None
                callback(state.si, state.num_scales, prev)
        label_B = torch.tensor(list(labels), device=self.device, dtype=torch.long)
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
