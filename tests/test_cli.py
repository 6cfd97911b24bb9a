"""The command line: real runs through click's runner, and bad input gives one line and exit != 0."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from varedit.cli import main


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    (d / "in").mkdir()
    (d / "masks").mkdir()
    for i in range(2):
        small = (rng.random((5, 7, 3)) * 255).astype(np.uint8)
        Image.fromarray(small).resize((140, 100), Image.BICUBIC).save(d / "in" / f"im{i}.png")
        m = np.zeros((100, 140), np.uint8)
        m[30:60, 40 + 10 * i:90] = 255
        Image.fromarray(m).save(d / "masks" / f"im{i}.png")
    (d / "broken.png").write_text("not an image")
    return d


def _one_line_error(res) -> bool:
    return res.exit_code != 0 and "Traceback" not in res.output and res.output.strip().splitlines()[-1].startswith(
        ("Error", "failed"))


def test_generate_from_official_files(runner, cli_model, golden_config, tmp_path):
    c = min(3, golden_config["var_ctor"]["num_classes"] - 1)
    res = runner.invoke(main, ["generate", "-m", str(cli_model), "--class", str(c), "-n", "2",
                               "--seed", "5", "-o", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    pngs = sorted((tmp_path / "g").glob("*.png"))
    S = golden_config["image"]["size"]
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (S, S)
    side = json.loads(pngs[0].with_suffix(".json").read_text())
    assert side["seed"] == 5 and side["labels"] == [c, c]
    res2 = runner.invoke(main, ["generate", "-m", str(cli_model), "--class", str(c), "-n", "2",
                                "--seed", "5", "-o", str(tmp_path / "g2")])
    again = sorted((tmp_path / "g2").glob("*.png"))
    assert np.array_equal(np.asarray(Image.open(pngs[1])), np.asarray(Image.open(again[1]))), res2.output


def test_generate_bad_class_and_missing_model(runner, cli_model, golden_config, tmp_path):
    bad = str(golden_config["var_ctor"]["num_classes"] + 1)
    res = runner.invoke(main, ["generate", "-m", str(cli_model), "--class", bad,
                               "-o", str(tmp_path)])
    assert _one_line_error(res) and "out of range" in res.output
    res = runner.invoke(main, ["generate", "-m", str(tmp_path / "nope.pth"), "--class", "1", "-o", str(tmp_path)])
    assert _one_line_error(res)


def test_generate_preset_offline_error(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = runner.invoke(main, ["generate", "-m", "var-d30", "--class", "goldfish", "-o", str(tmp_path)])
    assert _one_line_error(res) and "var_d30.pth" in res.output


def test_models_list_and_info(runner, official_files, golden_config, scale_list_in_files, tmp_path):
    res = runner.invoke(main, ["models", "list"])
    assert res.exit_code == 0 and "var-d36" in res.output and "demo" in res.output
    res = runner.invoke(main, ["models", "info", str(official_files / "var_tiny.pth"), "--json"])
    assert res.exit_code == 0, res.output
    info, a = json.loads(res.output)["file"]["var"], golden_config["var_ctor"]
    assert info["depth"] == a["depth"] and info["num_classes"] == a["num_classes"]
    if scale_list_in_files:
        assert info["patch_nums"] == a["patch_nums"]
    else:  # the file leaves it open: say so, with the lists that fit
        assert info["patch_nums"] is None and a["patch_nums"] in info["patch_nums_candidates"]
    bad = tmp_path / "t.pth"
    bad.write_bytes((official_files / "var_tiny.pth").read_bytes()[:500])
    res = runner.invoke(main, ["models", "info", str(bad)])
    assert _one_line_error(res) and "truncated" in res.output


def test_inpaint_folder_with_paired_masks_and_sidecars(runner, cli_model, golden_config, images, tmp_path):
    out = tmp_path / "o"
    res = runner.invoke(main, ["inpaint", str(images / "in"), "--mask", str(images / "masks"), "-o", str(out),
                               "-m", str(cli_model), "--seed", "2", "--top-k", "20",
                               "--no-harmonize"])
    assert res.exit_code == 0, res.output
    for i in range(2):
        img = np.asarray(Image.open(out / f"im{i}.png"))
        src = np.asarray(Image.open(images / "in" / f"im{i}.png"))
        assert img.shape == src.shape and np.array_equal(img[:10], src[:10])
        side = json.loads((out / f"im{i}.json").read_text())
        assert side["seed"] == 2 and side["top_k"] == 20 and side["task"] == "inpaint"
        assert side["harmonize"] is False and side["mode"] == "default" and side["grow_tokens"] == 0
        assert side["label_source"] == "inferred" and 0 <= side["label"] < golden_config["var_ctor"]["num_classes"]
        assert side["cfg"] == 3.0
        assert side["prefill"] == "ns"  # the inpaint task's default
    # --prefill picks another fill of the hole before tokenising, and the sidecar says which
    out2 = tmp_path / "o2"
    res = runner.invoke(main, ["inpaint", str(images / "in"), "--mask", str(images / "masks"), "-o", str(out2),
                               "-m", str(cli_model), "--seed", "2", "--top-k", "20",
                               "--no-harmonize", "--prefill", "pushpull"])
    assert res.exit_code == 0, res.output
    assert json.loads((out2 / "im0.json").read_text())["prefill"] == "pushpull"
    assert not np.array_equal(np.asarray(Image.open(out2 / "im0.png")), np.asarray(Image.open(out / "im0.png")))
    res = runner.invoke(main, ["inpaint", str(images / "in"), "--mask", str(images / "masks"), "-o", str(out2),
                               "-m", str(cli_model), "--prefill", "magic"])
    assert res.exit_code == 2 and "Traceback" not in res.output and "magic" in res.output
    # --skip-existing does not touch finished outputs
    before = (out / "im0.png").stat().st_mtime_ns
    res = runner.invoke(main, ["inpaint", str(images / "in"), "--mask", str(images / "masks"), "-o", str(out),
                               "-m", str(cli_model), "--skip-existing"])
    assert res.exit_code == 0 and (out / "im0.png").stat().st_mtime_ns == before


def test_batch_goes_on_past_a_bad_file(runner, cli_model, images, tmp_path):
    out = tmp_path / "o"
    res = runner.invoke(main, ["inpaint", str(images / "in" / "im0.png"), str(images / "broken.png"),
                               "--box", "10,10,50,50", "-o", str(out), "-m", str(cli_model),
                               "--n", "2"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert (out / "im0_0.png").is_file() and (out / "im0_1.png").is_file()
    assert "broken.png" in res.output and "1 of 2 inputs failed" in res.output


def test_a_batch_checks_each_input_as_its_request_does(runner, cli_model, images, tmp_path):
    """The command only translates its options into a request: an input the request refuses (a box in
    pixels wholly outside a small image) fails with the request's own message before the model loads, and
    the batch goes on with the others."""
    from varedit.requests import InpaintRequest
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(small)
    with pytest.raises(ValueError) as e:
        InpaintRequest(box=(30, 30, 60, 60)).validate(None, (24, 20))
    out = tmp_path / "o"
    res = runner.invoke(main, ["inpaint", str(images / "in" / "im0.png"), str(small), "--box", "30,30,60,60",
                               "-o", str(out), "-m", str(cli_model), "--seed", "0"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"failed: {small}: {e.value}" in res.output and "1 of 2 inputs failed" in res.output
    assert (out / "im0.png").is_file() and not (out / "small.png").exists()


def test_outputs_never_overwrite_inputs(runner, cli_model, images):
    src = images / "in" / "im1.png"
    before = src.read_bytes()
    res = runner.invoke(main, ["inpaint", str(src), "--box", "1,1,20,20", "-o", str(src),
                               "-m", str(cli_model)])
    assert _one_line_error(res) and src.read_bytes() == before


@pytest.mark.parametrize("args,needle", [
    (["outpaint", "{img}", "-o", "{out}"], "nothing to extend"),
    (["outpaint", "{img}", "--left", "-3", "-o", "{out}"], "left must be >= 0"),
    (["edit", "{img}", "--box", "1,2,3", "-c", "1", "-o", "{out}"], "4 numbers"),
    (["edit", "{img}", "--box", "500,500,600,600", "-c", "1", "-o", "{out}"], "outside"),
    (["edit", "{img}", "--box", "1,1,30,30", "-c", "zebra", "-o", "{out}"], "class"),
    (["edit", "{img}", "-c", "1", "-o", "{out}"], "--box or --mask"),
    (["edit", "{img}", "--box", "1,1,30,30", "--mask", "{img}", "-c", "1", "-o", "{out}"], "--box or --mask"),
    (["inpaint", "{img}", "-o", "{out}"], "no mask"),
    (["inpaint", "{img}", "--box", "1,1,30,30", "-c", "zebra", "-o", "{out}"], "class"),
    (["outpaint", "{img}", "--right", "10", "-c", "99", "-o", "{out}"], "class"),
    (["inpaint", "{missing}", "--box", "1,1,9,9", "-o", "{out}"], "file not found"),
])
def test_bad_input_one_line(runner, cli_model, images, tmp_path, args, needle):
    fill = {"img": str(images / "in" / "im0.png"), "out": str(tmp_path / "x.png"),
            "missing": str(images / "nope.png")}
    argv = [a.format(**fill) for a in args] + ["-m", str(cli_model)]
    res = runner.invoke(main, argv)
    assert _one_line_error(res), res.output
    assert needle in res.output


def test_edit_takes_a_mask_or_a_folder_of_masks(runner, cli_model, images, tmp_path):
    """`edit --mask`: the region painted instead of boxed (a file for all inputs, or a folder paired by stem);
    a rectangular mask redraws exactly what the same --box does, with the edit's own plan."""
    img = images / "in" / "im0.png"
    m = np.zeros((100, 140), np.uint8)
    m[20:70, 30:100] = 255
    Image.fromarray(m).save(tmp_path / "rect.png")
    common = ["-c", "1", "--seed", "2", "-m", str(cli_model)]
    res = runner.invoke(main, ["edit", str(img), "--mask", str(tmp_path / "rect.png"), "-o", str(tmp_path / "a.png"),
                               *common])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["edit", str(img), "--box", "30,20,100,70", "-o", str(tmp_path / "b.png"), *common])
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))
    side = json.loads((tmp_path / "a.json").read_text())
    assert side["task"] == "edit" and side["coverage"] == 1.0 and side["mask"].endswith("rect.png")
    res = runner.invoke(main, ["edit", str(images / "in"), "--mask", str(images / "masks"), "-o",
                               str(tmp_path / "folder"), *common])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "folder").glob("*.png")) == ["im0.png", "im1.png"]


def test_outpaint_and_upscale_cli(runner, cli_model, golden_config, images, tmp_path):
    res = runner.invoke(main, ["outpaint", str(images / "in" / "im0.png"), "--right", "0.5", "-o",
                               str(tmp_path / "op.png"), "-m", str(cli_model), "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "op.png").size == (210, 100)
    res = runner.invoke(main, ["outpaint", str(images / "in" / "im0.png"), "--right", "0.5", "-o",
                               str(tmp_path / "op2.png"), "-m", str(cli_model), "--seed", "1",
                               "--class", "none"])
    assert res.exit_code == 0, res.output
    side = json.loads((tmp_path / "op2.json").read_text())
    assert side["label"] == golden_config["var_ctor"]["num_classes"] and side["label_source"] == "unconditional"
    res = runner.invoke(main, ["upscale", str(images / "in" / "im0.png"), "--scale", "1.5", "-o",
                               str(tmp_path / "up.png"), "-m", str(cli_model), "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "up.png").size == (210, 150)
