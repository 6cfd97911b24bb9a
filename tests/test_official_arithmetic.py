"""The sampler's arithmetic follows the official code operation for operation, not just to a tolerance.

The golden tests compare to 1e-4, and most paths pass with a look-alike.  The Gumbel-smoothed sampler
(``more_smooth``) does not: its softmax temperature falls to 0.0135 at the last scale, so a 1e-6
difference in the logits or in f_hat comes out as 1e-4 in the image.  A second golden set (other
depth, width, heads, vocabulary and scale list) failed that way while every token was exact.  The
causes were the attention kernel and the memory layout of the code maps handed to phi; the guidance
weight was computed in another order too (hidden by the rounding to float32).  Each test below pins
one of them on small random models, with no golden directory needed, and fails on the old code.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from varedit_onnx.runtime import guidance_t, guidance_weights

from varedit.editing.sampler import guidance_weight
from varedit.models.var import VAR, VARConfig
from varedit.models.vqvae import VQVAE, VQVAEConfig

CFGS = [i / 20 for i in range(1, 201)]  # 0.05 ... 10.0, every step a user may type
SNS = range(2, 17)


def test_guidance_weight_is_the_official_ratio_then_cfg():
    """Official ``autoregressive_infer_cfg``: ``ratio = si / self.num_stages_minus_1`` then ``t = cfg * ratio``.

    ``cfg * si / (SN - 1)`` rounds cfg * si first: another double for about a quarter of the grid
    (the grid must contain such cases, or this test could not tell the two orders apart).
    """
    differs = 0
    for cfg, SN in itertools.product(CFGS, SNS):
        for si in range(SN):
            official = cfg * (si / (SN - 1))
            assert guidance_weight(cfg, si, SN) == official, (cfg, si, SN)  # bit for bit, not approx
            differs += cfg * si / (SN - 1) != official
    assert differs > 1000


def test_onnx_guidance_inputs_use_the_same_order():
    for cfg, SN in itertools.product(CFGS, SNS):
        t = guidance_t(cfg, SN)
        assert t == [cfg * (si / (SN - 1)) for si in range(SN)]
        w = guidance_weights(cfg, SN)
        assert w.dtype == np.float32
        assert np.array_equal(w, np.array([[1 + x, x] for x in t], dtype=np.float32))


def _tiny_vae(pns=(1, 2, 3, 5, 7)) -> VQVAE:
    torch.manual_seed(0)
    cfg = VQVAEConfig(vocab_size=96, z_channels=32, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, v_patch_nums=pns)
    vae = VQVAE(cfg).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vae


def test_next_ar_input_hands_phi_the_channels_last_map_as_the_official_code():
    """Official ``get_next_autoregressive_input``: ``quant_resi[si/(SN-1)](F.interpolate(h_BChw, bicubic))``
    with ``h_BChw = emb_BlC.transpose_(1, 2).reshape(B, C, pn, pn)`` (channels-last in memory) and no
    ``.contiguous()``; torch's CPU convolution rounds differently for a contiguous copy."""
    vae = _tiny_vae()
    q = vae.quantize
    pns = q.v_patch_nums
    SN, HW, B, C = len(pns), pns[-1], 2, q.Cvae
    g = torch.Generator().manual_seed(1)
    f_hat = torch.randn(B, C, HW, HW, generator=g)
    with torch.no_grad():
        for si, pn in enumerate(pns):
            emb_BlC = torch.randn(B, pn * pn, C, generator=g)
            h = emb_BlC.transpose(1, 2).reshape(B, C, pn, pn)
            up = F.interpolate(h, size=(HW, HW), mode="bicubic") if si != SN - 1 else h
            want = f_hat.clone().add_(q.quant_resi[si / (SN - 1)](up))
            got, nxt = q.next_ar_input(si, f_hat, h)
            assert torch.equal(got, want), f"scale {si}"
            if si != SN - 1:
                assert torch.equal(nxt, F.interpolate(want, size=(pns[si + 1],) * 2, mode="area"))


def test_teacher_forcing_input_and_embedding_path_follow_the_official_layout():
    """``idxBl_to_var_input`` and ``embed_to_fhat`` take the same channels-last maps; the tokeniser
    (``f_to_idxBl_or_fhat``) is the one path that calls ``.contiguous()`` before phi."""
    vae = _tiny_vae()
    q = vae.quantize
    pns = q.v_patch_nums
    SN, HW, B, C = len(pns), pns[-1], 2, q.Cvae
    g = torch.Generator().manual_seed(2)
    idx = [torch.randint(0, q.vocab_size, (B, pn * pn), generator=g) for pn in pns]
    with torch.no_grad():
        f_hat = torch.zeros(B, C, HW, HW)
        nxt, fhats = [], []
        for si, pn in enumerate(pns):
            h = q.embedding(idx[si]).transpose(1, 2).reshape(B, C, pn, pn)
            up = F.interpolate(h, size=(HW, HW), mode="bicubic") if si != SN - 1 else h
            f_hat.add_(q.quant_resi[si / (SN - 1)](up))
            fhats.append(f_hat.clone())
            if si != SN - 1:
                nxt.append(F.interpolate(f_hat, size=(pns[si + 1],) * 2, mode="area").view(B, C, -1).transpose(1, 2))
        assert torch.equal(q.idx_to_var_input(idx), torch.cat(nxt, dim=1))
        for a, b in zip(q.idx_to_fhat(idx), fhats):
            assert torch.equal(a, b)
        # the tokeniser: contiguous before phi
        f = torch.randn(B, C, HW, HW, generator=g)
        f_rest, f_hat = f.clone(), torch.zeros_like(f)
        got_idx, got_fhat = q.f_to_idx_and_fhat(f)
        for si, pn in enumerate(pns):
            z = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != SN - 1 else f_rest
            i = q.nearest_code(z.permute(0, 2, 3, 1).reshape(-1, C)).view(B, pn, pn)
            e = q.embedding(i).permute(0, 3, 1, 2)
            h = (F.interpolate(e, size=(HW, HW), mode="bicubic") if si != SN - 1 else e).contiguous()
            h = q.quant_resi[si / (SN - 1)](h)
            f_hat.add_(h)
            f_rest.sub_(h)
            assert torch.equal(got_idx[si], i.view(B, -1)) and torch.equal(got_fhat[si], f_hat), f"scale {si}"


def test_attention_is_torchs_sdpa_as_in_the_official_code():
    """The official ``SelfAttention`` calls ``F.scaled_dot_product_attention`` (imported as ``slow_attn``;
    the matmul-softmax fallback only exists for torch < 2.0): cosine q/k, per-head scale, ``scale=1``."""
    torch.manual_seed(0)
    var = VAR(VARConfig(depth=1, embed_dim=96, num_heads=3, num_classes=5, vocab_size=64, Cvae=8,
                        patch_nums=(1, 2, 3))).eval()
    with torch.no_grad():
        for p in var.parameters():
            p.add_(0.05 * torch.randn_like(p))
    at = var.blocks[0].attn
    B, L, C, H = 2, 14, 96, 3
    x = torch.randn(B, L, C)
    mask = var.attn_bias_for_masking[:, :, :L, :L]
    with torch.no_grad():
        qkv = F.linear(x, at.mat_qkv.weight, torch.cat((at.q_bias, at.zero_k_bias, at.v_bias))).view(B, L, 3, H, C // H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(dim=0)
        q = F.normalize(q, dim=-1).mul(at.scale_mul_1H11.clamp_max(at.max_scale_mul).exp())
        k = F.normalize(k, dim=-1)
        for bias in (None, mask):  # inference (KV cache, no mask) and teacher forcing (block-causal mask)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=0.0, scale=1)
            want = at.proj(o.transpose(1, 2).reshape(B, L, C))
            assert torch.equal(at(x, attn_bias=bias), want)


def test_fast_top_k_top_p_filter_is_the_reference_bit_for_bit():
    """The fast path finds the nucleus among the sorted top-k instead of sorting the vocabulary; the
    result must be the official filter's exactly, also with ties (rounded logits) and extreme k / p."""
    from varedit.editing.sampler import filter_top_k_top_p_, filter_top_k_top_p_fast_
    g = torch.Generator().manual_seed(0)
    for trial in range(120):
        l, V = int(torch.randint(1, 120, (1,), generator=g)), int(torch.randint(2, 600, (1,), generator=g))
        x = torch.randn(3, l, V, generator=g) * float(torch.rand(1, generator=g) * 8 + 0.05)
        if trial % 3 == 0:
            x = x.round(decimals=int(trial % 2))  # many ties, also at the k-th value and the nucleus edge
        k = int(torch.randint(0, V + 1, (1,), generator=g))
        p = [0.0, 1.0, float(torch.rand(1, generator=g))][trial % 3]
        ref = filter_top_k_top_p_(x.clone(), k, p)
        assert torch.equal(filter_top_k_top_p_fast_(x.clone(), k, p), ref), (trial, k, p)


def test_fast_filter_takes_the_reference_path_where_tie_order_decides():
    """Two equal logits on either side of the nucleus' edge: which one survives depends on the order a
    sort gives them. The fast filter must then do what the reference does, not follow its own top-k order."""
    from varedit.editing.sampler import filter_top_k_top_p_, filter_top_k_top_p_fast_
    # kept probabilities after top-4: 0.47, 0.21, 0.21, 0.11; top-p 0.6 puts the edge between the 0.21s
    x = torch.tensor([[[0.2, 0.45, 0.05, 0.2, 0.1]]]).log()
    ref = filter_top_k_top_p_(x.clone(), 4, 0.6)
    assert int(torch.isfinite(ref).sum()) == 2 and bool(torch.isfinite(ref[..., 0]) ^ torch.isfinite(ref[..., 3]))
    for rows in (x, torch.cat([x, torch.randn(1, 1, 5)], dim=1)):  # alone, and beside a row without ties
        assert torch.equal(filter_top_k_top_p_fast_(rows.clone(), 4, 0.6), filter_top_k_top_p_(rows.clone(), 4, 0.6))
    # a value tied with the k-th beyond the first k: the reference keeps every one of them
    y = torch.tensor([[[3.0, 1.0, 1.0, 1.0, 0.0]]])
    ref = filter_top_k_top_p_(y.clone(), 2, 0.99)
    assert int(torch.isfinite(ref).sum()) == 4
    assert torch.equal(filter_top_k_top_p_fast_(y.clone(), 2, 0.99), ref)
