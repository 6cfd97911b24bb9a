"""VAR transformer: next-scale prediction with AdaLN class conditioning.

State-dict compatible with the official release (``var_d16.pth`` ... ``var_d36.pth``).  A sequence
is the concatenation of all token maps, coarse to fine (L = sum pn^2).  Scale k attends to every
token of scales <= k (block-causal); at inference a KV cache holds the earlier scales, so one forward
per scale suffices and no mask is needed.

Inference is written once, here, for every caller (the torch sampler and the exported ONNX graphs):
:meth:`NextScaleStep.start` computes what depends on the class only, :meth:`NextScaleStep.step` runs one
scale (embed its input -> every block, extending the KV caches -> head logits), and the caches are
values (:class:`KVCache`) passed in and returned, so no module holds state between calls.

The input token for scale k+1 is *not* the embedding of scale k's tokens: it is the cumulative f_hat
after scale k, area-downsampled to the (k+1) grid and projected by ``word_embed``.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import check_scales, embedding


@dataclass
class VARConfig:
    depth: int = 16
    embed_dim: int = 1024
    num_heads: int = 16
    num_classes: int = 1000
    vocab_size: int = 4096
    Cvae: int = 32
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    shared_aln: bool = False
    attn_l2_norm: bool = True
    cond_drop_rate: float = 0.1
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    patch_nums: tuple[int, ...] = field(default=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16))

    @property
    def L(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)

    def __post_init__(self) -> None:
        # sizes come from files people download: bounded, so a crafted configuration cannot make the
        # (meta-device) build loop for ever; the real models are far inside these bounds (d36: 2304 wide)
        self.patch_nums = tuple(self.patch_nums)
        check_scales(self.patch_nums, "patch_nums")
        for name, hi in (("depth", 1024), ("embed_dim", 1 << 16), ("num_heads", 1024), ("num_classes", 1 << 20),
                         ("vocab_size", 1 << 20), ("Cvae", 4096)):
            v = getattr(self, name)
            if not 1 <= v <= hi:
                raise ValueError(f"VARConfig.{name} must be in 1..{hi}, got {v}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"VARConfig.embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if not (0 < self.mlp_ratio <= 64 and 0 < self.norm_eps < 1):
            raise ValueError(f"VARConfig.mlp_ratio {self.mlp_ratio} or norm_eps {self.norm_eps} out of range")
        for name in ("cond_drop_rate", "drop_rate", "attn_drop_rate", "drop_path_rate"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"VARConfig.{name} must be in [0, 1), got {getattr(self, name)}")


class KVCache(NamedTuple):
    """Keys and values (B, H, n, c) one block's attention has seen, of which the first ``length`` are filled.

    A cache with ``capacity`` (:meth:`NextScaleStep.new_kv_caches` with ``max_len``) is allocated once, at
    its first :meth:`append`, and written in place: no copy of the earlier scales at every step.  Without,
    it grows by concatenation, as the official code does; that is also what the exported graph needs
    (the cache as graph values, no in-place writes).
    """

    k_BHnc: torch.Tensor | None = None
    v_BHnc: torch.Tensor | None = None
    length: int = 0
    capacity: int | None = None

    def append(self, k_BHlc: torch.Tensor, v_BHlc: torch.Tensor
               ) -> tuple["KVCache", torch.Tensor, torch.Tensor]:
        """The cache with ``l`` more tokens, and the keys and values of every token so far."""
        end = self.length + k_BHlc.shape[2]
        if self.capacity is not None:
            if end > self.capacity:
                raise ValueError(f"KV cache of {self.capacity} tokens cannot take {end}")
            k_buf, v_buf = self.k_BHnc, self.v_BHnc
            if k_buf is None or v_buf is None:
                shape = (*k_BHlc.shape[:2], self.capacity, k_BHlc.shape[3])
                k_buf, v_buf = k_BHlc.new_empty(shape), v_BHlc.new_empty(shape)
            k_buf[:, :, self.length:end] = k_BHlc
            v_buf[:, :, self.length:end] = v_BHlc
            return KVCache(k_buf, v_buf, end, self.capacity), k_buf[:, :, :end], v_buf[:, :, :end]
        if self.k_BHnc is not None and self.v_BHnc is not None:
            k_BHlc = torch.cat((self.k_BHnc, k_BHlc), dim=2)
            v_BHlc = torch.cat((self.v_BHnc, v_BHlc), dim=2)
        return KVCache(k_BHlc, v_BHlc, end), k_BHlc, v_BHlc


class SelfAttention(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        C, H = cfg.embed_dim, cfg.num_heads
        if C % H:
            raise ValueError(f"embed_dim {C} is not divisible by num_heads {H}")
        self.num_heads, self.head_dim = H, C // H
        self.attn_l2_norm = cfg.attn_l2_norm
        if self.attn_l2_norm:
            # cosine attention: unit q and k, times a learnable per-head temperature (init 4, max 100)
            self.scale = 1.0
            # log(4) as a Python float: Tensor.log on the meta device would import torch's compiler stack
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, H, 1, 1), math.log(4.0)))
            self.max_scale_mul = math.log(100.0)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(C))
        self.v_bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))  # keys get no bias
        self.proj = nn.Linear(C, C)
        self.attn_drop = cfg.attn_drop_rate
        self.proj_drop = nn.Dropout(cfg.drop_rate) if cfg.drop_rate > 0 else nn.Identity()
        # The official attention is torch's scaled_dot_product_attention (basic_var.py imports it as
        # ``slow_attn``; its matmul-softmax fallback only runs on torch < 2.0).  The explicit path below
        # rounds differently (about 1e-6 in the logits), which the Gumbel-smoothed sampler amplifies
        # past 1e-4 in the image: keep SDPA on to reproduce the reference bit for bit on the CPU.
        self.use_sdpa = True

    def forward(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: every token of the sequence, ``attn_bias`` the block-causal mask."""
        q_BHLc, k_BHLc, v_BHLc = self._qkv(x_BLC)
        return self._attend(q_BHLc, k_BHLc, v_BHLc, attn_bias)

    def step(self, x_BlC: torch.Tensor, kv: KVCache) -> tuple[torch.Tensor, KVCache]:
        """One scale's tokens against themselves and every earlier scale (the cache); no mask is needed, as
        a scale sees all of its own tokens.  Returns the output and the extended cache."""
        q_BHlc, k_BHlc, v_BHlc = self._qkv(x_BlC)
        kv, k_BHnc, v_BHnc = kv.append(k_BHlc, v_BHlc)
        return self._attend(q_BHlc, k_BHnc, v_BHnc, None), kv

    def _qkv(self, x_BLC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q_BHLc, k_BHLc, v_BHLc = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.attn_l2_norm:
            scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            q_BHLc = F.normalize(q_BHLc, dim=-1).mul(scale_mul)
            k_BHLc = F.normalize(k_BHLc, dim=-1)
        return q_BHLc, k_BHLc, v_BHLc

    def _attend(self, q_BHLc: torch.Tensor, k_BHnc: torch.Tensor, v_BHnc: torch.Tensor,
                attn_bias: torch.Tensor | None) -> torch.Tensor:
        B, H, L, c = q_BHLc.shape
        p = self.attn_drop if self.training else 0.0
        if self.use_sdpa:
            o = F.scaled_dot_product_attention(q_BHLc, k_BHnc, v_BHnc, attn_mask=attn_bias, dropout_p=p,
                                               scale=self.scale)
        else:
            a = q_BHLc.mul(self.scale) @ k_BHnc.transpose(-2, -1)
            if attn_bias is not None:
                a = a + attn_bias
            a = a.softmax(dim=-1)
            if p > 0:
                a = F.dropout(a, p=p)
            o = a @ v_BHnc
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(B, L, H * c)))


class FFN(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        C = cfg.embed_dim
        self.fc1 = nn.Linear(C, round(C * cfg.mlp_ratio))
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(round(C * cfg.mlp_ratio), C)
        self.drop = nn.Dropout(cfg.drop_rate) if cfg.drop_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class DropPath(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class AdaLNSelfAttn(nn.Module):
    """Pre-norm block whose LayerNorm scale/shift and residual gates come from the class embedding."""

    def __init__(self, cfg: VARConfig, drop_path: float):
        super().__init__()
        C = cfg.embed_dim
        self.C = C
        self.shared_aln = cfg.shared_aln
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.attn = SelfAttention(cfg)
        self.ffn = FFN(cfg)
        self.ln_wo_grad = nn.LayerNorm(C, eps=cfg.norm_eps, elementwise_affine=False)
        if self.shared_aln:
            # the projection is shared by all blocks (VAR.shared_ada_lin); each block adds its own offset
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, C) / C ** 0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))

    def ada_params(self, cond_BD_or_gss: torch.Tensor) -> torch.Tensor:
        """(B, 1, 6, C): gamma1, gamma2, scale1, scale2, shift1, shift2 (the official order)."""
        if self.shared_aln:
            return self.ada_gss + cond_BD_or_gss
        return self.ada_lin(cond_BD_or_gss).view(-1, 1, 6, self.C)

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor, attn_bias: torch.Tensor | None,
                ada_B16C: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: the whole sequence under the block-causal mask ``attn_bias``."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self._ada(cond_BD, ada_B16C)
        h = self.ln_wo_grad(x_BLC).mul(scale1.add(1)).add(shift1)
        x_BLC = x_BLC + self.drop_path(self.attn(h, attn_bias=attn_bias).mul(gamma1))
        return self._ffn_residual(x_BLC, gamma2, scale2, shift2)

    def step(self, x_BlC: torch.Tensor, cond_BD: torch.Tensor, kv: KVCache, ada_B16C: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, KVCache]:
        """One scale with the KV cache of the earlier ones: the output and the extended cache."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self._ada(cond_BD, ada_B16C)
        h = self.ln_wo_grad(x_BlC).mul(scale1.add(1)).add(shift1)
        a, kv = self.attn.step(h, kv)
        x_BlC = x_BlC + self.drop_path(a.mul(gamma1))
        return self._ffn_residual(x_BlC, gamma2, scale2, shift2), kv

    def _ada(self, cond_BD: torch.Tensor, ada_B16C: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        return (self.ada_params(cond_BD) if ada_B16C is None else ada_B16C).unbind(2)

    def _ffn_residual(self, x_BLC: torch.Tensor, gamma2: torch.Tensor, scale2: torch.Tensor, shift2: torch.Tensor
                      ) -> torch.Tensor:
        h = self.ln_wo_grad(x_BLC).mul(scale2.add(1)).add(shift2)
        return x_BLC + self.drop_path(self.ffn(h).mul(gamma2))


class AdaLNBeforeHead(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        self.C = cfg.embed_dim
        self.ln_wo_grad = nn.LayerNorm(self.C, eps=cfg.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(self.C, 2 * self.C))

    def ada_params(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """(B, 1, 2, C): scale, shift."""
        return self.ada_lin(cond_BD).view(-1, 1, 2, self.C)

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor, ada_B12C: torch.Tensor | None = None
                ) -> torch.Tensor:
        scale, shift = (self.ada_params(cond_BD) if ada_B12C is None else ada_B12C).unbind(2)
        return self.ln_wo_grad(x_BLC).mul(scale.add(1)).add(shift)


class SharedAdaLin(nn.Linear):
    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(cond_BD).view(-1, 1, 6, self.weight.shape[0] // 6)


class ScaleContext(NamedTuple):
    """What every scale of one generation reads and only the class decides: computed once by
    :meth:`NextScaleStep.start`."""

    cond_BD: torch.Tensor          # class embedding per row: the first scale's input and the head's AdaLN read it
    cond_in: torch.Tensor          # the blocks' condition (shared AdaLN applied), in the blocks' dtype
    ada: list[torch.Tensor] | None  # AdaLN parameters of every block, then of the head; None: per scale
    lvl_pos_1LC: torch.Tensor      # level + position embedding of every token of the sequence


class NextScaleStep(nn.Module):
    """KV-cached inference, one scale at a time, written once for :class:`VAR` and for the graphs the ONNX
    exporter traces (which hold the same modules under the same names, so the exported weights keep their
    names, and may hold the blocks in half precision).

    A generation is ``ctx = start(labels)``, ``kv = new_kv_caches()``, then for each scale
    ``logits, kv = step(si, ctx, kv, next_BChw)``, where ``next_BChw`` is f_hat after the previous scale
    pooled to this scale's grid (how it is pooled is the caller's: the quantiser, or constant matrices in
    the exported graph).
    """

    patch_nums: tuple[int, ...]
    first_l: int
    begin_ends: list[tuple[int, int]]
    class_emb: nn.Embedding
    shared_ada_lin: nn.Module
    pos_start: nn.Parameter
    word_embed: nn.Linear
    blocks: nn.ModuleList
    head_nm: "AdaLNBeforeHead"
    head: nn.Linear

    def lvl_pos(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def blocks_dtype(self) -> torch.dtype:
        """The blocks' weights' dtype (the exporter's fp16 graphs hold half-precision blocks, fp32 else)."""
        return self.blocks[0].attn.mat_qkv.weight.dtype

    def start(self, label_B: torch.Tensor, cache_ada: bool = True) -> ScaleContext:
        """The class-dependent part of a generation for rows ``label_B``.  ``cache_ada``: the AdaLN
        parameters once here (they depend on the class only); False recomputes them at every scale, as
        the official code does."""
        cond_BD = self.class_emb(label_B)
        cond_in = self.shared_ada_lin(cond_BD).to(self.blocks_dtype)
        ada = ([b.ada_params(cond_in) for b in self.blocks] + [self.head_nm.ada_params(cond_BD)]
               if cache_ada else None)
        return ScaleContext(cond_BD, cond_in, ada, self.lvl_pos())

    def new_kv_caches(self, max_len: int | None = None) -> list[KVCache]:
        """Empty caches, one per block; ``max_len``: preallocated for that many tokens (see :class:`KVCache`)."""
        return [KVCache(capacity=max_len) for _ in self.blocks]

    def scale_input(self, si: int, ctx: ScaleContext, next_BChw: torch.Tensor | None) -> torch.Tensor:
        """The transformer's input for scale ``si``: the class embedding at the first scale (the start of
        sequence); after it, f_hat pooled to this scale's grid, projected by ``word_embed``.  Both plus the
        tokens' level and position embeddings.  When ``next_BChw`` has fewer rows than the context (the
        guided half and the null-class half of a batch share f_hat), its embedding is repeated."""
        rows = ctx.cond_BD.shape[0]
        b, e = self.begin_ends[si]
        if si == 0:
            return (ctx.cond_BD.unsqueeze(1).expand(rows, self.first_l, -1)
                    + self.pos_start.expand(rows, self.first_l, -1) + ctx.lvl_pos_1LC[:, :self.first_l])
        if next_BChw is None:
            raise ValueError(f"scale {si} needs the previous scale's f_hat on its grid")
        B, Cvae = next_BChw.shape[:2]
        x_BlC = self.word_embed(next_BChw.reshape(B, Cvae, -1).transpose(1, 2)) + ctx.lvl_pos_1LC[:, b:e]
        return x_BlC if B == rows else x_BlC.repeat(rows // B, 1, 1)

    def step(self, si: int, ctx: ScaleContext, kv: list[KVCache], next_BChw: torch.Tensor | None = None,
             amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, list[KVCache]]:
        """One scale: its input (:meth:`scale_input`) through every block, each extending its KV cache, then
        the head.  Returns float32 logits (rows, pn*pn, V) and the extended caches.

        ``amp_dtype``: the blocks under autocast in that dtype; the input embedding and the head stay
        float32 (bf16 logits would tie and reorder candidate tokens)."""
        x_BlC = self.scale_input(si, ctx, next_BChw)
        amp = (torch.autocast(x_BlC.device.type, dtype=amp_dtype) if amp_dtype is not None
               else contextlib.nullcontext())
        new_kv = []
        with amp:
            x_BlC = x_BlC.to(self.blocks_dtype)
            for i, b in enumerate(self.blocks):
                x_BlC, kv_i = b.step(x_BlC, ctx.cond_in, kv[i], ctx.ada[i] if ctx.ada is not None else None)
                new_kv.append(kv_i)
        return self.logits(x_BlC, ctx.cond_BD, ctx.ada[-1] if ctx.ada is not None else None), new_kv

    def logits(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor, head_ada: torch.Tensor | None = None
               ) -> torch.Tensor:
        """The head, in float32 whatever the blocks ran in."""
        return self.head(self.head_nm(x_BLC.float(), cond_BD, head_ada).float()).float()


class VAR(NextScaleStep):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.embed_dim
        self.C, self.D = C, C
        self.Cvae, self.V = cfg.Cvae, cfg.vocab_size
        self.num_classes = cfg.num_classes
        self.depth = cfg.depth
        self.patch_nums = tuple(cfg.patch_nums)
        self.L = cfg.L
        self.first_l = self.patch_nums[0] ** 2
        self.begin_ends: list[tuple[int, int]] = []
        cur = 0
        for pn in self.patch_nums:
            self.begin_ends.append((cur, cur + pn * pn))
            cur += pn * pn

        init_std = math.sqrt(1 / C / 3)
        self.word_embed = nn.Linear(cfg.Cvae, C)
        self.class_emb = embedding(cfg.num_classes + 1, C)  # the last row is the null class
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, C))
        self.lvl_embed = embedding(len(self.patch_nums), C)
        for t in (self.class_emb.weight, self.pos_start, self.pos_1LC, self.lvl_embed.weight):
            nn.init.trunc_normal_(t.data, mean=0, std=init_std)

        self.shared_ada_lin = (nn.Sequential(nn.SiLU(), SharedAdaLin(C, 6 * C)) if cfg.shared_aln
                               else nn.Identity())
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # stochastic depth ramp
        self.blocks = nn.ModuleList([AdaLNSelfAttn(cfg, dpr[i]) for i in range(cfg.depth)])

        # block-causal mask for teacher forcing: a token sees every token of its own and coarser scales.
        # Built on the CPU even under a meta-device context: the buffers are a function of the scale list
        # (and meta-device cat/where would import torch's compiler stack at start-up).
        d_1L1 = torch.tensor([i for i, pn in enumerate(self.patch_nums) for _ in range(pn * pn)],
                             device="cpu").view(1, self.L, 1)
        dT_11L = d_1L1.transpose(1, 2)
        self.register_buffer("lvl_1L", dT_11L[:, 0].contiguous())
        self.register_buffer("attn_bias_for_masking",
                             torch.where(d_1L1 >= dT_11L, 0.0, -torch.inf).reshape(1, 1, self.L, self.L).contiguous())

        self.head_nm = AdaLNBeforeHead(cfg)
        self.head = nn.Linear(C, cfg.vocab_size)

    # -- initialisation for training from scratch (the official recipe) ----------------------------
    @torch.no_grad()
    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02,
                     init_std: float = 0.02) -> None:
        if init_std < 0:
            init_std = (1 / self.C / 3) ** 0.5
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=init_std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=init_std)
        self.head.weight.mul_(init_head)
        self.head.bias.zero_()
        lin = self.head_nm.ada_lin[-1]
        lin.weight.mul_(init_adaln)
        lin.bias.zero_()
        for i, b in enumerate(self.blocks):
            b.attn.proj.weight.div_(math.sqrt(2 * self.depth))
            b.ffn.fc2.weight.div_(math.sqrt(2 * self.depth))
            if not b.shared_aln:
                w = b.ada_lin[-1].weight
                w[2 * self.C:].mul_(init_adaln)
                w[:2 * self.C].mul_(init_adaln_gamma)
                b.ada_lin[-1].bias.zero_()

    # -- pieces shared by training and inference ---------------------------------------------------
    def cond(self, label_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class embedding and what the blocks take as condition (shared AdaLN applied when used)."""
        cond_BD = self.class_emb(label_B)
        return cond_BD, self.shared_ada_lin(cond_BD)

    def lvl_pos(self) -> torch.Tensor:
        return self.lvl_embed(self.lvl_1L) + self.pos_1LC

    def forward(self, label_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, L, V) for every position given all coarser scales.

        Labels are replaced by the null class with probability ``cond_drop_rate`` in training mode only
        (the official code also does it in eval mode, which makes evaluation random).
        """
        B = x_BLCv_wo_first_l.shape[0]
        if self.training and self.cfg.cond_drop_rate > 0:
            drop = torch.rand(B, device=label_B.device) < self.cfg.cond_drop_rate
            label_B = torch.where(drop, self.num_classes, label_B)
        cond_BD, cond_in = self.cond(label_B)
        sos_BlC = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
        x_BLC = torch.cat((sos_BlC, self.word_embed(x_BLCv_wo_first_l.float())), dim=1)
        x_BLC = x_BLC + (self.lvl_embed(self.lvl_1L.expand(B, -1)) + self.pos_1LC)  # same rounding as the reference
        attn_bias = self.attn_bias_for_masking
        # under autocast keep the residual stream in the compute dtype
        main_type = torch.matmul(x_BLC.new_ones(2, 2), x_BLC.new_ones(2, 2)).dtype
        x_BLC, cond_in, attn_bias = x_BLC.to(main_type), cond_in.to(main_type), attn_bias.to(main_type)
        for b in self.blocks:
            x_BLC = b(x_BLC, cond_in, attn_bias)
        return self.logits(x_BLC, cond_BD)

    def use_fused_attention(self, enable: bool = True) -> None:
        """Attention through torch's SDPA kernel (the default, as the official code) or, with False,
        an explicit matmul-softmax-matmul (not bit-identical to the reference)."""
        for b in self.blocks:
            b.attn.use_sdpa = enable
