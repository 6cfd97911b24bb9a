"""Training: the trainers learn, ranks stay in sync, resume is exact, official checkpoints fine-tune, CLI.

Everything runs on CPU with tiny models (32 px images, 3-level VQVAE, scales 1-2-4-8, VAR depth 1-2
width 64), one torch thread per process so that timings do not depend on the machine's core count.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from varedit.models.vqvae import VQVAEConfig
from varedit.models.var import VARConfig
from varedit.training.common import TrainConfig, lr_at, param_groups, read_metrics
from varedit.training.data import DataConfig, ResumableBatchSampler, build_dataset
from varedit.training.var import VARTrainConfig, apply_freeze, remap_class_embedding, train_var
from varedit.training.vqvae import VQVAETrainConfig, train_vqvae

TINY_VQ = VQVAEConfig(vocab_size=64, z_channels=16, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1,
                      v_patch_nums=(1, 2, 4, 8))
TINY_VAR = VARConfig(depth=2, embed_dim=64, num_heads=2)


# timings and results independent of the machine's core count (conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def vq_cfg(run_dir: Path, steps: int, **train: object) -> VQVAETrainConfig:
    tc = dict(run_dir=str(run_dir), steps=steps, batch_size=8, lr=2e-3, warmup_steps=2, log_every=2,
              ckpt_every=3, progress=False, weight_decay=0.0, beta1=0.5, beta2=0.9, grad_clip=10.0)
    tc.update(train)
    return VQVAETrainConfig(train=TrainConfig(**tc), data=DataConfig(synthetic=96, image_size=32, resize_ratio=1.125),
                            model=TINY_VQ, l2_weight=1.0, dead_code_steps=4, dead_code_check_every=2)


def var_cfg(run_dir: Path, vae: Path, steps: int, **train: object) -> VARTrainConfig:
    tc = dict(run_dir=str(run_dir), steps=steps, batch_size=8, lr=2e-3, warmup_steps=2, log_every=2,
              ckpt_every=3, progress=False)
    tc.update(train)
    return VARTrainConfig(vae=str(vae), train=TrainConfig(**tc), data=DataConfig(synthetic=96, image_size=0),
                          model=TINY_VAR)


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny VQVAE trained for 40 steps: (model file, run dir)."""
    run = tmp_path_factory.mktemp("vq")
    torch.set_num_threads(1)
    summary = train_vqvae(vq_cfg(run, steps=40, log_every=5, ckpt_every=40))
    return Path(summary["file"]), run


# ---- data order ------------------------------------------------------------------------------------
def test_sampler_is_a_resumable_sharded_permutation():
    full = ResumableBatchSampler(50, 8, seed=3, total_steps=14)
    steps = list(full)
    # one epoch = 6 batches of 8 distinct indices; each epoch is a fresh permutation
    epoch0 = [i for b in steps[:6] for i, _ in b]
    assert len(set(epoch0)) == 48 and all(0 <= i < 50 for i in epoch0)
    assert [i for i, _ in steps[6]] != [i for i, _ in steps[0]]
    # starting at step 9 gives exactly the tail of the full order (indices and augmentation seeds)
    assert list(ResumableBatchSampler(50, 8, seed=3, start_step=9, total_steps=14)) == steps[9:]
    # two ranks split every global batch into its halves
    r0 = list(ResumableBatchSampler(50, 8, seed=3, rank=0, world_size=2, total_steps=14))
    r1 = list(ResumableBatchSampler(50, 8, seed=3, rank=1, world_size=2, total_steps=14))
    assert all(a + b == s for a, b, s in zip(r0, r1, steps))
    with pytest.raises(ValueError, match="divisible"):
        ResumableBatchSampler(50, 7, seed=0, world_size=2)


def test_dataset_items_are_deterministic_and_in_range():
    ds = build_dataset(DataConfig(synthetic=10, image_size=32))
    a, la = ds[(3, 123)]
    b, lb = ds[(3, 123)]
    c, _ = ds[(3, 124)]
    assert a.shape == (3, 32, 32) and la == lb == 3 and -1 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)  # crop/flip follow the augmentation seed only


def test_read_metrics_keeps_the_resumed_record_of_a_step(tmp_path):
    lines = [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.0}, {"step": 20, "loss": 1.5}, {"step": 30, "loss": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(10, 3.0), (20, 1.5), (30, 1.0)]
    assert read_metrics(tmp_path / "missing") == []


def test_schedule_and_weight_decay_groups():
    tc = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, tc) == pytest.approx(0.1) and lr_at(9, tc) == pytest.approx(1.0)
    assert lr_at(10, tc) == pytest.approx(1.0) and lr_at(100, tc) == pytest.approx(0.1)
    assert lr_at(40, tc) > lr_at(70, tc)
    from varedit.models.var import VAR
    var = VAR(VARConfig(depth=1, embed_dim=64, num_heads=2, num_classes=3, vocab_size=16, Cvae=8,
                        patch_nums=(1, 2)))
    decay, no_decay = param_groups(var, 0.05)
    names = {id(p): n for n, p in var.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert {"class_emb.weight", "pos_1LC", "pos_start", "lvl_embed.weight", "head.bias",
            "blocks.0.attn.scale_mul_1H11"} <= nd
    assert {names[id(p)] for p in decay["params"]} >= {"head.weight", "blocks.0.attn.mat_qkv.weight"}
    assert not nd & {names[id(p)] for p in decay["params"]}


# ---- the trainers learn ----------------------------------------------------------------------------
def test_vqvae_training_lowers_the_loss(tiny_vae):
    path, run = tiny_vae
    m = read_metrics(run)
    assert [r["step"] for r in m] == list(range(5, 41, 5))
    assert m[-1]["loss"] < 0.8 * m[0]["loss"], [r["loss"] for r in m]
    assert m[-1]["psnr"] > m[0]["psnr"]
    assert m[-1]["code_usage"] > 0.2  # dead-code restarts keep the codebook in use
    from varedit.fileformat import load_file
    var, vae = load_file(path)
    assert var is None and vae.cfg == TINY_VQ


def test_decoder_only_training_keeps_the_tokens(tiny_vae, tmp_path):
    import dataclasses
    from varedit.fileformat import load_file
    path, _ = tiny_vae
    cfg = dataclasses.replace(vq_cfg(tmp_path / "dec", steps=6, lr=1e-2), init=str(path), decoder_only=True)
    summary = train_vqvae(cfg)
    _, before = load_file(path)
    _, after = load_file(summary["file"])
    sb, sa = dict(before.named_parameters()), dict(after.named_parameters())  # (buffers: hit statistics)
    changed = {k for k in sb if not torch.equal(sb[k], sa[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed), sorted(changed)[:5]
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    for a, b in zip(before.img_to_idx(img), after.img_to_idx(img)):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="--init"):
        train_vqvae(dataclasses.replace(vq_cfg(tmp_path / "x", steps=1), decoder_only=True))


def test_var_training_lowers_the_loss(tiny_vae, tmp_path):
    summary = train_var(var_cfg(tmp_path, tiny_vae[0], steps=24, log_every=4, ckpt_every=24))
    m = read_metrics(tmp_path)
    assert m[-1]["loss"] < m[0]["loss"] - 0.3, [r["loss"] for r in m]
    assert 0 <= m[-1]["acc"] <= 1 and m[-1]["img_per_s"] > 0
    # the combined file is a complete pipeline with the data's class names and sampling defaults
    from varedit.pipeline import VarEditPipeline
    pipe = VarEditPipeline.from_pretrained(tmp_path / "model.pt", device="cpu")
    assert pipe.class_names[0] == ("circle",) and pipe.num_classes == 10
    assert pipe.defaults.top_p == 0.95 and summary["steps"] == 24
    out = pipe.generate("square", n=1, seed=0)
    assert out.images[0].size == (32, 32)


# ---- exact resume ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["vqvae", "var"])
def test_resume_continues_exactly(kind, tiny_vae, tmp_path):
    """8 steps straight == 5 steps, stop, resume to 8: same weights, same data order, same metrics.
    96 items / batch 8 = 12 steps per epoch, so use a smaller dataset to cross an epoch boundary."""
    def run(d: Path, **kw: object) -> dict:
        if kind == "vqvae":
            cfg = vq_cfg(d, steps=8, ema_decay=0.9, **kw)
            cfg.data.synthetic = 40
            return train_vqvae(cfg)
        cfg = var_cfg(d, tiny_vae[0], steps=8, ema_decay=0.9, **kw)
        cfg.data.synthetic = 40
        return train_var(cfg)

    straight = run(tmp_path / "a")
    part = run(tmp_path / "b", stop_after=5)
    assert not part["finished"] and part["steps"] == 5
    resumed = run(tmp_path / "b", resume=True)
    assert resumed["finished"] and resumed["steps"] == 8
    assert resumed["weights_sha256_per_rank"] == straight["weights_sha256_per_rank"]
    assert resumed["data_digest_rank0"] == straight["data_digest_rank0"]
    la = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "a")}
    lb = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "b")}
    assert la[8] == lb[8] and la[2] == lb[2]
    # the saved (EMA) models are identical too
    from varedit.fileformat import read_weights
    name = "vqvae.pt" if kind == "vqvae" else "model.pt"
    sa, sb = read_weights(tmp_path / "a" / name), read_weights(tmp_path / "b" / name)
    for part_name in ("vqvae", "var"):
        if part_name in sa:
            for k, v in sa[part_name]["state_dict"].items():
                assert torch.equal(v, sb[part_name]["state_dict"][k]), k


def test_resume_refuses_changed_settings(tiny_vae, tmp_path):
    train_var(var_cfg(tmp_path, tiny_vae[0], steps=4, stop_after=2))
    with pytest.raises(ValueError, match="batch_size 8 -> 16"):
        train_var(var_cfg(tmp_path, tiny_vae[0], steps=4, resume=True, batch_size=16))


# ---- distributed -----------------------------------------------------------------------------------
def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    """torchrun, 2 CPU processes: DDP gradients, EMA and dead-code restarts (drawn from the codes
    gathered over both ranks) must leave both ranks with bit-identical weights."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "varedit.cli", "train", "vqvae", "--synthetic", "32", "--size", "32", "--ch-mult", "1,1,2",
           "--patch-nums", "1,2,4,8", "--vocab", "64", "--z-channels", "16", "--run-dir", str(tmp_path),
           "--steps", "4", "--batch-size", "8", "--log-every", "2", "--ema", "0.9", "--dead-code-steps", "1",
           "--dead-code-check-every", "2", "--no-progress", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["world_size"] == 2 and len(s["weights_sha256_per_rank"]) == 2
    assert s["weights_sha256_per_rank"][0] == s["weights_sha256_per_rank"][1]
    assert s["final_metrics"]["code_restarts"] > 0  # the restart path was exercised
    assert (tmp_path / "vqvae.pt").is_file()


# ---- fine-tuning an official checkpoint ------------------------------------------------------------
def test_class_embedding_remap_and_freeze(golden_dir, golden_config):
    from varedit.fileformat import read_weights
    sd = read_weights(golden_dir / "var.pth")
    old = sd["class_emb.weight"]
    k_old, C = old.shape[0] - 1, old.shape[1]
    for k in (3, k_old + 2):
        new = remap_class_embedding(sd, k, C)["class_emb.weight"]
        keep = min(k, k_old)
        assert new.shape == (k + 1, C)
        assert torch.equal(new[:keep], old[:keep]) and torch.equal(new[k], old[k_old])
    from varedit.official import infer_var_config
    from varedit.models.var import VAR
    var = VAR(infer_var_config(sd, patch_nums=tuple(golden_config["var_ctor"]["patch_nums"])))
    frozen = apply_freeze(var, ["embeddings", "blocks.0."])
    assert "class_emb.weight" in frozen and "blocks.0.attn.proj.weight" in frozen
    assert "blocks.1.attn.proj.weight" not in frozen and var.head.weight.requires_grad
    with pytest.raises(ValueError, match="matches no parameter"):
        apply_freeze(var, ["nonexistent"])


def test_finetune_official_checkpoint_to_new_classes(golden_dir, golden_config, tmp_path):
    size = golden_config["image"]["size"]
    cfg = VARTrainConfig(
        vae=str(golden_dir / "vae.pth"), init=str(golden_dir / "var.pth"), num_classes=3, freeze=("blocks",),
        # used only if the official file leaves its scale list open (as --patch-nums on the command line)
        model=VARConfig(patch_nums=tuple(golden_config["var_ctor"]["patch_nums"])),
        train=TrainConfig(run_dir=str(tmp_path), steps=2, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1,
                          ckpt_every=2, progress=False),
        data=DataConfig(synthetic=6, num_classes=3, image_size=size))
    summary = train_var(cfg)
    assert summary["finished"] and summary["frozen"] > 0
    from varedit.fileformat import read_weights
    from varedit.pipeline import VarEditPipeline
    pipe = VarEditPipeline.from_pretrained(tmp_path / "model.pt", device="cpu")
    assert pipe.num_classes == 3 and list(pipe.var.patch_nums) == golden_config["var_ctor"]["patch_nums"]
    assert pipe.class_names == (("circle",), ("square",), ("triangle",))
    old = read_weights(golden_dir / "var.pth")
    new = pipe.var.state_dict()
    assert torch.equal(new["blocks.0.attn.mat_qkv.weight"], old["blocks.0.attn.mat_qkv.weight"])  # frozen
    assert not torch.equal(new["head.weight"], old["head.weight"])                                # trained
    assert pipe.generate(2, n=1, seed=0).images[0].size == (size, size)


# ---- CLI -------------------------------------------------------------------------------------------
def test_cli_data_synthetic_and_train_from_folder(tmp_path):
    from varedit.cli import main
    r = CliRunner().invoke(main, ["data", "synthetic", "--out", str(tmp_path / "ds"), "--n", "20", "--seed", "1",
                                  "--size", "32"])
    assert r.exit_code == 0, r.output
    pngs = sorted((tmp_path / "ds").rglob("*.png"))
    assert len(pngs) == 20 and (tmp_path / "ds" / "classes.json").is_file()
    r = CliRunner().invoke(main, ["train", "vqvae", "--data", str(tmp_path / "ds"), "--run-dir", str(tmp_path / "run"),
                                  "--ch-mult", "1,1,2", "--patch-nums", "1,2,4,8", "--vocab", "32", "--steps", "2",
                                  "--batch-size", "4", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "vqvae.pt").is_file() and len(read_metrics(tmp_path / "run")) == 1


def test_cli_training_starts_from_a_preset_name(tmp_path):
    """--init demo: the bundled model, as every other command names it (a decoder-only step on it)."""
    from varedit.cli import main
    from varedit.presets import DEMO_FILE
    from varedit.training.vqvae import load_vqvae_file
    r = CliRunner().invoke(main, ["train", "vqvae", "--init", "demo", "--decoder-only", "--synthetic", "4",
                                  "--steps", "1", "--batch-size", "2", "--run-dir", str(tmp_path / "run"),
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    a, b = load_vqvae_file(str(DEMO_FILE)), load_vqvae_file(str(tmp_path / "run" / "vqvae.pt"))
    assert a.cfg == b.cfg
    assert torch.equal(a.encoder.conv_in.weight.float(), b.encoder.conv_in.weight.float())  # encoder untouched


@pytest.mark.parametrize("args, message", [
    (["train", "vqvae", "--data", "/nonexistent/folder", "--run-dir", "RUN"], "data folder not found"),
    (["train", "var", "--vae", "/nonexistent/vae.pt", "--synthetic", "8", "--run-dir", "RUN"], "not found"),
    (["train", "vqvae", "--synthetic", "8", "--size", "100", "--run-dir", "RUN"], "--size"),
    (["train", "vqvae", "--init", "dmeo", "--synthetic", "8", "--run-dir", "RUN"], "did you mean 'demo'"),
    # an official preset names its files; offline and absent, the one file that option needs is named
    (["train", "var", "--vae", "var-d16", "--synthetic", "8", "--run-dir", "RUN"], "needs vae_ch160v4096z32.pth:"),
    # the final file never replaces the model training starts from
    (["train", "vqvae", "--init", "COPY", "--decoder-only", "--synthetic", "8", "--run-dir", "RUN", "--out", "COPY"],
     "would overwrite the input"),
    (["train", "var", "--vae", "COPY", "--init", "COPY", "--synthetic", "8", "--run-dir", "RUN", "--out-dir", "COPYDIR"],
     "would overwrite the input"),
])
def test_cli_bad_input_is_one_line_error(args, message, tmp_path, monkeypatch):
    from varedit.cli import main
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache, whatever this machine holds
    monkeypatch.delenv("VAREDIT_WEIGHTS", raising=False)
    import shutil

    from varedit.presets import DEMO_FILE
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / "model.pt"  # a model file in a folder, as `train var` writes model.pt
    shutil.copy(DEMO_FILE, copy)
    swap = {"RUN": str(tmp_path / "run"), "COPY": str(copy), "COPYDIR": str(copy.parent)}
    args = [swap.get(a, a) for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0
    assert "Traceback" not in r.output and not isinstance(r.exception, (TypeError, AttributeError, KeyError))
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and message in errors[0], r.output
    assert copy.read_bytes() == DEMO_FILE.read_bytes()
