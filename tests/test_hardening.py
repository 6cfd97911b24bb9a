"""Nothing lost, nothing hangs, every output reproducible: the CLI against bad and unusual input.

Each case of the hardening issue: the outcome is a one-line error with a non-zero exit status before any
work, or the documented right result; inputs are never changed, no output silently replaces another.
"""
from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from varedit.cli import main


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((96, 128, 3)) * 255).astype(np.uint8)).save(tmp_path / "base.png")
    m = np.zeros((96, 128), np.uint8)
    m[30:60, 40:90] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    return tmp_path


def one_line_error(res, needle: str | None = None) -> bool:
    out = res.output.strip()
    ok = res.exit_code != 0 and "Traceback" not in out and out.splitlines()[-1].startswith(("Error", "failed"))
    return ok and (needle is None or needle in out)


def run(runner, *args):
    return runner.invoke(main, [str(a) for a in args])


# ---- data lost or changed ----------------------------------------------------------------------------
def test_output_never_replaces_a_mask(runner, files):
    mask = files / "mask.png"
    before = mask.read_bytes()
    res = run(runner, "inpaint", files / "base.png", "--mask", mask, "-o", mask)
    assert one_line_error(res, "would overwrite the input") and mask.read_bytes() == before
    # a mask folder that is also the output folder: the paired mask base.png would be overwritten
    d = files / "masks"
    d.mkdir()
    (d / "base.png").write_bytes(before)
    res = run(runner, "inpaint", files / "base.png", "--mask", d, "-o", d)
    assert one_line_error(res, "would overwrite the input") and (d / "base.png").read_bytes() == before


def test_dash_output_is_refused_not_a_folder(runner, files, monkeypatch):
    monkeypatch.chdir(files)  # where a folder named '-' would appear
    res = run(runner, "inpaint", files / "base.png", "--box", "1,1,20,20", "-o", "-")
    assert one_line_error(res, "standard output") and not (files / "-").exists()
    res = run(runner, "generate", "--class", "circle", "-o", "-")
    assert one_line_error(res, "standard output") and not (files / "-").exists()


def test_same_stem_inputs_are_refused_before_work(runner, files):
    Image.open(files / "base.png").save(files / "pic.png")
    Image.open(files / "base.png").save(files / "pic.jpg")
    res = run(runner, "inpaint", files / "pic.png", files / "pic.jpg", "--box", "1,1,20,20", "-o", files / "out")
    assert one_line_error(res, "would both write") and not (files / "out").exists()
    (files / "a").mkdir()
    (files / "b").mkdir()
    Image.open(files / "base.png").save(files / "a" / "x.png")
    Image.open(files / "base.png").save(files / "b" / "x.png")
    res = run(runner, "inpaint", files / "a", files / "b", "--box", "1,1,20,20", "-o", files / "out")
    assert one_line_error(res, "would both write")


def test_rerun_needs_overwrite_and_says_what_it_replaces(runner, files):
    args = ["inpaint", files / "base.png", "--box", "10,10,40,40", "-o", files / "o.png", "--seed", "1"]
    assert run(runner, *args).exit_code == 0
    first = (files / "o.png").read_bytes()
    res = run(runner, *args)
    assert one_line_error(res, "exists") and "--overwrite" in res.output
    assert (files / "o.png").read_bytes() == first
    res = run(runner, *args, "--seed", "2", "--overwrite")
    assert res.exit_code == 0 and "replacing" in res.output
    assert (files / "o.png").read_bytes() != first
    assert json.loads((files / "o.json").read_text())["seed"] == 2


def test_16bit_colour_stays_16bit_and_exact_outside_the_mask(runner, files):
    rng = np.random.default_rng(1)
    a = (rng.random((64, 80, 3)) * 65535).astype(np.uint16)
    cv2.imwrite(str(files / "c16.png"), a[..., ::-1])
    res = run(runner, "inpaint", files / "c16.png", "--box", "8,8,30,30", "-o", files / "o16.png", "--seed", "0")
    assert res.exit_code == 0, res.output
    b = cv2.imread(str(files / "o16.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert b.dtype == np.uint16 and b.shape == a.shape
    assert np.array_equal(a[:, 50:], b[:, 50:]) and np.array_equal(a[45:], b[45:])
    assert not np.array_equal(a[8:30, 8:30], b[8:30, 8:30])


def test_16bit_gray_to_jpeg_is_a_correct_8bit_image(runner, files):
    rng = np.random.default_rng(2)
    g = cv2.GaussianBlur((rng.random((64, 80)) * 65535).astype(np.float32), (0, 0), 3).astype(np.uint16)
    Image.fromarray(g).save(files / "g16.png")
    res = run(runner, "inpaint", files / "g16.png", "--box", "8,8,30,30", "-o", files / "g.jpg", "--seed", "0")
    assert res.exit_code == 0, res.output
    out = Image.open(files / "g.jpg")
    assert out.mode == "L"
    err = np.abs(np.asarray(out, np.float64)[:, 50:] - g[:, 50:] / 257.0)
    assert err.mean() < 2.0  # JPEG's own loss only (it was 126 levels, all white)


def test_disk_full_leaves_no_half_pair(runner, files, monkeypatch):
    """The image and its sidecar are written as one: a write failure leaves neither (and no temp file)."""
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 2:  # the second file of the pair: the sidecar
            raise OSError(28, "No space left on device")
        return real(fd)

    monkeypatch.setattr("varedit.io.os.fsync", fsync)
    res = run(runner, "inpaint", files / "base.png", "--box", "10,10,40,40", "-o", files / "full.png")
    assert one_line_error(res, "No space left")
    assert not (files / "full.png").exists() and not (files / "full.json").exists()
    assert not [p for p in files.iterdir() if p.name.endswith(".tmp")]


def test_generate_n2_into_a_file_name(runner, tmp_path):
    res = run(runner, "generate", "--class", "circle", "--n", "2", "--seed", "3", "-o", tmp_path / "g.png")
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "g.png").exists()
    assert (tmp_path / "g_0.png").is_file() and (tmp_path / "g_1.png").is_file()
    assert json.loads((tmp_path / "g_1.json").read_text())["index"] == 1


# ---- hangs and runaway work ------------------------------------------------------------------------
def test_fifo_is_an_error_not_a_hang(runner, files):
    fifo = files / "pipe.png"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    assert one_line_error(run(runner, "inpaint", fifo, "--box", "1,1,9,9", "-o", files / "o.png"), "regular file")
    assert one_line_error(run(runner, "inpaint", files / "base.png", "--mask", fifo, "-o", files / "o.png"),
                          "regular file")
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("args,needle", [
    (["outpaint", "{img}", "--right", "100000", "--strategy", "original"], "model windows"),
    (["outpaint", "{img}", "--right", "1e9"], "whole pixels"),
    (["outpaint", "{img}", "--right", "3.5"], "whole pixels"),
    (["outpaint", "{img}", "--bottom", "1000000", "--max-windows", "100000000"], "MP"),
    (["upscale", "{img}", "--scale", "70"], "at most 16"),
    (["upscale", "{img}", "--scale", "inf"], "finite"),
    (["upscale", "{img}", "--scale", "16", "--max-windows", "8"], "model windows"),
    (["inpaint", "{img}", "--box", "1,1,9,9", "--n", "10000"], "1<=x<=64"),
    (["generate", "--class", "circle", "--n", "1000000"], "x<=100000"),
    (["inpaint", "{img}", "--box", "1,1,9,9", "--cfg", "nan"], "finite"),
    (["inpaint", "{img}", "--box", "1,1,9,9", "--class", "²"], "unknown class"),
    (["inpaint", "{img}", "--box", "1,1,9,9", "--keep-scales", "7"], "scales"),
    (["inpaint", "{img}"], "no mask"),
])
def test_runaway_and_bad_options_fail_at_once(runner, files, args, needle):
    t0 = time.perf_counter()
    res = run(runner, *[a.format(img=files / "base.png") for a in args], "-o", files / "o")
    assert one_line_error(res, needle), res.output
    assert time.perf_counter() - t0 < 15 and not (files / "o").exists()


def test_a_missing_input_is_reported_before_torch_is_imported(tmp_path):
    import subprocess
    import sys
    code = ("import sys\nfrom varedit.cli import main\n"
            "try:\n    main(['inpaint', 'nope.png', '--box', '1,1,9,9', '-o', 'o.png'])\n"
            "except SystemExit as e:\n    assert e.code == 1, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported before the input was checked'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "file not found" in r.stderr


# ---- wrong or misleading -----------------------------------------------------------------------------
def test_all_white_mask_is_filled_unconditionally(runner, files):
    Image.fromarray(np.full((96, 128), 255, np.uint8)).save(files / "white.png")
    res = run(runner, "inpaint", files / "base.png", "--mask", files / "white.png", "-o", files / "w.png")
    assert res.exit_code == 0, res.output
    side = json.loads((files / "w.json").read_text())
    assert side["label_source"].startswith("unconditional") and "label_posterior" not in side


def test_outpaint_amounts(runner, files):
    res = run(runner, "outpaint", files / "base.png", "--right", "50%", "--top", "16", "-o", files / "op.png",
              "--seed", "0")
    assert res.exit_code == 0, res.output
    assert Image.open(files / "op.png").size == (192, 112)
    side = json.loads((files / "op.json").read_text())
    assert side["right"] == 0.5 and side["top"] == 16


def test_upscale_keep_scales_zero_is_honoured(runner, files):
    res = run(runner, "upscale", files / "base.png", "--scale", "1.25", "--keep-scales", "0", "-o",
              files / "up.png", "--seed", "0")
    assert res.exit_code == 0, res.output
    assert json.loads((files / "up.json").read_text())["keep_scales"] == 0


def test_official_mode_sidecar_says_no_prefill(runner, files):
    res = run(runner, "inpaint", files / "base.png", "--box", "10,10,50,50", "--mode", "official", "-o",
              files / "off.png", "--seed", "0")
    assert res.exit_code == 0, res.output
    assert json.loads((files / "off.json").read_text())["prefill"] is None


def test_box_sidecar_reproduces_the_output(runner, files):
    """Everything needed to make the output again is in its sidecar (here through the Python API)."""
    res = run(runner, "inpaint", files / "base.png", "--box", "20,10,60,50", "-o", files / "r.png", "--n", "2")
    assert res.exit_code == 0, res.output
    side = json.loads((files / "r_1.json").read_text())
    assert side["box"] == [20, 10, 60, 50] and side["input"].endswith("base.png")
    from varedit import VarEditPipeline
    pipe = VarEditPipeline.from_pretrained(side["model"], device="cpu")
    keys = ("strategy", "mode", "n", "rank", "keep_scales", "grow_tokens", "feather", "prefill", "coverage", "harmonize",
            "paste_back", "cfg", "top_k", "top_p", "more_smooth", "guidance", "seed", "invert", "threshold")
    again = pipe.inpaint(side["input"], box=tuple(side["box"]), label=side["label"],
                         **{k: side[k] for k in keys}, output_type="np")
    assert np.array_equal(again.images[side["candidate"]], np.asarray(Image.open(files / "r_1.png")))


def test_help_puts_the_task_first_and_says_the_truth(runner):
    res = run(runner, "inpaint", "--help")
    assert res.exit_code == 0
    text = res.output
    assert text.index("Task options") < text.index("Sampling options") < text.index("Model options")
    assert "closed loop" not in text
    res = run(runner, "outpaint", "--help")
    for side in ("--right", "--top", "--bottom"):
        line = next(ln for ln in res.output.splitlines() if ln.strip().startswith(side))
        assert len(line.split()) > 2, f"{side} has no help text"


def test_unknown_class_lists_the_classes(runner, files):
    res = run(runner, "edit", files / "base.png", "--box", "1,1,30,30", "--class", "zebra", "-o", files / "o.png")
    assert one_line_error(res, "unknown class") and "circle" in res.output and "heart" in res.output


def test_models_info_list_and_classes(runner, official_files, golden_config):
    res = run(runner, "models", "info", "demo")
    assert res.exit_code == 0, res.output
    assert "10" in res.output and "circle" in res.output and len(res.output.splitlines()) < 30
    res = run(runner, "models", "info", official_files / "var_tiny.pth")
    assert res.exit_code == 0 and len(res.output.splitlines()) < 30, res.output
    full = json.loads(run(runner, "models", "info", official_files / "var_tiny.pth", "--json").output)
    assert full["file"]["var"]["depth"] == golden_config["var_ctor"]["depth"]
    assert full["files"]["vqvae"].endswith("vae_ch160v4096z32.pth")
    res = run(runner, "models", "list")
    assert "bundled:" in res.output and "var_d16.pth" in res.output and "missing" in res.output
    res = run(runner, "models", "classes", "var-d16", "--search", "goldfish")
    assert res.exit_code == 0 and res.output.split()[0] == "1"


def test_offline_preset_fails_fast_without_retries(runner, tmp_path, monkeypatch):
    """No network and no HF_HUB_OFFLINE: one probe, one line, no minute of retries."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    t0 = time.perf_counter()
    res = run(runner, "generate", "-m", "var-d16", "--class", "goldfish", "-o", tmp_path / "g")
    assert one_line_error(res, "cannot be reached") and "var_d16.pth" in res.output
    assert time.perf_counter() - t0 < 10 and "Retry" not in res.output
