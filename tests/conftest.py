"""Shared fixtures: the golden directory (official reference data) and tiny seeded models."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("VAREDIT_GOLDEN_DIR", REPO.parent / "shared" / "golden" / "official_var_a"))


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run the tests marked slow")


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for it in items:
            if "gpu" in it.keywords:
                it.add_marker(skip)
    # slow tests (load tests, long measurements) run when asked: --run-slow, or -m selecting them
    if not config.getoption("--run-slow") and "slow" not in (config.getoption("-m") or ""):
        skip_slow = pytest.mark.skip(reason="slow: run with --run-slow (or -m slow)")
        for it in items:
            if "slow" in it.keywords:
                it.add_marker(skip_slow)


@pytest.fixture()
def one_torch_thread():
    """One torch thread for the test, restored after it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN_DIR / "config.json").is_file():
        pytest.skip(f"golden data not found at {GOLDEN_DIR} (set VAREDIT_GOLDEN_DIR)")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def golden_config(golden_dir) -> dict:
    return json.loads((golden_dir / "config.json").read_text())


@pytest.fixture(scope="session")
def golden_models(golden_dir, golden_config):
    """The official tiny models, built from config.json's constructor arguments and loaded strictly."""
    from varedit.building import build_var, build_vqvae
    from varedit.fileformat import read_weights
    from varedit.official import configs_from_official_ctor
    c = golden_config
    vae_cfg, var_cfg = configs_from_official_ctor(c["vqvae_ctor"], c["var_ctor"], c.get("vqvae_ctor_implicit_defaults"))
    vae = build_vqvae(vae_cfg, read_weights(golden_dir / "vae.pth"))
    var = build_var(var_cfg, read_weights(golden_dir / "var.pth"))
    return var, vae


@pytest.fixture(scope="session")
def golden_cases(golden_dir) -> dict:
    return torch.load(golden_dir / "cases.pt", weights_only=True)


@pytest.fixture(scope="session")
def golden_edit_cases(golden_dir) -> dict:
    path = golden_dir / "cases_edit.pt"
    if not path.is_file():
        pytest.skip("no cases_edit.pt in the golden directory")
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="session")
def official_files(tmp_path_factory, golden_dir) -> Path:
    """The golden weights laid out like a download: var file + vae_ch160v4096z32.pth beside it."""
    import shutil
    d = tmp_path_factory.mktemp("official")
    shutil.copy(golden_dir / "var.pth", d / "var_tiny.pth")
    shutil.copy(golden_dir / "vae.pth", d / "vae_ch160v4096z32.pth")
    return d


@pytest.fixture(scope="session")
def scale_list_in_files(golden_dir) -> bool:
    """Whether the official files alone determine the scale list: they hold only the number of scales
    and the sum of their squares, which several lists can share (e.g. 1,2,3,4,6,9,12 and 1,2,4,5,8,9,10)."""
    from varedit.fileformat import read_weights
    from varedit.official import ScaleListError, infer_var_config
    try:
        infer_var_config(read_weights(golden_dir / "var.pth"))
    except ScaleListError:
        return False
    return True


@pytest.fixture(scope="session")
def cli_model(official_files, golden_models, scale_list_in_files) -> Path:
    """A model file the CLI loads with nothing but its path: the official VAR file (its VQVAE beside it),
    or, when the files leave the scale list open, a self-describing varedit file of the same models."""
    if scale_list_in_files:
        return official_files / "var_tiny.pth"
    from varedit.fileformat import save_models
    var, vae = golden_models
    path = official_files / "tiny_varedit.pt"
    if not path.is_file():
        save_models(path, var=var, vae=vae)
    return path


@pytest.fixture(scope="session")
def tiny_pipeline(golden_models):
    from varedit.pipeline import VarEditPipeline
    var, vae = golden_models
    return VarEditPipeline(var, vae, device="cpu", name="tiny")


@pytest.fixture(scope="session")
def shape_classifier():
    """The bundled shape classifier (the one `varedit eval` reads the demo's images with), loaded once."""
    from varedit.evaluation.classifier import load_classifier
    clf, _ = load_classifier(REPO / "varedit" / "assets" / "demo" / "classifier.pt")
    return clf


@pytest.fixture(scope="session")
def demo_pipeline():
    """The bundled demo model, loaded once per session: tests that only use it must not change it."""
    from varedit.pipeline import VarEditPipeline
    return VarEditPipeline.from_pretrained("demo", device="cpu")


@pytest.fixture(scope="session")
def tiny_onnx_export(tmp_path_factory, golden_models) -> Path:
    """The tiny golden models exported once per session (fp32, batch 2, class names c0..; the export's
    own parity check is left to the tests that ask for it): read it, copy it before changing anything."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from varedit_onnx.exporter import export_onnx
    var, vae = golden_models
    d = tmp_path_factory.mktemp("onnx_tiny_fp32")
    export_onnx(var, vae, d, batch=2, name="tiny", class_names=[f"c{i}" for i in range(var.num_classes)],
                check=False)
    return d


def _paint_stroke(page, *points: tuple[float, float], steps: int = 6) -> None:
    """A brush stroke through ``points`` (image pixels, at least two) on the editor's canvas, as a user
    drags the mouse."""
    assert len(points) >= 2, points
    xy = [page.evaluate(f"window.varedit.imageToClient({x}, {y})") for x, y in points]
    page.mouse.move(xy[0]["x"], xy[0]["y"])
    page.mouse.down()
    for p in xy[1:]:
        page.mouse.move(p["x"], p["y"], steps=steps)
    page.mouse.up()


@pytest.fixture(scope="session")
def paint_stroke():
    """``paint_stroke(page, (x0, y0), (x1, y1), ..., steps=6)``: one brush stroke on the editor's canvas."""
    return _paint_stroke
