"""Checkpoint compatibility with the official VAR code, pinned by the golden vectors.

Every size, scale list, label and setting comes from the golden directory's config.json and
cases.pt, so these tests pass unchanged on any directory generated the same way.
"""
from __future__ import annotations

import pytest
import torch

from varedit.editing.sampler import masked_sample, new_generator

TOK = dict(rtol=0, atol=0)


# the reference was made with one thread (conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_config_matches_models(golden_models, golden_config, golden_cases):
    var, vae = golden_models
    assert list(var.patch_nums) == golden_config["var_ctor"]["patch_nums"]
    assert var.L == golden_config["L"] == golden_cases["gt_BL"].shape[1]
    SN = len(var.patch_nums)
    phi = [vae.quantize.phi_index(si, SN) for si in range(SN)]
    assert phi == golden_config["phi_index_per_scale"] == golden_cases["phi_index_per_scale"].tolist()


def test_encoder_and_tokenisation_exact(golden_models, golden_cases):
    var, vae = golden_models
    with torch.no_grad():
        f = vae.encode(golden_cases["img_B3HW"])
        torch.testing.assert_close(f, golden_cases["vae_f_BChw"], atol=1e-5, rtol=0)
        idx, fhat = vae.quantize.f_to_idx_and_fhat(f)
    assert len(idx) == len(golden_cases["vae_idxBl"])
    for si, (a, b) in enumerate(zip(idx, golden_cases["vae_idxBl"])):
        assert torch.equal(a, b), f"tokens differ at scale {si}"
    for a, b in zip(fhat, golden_cases["vae_fhat_per_scale"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert torch.equal(torch.cat(idx, 1), golden_cases["gt_BL"])


def test_reconstruction_and_embedding_path(golden_models, golden_cases):
    var, vae = golden_models
    with torch.no_grad():
        fhat = vae.quantize.idx_to_fhat(golden_cases["vae_idxBl"])
        torch.testing.assert_close(fhat[-1], golden_cases["vae_embed_to_fhat_last"], atol=1e-5, rtol=0)
        img = vae.fhat_to_img(golden_cases["vae_fhat_per_scale"][-1])
        torch.testing.assert_close(img, golden_cases["vae_recon_last"], atol=1e-4, rtol=0)
        torch.testing.assert_close(vae.idx_to_img(golden_cases["vae_idxBl"]), golden_cases["vae_recon_last"],
                                   atol=1e-4, rtol=0)


def test_teacher_forcing_input_and_logits(golden_models, golden_cases):
    var, vae = golden_models
    with torch.no_grad():
        x = vae.quantize.idx_to_var_input(golden_cases["vae_idxBl"])
        torch.testing.assert_close(x, golden_cases["var_input_x_BLCv_wo_first_l"], atol=1e-5, rtol=0)
        for lab, key in (("tf_labels", "tf_logits_BLV"), ("tf_null_labels", "tf_null_logits_BLV")):
            logits = var(golden_cases[lab], golden_cases["var_input_x_BLCv_wo_first_l"])
            torch.testing.assert_close(logits, golden_cases[key], atol=1e-4, rtol=0)
    assert (golden_cases["tf_null_labels"] == var.num_classes).all()


def _greedy_cases(cases):
    return [c for c in cases["ar_cases"] if c["top_k"] == 1]


def test_there_are_greedy_cases(golden_cases):
    assert len(_greedy_cases(golden_cases)) >= 2


IMPLS = ["eager", "fast"]  # the reference path and the fast default: both must match the official code


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("i", [0, 1])
def test_greedy_generation(golden_models, golden_cases, i, impl):
    var, vae = golden_models
    case = _greedy_cases(golden_cases)[i]
    g, _ = new_generator(case["g_seed"])
    r = masked_sample(var, vae, case["label_B"], cfg=case["cfg"], top_k=case["top_k"], top_p=case["top_p"],
                      more_smooth=case["more_smooth"], generator=g, record_logits=True, impl=impl)
    for si, (a, b) in enumerate(zip(r.idx_per_scale, case["idx_per_scale"])):
        assert torch.equal(a, b), f"{case['name']}: tokens differ at scale {si}"
    for a, b in zip(r.logits_per_scale, case["cfg_logits_per_scale"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    for a, b in zip(r.fhat_per_scale, case["fhat_per_scale"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.img_B3HW, case["img_B3HW_01"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_sampled_generation_follows_the_official_random_stream(golden_models, golden_cases, impl):
    """Not required by the spec (it depends on torch's CPU generator), but we draw in the same order."""
    var, vae = golden_models
    for case in golden_cases["ar_cases"]:
        if case["top_k"] == 1:
            continue
        g, _ = new_generator(case["g_seed"])
        r = masked_sample(var, vae, case["label_B"], cfg=case["cfg"], top_k=case["top_k"], top_p=case["top_p"],
                          more_smooth=case["more_smooth"], generator=g, impl=impl)
        for a, b in zip(r.idx_per_scale, case["idx_per_scale"]):
            assert torch.equal(a, b), case["name"]
        torch.testing.assert_close(r.img_B3HW, case["img_B3HW_01"], atol=1e-4, rtol=0)


def test_loader_infers_the_golden_configuration(official_files, golden_config, golden_cases, scale_list_in_files):
    """The official files load through the public loader with nothing but their paths, or, when they
    leave the scale list open, with the scale list alone after a clear error naming the candidates."""
    from varedit.pipeline import VarEditPipeline
    from varedit.checkpoint import WeightsError
    a = golden_config["var_ctor"]
    if scale_list_in_files:
        pipe = VarEditPipeline.from_pretrained(official_files / "var_tiny.pth", device="cpu")
    else:
        with pytest.raises(WeightsError, match="cannot infer the scale list") as e:
            VarEditPipeline.from_pretrained(official_files / "var_tiny.pth", device="cpu")
        assert ",".join(map(str, a["patch_nums"])) in str(e.value) and "pass patch_nums" in str(e.value)
        pipe = VarEditPipeline.from_pretrained(official_files / "var_tiny.pth", device="cpu",
                                               patch_nums=a["patch_nums"])
    assert (pipe.var.depth, pipe.var.C, pipe.var.num_classes) == (a["depth"], a["embed_dim"], a["num_classes"])
    assert pipe.var.cfg.num_heads == a["num_heads"] and pipe.var.cfg.shared_aln == a["shared_aln"]
    assert list(pipe.var.patch_nums) == a["patch_nums"]
    with torch.no_grad():
        idx = pipe.vae.img_to_idx(golden_cases["img_B3HW"])
    assert all(torch.equal(x, y) for x, y in zip(idx, golden_cases["vae_idxBl"]))


@pytest.mark.gpu
def test_greedy_generation_on_cuda(golden_models, golden_cases):
    """On a CUDA GPU (fp32, fused attention) the greedy tokens stay those of the reference."""
    var, vae = golden_models
    dev = torch.device("cuda")
    var_c, vae_c = var.to(dev), vae.to(dev)
    try:
        var_c.use_fused_attention(True)
        for case in _greedy_cases(golden_cases):
            g, _ = new_generator(case["g_seed"], dev)
            r = masked_sample(var_c, vae_c, case["label_B"].to(dev), cfg=case["cfg"], top_k=1, generator=g)
            for a, b in zip(r.idx_per_scale, case["idx_per_scale"]):
                assert torch.equal(a.cpu(), b)
            torch.testing.assert_close(r.img_B3HW.cpu(), case["img_B3HW_01"], atol=2e-3, rtol=0)
    finally:
        var_c.use_fused_attention(False)
        var.to("cpu"), vae.to("cpu")
