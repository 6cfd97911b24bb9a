"""VAR transformer: next-scale prediction with AdaLN class conditioning.

State-dict compatible with the official release (``var_d16.pth`` ... ``var_d36.pth``).  A sequence
is the concatenation of all token maps, coarse to fine (L = sum pn^2).  Scale k attends to every
token of scales <= k (block-causal); at inference a KV cache holds the earlier scales, so one forward
per scale suffices and no mask is needed.

The input token for scale k+1 is *not* the embedding of scale k's tokens: it is the cumulative f_hat
after scale k, area-downsampled to the (k+1) grid and projected by ``word_embed``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

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
        self.caching = False
        self.cached_k: torch.Tensor | None = None
        self.cached_v: torch.Tensor | None = None
        self.cache_max_len: int | None = None
        self.cache_pos = 0
        # The official attention is torch's scaled_dot_product_attention (basic_var.py imports it as
        # ``slow_attn``; its matmul-softmax fallback only runs on torch < 2.0).  The explicit path below
        # rounds differently (about 1e-6 in the logits), which the Gumbel-smoothed sampler amplifies
        # past 1e-4 in the image: keep SDPA on to reproduce the reference bit for bit on the CPU.
        self.use_sdpa = True

    def kv_caching(self, enable: bool, max_len: int | None = None) -> None:
        """Turn the KV cache on or off.  With ``max_len`` the cache is static: keys and values are written
        into buffers of that length, allocated once, and attention reads the filled prefix; without, the
        cache grows by concatenation at every step (as the official code does)."""
        self.caching, self.cached_k, self.cached_v = enable, None, None
        self.cache_max_len, self.cache_pos = (max_len if enable else None), 0

    def forward(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q_BHLc, k_BHLc, v_BHLc = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.attn_l2_norm:
            scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            q_BHLc = F.normalize(q_BHLc, dim=-1).mul(scale_mul)
            k_BHLc = F.normalize(k_BHLc, dim=-1)
        if self.caching and self.cache_max_len is not None:
            if self.cached_k is None:
                shape = (B, self.num_heads, self.cache_max_len, self.head_dim)
                self.cached_k, self.cached_v = k_BHLc.new_empty(shape), v_BHLc.new_empty(shape)
            end = self.cache_pos + L
            self.cached_k[:, :, self.cache_pos:end] = k_BHLc
            self.cached_v[:, :, self.cache_pos:end] = v_BHLc
            self.cache_pos = end
            k_BHLc, v_BHLc = self.cached_k[:, :, :end], self.cached_v[:, :, :end]
        elif self.caching:
            if self.cached_k is not None:
                k_BHLc = torch.cat((self.cached_k, k_BHLc), dim=2)
                v_BHLc = torch.cat((self.cached_v, v_BHLc), dim=2)
            self.cached_k, self.cached_v = k_BHLc, v_BHLc
        p = self.attn_drop if self.training else 0.0
        if self.use_sdpa:
            o = F.scaled_dot_product_attention(q_BHLc, k_BHLc, v_BHLc, attn_mask=attn_bias, dropout_p=p,
                                               scale=self.scale)
        else:
            a = q_BHLc.mul(self.scale) @ k_BHLc.transpose(-2, -1)
            if attn_bias is not None:
                a = a + attn_bias
            a = a.softmax(dim=-1)
            if p > 0:
                a = F.dropout(a, p=p)
            o = a @ v_BHLc
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(B, L, C)))


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
        if ada_B16C is None:
            ada_B16C = self.ada_params(cond_BD)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = ada_B16C.unbind(2)
        h = self.ln_wo_grad(x_BLC).mul(scale1.add(1)).add(shift1)
        x_BLC = x_BLC + self.drop_path(self.attn(h, attn_bias=attn_bias).mul(gamma1))
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


class VAR(nn.Module):
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

    def logits(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor, head_ada: torch.Tensor | None = None
               ) -> torch.Tensor:
        return self.head(self.head_nm(x_BLC.float(), cond_BD, head_ada).float()).float()

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

    def kv_caching(self, enable: bool, max_len: int | None = None) -> None:
        """KV caches on (``max_len``: static buffers of that many tokens) or off, in every block."""
        for b in self.blocks:
            b.attn.kv_caching(enable, max_len)

    def use_fused_attention(self, enable: bool = True) -> None:
        """Attention through torch's SDPA kernel (the default, as the official code) or, with False,
        an explicit matmul-softmax-matmul (not bit-identical to the reference)."""
        for b in self.blocks:
            b.attn.use_sdpa = enable

    def step(self, x_BlC: torch.Tensor, cond_BD: torch.Tensor, cond_in: torch.Tensor,
             ada_cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        """One KV-cached scale: embeddings (B, l, C) -> logits (B, l, V).

        ``ada_cache`` (:meth:`ada_cache`) holds each block's and the head's AdaLN parameters, computed
        once per generation; without it they are computed at every scale, as the official code does
        (they depend on the class only).
        """
        for i, b in enumerate(self.blocks):
            x_BlC = b(x_BlC, cond_in, None, ada_cache[i] if ada_cache is not None else None)
        # the head in float32 even under autocast: bf16 logits would tie and reorder candidate tokens
        with torch.autocast(x_BlC.device.type, enabled=False):
            return self.logits(x_BlC, cond_BD, ada_cache[self.depth] if ada_cache is not None else None)

    def ada_cache(self, cond_BD: torch.Tensor, cond_in: torch.Tensor) -> list[torch.Tensor]:
        """The AdaLN parameters of every block, then of the head (``depth + 1`` entries)."""
        return [b.ada_params(cond_in) for b in self.blocks] + [self.head_nm.ada_params(cond_BD)]
