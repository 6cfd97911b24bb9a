"""Export a VAR + VQVAE pair to four ONNX graphs and a manifest (this module needs torch).

Graphs (all with a fixed batch ``B``, the one the export was made for)::

    tokenizer.onnx  image (B,3,H,W) in [-1,1]  -> f (B,Cvae,h,w), tokens_s (B,pn_s^2) int64
    sampler.onnx    label, guidance, top_k, top_p_threshold, closed_loop, f_known,
                    keep_s, known_s, uniform_s (every scale), pool_w_s (every scale but the last)
                    -> tokens_s (B,pn_s^2) int64, f_hat (B,Cvae,h,w), logprob (B,),
                       cell_logprob_s (B,pn_s^2) (each cell's token log-probability: label inference)
    decoder.onnx    f_hat (B,Cvae,h,w) -> image (B,3,H,W) in [0,1]
    scorer.onnx     label (R,), tokens_s (R,pn_s^2) -> cell_logprob_s (R,pn_s^2): label inference's
                    teacher-forced pass, R = min(B x min(classes, 16), 64) (class, image) rows at once

Design choices and what each buys:

* **One unrolled sampler graph** (all scales, the KV cache as graph values): no Python between
  scales, so a host in any language makes one call per batch, and the runtime can fuse and plan the
  whole generation.  It is the same *masked* next-scale prediction for every task: generation (no
  cell kept), inpainting / outpainting / class edits (keep maps; open loop with given tokens, or
  closed loop re-quantising a real latent), so there is one graph to ship and test.
* **Sampling inside the graph from input uniforms** (inverse CDF, exactly
  :func:`varedit.editing.sampler.sample_icdf`): the noise is an input, so a run is reproducible
  across backends and host languages, and matches torch's ``masked_sample(..., uniforms=...)``.
  The cumulative sums are taken in float64 and rounded to float32, which is what torch's CPU
  ``cumsum`` does; it also makes the CDF (almost always) independent of the summation order, so
  parallel GPU scans agree with sequential CPU ones.
* **Interpolations as constant matrices**: area downsampling and bicubic upsampling are linear maps;
  as matrix products they export with any exporter (the legacy exporter fails on area 16 -> 13) and
  run as GEMMs.  Area pooling is an indicator-matrix sum divided by the window height, then width
  (torch's ``adaptive_avg_pool2d`` arithmetic: bit-identical when evaluated by torch on CPU, within
  float rounding of the summation order in onnxruntime); bicubic weights are read off torch itself.
* **Fixed batch**: every shape is static (no Shape nodes survive ORT's constant folding), which is
  what onnxruntime needs to capture a whole run as one CUDA graph.  Fewer inputs are padded by the
  runtime, more are chunked.
* **Opset 23** by default: torch's exporter turns scaled-dot-product attention into the ONNX
  ``Attention`` op (a fused kernel on onnxruntime's CUDA provider); q/k L2 normalisation and the
  per-head temperature are applied before it, with scale 1.  Opsets 18 and 20 also work (attention is
  then decomposed into MatMul/Softmax).
* **fp16**: exported from a half-precision copy of the transformer blocks and the VQVAE encoder /
  decoder; the class embedding, head, softmax, cumulative sums, sampling, quantiser and phi
  convolutions stay fp32, and every graph input and output is fp32 / int64 / bool in both precisions.

Not in the graph: the official "more_smooth" Gumbel-softmax blending (it needs Gumbel noise per
vocabulary entry and gives no tokens); use the torch backend for it.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import platform
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from varedit import __version__ as VAREDIT_VERSION
from varedit.editing.guidance import guidance_weights
from varedit.editing.masks import coverage_keep_maps, official_keep_maps, pool_weights
from varedit.editing.noise import portable_uniforms
from varedit.models.var import VAR, NextScaleStep
from varedit.models.vqvae import VQVAE

from .feeds import top_p_threshold
from .manifest import FORMAT, FORMAT_VERSION, MANIFEST, sha256_file
from .runtime import OnnxVAR

log = logging.getLogger(__name__)

DEFAULT_OPSET = 23
# above this many bytes of weights in one graph, weights go to an external data file (protobuf's 2 GB limit)
EXTERNAL_DATA_BYTES = 1_500_000_000
SCORER_CLASSES = 16  # classes scored in one run of the scorer graph (per image of the export's batch)
SCORER_MAX_ROWS = 64  # and rows per run at most: each row holds L x V logits (11 MB at 256 px, vocab 4096)


# --------------------------------------------------------------------------------------------------
# interpolation as constant matrices
# --------------------------------------------------------------------------------------------------
def area_indicator(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_out, n_in) 0/1 windows of torch's adaptive average pooling, and the window sizes (n_out,)."""
    S = torch.zeros(n_out, n_in)
    for i in range(n_out):
        S[i, (i * n_in) // n_out: -((-(i + 1) * n_in) // n_out)] = 1
    return S, S.sum(1)


def bicubic_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of torch's bicubic upsampling (align_corners=False) along one axis.

    Read off torch itself by interpolating the unit vectors (the height axis is 1 -> 1, which bicubic
    leaves exactly unchanged), so the coefficients, including the border clamping, are torch's own.
    """
    e = torch.eye(n_in, dtype=torch.float32).view(n_in, 1, 1, n_in)
    return F.interpolate(e, size=(1, n_out), mode="bicubic").view(n_in, n_out).T.contiguous()


def _as_dtype(m: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The module itself in fp32 (no copy: the export must not double the memory of a large model),
    a half-precision copy otherwise (the caller's model is never modified)."""
    return m if dtype == torch.float32 else copy.deepcopy(m).to(dtype)


def _cpu_fp32_eval(m: nn.Module) -> nn.Module:
    """``m`` when it already is an fp32 CPU model in eval mode, else such a copy (never mutate the caller's)."""
    ok = not m.training and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in m.parameters())
    return m if ok else copy.deepcopy(m).float().cpu().eval()


class _Quant(nn.Module):
    """The residual quantiser's arithmetic for a fixed scale list, with matrix interpolations."""

    def __init__(self, vae: VQVAE):
        super().__init__()
        q = vae.quantize
        self.pns = tuple(q.v_patch_nums)
        self.SN = len(self.pns)
        self.HW = self.pns[-1]
        self.Cvae = q.Cvae
        self.register_buffer("emb", q.embedding.weight.detach().float().clone())
        # the codebook norms, as torch.sum(w.square(), dim=1) computes them in nearest_code
        self.register_buffer("emb_sq", self.emb.square().sum(dim=1))
        self.phi = q.quant_resi.qresi_ls
        self.phi_idx = [q.phi_index(si, self.SN) for si in range(self.SN)]
        HW = self.HW
        for s, pn in enumerate(self.pns[:-1]):
            S, cnt = area_indicator(HW, pn)
            # (HW*HW, pn*pn): sums every window in row-major order, as the CPU kernel does
            self.register_buffer(f"area_{s}", torch.kron(S, S).T.contiguous())
            self.register_buffer(f"area_cnt_{s}", cnt.clone())
            self.register_buffer(f"up_{s}", bicubic_matrix(pn, HW))

    def area(self, x_NChw: torch.Tensor, s: int) -> torch.Tensor:
        """``F.interpolate(x, size=(pn_s, pn_s), mode="area")`` for a last-scale map (s < SN - 1)."""
        N, C = x_NChw.shape[:2]
        pn = self.pns[s]
        P: torch.Tensor = getattr(self, f"area_{s}")
        cnt: torch.Tensor = getattr(self, f"area_cnt_{s}")
        y = (x_NChw.reshape(N, C, self.HW * self.HW) @ P).reshape(N, C, pn, pn)
        return y / cnt.view(pn, 1) / cnt.view(1, pn)  # sum / kh / kw, torch's order

    def weighted_area(self, x_BChw: torch.Tensor, w_B1hw: torch.Tensor, s: int) -> torch.Tensor:
        """The closed loop's pooling (``sampler._pool``): with w = 1 it equals ``area`` bit for bit
        (the denominator is then exactly 1)."""
        num = self.area(x_BChw * w_B1hw, s)
        den = self.area(w_B1hw, s)
        return num / den.clamp_min(1e-8)

    def up(self, h_BCpp: torch.Tensor, s: int) -> torch.Tensor:
        """Bicubic upsampling to the last scale: width first, then height (torch's order)."""
        U: torch.Tensor = getattr(self, f"up_{s}")
        return U @ (h_BCpp @ U.T)

    def nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        """argmin_v |z - e_v|^2 with the arithmetic of ``VectorQuantizer.nearest_code``."""
        d = torch.sum(z_NC.square(), dim=1, keepdim=True) + self.emb_sq
        d = d - 2.0 * (z_NC @ self.emb.T)  # addmm(alpha=-2): the factor 2 is exact, so same rounding
        return torch.argmin(d, dim=1)

    def contribution(self, si: int, h_BCpp: torch.Tensor) -> torch.Tensor:
        """phi(upsample(code map)): scale si's contribution to f_hat (``embed_map_to_last``)."""
        if si != self.SN - 1:
            h_BCpp = self.up(h_BCpp, si)
        return self.phi[self.phi_idx[si]](h_BCpp)

    def embed(self, idx_Bl: torch.Tensor, pn: int) -> torch.Tensor:
        B = idx_Bl.shape[0]
        return F.embedding(idx_Bl, self.emb).transpose(1, 2).reshape(B, self.Cvae, pn, pn)


# --------------------------------------------------------------------------------------------------
# the graphs as modules
# --------------------------------------------------------------------------------------------------
class TokenizerGraph(nn.Module):
    """image in [-1, 1] -> (f, tokens per scale): ``vae.encode`` then ``f_to_idx_and_fhat``."""

    def __init__(self, vae: VQVAE, quant: _Quant, dtype: torch.dtype):
        super().__init__()
        self.encoder = _as_dtype(vae.encoder, dtype)
        self.quant_conv = vae.quant_conv
        self.quant = quant
        self.dtype = dtype

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.quant_conv(self.encoder(image.to(self.dtype)).float())
        q = self.quant
        B = f.shape[0]
        f_rest = f
        tokens = []
        for si, pn in enumerate(q.pns):
            z = q.area(f_rest, si) if si != q.SN - 1 else f_rest
            idx = q.nearest(z.permute(0, 2, 3, 1).reshape(-1, q.Cvae)).view(B, pn * pn)
            f_rest = f_rest - q.contribution(si, q.embed(idx, pn))
            tokens.append(idx)
        return (f, *tokens)


class DecoderGraph(nn.Module):
    """f_hat -> image in [0, 1]: ``vae.fhat_to_img(f_hat).add(1).mul(0.5)``."""

    def __init__(self, vae: VQVAE, dtype: torch.dtype):
        super().__init__()
        self.post_quant_conv = _as_dtype(vae.post_quant_conv, dtype)
        self.decoder = _as_dtype(vae.decoder, dtype)
        self.dtype = dtype

    def forward(self, f_hat: torch.Tensor) -> torch.Tensor:
        img = self.decoder(self.post_quant_conv(f_hat.to(self.dtype))).float()
        return img.clamp(-1, 1).add(1).mul(0.5)


class SamplerGraph(NextScaleStep):
    """Masked next-scale prediction, every scale unrolled, KV cache as graph values.

    The transformer is the model's own step (:class:`varedit.models.var.NextScaleStep`: the same code
    the torch sampler runs); around it, the arithmetic follows :func:`varedit.editing.sampler.masked_sample`
    step by step (guidance, top-k then top-p, inverse-CDF sampling, forcing the kept cells, f_hat
    update), so for the same inputs and uniforms it draws the same tokens.
    """

    def __init__(self, var: VAR, quant: _Quant, batch: int, dtype: torch.dtype):
        super().__init__()
        v = var
        # the model's modules under the model's names: the exported weights are named as in the model
        # (the int8 quantizer picks the blocks' products by these names)
        self.blocks = _as_dtype(v.blocks, dtype)  # the transformer body: the only part in half precision
        self.class_emb, self.shared_ada_lin = v.class_emb, v.shared_ada_lin
        self.word_embed, self.head_nm, self.head = v.word_embed, v.head_nm, v.head
        self.pos_start = v.pos_start
        self.register_buffer("lvl_pos_1LC", v.lvl_pos().detach().clone())  # a constant of the graph
        self.patch_nums, self.first_l, self.begin_ends = tuple(v.patch_nums), v.first_l, list(v.begin_ends)
        self.quant = quant
        self.batch = batch
        self.dtype = dtype
        self.pns = tuple(v.patch_nums)
        self.SN, self.V = len(self.pns), v.V
        self.C, self.Cvae, self.num_classes = v.C, v.Cvae, v.num_classes
        self.register_buffer("not_last_V", torch.arange(self.V) != self.V - 1)

    def lvl_pos(self) -> torch.Tensor:
        return self.lvl_pos_1LC

    def _next_map(self, f_hat: torch.Tensor, si: int) -> torch.Tensor:
        """f_hat pooled to the grid of scale si + 1 (area to the same size is exact, so the last scale
        takes f_hat as it is): the input map of :meth:`step`."""
        return self.quant.area(f_hat, si + 1) if si + 1 != self.SN - 1 else f_hat

    # -- sampling (fp32) -----------------------------------------------------------------------
    def _filter(self, logits: torch.Tensor, top_k: torch.Tensor, top_p_thr: torch.Tensor) -> torch.Tensor:
        """``filter_top_k_top_p_`` with tensor settings, from one descending sort."""
        B, l, V = logits.shape
        srt, order = torch.sort(logits, dim=-1, descending=True)
        k = torch.where((top_k > 0) & (top_k < V), top_k, torch.full_like(top_k, V))
        kth = torch.gather(srt, -1, (k - 1).view(1, 1, 1).expand(B, l, 1))  # == topk(k).amin()
        neg_inf = torch.full_like(logits, -math.inf)
        logits = torch.where(logits < kth, neg_inf, logits)
        # the top-k-filtered logits in ascending order are the descending sort, masked and reversed
        asc = torch.where(srt < kth, neg_inf, srt).flip(-1)
        asc_idx = order.flip(-1)
        cum = asc.softmax(dim=-1).double().cumsum(dim=-1).float()  # torch's CPU cumsum accumulates in double
        remove = (cum <= top_p_thr) & self.not_last_V  # the largest logit always stays
        remove = torch.zeros_like(remove).scatter(-1, asc_idx, remove)
        return torch.where(remove, neg_inf, logits)

    @staticmethod
    def _sample_icdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        cdf = logits.softmax(dim=-1).double().cumsum(dim=-1).float()
        idx = (cdf < (u * cdf[..., -1]).unsqueeze(-1)).to(torch.int64).sum(dim=-1)
        return idx.clamp_max(logits.shape[-1] - 1)

    def forward(self, label: torch.Tensor, guidance: torch.Tensor, top_k: torch.Tensor, top_p_threshold: torch.Tensor,
                closed_loop: torch.Tensor, f_known: torch.Tensor, keep: list[torch.Tensor], known: list[torch.Tensor],
                uniform: list[torch.Tensor], pool_w: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return self.run(label, guidance, top_k, top_p_threshold, closed_loop, f_known, keep, known, uniform, pool_w)[0]

    def run(self, label: torch.Tensor, guidance: torch.Tensor, top_k: torch.Tensor, top_p_threshold: torch.Tensor,
            closed_loop: torch.Tensor, f_known: torch.Tensor, keep: list[torch.Tensor], known: list[torch.Tensor],
            uniform: list[torch.Tensor], pool_w: list[torch.Tensor], record_logits: bool = False
            ) -> tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]:
        """The graph's body; ``record_logits`` (torch only, never exported) also returns the guided logits."""
        B, q = self.batch, self.quant
        label2 = torch.cat((label, torch.full_like(label, self.num_classes)))  # rows [B:] are the null class
        ctx = self.start(label2)
        kv = self.new_kv_caches()
        f_hat = torch.zeros_like(f_known)
        f_rest = f_known
        tokens, cell_lps, logits_rec = [], [], []
        logp_sum = torch.zeros(B, dtype=torch.float32)
        logp_cnt = torch.zeros(B, dtype=torch.float32)
        nxt = None
        for si, pn in enumerate(self.pns):
            logits2, kv = self.step(si, ctx, kv, nxt)
            logits = logits2[:B] * guidance[si, 0] - logits2[B:] * guidance[si, 1]
            if record_logits:
                logits_rec.append(logits)
            logprobs = logits.log_softmax(dim=-1)  # of the guided logits, before the filters (as masked_sample)
            idx = self._sample_icdf(self._filter(logits, top_k, top_p_threshold), uniform[si])
            # forced cells: given tokens (open loop) or the real latent's residual re-quantised (closed loop)
            z = q.weighted_area(f_rest, pool_w[si], si) if si != self.SN - 1 else f_rest
            requant = q.nearest(z.permute(0, 2, 3, 1).reshape(-1, self.Cvae)).view(B, pn * pn)
            forced = torch.where(closed_loop, requant, known[si])
            idx = torch.where(keep[si], forced, idx)
            free = (~keep[si]).float()
            lp = torch.gather(logprobs, -1, idx.unsqueeze(-1)).squeeze(-1)
            cell_lps.append(lp)
            logp_sum = logp_sum + (lp * free).sum(dim=1)
            logp_cnt = logp_cnt + free.sum(dim=1)
            contrib = q.contribution(si, q.embed(idx, pn))
            f_hat = f_hat + contrib
            f_rest = f_rest - contrib
            tokens.append(idx)
            if si != self.SN - 1:
                nxt = self._next_map(f_hat, si)
        return (*tokens, f_hat, logp_sum / logp_cnt.clamp_min(1), *cell_lps), logits_rec


class ScorerGraph(SamplerGraph):
    """Label inference's teacher-forced pass: log p(token | class, coarser scales) of every cell, for
    ``rows`` (class, image) pairs at once, unguided.

    The same blocks, KV cache and f_hat arithmetic as :class:`SamplerGraph` with every cell given, so its
    numbers are the sampler's with every cell forced and guidance [1, 0] (what label inference ran before
    this graph existed: one sampler run per class, each with the null class's rows computed for nothing).
    """

    def forward(self, label: torch.Tensor, tokens: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        R, q = self.batch, self.quant
        ctx = self.start(label)
        kv = self.new_kv_caches()
        f_hat = torch.zeros(R, self.Cvae, self.pns[-1], self.pns[-1])
        cell_lps = []
        nxt = None
        for si, pn in enumerate(self.pns):
            logits, kv = self.step(si, ctx, kv, nxt)
            idx = tokens[si]
            cell_lps.append(torch.gather(logits.log_softmax(dim=-1), -1, idx.unsqueeze(-1)).squeeze(-1))
            if si != self.SN - 1:
                f_hat = f_hat + q.contribution(si, q.embed(idx, pn))
                nxt = self._next_map(f_hat, si)
        return tuple(cell_lps)


def scorer_rows(batch: int, num_classes: int) -> int:
    """Rows of the scorer graph: every class of one batch of images at once, at most 16 classes per image
    and 64 rows (a thousand-class model, or a large batch, is scored in chunks: memory grows with rows x
    tokens x vocabulary)."""
    return min(batch * min(num_classes, SCORER_CLASSES), SCORER_MAX_ROWS)


# --------------------------------------------------------------------------------------------------
# graph interfaces (names, shapes, dtypes, meaning): the manifest's and the runtime's contract
# --------------------------------------------------------------------------------------------------
def _io(name: str, shape: Sequence[int], dtype: str, meaning: str) -> dict[str, Any]:
    return {"name": name, "shape": [int(s) for s in shape], "dtype": dtype, "meaning": meaning}


def graph_interfaces(B: int, pns: Sequence[int], Cvae: int, image_size: int, V: int, num_classes: int,
                     scorer: bool = True) -> dict[str, dict[str, Any]]:
    HW, SN = pns[-1], len(pns)
    img = [B, 3, image_size, image_size]
    lat = [B, Cvae, HW, HW]
    tok_out = [_io(f"tokens_{s}", [B, pn * pn], "int64",
                   f"scale {s} ({pn}x{pn}) token indices in [0, {V}), row-major") for s, pn in enumerate(pns)]
    sampler_in = [
        _io("label", [B], "int64", f"class index per image in [0, {num_classes}]; {num_classes} = unconditional"),
        _io("guidance", [SN, 2], "float32",
            "per scale [w_cond, w_uncond]: logits = w_cond*cond - w_uncond*uncond; classifier-free guidance "
            "with weight t is [1+t, t], each rounded to float32 from double (t = cfg*(si/(SN-1)) for the "
            "official linear schedule)"),
        _io("top_k", [], "int64", "keep the k largest logits (0 or >= vocab: off), applied before top-p"),
        _io("top_p_threshold", [], "float32",
            "1 - top_p rounded to float32 from double (nucleus: drop tokens whose ascending cumulative "
            "probability is <= it); negative = top-p off (top_p = 0)"),
        _io("closed_loop", [], "bool", "False: kept cells take known_s (open loop); True: kept cells "
            "re-quantise f_known minus the running reconstruction (closed loop)"),
        _io("f_known", lat, "float32", "closed loop: the real latent (tokenizer output f); ignored in open loop"),
    ]
    sampler_in += [_io(f"keep_{s}", [B, pn * pn], "bool", f"scale {s}: True = cell forced, False = sampled")
                   for s, pn in enumerate(pns)]
    sampler_in += [_io(f"known_{s}", [B, pn * pn], "int64", f"scale {s}: open loop tokens for the kept cells")
                   for s, pn in enumerate(pns)]
    sampler_in += [_io(f"uniform_{s}", [B, pn * pn], "float32",
                       f"scale {s}: uniforms in [0,1) for inverse-CDF sampling (index = number of CDF "
                       f"entries below u*total)") for s, pn in enumerate(pns)]
    sampler_in += [_io(f"pool_w_{s}", [B, 1, HW, HW], "float32",
                       f"closed loop, scale {s}: weight of each latent cell when area-pooling the residual "
                       f"(1 = read, 0 = hole; all ones = plain area pooling). The last scale does not pool.")
                   for s in range(SN - 1)]
    graphs: dict[str, dict[str, Any]] = {
        "tokenizer": {"file": "tokenizer.onnx",
                      "inputs": [_io("image", img, "float32", "RGB image in [-1, 1], NCHW")],
                      "outputs": [_io("f", lat, "float32", "continuous latent before quantisation")] + tok_out},
        "sampler": {"file": "sampler.onnx", "inputs": sampler_in,
                    "outputs": tok_out + [
                        _io("f_hat", lat, "float32", "reconstructed latent after the last scale"),
                        _io("logprob", [B], "float32", "mean log-likelihood of the sampled (not forced) tokens "
                            "under the guided logits before top-k/top-p (masked_sample's logprob_B); 0 if all "
                            "cells are forced")] + [
                        _io(f"cell_logprob_{s}", [B, pn * pn], "float32",
                            f"scale {s}: log-probability of each cell's token (sampled or forced) under the guided "
                            f"logits before top-k/top-p; with every cell forced and guidance [1, 0] it scores "
                            f"an image's tokens under a class (label inference)") for s, pn in enumerate(pns)]},
        "decoder": {"file": "decoder.onnx",
                    "inputs": [_io("f_hat", lat, "float32", "latent (sampler output f_hat)")],
                    "outputs": [_io("image", img, "float32", "RGB image in [0, 1], NCHW")]},
    }
    if scorer:
        R = scorer_rows(B, num_classes)
        graphs["scorer"] = {
            "file": "scorer.onnx", "rows": R,
            "inputs": [_io("label", [R], "int64", f"class index per row in [0, {num_classes}]")] + [
                _io(f"tokens_{s}", [R, pn * pn], "int64", f"scale {s}: the image's tokens (tokenizer output)")
                for s, pn in enumerate(pns)],
            "outputs": [_io(f"cell_logprob_{s}", [R, pn * pn], "float32",
                            f"scale {s}: log-probability of each cell's token under the row's class, teacher-forced "
                            f"and unguided (label inference sums it over the known cells)") for s, pn in enumerate(pns)]}
    return graphs


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
def _example_inputs(g: dict[str, Any]) -> list[torch.Tensor]:
    out = []
    for spec in g["inputs"]:
        dt = {"float32": torch.float32, "int64": torch.int64, "bool": torch.bool}[spec["dtype"]]
        out.append(torch.zeros(spec["shape"], dtype=dt) if dt != torch.float32 else torch.rand(spec["shape"]))
    return out


def _sampler_args(flat: list[torch.Tensor], SN: int) -> tuple[Any, ...]:
    """Flat input list (the manifest's order) -> the SamplerGraph.forward arguments."""
    head, rest = flat[:6], flat[6:]
    return (*head, rest[:SN], rest[SN:2 * SN], rest[2 * SN:3 * SN], rest[3 * SN:])


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's noise that says nothing about this export, silenced for its duration only: a warning
    per torchvision operator when torchvision is not installed (four per graph), and a FutureWarning
    about pytree internals from torch itself."""
    noisy = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
            yield
    finally:
        noisy.setLevel(level)


def _export_graph(module: nn.Module, args: tuple[Any, ...], path: Path, iface: dict[str, Any], opset: int,
                  optimize: bool) -> float:
    t0 = time.perf_counter()
    in_names = [s["name"] for s in iface["inputs"]]
    out_names = [s["name"] for s in iface["outputs"]]
    with torch.no_grad(), _quiet_exporter():
        prog = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=in_names,
                                 output_names=out_names, optimize=optimize, verbose=False)
    if prog is None:
        raise RuntimeError(f"torch.onnx.export returned nothing for {path.name}")
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters()) + \
        sum(b.numel() * b.element_size() for b in module.buffers())
    # the exporter records a torch stack trace per node: megabytes of text in a large unrolled graph
    for node in prog.model.graph.all_nodes():
        node.metadata_props.clear()
    prog.model.graph.doc_string = None
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    prog.save(str(path), external_data=n_bytes > EXTERNAL_DATA_BYTES)
    dt = time.perf_counter() - t0
    log.info("exported %s in %.1f s (%.1f MB of weights)", path.name, dt, n_bytes / 1e6)
    return dt


def _check_model(path: Path) -> None:
    import onnx
    onnx.checker.check_model(str(path))  # a path (not a proto) also works with external data


def _graph_files(out_dir: Path, graph_file: str) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir() if p.name == graph_file or p.name.startswith(graph_file + "."))


def export_onnx(var: VAR, vae: VQVAE, out_dir: str | Path, *, batch: int = 1, fp16: bool = False,
                opset: int = DEFAULT_OPSET, check: bool = True, name: str = "model",
                class_names: Sequence[Sequence[str] | str] | None = None, optimize: bool = False,
                check_threads: int | None = None, check_images: int = 2,
                defaults: dict[str, Any] | None = None, scorer: bool = True,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export ``var`` + ``vae`` to ``out_dir`` (tokenizer.onnx, sampler.onnx, decoder.onnx, scorer.onnx,
    manifest.json).

    Args:
        batch: the fixed batch size of every graph (the runtime pads / chunks to it).
        fp16: half-precision transformer blocks and VQVAE encoder/decoder (sampling stays fp32).
        opset: 23 (default, fused ``Attention``), or 18 / 20 (attention decomposed).
        check: run ``onnx.checker`` and a parity run against torch on onnxruntime's CPU provider; raise
            ``RuntimeError`` if the export does not reproduce torch (fp32: same tokens; fp16: drift bounds).
        name, class_names: recorded in the manifest.
        defaults: the model's default sampling settings (cfg, top_k, top_p, guidance), recorded in the manifest.
        scorer: also export the scorer graph (label inference in one run per chunk of classes; without it
            the runtime scores with the sampler, one run per class).
        optimize: run the exporter's graph optimiser (slower export; onnxruntime optimises at load anyway).
        check_threads, check_images: onnxruntime threads and number of images of the parity run (it runs
            torch on the CPU too: about 3 generations and one tokenisation / decoding per image).
        progress: called with a line as each stage starts (each graph's export, the checker, the parity run).

    Returns the manifest (also written to ``out_dir/manifest.json``, last, so that a directory with a
    manifest is a complete export).
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    if tuple(var.patch_nums) != tuple(vae.patch_nums):
        raise ValueError(f"VAR scales {var.patch_nums} differ from VQVAE scales {vae.patch_nums}")
    if opset < 18:
        raise ValueError("opset 18 or newer is needed (LayerNormalization, reductions with axes inputs)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # an interrupted export must not look complete
    var = _cpu_fp32_eval(var)
    vae = _cpu_fp32_eval(vae)
    dtype = torch.float16 if fp16 else torch.float32
    pns = tuple(var.patch_nums)
    SN = len(pns)
    image_size = vae.image_size
    ifaces = graph_interfaces(batch, pns, var.Cvae, image_size, var.V, var.num_classes, scorer=scorer)

    quant = _Quant(vae).eval()
    modules: dict[str, nn.Module] = {
        "tokenizer": TokenizerGraph(vae, quant, dtype).eval(),
        "sampler": SamplerGraph(var, quant, batch, dtype).eval(),
        "decoder": DecoderGraph(vae, dtype).eval(),
    }
    if scorer:
        modules["scorer"] = ScorerGraph(var, quant, ifaces["scorer"]["rows"], dtype).eval()
    times: dict[str, float] = {}
    say = progress or (lambda line: None)
    for i, (g, module) in enumerate(modules.items()):
        ex = _example_inputs(ifaces[g])
        args = _sampler_args(ex, SN) if g == "sampler" else (ex[0], ex[1:]) if g == "scorer" else tuple(ex)
        say(f"graph {i + 1}/{len(modules)}: exporting {ifaces[g]['file']}")
        times[g] = round(_export_graph(module, args, out / ifaces[g]["file"], ifaces[g], opset, optimize), 2)
        if check:
            say(f"graph {i + 1}/{len(modules)}: onnx.checker on {ifaces[g]['file']}")
            _check_model(out / ifaces[g]["file"])

    files: dict[str, dict[str, Any]] = {}
    for g in ifaces:
        for fn in _graph_files(out, ifaces[g]["file"]):
            files[fn] = {"sha256": sha256_file(out / fn), "bytes": (out / fn).stat().st_size, "graph": g}
    names = None
    if class_names is not None:
        names = [[c] if isinstance(c, str) else list(c) for c in class_names]
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "varedit_version": VAREDIT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": name, "image_size": image_size, "patch_nums": list(pns), "latent_size": pns[-1],
            "vocab_size": var.V, "Cvae": var.Cvae, "num_classes": var.num_classes, "null_class": var.num_classes,
            "class_names": names, "depth": var.depth, "embed_dim": var.C, "num_heads": var.cfg.num_heads,
        },
        "defaults": {k: v for k, v in (defaults or {}).items() if k in ("cfg", "top_k", "top_p", "guidance")},
        "batch": batch,
        "precision": "fp16" if fp16 else "fp32",
        "opset": opset,
        "sampling": {
            "method": "inverse CDF from input uniforms (varedit.editing.sampler.sample_icdf); "
                      "cumulative sums in float64 rounded to float32",
            "noise": "varedit.editing.noise.portable_uniforms(seed, N, patch_nums): numpy PCG64 float32",
            "filters": "top-k (ties at the k-th value kept) then top-p, as filter_top_k_top_p_",
            "more_smooth": False,
        },
        "graphs": ifaces,
        "files": files,
        "export": {"exporter": "torch.onnx.export(dynamo=True)", "optimize": optimize, "seconds": times,
                   "torch_version": torch.__version__, "host": platform.platform()},
    }
    if check:
        say(f"parity run: the exported graphs on onnxruntime (CPU) against torch, {max(1, check_images)} images")
        manifest["validation"] = validate_export(var, vae, out, manifest, threads=check_threads, images=check_images)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log.info("ONNX export of %s (%s, batch %d, opset %d) written to %s", name, manifest["precision"], batch,
             opset, out)
    return manifest


# --------------------------------------------------------------------------------------------------
# validation: onnxruntime (CPU) against torch
# --------------------------------------------------------------------------------------------------
# score: a sum of log-probabilities over up to L cells (each within about 1e-5)
FP32_TOL = {"f": 1e-4, "f_hat": 1e-4, "image": 1e-4, "logprob": 1e-4, "score": 1e-2}
# fp16 bounds for the tiny and the released models (measured drift is far below; see the report)
FP16_TOL = {"f": 5e-2, "image": 5e-2, "logits_rel": 2e-2}


def _ref_sample(var: VAR, vae: VQVAE, labels: np.ndarray, uniforms: list[np.ndarray], cfg: float, top_k: int,
                top_p: float, keep: list[np.ndarray] | None = None, known: list[np.ndarray] | None = None,
                f_known: np.ndarray | None = None, pool_w: list[np.ndarray | None] | None = None) -> Any:
    from varedit.editing.sampler import Known, masked_sample
    kn = None
    if keep is not None:
        t = [torch.from_numpy(k) for k in keep]
        if f_known is not None:
            pw = None if pool_w is None else [None if w is None else torch.from_numpy(w) for w in pool_w]
            kn = Known(t, f_BChw=torch.from_numpy(f_known), pool_w_per_scale=pw)
        else:
            kn = Known(t, idx_per_scale=[torch.from_numpy(k) for k in known])
    return masked_sample(var, vae, torch.from_numpy(labels), known=kn, cfg=cfg, top_k=top_k, top_p=top_p,
                         uniforms=[torch.from_numpy(u) for u in uniforms], decode=False)


def _agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    n = sum(x.size for x in a)
    return float(sum(int((x == y).sum()) for x, y in zip(a, b)) / n)


def _check_image(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """A smooth random test image in [-1, 1] (a coarse grid upsampled, plus a little noise)."""
    coarse = torch.from_numpy(rng.random((n, 3, 8, 8), dtype=np.float32) * 2 - 1)
    img = F.interpolate(coarse, size=(size, size), mode="bicubic") + 0.05 * torch.from_numpy(
        rng.standard_normal((n, 3, size, size), dtype=np.float32))
    return img.clamp(-1, 1).numpy()


def validate_export(var: VAR, vae: VQVAE, out_dir: Path, manifest: dict[str, Any], *, threads: int | None = None,
                    images: int = 2, seed: int = 0) -> dict[str, Any]:
    """Run the exported graphs on onnxruntime's CPU provider against the torch models.

    fp32: tokenizer and sampler tokens must equal torch's (generation, an open-loop inpaint, a
    closed-loop edit), latents and images within ``FP32_TOL``.  fp16: drift of f / image / logits
    (logits: the half-precision module that was exported, run by torch, teacher-forced on the fp32
    tokens) within ``FP16_TOL``; token agreement is reported (sampling diverges once one token flips).
    """
    # the manifest is not on disk yet: open the graphs through the runtime with this manifest
    # no spinning: idle onnxruntime workers would otherwise busy-wait while torch computes the reference
    rt = OnnxVAR(out_dir, manifest, providers="cpu", threads=threads, verify=False, spinning=False)
    B, pns, N = manifest["batch"], tuple(manifest["model"]["patch_nums"]), max(1, images)
    fp16 = manifest["precision"] == "fp16"
    rng = np.random.default_rng(seed)
    res: dict[str, Any] = {"provider": "CPUExecutionProvider", "images": N, "batch": B}
    t0 = time.perf_counter()
    with torch.no_grad():
        # tokenizer
        img = _check_image(rng, N, manifest["model"]["image_size"])
        f_o, tok_o = rt.tokenize(img)
        f_t = vae.encode(torch.from_numpy(img))
        tok_t = [t.numpy() for t in vae.quantize.f_to_idx_and_fhat(f_t)[0]]
        f_t = f_t.numpy()
        res["tokenizer"] = {"f_max_abs": float(np.abs(f_o - f_t).max()), "token_agreement": _agreement(tok_o, tok_t)}
        # sampler: generation, open-loop inpaint (official keep maps), closed-loop edit (coverage maps)
        nc = manifest["model"]["num_classes"]
        labels = rng.integers(0, nc, size=N).astype(np.int64)
        cfg, top_k, top_p = 4.0, min(50, var.V // 2), 0.9
        hole = np.zeros((N, pns[-1], pns[-1]), dtype=bool)
        hole[:, pns[-1] // 4: pns[-1] * 3 // 4, pns[-1] // 4: pns[-1] * 3 // 4] = True
        keep_off = official_keep_maps(~hole, pns)
        keep_cov = coverage_keep_maps((~hole).astype(np.float32), pns, threshold=1.0, keep_first=1)
        pw = pool_weights((~hole).astype(np.float32), pns, keep_first=1)
        cases = {
            "generate": dict(),
            "inpaint_open_loop": dict(keep=keep_off, known=tok_t),
            "edit_closed_loop": dict(keep=keep_cov, f_known=f_t, pool_w=pw),
        }
        res["sampler"] = {}
        f_hat_gen = None
        for ci, (cname, kw) in enumerate(cases.items()):
            u = portable_uniforms(seed + ci, N, pns)
            tok_r, fh_r, lp_r = rt.sample(labels, kw.get("keep"), kw.get("known"), u, f_known=kw.get("f_known"),
                                          pool_w=kw.get("pool_w"), cfg=cfg, top_k=top_k, top_p=top_p)
            ref = _ref_sample(var, vae, labels, u, cfg, top_k, top_p, **kw)
            tok_t2 = [t.numpy() for t in ref.idx_per_scale]
            res["sampler"][cname] = {"token_agreement": _agreement(tok_r, tok_t2),
                                     "f_hat_max_abs": float(np.abs(fh_r - ref.fhat_per_scale[-1].numpy()).max()),
                                     "logprob_max_abs": float(np.abs(lp_r - ref.logprob_B.numpy()).max())}
            if cname == "generate":
                f_hat_gen = ref.fhat_per_scale[-1]
                if fp16:
                    # the transformer's drift, along torch's fp32 tokens (the same for every task: forced)
                    res["logits_max_abs"], res["logits_max_rel"] = _fp16_logit_drift(
                        var, vae, manifest, labels, u, cfg, top_k, top_p, tok_t2)
        # scorer: label inference (every class, the tokenizer's tokens, known cells = the inpaint's)
        if "scorer" in manifest["graphs"]:
            from varedit.editing.sampler import class_log_likelihood
            keep_t = [torch.from_numpy(k) for k in keep_off]
            ref_sc = class_log_likelihood(var, vae, [torch.from_numpy(t) for t in tok_t], keep_t).numpy()
            got_sc = rt.class_log_likelihood(f_t, keep_off, tokens=tok_t)
            res["scorer"] = {"score_max_abs": float(np.abs(got_sc - ref_sc).max()),
                             "argmax_agreement": float((got_sc.argmax(1) == ref_sc.argmax(1)).mean())}
        # decoder, on the torch f_hat so that only the decoder is compared
        img_o = rt.decode(f_hat_gen.numpy())
        img_t = vae.fhat_to_img(f_hat_gen).add(1).mul(0.5).numpy()
        res["decoder"] = {"image_max_abs": float(np.abs(img_o - img_t).max())}
    res["seconds"] = round(time.perf_counter() - t0, 2)
    failures = _judge(res, fp16)
    res["passed"] = not failures
    log.info("validation of %s: %s", out_dir, json.dumps(res))
    if failures:
        raise RuntimeError(f"ONNX export in {out_dir} does not reproduce torch: " + "; ".join(failures))
    return res


def _fp16_logit_drift(var: VAR, vae: VQVAE, manifest: dict[str, Any], labels: np.ndarray, u: list[np.ndarray],
                      cfg: float, top_k: int, top_p: float, tokens: list[np.ndarray]) -> tuple[float, float]:
    """Guided logits of the exported half module vs the fp32 module, both forced along torch's fp32 tokens."""
    pns = tuple(manifest["model"]["patch_nums"])
    N = labels.shape[0]
    quant = _Quant(vae).eval()
    out = []
    for dt in (torch.float32, torch.float16):
        m = SamplerGraph(var, quant, N, dt).eval()
        args = _sampler_inputs_torch(labels, u, cfg, top_k, top_p, pns, tokens, vae.Cvae)
        out.append(m.run(*args, record_logits=True)[1])
    a, b = torch.cat([x.flatten() for x in out[0]]), torch.cat([x.flatten() for x in out[1]])
    d = (a - b).abs().max().item()
    return float(d), float(d / a.abs().max().item())


def _sampler_inputs_torch(labels: np.ndarray, u: list[np.ndarray], cfg: float, top_k: int, top_p: float,
                          pns: Sequence[int], tokens: list[np.ndarray], Cvae: int) -> tuple[Any, ...]:
    """Inputs forcing every cell to ``tokens`` (open loop): the teacher-forced path."""
    N, HW = labels.shape[0], pns[-1]
    return (torch.from_numpy(labels), torch.from_numpy(guidance_weights(cfg, len(pns), "linear")),
            torch.tensor(top_k), torch.tensor(top_p_threshold(top_p)), torch.tensor(False),
            torch.zeros(N, Cvae, HW, HW), [torch.ones(N, pn * pn, dtype=torch.bool) for pn in pns],
            [torch.from_numpy(t) for t in tokens], [torch.from_numpy(x) for x in u],
            [torch.ones(N, 1, HW, HW) for _ in pns[:-1]])


def _judge(res: dict[str, Any], fp16: bool) -> list[str]:
    bad = []
    if not fp16:
        if res["tokenizer"]["token_agreement"] < 1:
            bad.append(f"tokenizer tokens agree {res['tokenizer']['token_agreement']:.4f}")
        if res["tokenizer"]["f_max_abs"] > FP32_TOL["f"]:
            bad.append(f"latent f differs by {res['tokenizer']['f_max_abs']:.2e}")
        for c, r in res["sampler"].items():
            if r["token_agreement"] < 1:
                bad.append(f"{c}: tokens agree {r['token_agreement']:.4f}")
            elif r["f_hat_max_abs"] > FP32_TOL["f_hat"]:
                bad.append(f"{c}: f_hat differs by {r['f_hat_max_abs']:.2e}")
            elif r["logprob_max_abs"] > FP32_TOL["logprob"]:
                bad.append(f"{c}: logprob differs by {r['logprob_max_abs']:.2e}")
        if res["decoder"]["image_max_abs"] > FP32_TOL["image"]:
            bad.append(f"decoded image differs by {res['decoder']['image_max_abs']:.2e}")
        if "scorer" in res and res["scorer"]["score_max_abs"] > FP32_TOL["score"]:
            bad.append(f"label scores differ by {res['scorer']['score_max_abs']:.2e}")
    else:
        if res["tokenizer"]["f_max_abs"] > FP16_TOL["f"]:
            bad.append(f"fp16 latent f drifts by {res['tokenizer']['f_max_abs']:.2e}")
        if res["decoder"]["image_max_abs"] > FP16_TOL["image"]:
            bad.append(f"fp16 decoded image drifts by {res['decoder']['image_max_abs']:.2e}")
        if res["logits_max_rel"] > FP16_TOL["logits_rel"]:
            bad.append(f"fp16 logits drift by {res['logits_max_abs']:.2e} ({res['logits_max_rel']:.2e} relative)")
    return bad


__all__ = ["export_onnx", "validate_export", "graph_interfaces", "TokenizerGraph", "SamplerGraph", "DecoderGraph",
           "ScorerGraph", "scorer_rows",
           "DEFAULT_OPSET", "FP32_TOL", "FP16_TOL"]
