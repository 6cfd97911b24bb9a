"""The front door: `models list|pull`, $VAREDIT_MODEL, `doctor`, the demo's note, one-line errors for the
extras, the export's progress, class suggestions, and the wheel (LICENSE, data files, no warnings).

Nothing here touches the network: downloads are emulated by copying local files, the Hugging Face cache
is a folder made here, and the official weights are stand-ins with the released structure (every tensor
a zero-stride view of one element, so a d16 file is 66 kB)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from varedit import presets as P
from varedit._optional import EXTRAS, MissingExtra, hint_for_import_error, install_command, require
from varedit.cli import main

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO.parent / "shared" / "golden" / "official_shapes_full.json"
REV = "0123456789abcdef0123456789abcdef01234567"
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "bool": 1}


@pytest.fixture()
def runner():
    return CliRunner()


def one_line_error(res, needle: str = "") -> bool:
    lines = [ln for ln in res.output.strip().splitlines() if ln.startswith("Error:")]
    return (res.exit_code == 1 and len(lines) == 1 and "Traceback" not in res.output
            and needle in lines[0] and not isinstance(res.exception, ImportError))


@pytest.fixture()
def clean_env(tmp_path, monkeypatch):
    """An empty Hugging Face cache, no weights dir, no default model, offline."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("VAREDIT_WEIGHTS", raising=False)
    monkeypatch.delenv("VAREDIT_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def put_in_hf_cache(cache: Path, name: str, src: Path) -> Path:
    repo = cache / "models--FoundationVision--var"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    snap = repo / "snapshots" / REV
    snap.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, snap / name)
    return snap / name


_STANDINS: dict[tuple[str, str], Path] = {}


def standin(tmp_path_factory, preset_name: str, role: str) -> Path:
    """A file with the released structure of a preset's VAR (role 'var') or the VQVAE (role 'vae'):
    every key, shape and dtype of the model, each tensor a zero-stride view of one element."""
    key = (preset_name, role)
    if key not in _STANDINS:
        from varedit.models.var import VAR
        from varedit.models.vqvae import VQVAE
        p = P.PRESETS[preset_name]
        with torch.device("meta"):
            m = VAR(p.var_config()) if role == "var" else VQVAE(p.vae_config())
        sd = {k: torch.zeros((), dtype=t.dtype).expand(t.shape) for k, t in m.state_dict().items()}
        path = tmp_path_factory.mktemp("standin") / f"{preset_name}-{role}.pth"
        torch.save(sd, path)
        _STANDINS[key] = path
    return _STANDINS[key]


# --------------------------------------------------------------------------------------------------
# the preset table's numbers
# --------------------------------------------------------------------------------------------------
def test_stored_sizes_match_the_official_record():
    """parameters and tensor bytes in presets.py = what the official code's models hold, key by key."""
    if not SHAPES.is_file():
        pytest.skip(f"{SHAPES} not found")
    rec = json.loads(SHAPES.read_text())["models"]
    by_file: dict[str, dict[str, int]] = {}
    for m in rec.values():
        got = {"parameters": sum(k["numel"] for k in m["keys"] if k["kind"] == "parameter"),
               "tensor_bytes": sum(k["numel"] * ITEMSIZE[k["dtype"]] for k in m["keys"])}
        assert got["parameters"] == m["num_parameters"]
        assert by_file.setdefault(m["file"], got) == got  # the VQVAE is recorded twice (256 / 512 px scales)
    assert by_file == P.OFFICIAL_FILES
    d16 = P.PRESETS["var-d16"]
    assert d16.parameters == by_file["var_d16.pth"]["parameters"] + by_file[P.VAE_FILE]["parameters"]
    assert d16.download_bytes == by_file["var_d16.pth"]["tensor_bytes"] + by_file[P.VAE_FILE]["tensor_bytes"]


def test_preset_facts():
    for p in P.PRESETS.values():
        assert p.license == "MIT" and p.memory_bytes("bf16") * 2 == pytest.approx(p.memory_bytes("fp32"), abs=2)
        assert p.parameters > 0
    demo = P.PRESETS["demo"]
    assert demo.download_bytes == 0 and demo.memory_bytes("fp32") == 4 * demo.parameters
    assert P.human_bytes(1_243_054_656) == "1.24 GB" and P.human_bytes(435_957_260) == "436 MB"


# --------------------------------------------------------------------------------------------------
# models list
# --------------------------------------------------------------------------------------------------
def test_models_list_says_sizes_licences_and_what_is_cached_where(runner, clean_env, tmp_path):
    hf = clean_env / "hf"
    vae = tmp_path / "vae.bin"
    vae.write_bytes(b"x" * 10)
    put_in_hf_cache(hf, P.VAE_FILE, vae)
    wd = tmp_path / "w"
    wd.mkdir()
    (wd / "var_d20.pth").write_bytes(b"y")
    res = runner.invoke(main, ["models", "list", "--json", "--weights-dir", str(wd)])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert list(rows) == list(P.PRESETS)
    d16, d20, d24, demo = rows["var-d16"], rows["var-d20"], rows["var-d24"], rows["demo"]
    assert d16["status"] == d24["status"] == "partly cached" and d20["status"] == "cached"  # one VQVAE for all
    files16 = {f["file"]: f for f in d16["files"]}
    assert files16[P.VAE_FILE]["where"] == "Hugging Face cache" and str(hf) in files16[P.VAE_FILE]["path"]
    assert not files16["var_d16.pth"]["cached"] and files16["var_d16.pth"]["bytes"] == 1_243_054_656
    assert d16["to_download_bytes"] == 1_243_054_656
    assert {f["file"]: f["where"] for f in d20["files"]} == {P.VAE_FILE: "Hugging Face cache",
                                                             "var_d20.pth": "weights dir"}
    assert d16["download_bytes"] == P.PRESETS["var-d16"].download_bytes and d16["license"] == "MIT"
    assert d16["memory_bytes"]["bf16"] < d16["memory_bytes"]["fp32"] and d16["image_size"] == 256
    assert demo["status"] == "bundled" and demo["parameters"] > 1e6 and demo["image_size"] == 128
    assert rows["var-d36"]["image_size"] == 512

    text = runner.invoke(main, ["models", "list", "--weights-dir", str(wd)]).output
    table = {ln.split()[0]: ln for ln in text.splitlines()[:len(P.PRESETS) + 1]}
    assert "1.68 GB" in table["var-d16"] and "MIT" in table["var-d16"] and "partly cached" in table["var-d16"]
    assert "256 px" in table["var-d16"] and "bundled" in table["demo"]
    assert f"weights dir: {wd / 'var_d20.pth'}" in text and "licence" in text and "memory:" in text


def test_models_list_and_doctor_import_no_torch(clean_env):
    code = ("import sys\nfrom varedit.cli import main\n"
            "main(['models', 'list'], standalone_mode=False)\n"
            "import varedit.commands.doctor\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "var-d16" in r.stdout


# --------------------------------------------------------------------------------------------------
# models pull
# --------------------------------------------------------------------------------------------------
def test_pull_offline_is_one_line_with_the_size(runner, clean_env):
    res = runner.invoke(main, ["models", "pull", "var-d16"])
    assert one_line_error(res, "offline") and "1.68 GB" in res.output
    assert "2 files to download, 1.68 GB" in res.stderr  # said before anything is tried
    res = runner.invoke(main, ["models", "download", "var-d16"])  # the earlier name still works
    assert one_line_error(res, "offline")
    res = runner.invoke(main, ["models", "pull", "demo"])
    assert res.exit_code == 0 and "bundled" in res.output


def test_pull_with_the_hub_out_of_reach(runner, clean_env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    res = runner.invoke(main, ["models", "pull", "var-d20"])
    assert one_line_error(res, "cannot be reached") and "2.84 GB" in res.output


@pytest.fixture()
def fake_hub(clean_env, monkeypatch, tmp_path_factory):
    """Downloads that copy stand-ins (the stored sizes set to theirs); returns the calls made."""
    import huggingface_hub

    from varedit import hub
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "hub_unreachable", lambda timeout=0: None)
    src = {P.VAE_FILE: standin(tmp_path_factory, "var-d16", "vae"),
           "var_d16.pth": standin(tmp_path_factory, "var-d16", "var")}
    for name, path in src.items():
        monkeypatch.setitem(P.OFFICIAL_FILES, name, {**P.OFFICIAL_FILES[name], "tensor_bytes": path.stat().st_size})
    calls: list[str] = []

    def download(repo_id, filename, *, cache_dir=None, local_dir=None, **kw):
        calls.append(filename)
        if local_dir is not None:
            Path(local_dir).mkdir(parents=True, exist_ok=True)
            return str(shutil.copy(src[filename], Path(local_dir) / filename))
        return str(put_in_hf_cache(Path(cache_dir), filename, src[filename]))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


def test_pull_says_the_size_downloads_and_verifies(runner, fake_hub, clean_env):
    rows = {r["name"]: r for r in json.loads(runner.invoke(main, ["models", "list", "--json"]).output)}
    assert rows["var-d16"]["status"] == "not cached"
    res = runner.invoke(main, ["models", "pull", "var-d16"])
    assert res.exit_code == 0, res.output
    assert fake_hub == [P.VAE_FILE, "var_d16.pth"]
    first = res.stderr.splitlines()[0]
    assert first.startswith("var-d16: 2 files to download") and "into the Hugging Face cache" in first
    assert res.stderr.count("verified") == 2 and "--model var-d16" in res.stderr
    rows = {r["name"]: r for r in json.loads(runner.invoke(main, ["models", "list", "--json"]).output)}
    assert rows["var-d16"]["status"] == "cached"
    # a second pull downloads nothing and verifies what is there
    res = runner.invoke(main, ["models", "pull", "var-d16"])
    assert res.exit_code == 0 and len(fake_hub) == 2 and "every file is here" in res.stderr


def test_pull_into_a_weights_dir(runner, fake_hub, clean_env):
    wd = clean_env / "weights"
    res = runner.invoke(main, ["-q", "models", "pull", "var-d16", "--weights-dir", str(wd)])
    assert res.exit_code == 0, res.output
    assert (wd / "var_d16.pth").is_file() and (wd / P.VAE_FILE).is_file() and res.stderr == ""


def test_pull_refuses_a_file_that_is_not_the_release(runner, fake_hub, clean_env, tmp_path_factory, monkeypatch):
    # a d20 file where d16 is expected: the structure check names the difference
    wrong = standin(tmp_path_factory, "var-d20", "var")
    monkeypatch.setitem(P.OFFICIAL_FILES, "var_d16.pth", {"parameters": 1, "tensor_bytes": wrong.stat().st_size})
    put_in_hf_cache(clean_env / "hf", "var_d16.pth", wrong)
    res = runner.invoke(main, ["models", "pull", "var-d16"])
    assert one_line_error(res, "is not var-d16") and "depth 20 (expected 16)" in res.output, res.output
    # a truncated file: its size says so before its structure is read
    good = standin(tmp_path_factory, "var-d16", "var")
    monkeypatch.setitem(P.OFFICIAL_FILES, "var_d16.pth", {"parameters": 1, "tensor_bytes": good.stat().st_size})
    cut = clean_env / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    put_in_hf_cache(clean_env / "hf", "var_d16.pth", cut)
    res = runner.invoke(main, ["models", "pull", "var-d16"])
    assert one_line_error(res, "truncated") and "models pull var-d16" in res.output


def test_a_failed_download_is_one_line(runner, fake_hub, monkeypatch):
    import huggingface_hub

    def boom(*a, **kw):
        raise ConnectionError("connection reset by peer\nsecond line")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)
    res = runner.invoke(main, ["models", "pull", "var-d16"])
    assert one_line_error(res, "downloading vae_ch160v4096z32.pth failed") and "again to resume" in res.output


# --------------------------------------------------------------------------------------------------
# VAREDIT_MODEL
# --------------------------------------------------------------------------------------------------
def test_varedit_model_is_the_default_model(runner, clean_env, monkeypatch, cli_model, tmp_path):
    monkeypatch.setenv("VAREDIT_MODEL", "var-d30")
    res = runner.invoke(main, ["generate", "--class", "goldfish", "-o", str(tmp_path / "g")])
    assert one_line_error(res, "var_d30.pth")  # the preset of the variable was asked for
    res = runner.invoke(main, ["inpaint", "--help"])
    assert "$VAREDIT_MODEL" in res.output
    monkeypatch.setenv("VAREDIT_MODEL", "var-d61")
    res = runner.invoke(main, ["serve", "--port", "1"])
    assert one_line_error(res, "var-d61") and "$VAREDIT_MODEL" in res.output
    # a model file named by the variable: generate runs on it, without the demo's note
    monkeypatch.setenv("VAREDIT_MODEL", str(cli_model))
    res = runner.invoke(main, ["generate", "--class", "1", "--n", "1", "--top-k", "1", "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o.png").is_file() and "demo model" not in res.stderr
    # --model wins over the variable
    res = runner.invoke(main, ["generate", "-m", "var-d24", "--class", "1", "-o", str(tmp_path / "g")])
    assert one_line_error(res, "var_d24.pth")


def test_commands_that_measure_the_demo_ignore_varedit_model(monkeypatch):
    import click

    from varedit.commands.common import ModelSpec
    monkeypatch.setenv("VAREDIT_MODEL", "var-d16")

    def default(*path: str) -> str:
        cmd = main
        for name in path:
            cmd = cmd.get_command(click.Context(cmd), name)
        return next(p for p in cmd.params if p.name == "model").get_default(click.Context(cmd))

    assert default("eval") == default("showcase") == "demo"
    for path in (["generate"], ["inpaint"], ["outpaint"], ["edit"], ["upscale"], ["export", "onnx"], ["serve"]):
        assert default(*path) == "var-d16", path
    assert ModelSpec().model == "demo"  # the Python side: no environment


# --------------------------------------------------------------------------------------------------
# the demo announces itself
# --------------------------------------------------------------------------------------------------
def test_the_demo_says_what_it_is_once_and_q_silences_it(runner, clean_env, tmp_path):
    from PIL import Image
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(photo)
    edit = ["inpaint", str(photo), "--box", "20,20,60,60", "--class", "none", "--seed", "0"]
    res = runner.invoke(main, [*edit, "-o", str(tmp_path / "a.png")])
    assert res.exit_code == 0, res.output
    notes = [ln for ln in res.stderr.splitlines() if "demo model" in ln]
    assert len(notes) == 1 and "synthetic shapes at 128 px" in notes[0]
    assert "varedit models pull var-d16" in notes[0] and "1.68 GB" in notes[0] and "VAREDIT_MODEL" in notes[0]
    assert "demo model" not in res.stdout
    res = runner.invoke(main, ["-q", *edit, "-o", str(tmp_path / "b.png")])
    assert res.exit_code == 0 and "demo model" not in res.output
    # generating the shapes it was trained on is what the demo is for: no note there
    res = runner.invoke(main, ["generate", "--class", "circle", "--n", "1", "-o", str(tmp_path / "c.png")])
    assert res.exit_code == 0 and "demo model" not in res.output


def test_the_loader_logs_the_demo_note(caplog):
    import logging

    from varedit.pipeline import VarEditPipeline
    with caplog.at_level(logging.INFO, logger="varedit"):
        VarEditPipeline.from_pretrained("demo", device="cpu")
    notes = [r for r in caplog.records if "synthetic shapes" in r.getMessage()]
    assert len(notes) == 1 and notes[0].name == "varedit.pipeline" and notes[0].levelno == logging.INFO


# --------------------------------------------------------------------------------------------------
# doctor
# --------------------------------------------------------------------------------------------------
def test_doctor_one_screen(runner, clean_env, monkeypatch):
    monkeypatch.setenv("COMFYUI_PATH", str(clean_env / "nowhere"))
    res = runner.invoke(main, ["doctor"])
    assert res.exit_code == 0, res.output
    out = res.output
    for label in ("varedit", "Python", "platform", "CPU", "torch", "onnxruntime", "onnxscript", "extras", "models",
                  "server", "ComfyUI"):
        assert re.search(rf"^{label}\s", out, re.M), f"no {label} line"
    assert torch.__version__ in out and "avx2" in out
    for name in EXTRAS:
        assert re.search(rf"^  {name}\s+(installed|missing)", out, re.M), name
    assert "demo.pt" in out and "varedit models pull var-d16" in out
    assert "no custom_nodes folder" in out


def test_doctor_without_torch_onnxruntime_or_the_server(runner, clean_env, monkeypatch):
    for m in ("torch", "onnxruntime", "onnxscript", "fastapi", "uvicorn"):
        monkeypatch.setitem(sys.modules, m, None)
    res = runner.invoke(main, ["doctor"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert re.search(r"^torch\s+not installed: pip install torch", out, re.M)
    assert re.search(r"^onnxruntime\s+not installed: pip install 'varedit\[cpu\]'", out, re.M)
    assert re.search(r"^server\s+cannot start: pip install 'varedit\[server\]'", out, re.M)
    assert re.search(r"^  export\s+missing\s+pip install 'varedit\[export\]'", out, re.M)


def test_doctor_lists_cuda_devices(monkeypatch):
    """The GPU lines, with torch's CUDA calls standing in for a machine with one GPU."""
    from types import SimpleNamespace

    from varedit.commands import doctor as D
    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 * 2 ** 30, major=9, minor=0)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **kw: True)
    text = "\n".join(D._torch())
    assert "(CUDA 12.8 build)" in text
    assert "cuda:0 NVIDIA H100 80GB HBM3, 80.0 GiB, compute capability 9.0, bf16 yes" in text


def test_doctor_reads_cpu_flags(tmp_path):
    from varedit.commands.doctor import cpu_info
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f amx_bf16\n\n"
                 "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f amx_bf16\n")
    c = cpu_info(f)
    assert c["model"] == "Test CPU 9000"
    assert c["flags"] == {"avx2": True, "avx512f": True, "avx512_bf16": False, "avx512_vnni": False,
                          "amx_bf16": True, "amx_int8": False}
    assert cpu_info(tmp_path / "none")["flags"] is None


def test_doctor_finds_the_nodes_in_a_comfyui(runner, clean_env, monkeypatch):
    root = clean_env / "ComfyUI"
    (root / "custom_nodes" / "varedit").mkdir(parents=True)
    (root / "custom_nodes" / "varedit" / "__init__.py").write_text("from varedit_plugins.comfyui import *\n")
    monkeypatch.setenv("COMFYUI_PATH", str(root))
    out = runner.invoke(main, ["doctor"]).output
    assert f"ComfyUI at {root}: varedit nodes installed (custom_nodes/varedit)" in out


# --------------------------------------------------------------------------------------------------
# extras: one line naming the extra, never a traceback
# --------------------------------------------------------------------------------------------------
def test_require_and_hints(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtra) as e:
        require(["json", "onnxscript", "onnxruntime"], "varedit export onnx")
    msg = str(e.value)
    assert "\n" not in msg and "onnxscript, onnxruntime" in msg
    assert "pip install 'varedit[export,cpu]' (or 'varedit[export,gpu]' on a machine with CUDA)" in msg
    assert require("json").dumps([1]) == "[1]"
    assert install_command(["server"]) == "pip install 'varedit[server]'"
    err = ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")
    assert hint_for_import_error(err) == "uvicorn is not installed: pip install 'varedit[server]'"
    assert "No module named 'zzz'" in hint_for_import_error(ModuleNotFoundError("No module named 'zzz'", name="zzz"))


def test_extras_table_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")
    opt = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {k: sorted(re.split(r"[<>=!~ ;\[]", r)[0].lower() for r in v) for k, v in opt.items() if k != "test"}
    assert names == {k: sorted(e.packages) for k, e in EXTRAS.items()}
    base = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(d.startswith(("onnx", "onnxruntime")) for d in base)  # exports run without onnx; runtime: an extra


def test_export_onnx_without_its_packages(runner, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    res = runner.invoke(main, ["export", "onnx", "-o", str(tmp_path / "e")])
    assert one_line_error(res, "pip install 'varedit[export]'") and "onnxscript" in res.output
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    res = runner.invoke(main, ["export", "onnx", "-o", str(tmp_path / "e")])
    assert one_line_error(res, "'varedit[export,cpu]'") and not (tmp_path / "e").exists()


def test_onnx_backend_without_onnxruntime(runner, tmp_path, monkeypatch):
    from PIL import Image
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    res = runner.invoke(main, ["inpaint", str(tmp_path / "a.png"), "--box", "4,4,20,20", "--backend", "onnx",
                               "--onnx-dir", str(tmp_path), "-o", str(tmp_path / "o.png")])
    assert one_line_error(res, "--backend onnx needs onnxruntime: pip install 'varedit[cpu]'")


def test_serve_without_the_server_extra(runner, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    res = runner.invoke(main, ["serve", "--port", "1"])
    assert one_line_error(res, "varedit serve needs uvicorn: pip install 'varedit[server]'")


def test_eval_without_the_judge_or_the_photos(runner, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    res = runner.invoke(main, ["eval", "--out", str(tmp_path / "r")])
    assert one_line_error(res, "pip install 'varedit[eval]'") and "--judge none" in res.output
    monkeypatch.setitem(sys.modules, "skimage", None)
    res = runner.invoke(main, ["eval", "--real", "--judge", "none", "--out", str(tmp_path / "r")])
    assert one_line_error(res, "varedit[photos]")


def test_training_losses_without_their_packages(runner, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_msssim", None)
    res = runner.invoke(main, ["train", "vqvae", "--synthetic", "8", "--msssim", "0.1", "--run-dir", str(tmp_path / "r")])
    assert one_line_error(res, "pip install 'varedit[train]'") and "--msssim 0" in res.output
    from varedit.training.losses import MSSSIMLoss
    with pytest.raises(MissingExtra, match=r"varedit\[train\]"):
        MSSSIMLoss()


def test_any_escaping_import_error_is_one_line(monkeypatch):
    """A missing optional module deep inside a command: still one line, naming its extra."""
    import click

    from varedit.cli import VareditGroup

    @click.group(cls=VareditGroup)
    def grp() -> None:
        pass

    @grp.command()
    def boom() -> None:
        raise ModuleNotFoundError("No module named 'onnx'", name="onnx")

    res = CliRunner().invoke(grp, ["boom"], obj={})
    assert res.exit_code == 1 and res.output.strip() == "Error: onnx is not installed: pip install 'varedit[export]'"


# --------------------------------------------------------------------------------------------------
# export progress, class suggestions
# --------------------------------------------------------------------------------------------------
def test_exporter_reports_each_stage(golden_models, tmp_path, monkeypatch):
    from varedit_onnx import exporter as E
    monkeypatch.setattr(E, "_export_graph", lambda *a, **kw: 0.0)
    monkeypatch.setattr(E, "_check_model", lambda path: None)
    monkeypatch.setattr(E, "validate_export", lambda *a, **kw: {})
    var, vae = golden_models
    stages: list[str] = []
    E.export_onnx(var, vae, tmp_path / "e", progress=stages.append)
    assert [s.split(":")[1].split()[0] for s in stages[:-1]] == ["exporting", "onnx.checker"] * 4
    assert "tokenizer.onnx" in stages[0] and "sampler.onnx" in stages[2] and stages[-1].startswith("parity run")


def test_export_command_prints_stages_with_times_and_q_hides_them(runner, tmp_path, monkeypatch):
    from varedit_onnx import exporter as E
    monkeypatch.delenv("VAREDIT_MODEL", raising=False)

    def fake_export(var, vae, out, progress=None, **kw):
        for s in ("graph 1/1: exporting tokenizer.onnx", "parity run"):
            progress(s)
        return {"model": {"name": "demo"}, "precision": "fp32", "batch": 1, "opset": 23, "files": {}}
    monkeypatch.setattr(E, "export_onnx", fake_export)
    res = runner.invoke(main, ["export", "onnx", "-o", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    assert re.fullmatch(r"\[\s*\d+\.\d s\] loading demo", lines[0])
    assert re.fullmatch(r"\[\s*\d+\.\d s\] graph 1/1: exporting tokenizer.onnx", lines[1])
    assert re.fullmatch(r"\[\s*\d+\.\d s\] done in \d+\.\d s: .*", lines[-1])
    res = runner.invoke(main, ["-q", "export", "onnx", "-o", str(tmp_path / "e")])
    assert res.exit_code == 0 and res.stderr == ""


def test_unknown_class_suggests_only_what_it_lists():
    from varedit.classes import ClassError, resolve_class
    from varedit.modelinfo import model_info
    info = model_info("demo")
    for wrong in ("dog", "hart", "disco", "lien", "pentagon"):
        with pytest.raises(ClassError) as e:
            resolve_class(wrong, info.class_names, info.num_classes)
        msg = str(e.value)
        listed = msg.split("(classes: ")[1]
        for s in re.findall(r"'([^']+)'", msg.split("(classes: ")[0])[1:]:  # [0] is what was asked
            assert re.search(rf"\b{re.escape(s)}\b", listed), f"{s!r} suggested but not listed: {msg}"
    with pytest.raises(ClassError, match=r"'dot' \(circle\)"):
        resolve_class("dog", info.class_names, info.num_classes)


# --------------------------------------------------------------------------------------------------
# packaging
# --------------------------------------------------------------------------------------------------
def test_license_and_spdx():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the varedit authors" in text
    s = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', s, re.M) and re.search(r'^license-files = \["LICENSE"\]$', s, re.M)


def _package_sources(dest: Path) -> None:
    """What setuptools builds from: pyproject.toml, README.md, LICENSE and each package's own folder
    (not the rest of the working tree)."""
    import tomllib
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / f, dest / f)
    dirs = cfg["package-dir"]
    for pkg in cfg["packages"]:
        top, *rest = pkg.split(".")
        src = REPO / dirs.get(top, top) / Path(*rest) if rest else REPO / dirs.get(top, top)
        out = dest / src.relative_to(REPO)
        out.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file() and not f.name.endswith((".pyc", ".pyo")):
                shutil.copy(f, out / f.name)


def test_wheel_holds_the_data_and_builds_without_warnings(tmp_path):
    pytest.importorskip("tomllib")
    try:
        import setuptools
        import wheel  # noqa: F401
    except ImportError:
        pytest.skip("setuptools and wheel are needed to build offline")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (the SPDX licence string needs 77)")
    src = tmp_path / "src"
    src.mkdir()
    _package_sources(src)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PIP_ROOT_USER_ACTION="ignore", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-v", "-w", str(tmp_path / "w"), str(src)], capture_output=True, text=True, env=env,
                       timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    warnings = [ln for ln in out.splitlines() if "warning" in ln.lower()]
    assert not warnings, "\n".join(warnings)
    import zipfile
    (whl,) = (tmp_path / "w").glob("varedit-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for need in ("varedit/assets/demo/demo.pt", "varedit/assets/imagenet_classes.json",
                 "varedit/server/static/index.html", "varedit/server/static/style.css",
                 "varedit/server/static/js/app.js", "varedit_plugins/comfyui/workflows/varedit_api.json",
                 "varedit/_optional.py", "varedit/commands/doctor.py", "varedit_onnx/runtime.py"):
        assert need in names, need
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in meta and "Requires-Dist: onnx" not in meta.split("Provides-Extra")[0]


def test_a_reader_that_goes_away_is_no_error():
    """`varedit models list | head -1`: the closed pipe ends the command quietly (no 'Error: Broken pipe')."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the command writes its first line
    try:
        p = subprocess.run([sys.executable, "-c", "from varedit.cli import run; run()", "models", "list"],
                           stdout=w, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 141 and b"Error" not in p.stderr and b"Traceback" not in p.stderr, p.stderr
