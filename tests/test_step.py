"""One transformer step, one guidance schedule, one plan-to-inputs step.

The KV-cached step (``varedit.models.var.NextScaleStep``) is the code both the torch sampler and the
exported ONNX graphs run; the guidance schedule and the plans' translation into sampler inputs are
torch-free and shared by the torch and onnxruntime backends.  Small random models, no golden data.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from varedit.editing.guidance import guidance_t, guidance_weight, guidance_weights
from varedit.editing.inputs import plan_images, sampler_inputs
from varedit.editing.plan import make_plan
from varedit.models.var import VAR, KVCache, NextScaleStep, VARConfig
from varedit.models.vqvae import VQVAE, VQVAEConfig

PNS = (1, 2, 3, 5)


def _noisy(m: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


@pytest.fixture(scope="module")
def models() -> tuple[VAR, VQVAE]:
    torch.manual_seed(0)
    var = _noisy(VAR(VARConfig(depth=2, embed_dim=64, num_heads=4, num_classes=5, vocab_size=48, Cvae=8,
                               patch_nums=PNS)))
    vae = _noisy(VQVAE(VQVAEConfig(vocab_size=48, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                                   v_patch_nums=PNS)))
    return var, vae


def _steps(var: VAR, label: torch.Tensor, maps: list[torch.Tensor], max_len: int | None) -> list[torch.Tensor]:
    ctx = var.start(label)
    kv = var.new_kv_caches(max_len)
    out = []
    for si in range(len(PNS)):
        logits, kv = var.step(si, ctx, kv, maps[si - 1] if si else None)
        out.append(logits)
    return out


def _maps(B: int, Cvae: int, g: torch.Generator) -> list[torch.Tensor]:
    """Random f_hat maps on the grid of every scale after the first (the step's inputs)."""
    return [torch.randn(B, Cvae, pn, pn, generator=g) for pn in PNS[1:]]


@torch.no_grad()
def test_kv_cached_steps_equal_teacher_forcing(models):
    """Scale by scale with the cache gives the logits of the masked whole-sequence forward."""
    var, _ = models
    g = torch.Generator().manual_seed(1)
    label = torch.tensor([1, 4])
    maps = _maps(2, var.Cvae, g)
    stepped = torch.cat(_steps(var, label, maps, None), dim=1)
    x_BLCv = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)
    forced = var(label, x_BLCv)
    assert stepped.shape == forced.shape == (2, var.L, var.V)
    assert torch.allclose(stepped, forced, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_the_cache_is_a_value_not_module_state(models):
    """Preallocated and growing caches give the same logits, and two generations interleaved scale by
    scale give what each gives alone: nothing of a generation is kept in the model."""
    var, _ = models
    g = torch.Generator().manual_seed(2)
    la, lb = torch.tensor([0]), torch.tensor([3])
    ma, mb = _maps(1, var.Cvae, g), _maps(1, var.Cvae, g)
    alone_a, alone_b = _steps(var, la, ma, var.L), _steps(var, lb, mb, None)
    for x, y in zip(alone_a, _steps(var, la, ma, None)):
        assert torch.equal(x, y)
    ca, cb = var.start(la), var.start(lb)
    ka, kb = var.new_kv_caches(var.L), var.new_kv_caches(var.L)
    for si in range(len(PNS)):
        xa, ka = var.step(si, ca, ka, ma[si - 1] if si else None)
        xb, kb = var.step(si, cb, kb, mb[si - 1] if si else None)
        assert torch.equal(xa, alone_a[si]) and torch.equal(xb, alone_b[si])
    assert all(k.length == var.L for k in ka)


def test_a_preallocated_cache_refuses_to_overflow():
    kv = KVCache(capacity=3)
    kv, k, _ = kv.append(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4))
    assert kv.length == 2 and k.shape == (1, 2, 2, 4)
    with pytest.raises(ValueError, match="cannot take 4"):
        kv.append(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4))


@torch.no_grad()
def test_exported_sampler_graph_runs_the_models_step_and_draws_the_samplers_tokens(models):
    """The exporter's graph module has no transformer code of its own, and (run by torch) it draws the
    tokens ``masked_sample`` draws from the same uniforms."""
    pytest.importorskip("onnx")
    from varedit_onnx.exporter import SamplerGraph, ScorerGraph, _Quant
    from varedit_onnx.runtime import guidance_weights as rt_weights
    from varedit_onnx.runtime import top_p_threshold

    from varedit.editing.noise import portable_uniforms
    from varedit.editing.sampler import masked_sample

    for cls in (SamplerGraph, ScorerGraph):
        assert cls.step is NextScaleStep.step and cls.start is NextScaleStep.start
        assert not any(hasattr(cls, n) for n in ("_block", "_start", "_scale_logits", "_next_input"))
    var, vae = models
    B, HW = 2, PNS[-1]
    graph = SamplerGraph(var, _Quant(vae).eval(), B, torch.float32).eval()
    labels = np.array([2, 5], np.int64)  # 5: the null class
    u = portable_uniforms(3, B, PNS)
    cfg, top_k, top_p = 3.0, 20, 0.9
    outs, _ = graph.run(torch.from_numpy(labels), torch.from_numpy(rt_weights(cfg, len(PNS))), torch.tensor(top_k),
                        torch.tensor(top_p_threshold(top_p)), torch.tensor(False), torch.zeros(B, var.Cvae, HW, HW),
                        [torch.zeros(B, pn * pn, dtype=torch.bool) for pn in PNS],
                        [torch.zeros(B, pn * pn, dtype=torch.int64) for pn in PNS],
                        [torch.from_numpy(x) for x in u], [torch.ones(B, 1, HW, HW) for _ in PNS[:-1]])
    ref = masked_sample(var, vae, torch.from_numpy(labels), cfg=cfg, top_k=top_k, top_p=top_p,
                        uniforms=[torch.from_numpy(x) for x in u], decode=False)
    for si in range(len(PNS)):
        assert torch.equal(outs[si], ref.idx_per_scale[si]), si


def test_guidance_schedule_is_torch_free_and_shared():
    code = ("import sys; import varedit.editing.guidance, varedit.editing.inputs, varedit_onnx.runtime; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from varedit.editing import sampler
    from varedit_onnx import runtime
    assert sampler.guidance_weight is guidance_weight
    assert runtime.guidance_t(2.5, 4) == guidance_t(2.5, 4) == [guidance_weight(2.5, si, 4) for si in range(4)]
    assert guidance_t(2.5, 4, "constant") == [2.5] * 4 and guidance_t(1.0, 3, [0, 0.5, 2]) == [0.0, 0.5, 2.0]
    assert np.array_equal(runtime.guidance_weights(2.5, 4), guidance_weights(2.5, 4))
    with pytest.raises(ValueError, match="unknown guidance schedule 'cosine'"):
        guidance_t(1.0, 4, "cosine")
    with pytest.raises(runtime.OnnxRuntimeError, match="guidance has 2 weights; this model has 4 scales"):
        runtime.guidance_t(1.0, 4, [1, 2])


def test_a_weight_per_scale_reaches_the_torch_sampler(models):
    """A list of weights is a schedule: the one equal to the linear ramp draws the linear ramp's tokens."""
    from varedit.editing.noise import portable_uniforms
    from varedit.editing.sampler import masked_sample
    var, vae = models
    u = [torch.from_numpy(x) for x in portable_uniforms(0, 1, PNS)]
    kw = dict(cfg=2.0, top_k=10, top_p=0.0, uniforms=u, decode=False)
    lin = masked_sample(var, vae, torch.tensor([1]), guidance="linear", **kw)
    ramp = masked_sample(var, vae, torch.tensor([1]), guidance=guidance_t(2.0, len(PNS)), **kw)
    assert all(torch.equal(a, b) for a, b in zip(lin.idx_per_scale, ramp.idx_per_scale))


def _plan(closed: bool, hole: bool = True):
    rng = np.random.default_rng(0)
    rgb = rng.random((20, 20, 3), dtype=np.float32)
    mask = np.zeros((20, 20), bool)
    if hole:
        mask[4:16, 4:16] = True
    return make_plan(rgb, mask, PNS, 4, closed_loop=closed, prefill="none")


def test_plans_become_one_set_of_sampler_inputs():
    a, b = _plan(True), _plan(True)
    inp = sampler_inputs([a, b], [1, 2], PNS, uniforms_from=np.random.default_rng(5))
    assert inp.loop == "closed" and inp.labels.dtype == np.int64 and inp.labels.tolist() == [1, 2]
    assert [k.shape for k in inp.keep] == [(2, pn * pn) for pn in PNS] and all(k.dtype == bool for k in inp.keep)
    assert inp.image is not None and inp.image.shape == (2, 3, 20, 20) and inp.image.flags.c_contiguous
    assert np.array_equal(inp.image, plan_images([a, b])) and inp.image.min() >= -1 and inp.image.max() <= 1
    assert np.array_equal(inp.image[0], a.encode_rgb.transpose(2, 0, 1) * 2 - 1)
    assert inp.pool_w is not None and len(inp.pool_w) == len(PNS)
    assert inp.uniforms is not None and [x.shape for x in inp.uniforms] == [(2, pn * pn) for pn in PNS]
    assert sampler_inputs([_plan(False)], [0], PNS).loop == "open"
    whole = sampler_inputs([_plan(False, hole=False)], [0], PNS)  # nothing to regenerate: every cell forced
    assert whole.loop == "open" and all(k.all() for k in whole.keep)
    with pytest.raises(ValueError, match="mixes closed- and open-loop plans"):
        sampler_inputs([a, _plan(False)], [0, 0], PNS)
    with pytest.raises(ValueError, match="1 labels for 2 plans"):
        sampler_inputs([a, b], [0], PNS)


def test_a_plan_forcing_nothing_is_generation():
    p = _plan(False)
    p.keep_maps = [np.zeros_like(k) for k in p.keep_maps]
    inp = sampler_inputs([p], [3], PNS)
    assert inp.loop == "generate" and inp.image is None and inp.pool_w is None and inp.uniforms is None
