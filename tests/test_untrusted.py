"""Model files and ONNX manifests are input like any image: crafted ones give one-line errors, never a
traceback, never a write or read outside their place, never unbounded memory."""
from __future__ import annotations

import copy
import json
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from varedit.checkpoint import WeightsError, peek
from varedit.cli import main
from varedit.fileformat import read_weights, save_models
from varedit.validation import confined_path, safe_filename


@pytest.fixture(scope="module")
def good_file(golden_models, tmp_path_factory) -> Path:
    var, vae = golden_models
    p = tmp_path_factory.mktemp("good") / "model.pt"
    save_models(p, var=var, vae=vae, meta={"class_names": [[f"c{i}"] for i in range(var.num_classes)],
                                          "sampling": {"cfg": 2.0, "top_k": 5, "top_p": 0.9}})
    return p


def _crafted(good: Path, tmp_path: Path, edit) -> Path:
    obj = torch.load(good, weights_only=True)
    edit(obj)
    p = tmp_path / "crafted.pt"
    torch.save(obj, p)
    return p


def _cli_one_line(args) -> str:
    res = CliRunner().invoke(main, [str(a) for a in args])
    out = res.output.strip()
    assert res.exit_code != 0 and "Traceback" not in out and out.splitlines()[-1].startswith("Error"), out
    return out


# ---- names from files ------------------------------------------------------------------------------
@pytest.mark.parametrize("name,expect", [
    ("../escaped", "escaped"), ("/etc/passwd", "etc_passwd"), ("a/b\\c", "a_b_c"), ("..", "item"),
    ("CON", "_CON"), ("tab\there", "tab_here"), ("goldfish, Carassius auratus", "goldfish,_Carassius_auratus"),
    ("  ", "item"), ("x" * 300, "x" * 64), ("ünïcode", "ünïcode"),
])
def test_safe_filename(name, expect):
    s = safe_filename(name)
    assert s == expect and "/" not in s and "\\" not in s and not s.startswith(".")


def test_class_names_cannot_write_outside_the_output_folder(golden_models, tmp_path):
    var, vae = golden_models
    names = [["../escaped"], ["/tmp/absolute"], ["a/../../b"]] + [[f"c{i}"] for i in range(3, var.num_classes)]
    p = tmp_path / "evil_names.pt"
    save_models(p, var=var, vae=vae, meta={"class_names": names})
    out = tmp_path / "out" / "a" / "gen"
    for c in ("0", "1", "2"):
        res = CliRunner().invoke(main, ["generate", "-m", str(p), "--class", c, "--seed", "1", "-o", str(out)])
        assert res.exit_code == 0, res.output
    written = sorted(x.relative_to(tmp_path) for x in tmp_path.rglob("*") if x.is_file() and x.suffix != ".pt")
    assert all(str(w).startswith("out/a/gen/") for w in written), written
    assert len(written) == 6 and not (tmp_path / "escaped_1_000.png").exists()


# ---- self-describing files with wrong fields ---------------------------------------------------------
@pytest.mark.parametrize("edit,needle", [
    (lambda o: o["var"]["config"].__setitem__("depth", "six"), "VARConfig.depth is str"),
    (lambda o: o["var"].pop("state_dict"), "needs a config and a state_dict"),
    (lambda o: o["meta"]["sampling"].__setitem__("temperature", 2), "unknown sampling setting"),
    (lambda o: o["meta"]["sampling"].__setitem__("cfg", float("nan")), "finite"),
    (lambda o: o["meta"].__setitem__("class_names", 7), "class_names is int"),
    (lambda o: o["meta"].__setitem__("class_names", [["x"]]), "lists 1 classes"),
    (lambda o: o["meta"].__setitem__("class_names", [["bad\x00name"]] * len(o["meta"]["class_names"])),
     "bad name"),
    (lambda o: o.__setitem__("version", "2"), "version is '2'"),
    (lambda o: o.__setitem__("version", 99), "upgrade varedit"),
    (lambda o: o["var"]["config"].__setitem__("depth", 10 ** 9), "depth must be in"),
    (lambda o: o["var"]["config"].__setitem__("patch_nums", [1, 3, 2]), "strictly increasing"),
    (lambda o: o["vqvae"].__setitem__("config", [1, 2]), "needs a config"),
    (lambda o: o.__setitem__("meta", "x"), "meta is a str"),
])
def test_wrong_fields_are_one_line_errors(good_file, tmp_path, edit, needle):
    p = _crafted(good_file, tmp_path, edit)
    with pytest.raises(WeightsError, match=None) as e:
        read_weights(p)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert needle in _cli_one_line(["generate", "-m", p, "--class", "1", "-o", tmp_path / "g"])
    assert needle in _cli_one_line(["models", "info", p])


@pytest.mark.parametrize("drop", ["word_embed.weight", "pos_1LC"])
def test_official_file_missing_keys(official_files, tmp_path, drop):
    sd = torch.load(official_files / "var_tiny.pth", weights_only=True)
    del sd[drop]
    torch.save(sd, tmp_path / "var_x.pth")
    shutil.copy(official_files / "vae_ch160v4096z32.pth", tmp_path)
    from varedit import VarEditPipeline
    with pytest.raises(WeightsError, match=f"lacks {drop}"):
        VarEditPipeline.from_pretrained(tmp_path / "var_x.pth", device="cpu")
    assert drop in _cli_one_line(["models", "info", tmp_path / "var_x.pth"])


# official files whose tensors have unexpected shapes: 0-d, another rank, another size, an empty dimension.
# (file, key, shape written, what the one-line error must say)
_SHAPE_CASES = [
    ("var", "class_emb.weight", (), "class_emb.weight has shape [], expected a rank-2 tensor"),
    ("var", "pos_1LC", (), "pos_1LC has shape [], expected a rank-3 tensor"),
    ("var", "lvl_embed.weight", (), "lvl_embed.weight has shape [], expected a rank-2 tensor"),
    ("var", "blocks.0.attn.scale_mul_1H11", (), "scale_mul_1H11 has shape [], expected a rank-4 tensor"),
    ("var", "blocks.0.attn.mat_qkv.weight", (), "blocks.0.attn.mat_qkv.weight has shape [], expected [384, 128]"),
    ("var", "pos_1LC", (1, 130), "pos_1LC has shape [1, 130], expected a rank-3 tensor"),
    ("var", "head.weight", (512, 128, 1), "head.weight has shape [512, 128, 1], expected a rank-2 tensor"),
    ("var", "class_emb.weight", (0, 128), "class_emb.weight has shape [0, 128], expected [classes + 1, width] with no"),
    ("var", "blocks.0.ffn.fc2.weight", (128, 511), "blocks.0.ffn.fc2.weight has shape [128, 511], expected [128, 512]"),
    ("var", "blocks.0.attn.scale_mul_1H11", (1, 3, 1, 1), "not divisible by num_heads 3"),
    ("vae", "quantize.embedding.weight", (), "quantize.embedding.weight has shape [], expected a rank-2 tensor"),
    ("vae", "encoder.conv_in.weight", (), "encoder.conv_in.weight has shape [], expected a rank-4 tensor"),
    ("vae", "quant_conv.weight", (32, 32), "quant_conv.weight has shape [32, 32], expected a rank-4 tensor"),
    ("vae", "encoder.down.1.block.0.conv1.weight", (), "encoder.down.1.block.0.conv1.weight has shape []"),
    ("vae", "decoder.conv_out.weight", (3,), "decoder.conv_out.weight has shape [3], expected [3, 32, 3, 3]"),
    ("vae", "encoder.conv_in.weight", (33, 3, 3, 3), "shapes describe no valid model"),
]


@pytest.mark.parametrize("which,key,shape,needle", _SHAPE_CASES,
                         ids=[f"{w}-{k}-{list(s)}" for w, k, s, _ in _SHAPE_CASES])
def test_official_tensors_of_unexpected_shape_are_one_line_errors(official_files, scale_list_in_files, tmp_path,
                                                                  which, key, shape, needle):
    """Every tensor's rank is checked before the configuration is read from it, and every tensor's full shape
    against the model built from that configuration: one line naming the key and the shapes, exit 1."""
    if not scale_list_in_files:
        pytest.skip("the golden files leave the scale list open; the CLI would stop at that first")
    from PIL import Image
    var_f, vae_f = tmp_path / "var_x.pth", tmp_path / "vae_ch160v4096z32.pth"
    for src, dst in ((official_files / "var_tiny.pth", var_f), (official_files / "vae_ch160v4096z32.pth", vae_f)):
        sd = torch.load(src, weights_only=True)
        if (dst is var_f) == (which == "var"):
            assert key in sd
            sd[key] = torch.zeros(shape)
        torch.save(sd, dst)
    with pytest.raises(WeightsError) as e:
        from varedit import VarEditPipeline
        VarEditPipeline.from_pretrained(var_f, device="cpu")
    assert needle in str(e.value) and "\n" not in str(e.value)
    img = tmp_path / "in.png"
    Image.fromarray(np.full((128, 128, 3), 90, np.uint8)).save(img)
    res = CliRunner().invoke(main, ["inpaint", "--model", str(var_f), "--box", "10,10,60,60", "-o",
                                    str(tmp_path / "out"), str(img)])
    out = res.output.strip()
    assert res.exit_code == 1 and "Traceback" not in out and len(out.splitlines()) == 1, out
    assert out.startswith("Error: ") and needle in out, out
    assert not (tmp_path / "out").exists()


def test_half_precision_official_weights_load_as_float32(official_files, tmp_path, golden_models,
                                                        scale_list_in_files):
    for f in ("var_tiny.pth", "vae_ch160v4096z32.pth"):
        sd = torch.load(official_files / f, weights_only=True)
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, tmp_path / f)
    from varedit import VarEditPipeline
    pns = None if scale_list_in_files else golden_models[0].patch_nums
    pipe = VarEditPipeline.from_pretrained(tmp_path / "var_tiny.pth", device="cpu", patch_nums=pns)
    assert all(p.dtype == torch.float32 for p in pipe.var.parameters())
    img = pipe.generate(3, n=1, seed=0, top_k=1).tensors
    ref = VarEditPipeline(*golden_models, device="cpu").generate(3, n=1, seed=0, top_k=1).tensors
    assert img.shape == ref.shape and (img - ref).abs().mean() < 0.05  # fp16-rounded weights, same picture


# ---- memory: sizes checked before anything is materialised --------------------------------------------
def _rewrite_zip(src: Path, dst: Path, compress: str | None = None, resize: tuple[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if resize and info.filename.endswith(resize[0]):
                data = resize[1]
            kind = zipfile.ZIP_DEFLATED if compress and info.filename.endswith(compress) else zipfile.ZIP_STORED
            zout.writestr(info.filename, data, compress_type=kind)


def test_a_compressed_record_is_refused_before_it_is_inflated(tmp_path):
    """4 GiB of zeros would compress to a few MB; torch.save never compresses: refused from the directory."""
    big = tmp_path / "big.pt"
    torch.save({"w": torch.zeros(4 << 20)}, big)  # 16 MB stands in for 4 GiB: the check does not read data
    _rewrite_zip(big, tmp_path / "bomb.pt", compress="data/0")
    assert (tmp_path / "bomb.pt").stat().st_size < 200_000
    with pytest.raises(WeightsError, match="compressed"):
        read_weights(tmp_path / "bomb.pt")


def test_a_storage_of_the_wrong_size_is_refused(tmp_path):
    p = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1000)}, p)
    _rewrite_zip(p, tmp_path / "short.pt", resize=("data/0", b"\0" * 40))
    with pytest.raises(WeightsError, match="holds 40 bytes where its tensors need 4000"):
        peek(tmp_path / "short.pt")


def test_legacy_format_and_code_are_refused(tmp_path):
    p = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(3)}, p, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match="legacy"):
        read_weights(p)
    q = tmp_path / "code.pt"
    torch.save({"x": np.float64(1.0)}, q)  # a numpy scalar: a global outside the allow-list
    with pytest.raises(WeightsError, match="objects other than weights"):
        peek(q)


def test_peek_does_not_import_torch(good_file, golden_models):
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None\n"
            "from varedit.checkpoint import peek\n"
            "from varedit.modelinfo import model_info\n"
            f"i = model_info({str(good_file)!r})\n"
            f"assert i.num_classes == {golden_models[0].num_classes} and i.class_names[3] == ('c3',)\n"
            "assert i.defaults.cfg == 2.0\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- ONNX manifests ----------------------------------------------------------------------------------
def _manifest(tmp_path: Path) -> dict:
    files = {}
    for g in ("tokenizer", "sampler", "decoder"):
        (tmp_path / f"{g}.onnx").write_bytes(b"not really a graph")
        files[f"{g}.onnx"] = {"bytes": 18, "sha256": "0" * 64, "graph": g}
    io = [{"name": "x", "shape": [1, 3], "dtype": "float32"}]
    return {"format": "varedit-onnx", "format_version": 1,
            "model": {"name": "m", "image_size": 128, "patch_nums": [1, 2, 4, 8], "vocab_size": 512, "Cvae": 32,
                      "num_classes": 2, "class_names": [["a"], ["b"]]},
            "defaults": {"cfg": 3.0}, "batch": 1, "precision": "fp32",
            "graphs": {g: {"file": f"{g}.onnx", "inputs": io, "outputs": io} for g in ("tokenizer", "sampler",
                                                                                        "decoder")},
            "files": files}


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m["model"].pop("name"), "model.name"),
    (lambda m: m.__setitem__("files", ["tokenizer.onnx"]), "'files' is not an object"),
    (lambda m: m["files"]["sampler.onnx"].pop("bytes"), "no byte count"),
    (lambda m: m["model"].__setitem__("image_size", 0), "model.image_size"),
    (lambda m: m["model"].__setitem__("num_classes", "2"), "model.num_classes"),
    (lambda m: m["model"].__setitem__("class_names", [["a"], 5]), "class_names[1]"),
    (lambda m: m["defaults"].__setitem__("cfg", float("nan")), "finite"),
    (lambda m: m.__setitem__("batch", True), "batch"),
    (lambda m: m["files"].__setitem__("../../etc/passwd", {"bytes": 1, "sha256": "0" * 64}), "outside its folder"),
    (lambda m: m["files"].__setitem__("/etc/passwd", {"bytes": 1, "sha256": "0" * 64}), "outside its folder"),
    (lambda m: m["graphs"]["decoder"].__setitem__("file", "../x.onnx"), "checksummed"),
])
def test_crafted_manifests_are_refused(tmp_path, edit, needle):
    from varedit_onnx.runtime import OnnxRuntimeError, read_manifest
    m = _manifest(tmp_path)
    read_manifest_ok = copy.deepcopy(m)
    (tmp_path / "manifest.json").write_text(json.dumps(read_manifest_ok))
    read_manifest(tmp_path)  # the untouched one passes the schema
    edit(m)
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(OnnxRuntimeError) as e:
        read_manifest(tmp_path)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_manifest_files_through_a_link_out_are_refused(tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"secret")
    d = tmp_path / "export"
    d.mkdir()
    (d / "link.onnx").symlink_to(outside)
    with pytest.raises(ValueError, match="leads outside"):
        confined_path(d, "link.onnx", "manifest")
    assert confined_path(d, "sub/ok.onnx", "manifest") == d.resolve() / "sub/ok.onnx"


# ---- the Python API: clear ValueError / TypeError ----------------------------------------------------
def test_api_arguments(tiny_pipeline):
    pipe = tiny_pipeline
    img = np.zeros((64, 64, 3), np.uint8)
    for bad_mask in ([1, 2], 3):
        with pytest.raises(TypeError, match="a mask must be"):
            pipe.inpaint(img, bad_mask)
    with pytest.raises(ValueError, match="seed must be in"):
        pipe.inpaint(img, box=(1, 1, 9, 9), seed=2 ** 70)
    with pytest.raises(ValueError, match=r"batch_size must be in 1\.\.1024"):
        pipe.generate(1, batch_size=0)
    with pytest.raises(ValueError, match="cfg must be a finite number"):
        pipe.inpaint(img, box=(1, 1, 9, 9), cfg=math.nan)
    with pytest.raises(ValueError, match="scale must be a finite number"):
        pipe.upscale(img, scale=math.inf)
    with pytest.raises(TypeError, match="top_k must be an integer"):
        pipe.generate(1, top_k=2.5)
    with pytest.raises(TypeError, match="label must be"):
        pipe.inpaint(img, box=(1, 1, 9, 9), label=1.5)
    from varedit import VarEditPipeline
    with pytest.raises(WeightsError):
        VarEditPipeline.from_pretrained("var-d99")
    with pytest.raises(TypeError, match="preset name or a path"):
        VarEditPipeline.from_pretrained(3)


def test_torch_tensor_masks_are_accepted(tiny_pipeline):
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    m = torch.zeros(64, 64)
    m[10:30, 10:30] = 1
    a = tiny_pipeline.inpaint(img, m, seed=3, output_type="np").image
    b = tiny_pipeline.inpaint(img, m.numpy() > 0.5, seed=3, output_type="np").image
    assert np.array_equal(a, b)
    c = tiny_pipeline.inpaint(torch.from_numpy(img), m.bool(), seed=3, output_type="np").image
    assert np.array_equal(a, c)


def test_sampling_options_are_checked_before_any_backend_work(tiny_pipeline):
    """One validation for every backend: the Editor checks before the backend is called."""
    from varedit.tasks import Editor

    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __getattr__(self, k):
            return getattr(self.inner, k)

        def run(self, *a, **k):
            self.calls += 1
            return self.inner.run(*a, **k)

        def score_labels(self, *a, **k):
            self.calls += 1
            return self.inner.score_labels(*a, **k)

    backend = Counting(tiny_pipeline.editor.backend)
    ed = Editor(backend)
    img = np.zeros((64, 64, 3), np.uint8)
    for kw in ({"cfg": math.nan}, {"top_p": 1.5}, {"guidance": "cosine"}, {"top_k": -1}):
        with pytest.raises(ValueError):
            ed.inpaint(img, box=(1, 1, 20, 20), **kw)
    assert backend.calls == 0
