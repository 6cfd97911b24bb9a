"""The masked next-scale sampler: one tensor-level function behind every task.

Generation, inpainting, outpainting, class edits and restoration differ only in *which token cells
are known* at each scale and *where the known tokens come from*:

* nothing known                     -> class-conditional generation (the official sampler);
* known cells with given tokens     -> the official notebook method (``open loop``);
* known cells re-quantised from a real latent minus the current reconstruction -> ``closed loop``:
  generated neighbours change f_hat inside the kept region (bicubic upsampling of coarse cells),
  and re-quantising the residual there lets the kept cells compensate instead of drifting.

At every scale *all* cells are sampled first and the known ones are overwritten afterwards, so the
random stream is the same as in plain generation: an all-unknown edit equals ``generate`` for the same
generator, and an all-known closed-loop edit reproduces the tokeniser bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F

from ..models.var import VAR
from ..models.vqvae import VQVAE
from .guidance import Schedule, guidance_t, guidance_weight
from .noise import portable_uniforms, stream_groups

ScaleCallback = Callable[["ScaleState"], None]
IMPLS = ("fast", "eager")


@dataclass
class Known:
    """What is known about the image, per scale.

    keep_per_scale: bool (B or 1, pn*pn) per scale, True = the cell is forced, not sampled.
    idx_per_scale:  open loop: the tokens to force (e.g. the input's tokenisation).
    f_BChw:         closed loop: the real latent (B, Cvae, h, w) the forced cells must explain.
    pool_w_per_scale: closed loop: per scale, a (B or 1, 1, h, w) weight of latent cells that may be
                    read when pooling the residual onto that scale's grid (1 = trusted/known, 0 = hole);
                    None for a scale means "all cells" (the tokeniser's plain area pooling).
    """

    keep_per_scale: list[torch.Tensor]
    idx_per_scale: list[torch.Tensor] | None = None
    f_BChw: torch.Tensor | None = None
    pool_w_per_scale: list[torch.Tensor | None] | None = None

    def __post_init__(self) -> None:
        if (self.idx_per_scale is None) == (self.f_BChw is None):
            raise ValueError("Known needs exactly one of idx_per_scale (open loop) or f_BChw (closed loop)")


@dataclass
class ScaleState:
    """Handed to the per-scale callback after each scale."""

    si: int
    num_scales: int
    idx_Bl: torch.Tensor
    f_hat_BChw: torch.Tensor
    vae: VQVAE

    def preview(self) -> torch.Tensor:
        """Decode the current f_hat: a coarse-to-fine preview in [0, 1], (B, 3, H, W)."""
        with torch.no_grad():
            return self.vae.fhat_to_img(self.f_hat_BChw).add(1).mul(0.5)


@dataclass
class SampleResult:
    idx_per_scale: list[torch.Tensor]        # tokens used, (B, pn*pn) per scale
    sampled_idx_per_scale: list[torch.Tensor]  # the model's own choices before forcing
    fhat_per_scale: list[torch.Tensor]       # f_hat after each scale
    img_B3HW: torch.Tensor | None            # decoded image in [0, 1]
    logprob_B: torch.Tensor                  # mean log-likelihood of the sampled (not forced) tokens
    logits_per_scale: list[torch.Tensor] = field(default_factory=list)  # guided logits (record_logits)


def filter_top_k_top_p_(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Mask (in place, to -inf) logits outside the top-k and outside the top-p nucleus (official rule)."""
    V = logits_BlV.shape[-1]
    if 0 < top_k < V:
        kth = logits_BlV.topk(top_k, largest=True, sorted=False, dim=-1)[0].amin(dim=-1, keepdim=True)
        logits_BlV.masked_fill_(logits_BlV < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits_BlV.sort(dim=-1, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False
        logits_BlV.masked_fill_(remove.scatter(sorted_idx.ndim - 1, sorted_idx, remove), -torch.inf)
    return logits_BlV


def filter_top_k_top_p_fast_(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """:func:`filter_top_k_top_p_` without sorting the whole vocabulary, bit for bit the same result.

    With both filters on, the reference sorts all V logits to find the nucleus although everything
    outside the top-k is already -inf; that sort was about a tenth of a sampling pass on a CPU.  Here
    the top-k come sorted from ``topk`` and are laid out as the reference's sorted vector is (V - k
    entries of -inf, then the k values ascending), so softmax and cumsum reduce in the same order and
    round the same.  Two cases depend on how ties are ordered, and their rows take the reference path:
    a value tied with the k-th beyond the first k (the reference keeps it too), and two equal values
    on either side of the nucleus' edge (``sort`` may put either one first).  Ties elsewhere cannot
    change the result: equal values add up the same in either order.
    """
    V = logits_BlV.shape[-1]
    if not (0 < top_k < V and top_p > 0):
        return filter_top_k_top_p_(logits_BlV, top_k, top_p)
    vals, idx = logits_BlV.topk(top_k, largest=True, sorted=True, dim=-1)  # descending
    over_k = (logits_BlV >= vals[..., -1:]).sum(dim=-1) > top_k
    vals_asc, idx_asc = vals.flip(-1), idx.flip(-1)
    sorted_like = torch.full_like(logits_BlV, -torch.inf)
    sorted_like[..., V - top_k:] = vals_asc
    remove = sorted_like.softmax(dim=-1).cumsum_(dim=-1)[..., V - top_k:] <= (1 - top_p)
    remove[..., -1:] = False
    edge = remove[..., :-1] & ~remove[..., 1:]            # last removed entry, followed by a kept one
    tied_edge = (edge & (vals_asc[..., :-1] == vals_asc[..., 1:])).any(dim=-1)
    redo = over_k | tied_edge
    ref = logits_BlV[redo].clone() if bool(redo.any()) else None
    logits_BlV.fill_(-torch.inf)
    logits_BlV.scatter_(-1, idx_asc, vals_asc.masked_fill(remove, -torch.inf))
    if ref is not None:
        logits_BlV[redo] = filter_top_k_top_p_(ref, top_k, top_p)
    return logits_BlV


# one generator for all rows, or one per row (rows sharing a generator object draw from it together:
# :func:`varedit.editing.noise.stream_groups`)
Generators = Union[torch.Generator, None, Sequence[torch.Generator]]


def sample_tokens(logits_BlV: torch.Tensor, generator: Generators) -> torch.Tensor:
    B, l, V = logits_BlV.shape
    probs = logits_BlV.softmax(dim=-1)
    parts = [torch.multinomial(probs[a:b].reshape(-1, V), num_samples=1, replacement=True, generator=g).view(b - a, l)
             for a, b, g in stream_groups(generator, B)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def sample_icdf(logits_BlV: torch.Tensor, u_Bl: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling from given uniforms: index = number of CDF entries below u * total.

    Portable: the ONNX graphs do the same arithmetic, so every backend and host language draws the
    same tokens from the same noise.
    """
    cdf_BlV = logits_BlV.softmax(dim=-1).cumsum(dim=-1)
    idx = (cdf_BlV < (u_Bl.to(cdf_BlV.dtype) * cdf_BlV[..., -1]).unsqueeze(-1)).sum(dim=-1)
    return idx.clamp_max(logits_BlV.shape[-1] - 1)


def gumbel_soft(logits: torch.Tensor, tau: float, generator: Generators) -> torch.Tensor:
    gumbels = torch.cat([-torch.empty_like(logits[a:b]).exponential_(generator=g).log()
                         for a, b, g in stream_groups(generator, logits.shape[0])])
    return ((logits + gumbels) / tau).softmax(dim=-1)


def _pool(x_BChw: torch.Tensor, pn: int, w: torch.Tensor | None, last: bool) -> torch.Tensor:
    if last:
        return x_BChw
    if w is None:
        return F.interpolate(x_BChw, size=(pn, pn), mode="area")
    num = F.interpolate(x_BChw * w, size=(pn, pn), mode="area")
    den = F.interpolate(w.expand(x_BChw.shape[0], 1, -1, -1), size=(pn, pn), mode="area")
    return num / den.clamp_min(1e-8)


@torch.no_grad()
def masked_sample(
    var: VAR,
    vae: VQVAE,
    label_B: torch.Tensor,
    *,
    known: Known | None = None,
    cfg: float = 1.5,
    top_k: int = 0,
    top_p: float = 0.0,
    more_smooth: bool = False,
    generator: Generators = None,
    guidance: Schedule = "linear",
    callback: ScaleCallback | None = None,
    decode: bool = True,
    record_logits: bool = False,
    uniforms: list[torch.Tensor] | None = None,
    impl: str = "fast",
    amp_dtype: torch.dtype | None = None,
) -> SampleResult:
    """Masked next-scale prediction.

    Args:
        var, vae: the transformer and the VQVAE (same vocabulary and scale list).
        label_B: (B,) class indices; ``var.num_classes`` is the null class (unconditional).
            Guidance always contrasts the label with the null class (rows [:B] conditional, [B:] null).
        known: which cells are forced at each scale and how (see :class:`Known`); None = generate.
        cfg, guidance: guidance scale and schedule ("linear" = official ramp from 0, "constant", or one
            weight t per scale: :mod:`varedit.editing.guidance`).
        top_k, top_p: sampling filters (top_k=1 is greedy); more_smooth: Gumbel-softmax blending of
            code embeddings (the official "more_smooth" option, for nicer pictures, not for metrics).
        generator: the only source of randomness (CPU generator for CPU models): one for all rows, or one
            per row, rows sharing a generator object drawing from it together (batches of independent
            images: each image's rows draw what they would draw alone).
        callback: called after each scale with a :class:`ScaleState` (progress, previews).
        decode: decode the final f_hat to an image.
        uniforms: per scale (B, pn*pn) uniforms in [0, 1): sample by inverse CDF from this noise
            instead of ``torch.multinomial`` (the portable sampler shared with the ONNX runtime).
        impl: ``"eager"`` follows the official code's structure and is the reference: the AdaLN
            projections are recomputed at every scale, the KV cache grows by concatenation, the
            null-class rows are always computed.  ``"fast"`` (the default) computes the AdaLN
            projections once per generation, writes keys and values into a preallocated cache, finds the
            top-p nucleus among the top-k instead of sorting the vocabulary (bit for bit the same), and when
            every label is the null class (an unconditional fill, where guidance contrasts the null
            class with itself) runs the transformer on B rows instead of 2B, feeding the same logits to
            both halves of the guidance formula; it decodes in channels-last memory order.  The
            arithmetic that picks tokens is the eager path's: in float32 both choose the same tokens
            (the golden tests run against both), and decoded images agree within 1e-4.
        amp_dtype: run the transformer under autocast in this dtype (``torch.bfloat16`` or
            ``torch.float16``: the speed of GPU tensor cores); the head's logits, guidance, filtering and
            sampling stay float32.  None (default): float32 throughout, as the reference.

    Returns: a :class:`SampleResult`.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")
    fast = impl == "fast"
    pns = var.patch_nums
    SN = len(pns)
    if tuple(vae.patch_nums) != tuple(pns):
        raise ValueError(f"VQVAE scales {vae.patch_nums} differ from VAR scales {pns}")
    B = label_B.shape[0]
    device = label_B.device
    quant = vae.quantize
    HW = pns[-1]

    ts = guidance_t(cfg, SN, guidance)
    # guidance of the null class against itself changes nothing: compute those rows once (fast path)
    null_only = fast and bool((label_B == var.num_classes).all())
    labels = label_B if null_only else torch.cat((label_B, torch.full_like(label_B, var.num_classes)), dim=0)
    ctx = var.start(labels, cache_ada=fast)
    # fast: keys and values written into buffers of the whole sequence; eager: grown by concatenation
    kv = var.new_kv_caches(var.L if fast else None)

    f_hat = ctx.cond_BD.new_zeros(B, var.Cvae, HW, HW)
    f_rest = known.f_BChw.float().clone() if (known is not None and known.f_BChw is not None) else None
    out_idx, out_sampled, out_fhat, out_logits = [], [], [], []
    logp_sum = torch.zeros(B, device=device)
    logp_cnt = torch.zeros(B, device=device)
    nxt: torch.Tensor | None = None  # f_hat pooled to the next scale's grid
    for si, pn in enumerate(pns):
        ratio = si / (SN - 1)
        logits_rBlV, kv = var.step(si, ctx, kv, nxt, amp_dtype)
        cond_BlV, uncond_BlV = (logits_rBlV, logits_rBlV) if null_only else (logits_rBlV[:B], logits_rBlV[B:])
        t = ts[si]
        logits_BlV = (1 + t) * cond_BlV - t * uncond_BlV
        if record_logits:
            out_logits.append(logits_BlV.clone())
        logprobs_BlV = logits_BlV.log_softmax(dim=-1)
        (filter_top_k_top_p_fast_ if fast else filter_top_k_top_p_)(logits_BlV, top_k, top_p)
        if uniforms is not None:
            idx_Bl = sample_icdf(logits_BlV, uniforms[si].to(device))
        else:
            idx_Bl = sample_tokens(logits_BlV, generator)
        if more_smooth:
            gum_t = max(0.27 * (1 - ratio * 0.95), 0.005)  # MaskGIT-style annealing, as official
            h_BlC = gumbel_soft(logits_BlV.mul(1 + ratio), gum_t, generator) @ quant.embedding.weight.unsqueeze(0)
        else:
            h_BlC = quant.embedding(idx_Bl)
        sampled = idx_Bl
        if known is not None:
            keep_Bl = known.keep_per_scale[si].to(device).expand(B, -1)
            if known.idx_per_scale is not None:
                forced_Bl = known.idx_per_scale[si].to(device)
            else:
                w = known.pool_w_per_scale[si] if known.pool_w_per_scale is not None else None
                z_BChw = _pool(f_rest, pn, w, si == SN - 1)
                forced_Bl = quant.nearest_code(z_BChw.permute(0, 2, 3, 1).reshape(-1, var.Cvae)).view(B, -1)
            idx_Bl = torch.where(keep_Bl, forced_Bl, idx_Bl)
            h_BlC = torch.where(keep_Bl.unsqueeze(-1), quant.embedding(forced_Bl), h_BlC)
            free_Bl = ~keep_Bl
        else:
            free_Bl = torch.ones_like(idx_Bl, dtype=torch.bool)
        lp = logprobs_BlV.gather(-1, idx_Bl.unsqueeze(-1)).squeeze(-1)
        logp_sum += (lp * free_Bl).sum(dim=1)
        logp_cnt += free_Bl.sum(dim=1)

        h_BChw = h_BlC.transpose(1, 2).reshape(B, var.Cvae, pn, pn)
        if f_rest is not None:
            # the same arithmetic as the tokeniser, so an all-known edit reproduces it exactly
            contrib = quant.embed_map_to_last(si, h_BChw, HW, HW, SN)
            f_hat = f_hat + contrib
            f_rest.sub_(contrib)
            nxt = F.interpolate(f_hat, size=(pns[si + 1],) * 2, mode="area") if si < SN - 1 else f_hat
        else:
            f_hat, nxt = quant.next_ar_input(si, f_hat, h_BChw)
        out_idx.append(idx_Bl)
        out_sampled.append(sampled)
        out_fhat.append(f_hat)
        if callback is not None:
            callback(ScaleState(si, SN, idx_Bl, f_hat, vae))
    img = decode_fhat(vae, f_hat, impl) if decode else None
    return SampleResult(out_idx, out_sampled, out_fhat, img, logp_sum / logp_cnt.clamp_min(1), out_logits)


@torch.no_grad()
def decode_fhat(vae: VQVAE, f_hat_BChw: torch.Tensor, impl: str = "fast") -> torch.Tensor:
    """f_hat -> image in [0, 1].  The fast path runs the decoder in channels-last memory order: oneDNN's
    convolutions are faster so on CPUs, and round differently (about 3e-5)."""
    if impl == "fast":
        f_hat_BChw = f_hat_BChw.contiguous(memory_format=torch.channels_last)
    return vae.fhat_to_img(f_hat_BChw).add(1).mul(0.5).contiguous()


@torch.no_grad()
def class_log_likelihood(var: VAR, vae: VQVAE, idx_per_scale: list[torch.Tensor], keep_per_scale: list[torch.Tensor],
                         *, max_rows: int | None = None) -> torch.Tensor:
    """log p(known tokens | class) for every class: (B, num_classes), teacher-forced and unguided.

    idx_per_scale: the tokens of every cell (B, pn*pn) per scale, e.g. the tokenisation of a canvas
        whose hole was prefilled from known pixels; the hole's tokens are context, never scored.
    keep_per_scale: bool (B or 1, pn*pn) per scale, True = the cell is known and scored.

    With a uniform class prior, the argmax is the class the model finds most likely for what is seen
    (a generative classifier): the label ``inpaint(label="auto")`` guides the fill with.  One
    teacher-forced pass per class: the work grows with ``num_classes`` (cheap for small models, about
    a thousand sequence passes for ImageNet).  ``max_rows`` bounds the rows of one pass (memory: rows x
    L x V floats of logits).
    """
    if var.training:
        raise ValueError("class_log_likelihood needs var.eval(): training mode drops labels at random")
    B, C, L, V = idx_per_scale[0].shape[0], var.num_classes, var.L, var.V
    x_BLCv = vae.quantize.idx_to_var_input(idx_per_scale)
    tgt_BL = torch.cat(idx_per_scale, dim=1)
    keep_BL = torch.cat([k.expand(B, -1) for k in keep_per_scale], dim=1).to(x_BLCv.dtype)
    rows = max_rows or max(B, (1 << 26) // (L * V))  # about 256 MiB of float32 logits per pass
    per = max(1, rows // B)                           # classes per pass
    out = torch.empty(B, C, device=x_BLCv.device)
    for c0 in range(0, C, per):
        cs = torch.arange(c0, min(C, c0 + per), device=x_BLCv.device)
        n = cs.numel()
        label = cs.repeat_interleave(B)               # class-major rows: [c0]*B, [c0+1]*B, ...
        logits = var(label, x_BLCv.repeat(n, 1, 1))
        lp_BL = logits.log_softmax(dim=-1).gather(-1, tgt_BL.repeat(n, 1).unsqueeze(-1)).squeeze(-1)
        out[:, c0:c0 + n] = (lp_BL * keep_BL.repeat(n, 1)).sum(dim=1).view(n, B).T
    return out


def official_keep_per_scale(keep_last_hw: torch.Tensor, patch_nums: tuple[int, ...]) -> list[torch.Tensor]:
    """The notebook's mask mapping as tensors (see :func:`varedit.editing.masks.official_keep_maps`)."""
    from .masks import official_keep_maps
    maps = official_keep_maps(keep_last_hw.detach().cpu().numpy().astype(bool), patch_nums)
    return [torch.from_numpy(m).to(keep_last_hw.device) for m in maps]


def new_generator(seed: int | None, device: torch.device | str = "cpu") -> tuple[torch.Generator, int]:
    """A generator for ``seed``; with no seed, a fresh random seed is drawn and returned (so a run can
    always be reproduced from what it reports)."""
    if seed is None:
        import secrets
        seed = secrets.randbelow(2 ** 31)
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed))
    return g, int(seed)


__all__ = [
    "Known", "ScaleState", "SampleResult", "masked_sample", "class_log_likelihood", "official_keep_per_scale",
    "decode_fhat", "IMPLS",
    "filter_top_k_top_p_", "filter_top_k_top_p_fast_", "guidance_weight", "new_generator", "sample_icdf",
    "portable_uniforms",
]

