"""Loading weights: presets, local files, the Hugging Face cache, and one clear error per failure."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from varedit.hub import resolve_files
from varedit.pipeline import VarEditPipeline
from varedit.building import build_var
from varedit.checkpoint import WeightsError
from varedit.fileformat import file_info, load_file, read_weights, save_models
from varedit.official import infer_var_config
from varedit.presets import PRESETS, get_preset
from varedit.registry import load_official


def test_truncated_file(official_files, tmp_path):
    data = (official_files / "var_tiny.pth").read_bytes()
    bad = tmp_path / "var_d16.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        read_weights(bad)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    p = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, p)
    with pytest.raises(WeightsError, match="refused"):
        read_weights(p)


def test_not_a_state_dict(tmp_path):
    p = tmp_path / "list.pth"
    torch.save([1, 2, 3], p)
    with pytest.raises(WeightsError, match="not a state dict"):
        read_weights(p)
    q = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, q)
    with pytest.raises(WeightsError, match="neither a VAR nor a VQVAE"):
        load_file(q)


def test_mismatched_preset_names_what_differs(official_files, golden_config):
    a = golden_config["var_ctor"]
    with pytest.raises(WeightsError, match=rf"not var-d16: it has depth {a['depth']} \(expected 16\)"):
        load_official(official_files / "var_tiny.pth", official_files / "vae_ch160v4096z32.pth",
                      preset=get_preset("var-d16"), patch_nums=tuple(a["patch_nums"]))


def test_swapped_files(official_files):
    with pytest.raises(WeightsError, match="swapped"):
        load_official(official_files / "vae_ch160v4096z32.pth", official_files / "var_tiny.pth")


def test_shape_mismatch_is_reported(golden_dir, golden_config):
    sd = read_weights(golden_dir / "var.pth")
    cfg = infer_var_config(sd, patch_nums=tuple(golden_config["var_ctor"]["patch_nums"]))
    sd["head.weight"] = sd["head.weight"][:-1]
    with pytest.raises(WeightsError, match="head.weight"):
        build_var(cfg, sd)


def test_inference_of_options_from_keys(golden_dir, golden_config, scale_list_in_files):
    sd = read_weights(golden_dir / "var.pth")
    a = golden_config["var_ctor"]
    pns = None if scale_list_in_files else tuple(a["patch_nums"])  # only the scale list may be left open
    cfg = infer_var_config(sd, patch_nums=pns)
    assert cfg.num_heads == a["num_heads"]  # read from the cosine-attention scales
    assert (cfg.depth, cfg.embed_dim, cfg.num_classes, cfg.shared_aln) == (a["depth"], a["embed_dim"],
                                                                            a["num_classes"], a["shared_aln"])
    assert list(cfg.patch_nums) == a["patch_nums"]
    # a file that predates cosine attention (like the released d24): no scale_mul keys -> plain attention,
    # heads from the official rule unless given
    old = {k: v for k, v in sd.items() if "scale_mul_1H11" not in k}
    cfg_old = infer_var_config(old, patch_nums=pns)
    assert not cfg_old.attn_l2_norm and cfg_old.num_heads == cfg_old.depth
    heads = a["num_heads"]
    assert infer_var_config(old, num_heads=heads, patch_nums=pns).num_heads == heads
    build_var(infer_var_config(old, num_heads=heads, patch_nums=pns), old)  # loads strictly


def test_offline_preset_error_names_files_and_places(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("VAREDIT_WEIGHTS", raising=False)
    with pytest.raises(WeightsError) as e:
        VarEditPipeline.from_pretrained("var-d16", device="cpu")
    msg = str(e.value)
    assert "var_d16.pth" in msg and "vae_ch160v4096z32.pth" in msg and "--weights-dir" in msg
    assert str(tmp_path / "hf" / "hub") in msg and "\n" not in msg


def _fake_hf_cache(root, files: dict[str, bytes]) -> None:
    """The layout huggingface_hub uses: models--org--name/{refs/main, snapshots/<rev>/<file>}."""
    repo = root / "hub" / "models--FoundationVision--var"
    rev = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)


def test_hf_cache_is_used_offline_and_files_are_checked(official_files, tmp_path, monkeypatch):
    """Files found in the HF cache (offline) are checked against the preset before building."""
    _fake_hf_cache(tmp_path / "hf", {
        "var_d16.pth": (official_files / "var_tiny.pth").read_bytes(),
        "vae_ch160v4096z32.pth": (official_files / "vae_ch160v4096z32.pth").read_bytes(),
    })
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("VAREDIT_WEIGHTS", raising=False)
    files = resolve_files(get_preset("var-d16"))
    assert files["var_d16.pth"].read_bytes() == (official_files / "var_tiny.pth").read_bytes()
    with pytest.raises(WeightsError, match="is not var-d16"):
        VarEditPipeline.from_pretrained("var-d16", device="cpu")


def test_weights_dir(official_files, tmp_path, monkeypatch):
    d = tmp_path / "w"
    d.mkdir()
    shutil.copy(official_files / "var_tiny.pth", d / "var_d20.pth")
    shutil.copy(official_files / "vae_ch160v4096z32.pth", d / "vae_ch160v4096z32.pth")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_files(get_preset("var-d20"), weights_dir=d)["var_d20.pth"] == d / "var_d20.pth"
    with pytest.raises(WeightsError, match="var-d20"):
        VarEditPipeline.from_pretrained("var-d20", weights_dir=d, device="cpu")


def test_self_describing_roundtrip_loads_with_no_flags(golden_models, tmp_path):
    var, vae = golden_models
    p = tmp_path / "model.pt"
    save_models(p, var=var, vae=vae, meta={"class_names": [[f"c{i}"] for i in range(var.num_classes)],
                                          "sampling": {"cfg": 2.5, "top_k": 7, "top_p": 0.8}})
    pipe = VarEditPipeline.from_pretrained(p, device="cpu")
    c = var.num_classes - 1
    assert pipe.class_index(f"c{c}") == c and pipe.defaults.top_k == 7
    for (k, a), b in zip(var.state_dict().items(), pipe.var.state_dict().values()):
        assert torch.equal(a, b), k
    info = file_info(p)
    assert info["format"].startswith("varedit") and info["var"]["config"]["depth"] == var.depth
    half = tmp_path / "half.pt"
    save_models(half, var=var, vae=vae, half=True)
    assert half.stat().st_size < p.stat().st_size * 0.6
    v2, _ = load_file(half)
    assert v2.head.weight.dtype == torch.float32


def test_unknown_preset_suggests():
    with pytest.raises(WeightsError, match="did you mean 'var-d16'"):
        get_preset("var-d15")
    assert set(PRESETS) >= {"demo", "var-d16", "var-d20", "var-d24", "var-d30", "var-d36"}


def test_one_loading_path_reads_what_each_file_says(golden_models, golden_config, official_files, tmp_path):
    """registry.load_models: a self-describing file brings its class names and defaults, an official VAR file
    its VQVAE from beside it (or a clear error), and only the bundled demo carries a notice."""
    from varedit.registry import load_models
    var, vae = golden_models
    names = [[f"c{i}"] for i in range(var.num_classes)]
    p = tmp_path / "model.pt"
    save_models(p, var=var, vae=vae, meta={"class_names": names, "sampling": {"top_k": 7}})
    m = load_models(p)
    assert (m.name, m.notice, m.defaults.top_k) == ("model", None, 7)
    assert [list(c) for c in m.class_names] == names
    pns = tuple(golden_config["var_ctor"]["patch_nums"])
    o = load_models(official_files / "var_tiny.pth", patch_nums=pns)
    assert o.class_names is None and o.vae.cfg.vocab_size == vae.cfg.vocab_size
    for (k, a), b in zip(var.state_dict().items(), o.var.state_dict().values()):
        assert torch.equal(a, b), k
    alone = tmp_path / "alone" / "var_tiny.pth"
    alone.parent.mkdir()
    shutil.copy(official_files / "var_tiny.pth", alone)
    with pytest.raises(WeightsError, match="needs its VQVAE"):
        load_models(alone, patch_nums=pns)
    demo = load_models("demo")
    assert demo.name == "demo" and demo.notice and demo.class_names


def test_a_wrapped_official_file_reads_the_same_everywhere(official_files, golden_config, tmp_path):
    """The wrappers around an official state dict ({"model": ...}) are undone in one place
    (checkpoint.unwrap_state_dict): by the torch-free facts the command line checks arguments with, the
    structure-only info and the load alike."""
    from varedit.modelinfo import model_info
    sd = read_weights(official_files / "var_tiny.pth")
    wrapped = tmp_path / "var_wrapped.pth"
    torch.save({"model": sd, "epoch": 3}, wrapped)
    facts = model_info(wrapped, vae_path=official_files / "vae_ch160v4096z32.pth")
    pns = tuple(golden_config["var_ctor"]["patch_nums"])
    assert (facts.num_classes, facts.num_scales) == (sd["class_emb.weight"].shape[0] - 1, len(pns))
    info = file_info(wrapped)
    assert info["format"] == "official state dict" and info["keys"] == len(sd)
    var, _ = load_official(wrapped, official_files / "vae_ch160v4096z32.pth", patch_nums=pns)
    assert torch.equal(var.head.weight, sd["head.weight"])


def test_loading_modules_depend_one_way():
    """checkpoint <- building <- official <- fileformat <- registry, never back; the torch-free facts
    (presets, modelinfo) import none of the torch side."""
    from test_architecture import import_graph
    graph = import_graph()
    order = ["varedit.checkpoint", "varedit.building", "varedit.official", "varedit.fileformat", "varedit.registry"]
    back = [(m, later) for i, m in enumerate(order) for later in order[i + 1:] if later in graph[m]]
    assert back == []
    torch_side = {"varedit.building", "varedit.official", "varedit.registry"}
    assert [(m, d) for m in ("varedit.presets", "varedit.modelinfo") for d in graph[m] if d in torch_side] == []
