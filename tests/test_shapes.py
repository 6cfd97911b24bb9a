"""The full-size presets built on the meta device have exactly the released keys, shapes and dtypes."""
from __future__ import annotations

import json

import pytest
import torch

from varedit.models.var import VAR
from varedit.models.vqvae import VQVAE
from varedit.presets import PRESETS, get_preset


@pytest.fixture(scope="module")
def shapes(golden_dir):
    p = golden_dir.parent / "official_shapes_full.json"
    if not p.is_file():
        pytest.skip("official_shapes_full.json not found")
    return json.loads(p.read_text())["models"]


def _table(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}


def _expected(entry) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k["key"]: (tuple(k["shape"]), k["dtype"]) for k in entry["keys"]}


@pytest.mark.parametrize("name", ["var-d16", "var-d20", "var-d24", "var-d30", "var-d36"])
def test_var_preset_matches_release(shapes, name):
    preset = get_preset(name)
    entry = shapes[preset.var_file.removesuffix(".pth")]
    with torch.device("meta"):
        var = VAR(preset.var_config())
    assert all(p.is_meta for p in var.parameters())
    assert _table(var) == _expected(entry)
    assert sum(p.numel() for p in var.parameters()) == entry["num_parameters"]


def test_vqvae_matches_release(shapes):
    entry = shapes["vae_ch160v4096z32"]
    with torch.device("meta"):
        vae = VQVAE(PRESETS["var-d16"].vae_config())
    assert _table(vae) == _expected(entry)
    assert sum(p.numel() for p in vae.parameters()) == entry["num_parameters"]
