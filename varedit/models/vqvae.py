"""Multi-scale residual VQVAE, state-dict compatible with the official VAR release.

An image in [-1, 1] is encoded to a latent ``f_BChw`` (stride 16).  The residual quantizer then
explains that latent with token maps of growing size (1x1, 2x2, ... last x last): at each scale the
*remaining* residual is area-downsampled, each cell is snapped to its nearest code, the code map is
upsampled bicubically to the last scale, passed through one of a few shared 3x3 "phi" convolutions
and added to ``f_hat``.  The decoder turns ``f_hat`` back into an image.

Parameter names follow the official checkpoint (``encoder.down.0.block.0.norm1.weight``,
``quantize.quant_resi.qresi_ls.0.weight``, ...), so released files load with ``strict=True``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import check_scales, embedding


@dataclass
class VQVAEConfig:
    vocab_size: int = 4096
    z_channels: int = 32
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    dropout: float = 0.0
    beta: float = 0.25               # commitment loss weight (training only)
    quant_conv_ks: int = 3
    quant_resi: float = 0.5          # phi(h) = (1 - r) h + r conv(h)
    share_quant_resi: int = 4        # number of shared phi convolutions
    using_sa: bool = True
    using_mid_sa: bool = True
    v_patch_nums: tuple[int, ...] = field(default=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16))

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def __post_init__(self) -> None:
        # bounded like VARConfig: these values come from downloaded files
        self.ch_mult, self.v_patch_nums = tuple(self.ch_mult), tuple(self.v_patch_nums)
        check_scales(self.v_patch_nums, "v_patch_nums")
        for name, lo, hi in (("vocab_size", 2, 1 << 20), ("z_channels", 1, 4096), ("ch", 1, 4096),
                             ("num_res_blocks", 1, 64), ("quant_conv_ks", 1, 15), ("share_quant_resi", 2, 64)):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ValueError(f"VQVAEConfig.{name} must be in {lo}..{hi}, got {v}")
        if not 1 <= len(self.ch_mult) <= 8 or not all(1 <= m <= 64 for m in self.ch_mult):
            raise ValueError(f"VQVAEConfig.ch_mult {list(self.ch_mult)} out of range")
        if self.quant_conv_ks % 2 == 0 or not 0 <= self.dropout < 1 or not 0 <= self.quant_resi <= 1:
            raise ValueError("VQVAEConfig.quant_conv_ks must be odd, dropout in [0, 1), quant_resi in [0, 1]")


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=ch, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.norm2 = _norm(c_out)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1, 1, 0) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a fused 1x1 qkv convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.C = ch
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1, 1, 0)
        self.w_ratio = ch ** -0.5
        self.proj_out = nn.Conv2d(ch, ch, 1, 1, 0)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BChw.shape
        q, k, v = self.qkv(self.norm(x_BChw)).reshape(B, 3, C, H, W).unbind(1)
        q_BLC = q.reshape(B, C, H * W).permute(0, 2, 1)
        k_BCL = k.reshape(B, C, H * W)
        w_BLL = torch.bmm(q_BLC, k_BCL).mul(self.w_ratio).softmax(dim=2)
        h_BCL = torch.bmm(v.reshape(B, C, H * W), w_BLL.permute(0, 2, 1))
        return x_BChw + self.proj_out(h_BCL.reshape(B, C, H, W))


class Downsample2x(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample2x(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        self.num_resolutions, self.num_res_blocks = len(mult), cfg.num_res_blocks
        self.conv_in = nn.Conv2d(3, ch, 3, 1, 1)
        in_mult = (1,) + tuple(mult)
        self.down = nn.ModuleList()
        c = ch
        for lvl in range(self.num_resolutions):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            c, c_out = ch * in_mult[lvl], ch * mult[lvl]
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(c, c_out, cfg.dropout))
                c = c_out
                if lvl == self.num_resolutions - 1 and cfg.using_sa:
                    attns.append(AttnBlock(c))
            down = nn.Module()
            down.block, down.attn = blocks, attns
            if lvl != self.num_resolutions - 1:
                down.downsample = Downsample2x(c)
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(c, c, cfg.dropout)
        self.mid.attn_1 = AttnBlock(c) if cfg.using_mid_sa else nn.Identity()
        self.mid.block_2 = ResnetBlock(c, c, cfg.dropout)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, cfg.z_channels, 3, 1, 1)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x_B3HW)
        for lvl, down in enumerate(self.down):
            for i, block in enumerate(down.block):
                h = block(h)
                if len(down.attn):
                    h = down.attn[i](h)
            if lvl != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        self.num_resolutions, self.num_res_blocks = len(mult), cfg.num_res_blocks
        c = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(c, c, cfg.dropout)
        self.mid.attn_1 = AttnBlock(c) if cfg.using_mid_sa else nn.Identity()
        self.mid.block_2 = ResnetBlock(c, c, cfg.dropout)
        ups: list[nn.Module] = []
        for lvl in reversed(range(self.num_resolutions)):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            c_out = ch * mult[lvl]
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(c, c_out, cfg.dropout))
                c = c_out
                if lvl == self.num_resolutions - 1 and cfg.using_sa:
                    attns.append(AttnBlock(c))
            up = nn.Module()
            up.block, up.attn = blocks, attns
            if lvl != 0:
                up.upsample = Upsample2x(c)
            ups.insert(0, up)  # stored coarse-last so that up.0 is the full-resolution level
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, 3, 3, 1, 1)

    def forward(self, z_BChw: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z_BChw))))
        for lvl in reversed(range(self.num_resolutions)):
            up = self.up[lvl]
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[i](h)
            if lvl != 0:
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Phi(nn.Conv2d):
    """Residual refinement of an upsampled code map: (1 - r) h + r conv3x3(h)."""

    def __init__(self, c: int, ratio: float):
        super().__init__(c, c, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(ratio)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return h_BChw.mul(1 - self.resi_ratio) + super().forward(h_BChw).mul(self.resi_ratio)


class PhiPartiallyShared(nn.Module):
    """K shared phi convolutions; scale si of SN uses the one whose tick is nearest si/(SN-1)."""

    def __init__(self, qresi_ls: nn.ModuleList):
        super().__init__()
        self.qresi_ls = qresi_ls
        K = len(qresi_ls)
        # the official tick placement (K == 4 is the released setting)
        self.ticks = np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K) if K == 4 else np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)

    def index(self, at_0_1: float) -> int:
        return int(np.argmin(np.abs(self.ticks - at_0_1)).item())

    def __getitem__(self, at_0_1: float) -> nn.Module:
        return self.qresi_ls[self.index(at_0_1)]


class VectorQuantizer(nn.Module):
    """Residual multi-scale quantizer (the official ``VectorQuantizer2``)."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        if cfg.share_quant_resi < 2:
            raise ValueError("only partially shared phi (share_quant_resi >= 2) is supported, as released")
        self.vocab_size, self.Cvae = cfg.vocab_size, cfg.z_channels
        self.v_patch_nums = tuple(cfg.v_patch_nums)
        self.beta = cfg.beta
        self.quant_resi = PhiPartiallyShared(nn.ModuleList(
            [Phi(cfg.z_channels, cfg.quant_resi) for _ in range(cfg.share_quant_resi)]))
        # per-scale EMA of code hits; written during training, kept for checkpoint compatibility
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.v_patch_nums), self.vocab_size))
        self.embedding = embedding(self.vocab_size, self.Cvae)

    # -- helpers -------------------------------------------------------------------------------
    def phi_index(self, si: int, SN: int | None = None) -> int:
        SN = SN or len(self.v_patch_nums)
        return self.quant_resi.index(si / (SN - 1))

    def phi(self, si: int, h_BChw: torch.Tensor, SN: int | None = None) -> torch.Tensor:
        SN = SN or len(self.v_patch_nums)
        return self.quant_resi[si / (SN - 1)](h_BChw)

    def nearest_code(self, z_NC: torch.Tensor) -> torch.Tensor:
        """argmin_v |z - e_v|^2, evaluated with the official arithmetic so ties break identically."""
        w_VC = self.embedding.weight.detach()
        d_NV = torch.sum(z_NC.square(), dim=1, keepdim=True) + torch.sum(w_VC.square(), dim=1)
        d_NV.addmm_(z_NC, w_VC.T, alpha=-2, beta=1)
        return torch.argmin(d_NV, dim=1)

    def code_map_to_last(self, si: int, idx_Bhw: torch.Tensor, H: int, W: int,
                         SN: int | None = None, *, contiguous: bool = True) -> torch.Tensor:
        """phi(upsample(embed(idx))) at the last scale: scale si's contribution to f_hat."""
        return self.embed_map_to_last(si, self.embedding(idx_Bhw).permute(0, 3, 1, 2), H, W, SN,
                                      contiguous=contiguous)

    def embed_map_to_last(self, si: int, h_BChw: torch.Tensor, H: int, W: int,
                          SN: int | None = None, *, contiguous: bool = True) -> torch.Tensor:
        """Scale si's code map (B, C, pn, pn) -> its contribution to f_hat at the last scale.

        A code map built from (B, l, C) embeddings is channels-last in memory, and so is its bicubic
        upsampling.  The official tokeniser (``f_to_idxBl_or_fhat``) makes it contiguous before phi;
        its embedding paths (``get_next_autoregressive_input``, ``idxBl_to_var_input``,
        ``embed_to_fhat``) hand phi the channels-last map as it is.  torch's CPU convolution rounds
        differently for the two layouts (about 1e-6), so ``contiguous`` must follow the path being
        reproduced: True for tokenising, False for the sampler and the teacher-forcing input.
        """
        SN = SN or len(self.v_patch_nums)
        if si != SN - 1:
            h_BChw = F.interpolate(h_BChw, size=(H, W), mode="bicubic")
        return self.phi(si, h_BChw.contiguous() if contiguous else h_BChw, SN)

    # -- tokenisation --------------------------------------------------------------------------
    @torch.no_grad()
    def f_to_idx_and_fhat(self, f_BChw: torch.Tensor, patch_nums: tuple[int, ...] | None = None
                          ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Tokenise a latent. Returns (tokens per scale as (B, pn*pn) int64, f_hat after each scale)."""
        pns = tuple(patch_nums or self.v_patch_nums)
        B, C, H, W = f_BChw.shape
        if pns[-1] != H or pns[-1] != W:
            raise ValueError(f"latent is {H}x{W} but the last scale is {pns[-1]}")
        f_rest = f_BChw.detach().float().clone()
        f_hat = torch.zeros_like(f_rest)
        SN = len(pns)
        idx_list, fhat_list = [], []
        for si, pn in enumerate(pns):
            z = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != SN - 1 else f_rest
            idx_N = self.nearest_code(z.permute(0, 2, 3, 1).reshape(-1, C))
            h_BChw = self.code_map_to_last(si, idx_N.view(B, pn, pn), H, W, SN)
            f_hat.add_(h_BChw)
            f_rest.sub_(h_BChw)
            idx_list.append(idx_N.reshape(B, pn * pn))
            fhat_list.append(f_hat.clone())
        return idx_list, fhat_list

    def idx_to_fhat(self, idx_list: list[torch.Tensor]) -> list[torch.Tensor]:
        """Rebuild f_hat after each scale from the tokens (embedding path)."""
        B = idx_list[0].shape[0]
        H = W = self.v_patch_nums[-1]
        SN = len(idx_list)
        f_hat = self.embedding.weight.new_zeros(B, self.Cvae, H, W)
        out = []
        for si, idx_Bl in enumerate(idx_list):
            pn = round(idx_Bl.shape[1] ** 0.5)
            f_hat = f_hat + self.code_map_to_last(si, idx_Bl.view(B, pn, pn), H, W, SN, contiguous=False)
            out.append(f_hat)
        return out

    def idx_to_var_input(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input: area-downsampled cumulative f_hat for scales 1..SN-1, (B, L-first_l, C)."""
        B, C = idx_list[0].shape[0], self.Cvae
        H = W = self.v_patch_nums[-1]
        SN = len(self.v_patch_nums)
        f_hat = self.embedding.weight.new_zeros(B, C, H, W)
        nxt = []
        for si in range(SN - 1):
            pn = self.v_patch_nums[si]
            f_hat = f_hat + self.code_map_to_last(si, idx_list[si].view(B, pn, pn), H, W, SN,
                                                  contiguous=False)
            pn_next = self.v_patch_nums[si + 1]
            nxt.append(F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").view(B, C, -1).transpose(1, 2))
        return torch.cat(nxt, dim=1)

    def next_ar_input(self, si: int, f_hat_BChw: torch.Tensor, h_BChw: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add scale si's code map (B, C, pn, pn) to f_hat; return (f_hat, input map for scale si+1)."""
        SN = len(self.v_patch_nums)
        HW = self.v_patch_nums[-1]
        f_hat_BChw = f_hat_BChw + self.embed_map_to_last(si, h_BChw, HW, HW, SN, contiguous=False)
        if si == SN - 1:
            return f_hat_BChw, f_hat_BChw
        pn_next = self.v_patch_nums[si + 1]
        return f_hat_BChw, F.interpolate(f_hat_BChw, size=(pn_next, pn_next), mode="area")

    # -- training ------------------------------------------------------------------------------
    def forward(self, f_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Straight-through quantisation for training. Returns (f_hat, vq_loss, code hits per scale (SN, V))."""
        f_BChw = f_BChw.float()
        B, C, H, W = f_BChw.shape
        f_no_grad = f_BChw.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        SN = len(self.v_patch_nums)
        loss = f_BChw.new_zeros(())
        hits_SV = f_BChw.new_zeros(SN, self.vocab_size)
        for si, pn in enumerate(self.v_patch_nums):
            z = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != SN - 1 else f_rest
            idx_N = self.nearest_code(z.permute(0, 2, 3, 1).reshape(-1, C))
            hits_SV[si] = idx_N.bincount(minlength=self.vocab_size).float()
            h_BChw = self.code_map_to_last(si, idx_N.view(B, pn, pn), H, W, SN)
            f_hat = f_hat + h_BChw
            f_rest = f_rest - h_BChw.detach()
            loss = loss + F.mse_loss(f_hat.detach(), f_BChw).mul(self.beta) + F.mse_loss(f_hat, f_no_grad)
        loss = loss / SN
        f_hat = (f_hat.detach() - f_no_grad) + f_BChw  # straight-through to the encoder
        return f_hat, loss, hits_SV


class VQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.V, self.Cvae = cfg.vocab_size, cfg.z_channels
        self.vocab_size = cfg.vocab_size
        self.downsample = cfg.downsample
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg)
        k = cfg.quant_conv_ks
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, k, 1, k // 2)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, k, 1, k // 2)

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.quantize.v_patch_nums

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * self.downsample

    def encode(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> latent f (B, Cvae, h, w)."""
        return self.quant_conv(self.encoder(img_B3HW))

    @torch.no_grad()
    def img_to_idx(self, img_B3HW: torch.Tensor) -> list[torch.Tensor]:
        return self.quantize.f_to_idx_and_fhat(self.encode(img_B3HW))[0]

    def fhat_to_img(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """f_hat -> image in [-1, 1]."""
        return self.decoder(self.post_quant_conv(f_hat_BChw)).clamp(-1, 1)

    def idx_to_img(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        return self.fhat_to_img(self.quantize.idx_to_fhat(idx_list)[-1])

    def forward(self, img_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction (unclamped), vq loss, code hits per scale)."""
        f_hat, vq_loss, hits = self.quantize(self.encode(img_B3HW))
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss, hits

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        # the hit statistics depend on the scale list, not on the weights: tolerate another length
        key = "quantize.ema_vocab_hit_SV"
        if key in state_dict and state_dict[key].shape != self.quantize.ema_vocab_hit_SV.shape:
            state_dict = dict(state_dict)
            state_dict[key] = torch.zeros(self.quantize.ema_vocab_hit_SV.shape)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
