"""The ComfyUI node pack (varedit_plugins.comfyui), called as ComfyUI calls it, with real tensors.

ComfyUI itself cannot be installed here, so the nodes are imported and run directly: the classic
registration (INPUT_TYPES, RETURN_TYPES, FUNCTION, NODE_CLASS_MAPPINGS) is checked against its
conventions, and every node runs on the demo model (128 px) and the tiny official-format models.

"Exact" for float IMAGE tensors: every pixel farther than the feather width from the edited region
holds the very same float32 value as the input tensor (``torch.equal`` on those pixels): the nodes
hand float32 arrays to varedit, whose paste-back copies weight-0 pixels from the input without any
quantisation. For an image that came from 8-bit data (k / 255) the float -> uint8 -> float round trip
is therefore exact as well.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from varedit_plugins import comfyui
from varedit_plugins.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from varedit_plugins.comfyui.loader import MODEL_CACHE, ModelCache, VarEditModel, load_model, model_key
from varedit_plugins.comfyui.nodes import MODEL_TYPE, progress_callback

from varedit.data.synthetic import render

S = 128
WORKFLOW = Path(comfyui.__file__).parent / "workflows" / "varedit_api.json"
SAMPLING = dict(seed=0, cfg=-1.0, top_k=-1, top_p=-1.0)
EDITING = dict(candidates=1, keep_scales=0, mode="default", feather=-1.0)


def node(name: str):
    return NODE_CLASS_MAPPINGS[name]()


def run(name: str, **kw):
    n = node(name)
    return getattr(n, n.FUNCTION)(**kw)


@pytest.fixture(scope="module")
def demo() -> VarEditModel:
    (m,) = run("VarEditModelLoader", model="demo", backend="torch", device="cpu")
    return m


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two synthetic pictures as a ComfyUI IMAGE [2, 128, 128, 3], values k / 255."""
    return torch.from_numpy(np.stack([render(3, 7, S), render(5, 8, S)]).astype(np.float32) / 255)


def box_mask(b: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    m = torch.zeros(b, S, S)
    m[:, y0:y1, x0:x1] = 1.0
    return m


def far_from_box(h: int, w: int, y0: int, y1: int, x0: int, x1: int, feather: float) -> torch.Tensor:
    """Pixels whose Chebyshev distance to the box exceeds the feather width; their Euclidean distance
    is at least as large, so their paste-back weight is 0."""
    g = math.ceil(feather) + 1
    far = torch.ones(h, w, dtype=torch.bool)
    far[max(0, y0 - g):y1 + g, max(0, x0 - g):x1 + g] = False
    return far


# ---- registration -----------------------------------------------------------------------------------
def test_classic_registration_follows_comfyui_conventions():
    assert set(NODE_CLASS_MAPPINGS) == {"VarEditModelLoader", "VarEditInpaint", "VarEditOutpaint", "VarEditClassEdit",
                                        "VarEditUpscale", "VarEditGenerate", "VarEditInferLabel"}
    assert set(NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_CLASS_MAPPINGS)
    widget_types = {"INT", "FLOAT", "STRING", "BOOLEAN"}
    for name, cls in NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional"} and spec["required"]
        for section in spec.values():
            for inp, decl in section.items():
                kind, opts = decl[0], (decl[1] if len(decl) > 1 else {})
                if isinstance(kind, list):  # a combo: its default is one of its options
                    assert opts["default"] in kind, (name, inp)
                elif kind in widget_types:
                    assert "default" in opts, (name, inp)
                    if "min" in opts:
                        assert opts["min"] <= opts["default"] <= opts["max"], (name, inp)
                else:
                    assert kind in {"IMAGE", "MASK", MODEL_TYPE}, (name, inp)
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_IS_LIST) > 0
        assert callable(getattr(cls(), cls.FUNCTION)) and cls.CATEGORY == "varedit"
    assert NODE_CLASS_MAPPINGS["VarEditModelLoader"].RETURN_TYPES == (MODEL_TYPE,)
    assert NODE_CLASS_MAPPINGS["VarEditInpaint"].RETURN_TYPES == ("IMAGE", "IMAGE", "MASK", "STRING")
    seed = NODE_CLASS_MAPPINGS["VarEditInpaint"].INPUT_TYPES()["required"]["seed"][1]
    assert seed["control_after_generate"] is True and seed["max"] == 2 ** 64 - 1


def test_schema_registration_only_with_comfy_api():
    """comfy_entrypoint (the comfy_api registration) exists only where comfy_api imports."""
    has_api = importlib.util.find_spec("comfy_api") is not None
    assert hasattr(comfyui, "comfy_entrypoint") == has_api
    assert ("comfy_entrypoint" in comfyui.__all__) == has_api
    assert {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"} <= set(comfyui.__all__)


# ---- inpaint: exactness, batches, candidates -----------------------------------------------------------
def test_inpaint_keeps_unmasked_pixels_exact_and_edits_the_hole(demo, images):
    y0, y1, x0, x1 = 40, 90, 30, 100
    image, cands, mask, info = run("VarEditInpaint", model=demo, image=images, mask=box_mask(1, y0, y1, x0, x1),
                                   label="auto", **SAMPLING, **EDITING)
    assert image.shape == images.shape and image.dtype == torch.float32 and cands.shape == images.shape
    assert mask.shape == (2, S, S) and mask[:, y0:y1, x0:x1].eq(1).all() and mask.sum() == 2 * 50 * 70
    rows = json.loads(info)
    assert len(rows) == 2 and [r["seed"] for r in rows] == [0, 1] and rows[0]["label_source"] == "inferred"
    feather = rows[0]["feather"]
    assert feather == 4.0  # the default paste-back feather, in output pixels
    far = far_from_box(S, S, y0, y1, x0, x1, feather)
    assert far.sum() > 5000
    assert torch.equal(image[:, far], images[:, far])            # the same float32 values, bit for bit
    as_u8 = (images * 255).round().to(torch.uint8)
    assert torch.equal((image[:, far] * 255).round().to(torch.uint8), as_u8[:, far])
    assert torch.equal(image[:, far] * 255, (image[:, far] * 255).round())  # still k / 255 values
    hole = (image - images)[:, y0 + 8:y1 - 8, x0 + 8:x1 - 8].abs()
    assert hole.amax(dim=(1, 2, 3)).min() > 0.05                 # both holes were really regenerated
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_batch_item_equals_single_run_with_seed_plus_index(demo, images):
    masks = torch.stack([box_mask(1, 20, 60, 20, 60)[0], box_mask(1, 64, 110, 50, 120)[0]])  # one per image
    batch = run("VarEditInpaint", model=demo, image=images, mask=masks, label="none", **{**SAMPLING, "seed": 41},
                **EDITING)[0]
    second = run("VarEditInpaint", model=demo, image=images[1:], mask=masks[1:], label="none",
                 **{**SAMPLING, "seed": 42}, **EDITING)[0]
    assert torch.equal(batch[1:], second)
    assert not torch.equal(batch[0, 20:60, 20:60], images[0, 20:60, 20:60])
    assert torch.equal(batch[0, 80:, :], images[0, 80:, :])      # image 0's own mask, not image 1's


def test_candidates_are_ranked_and_best_is_first(demo, images):
    image, cands, _, info = run("VarEditInpaint", model=demo, image=images[:1], mask=box_mask(1, 40, 90, 30, 100),
                                label="none", **SAMPLING, **{**EDITING, "candidates": 3})
    assert cands.shape == (3, S, S, 3) and torch.equal(image[0], cands[0])
    scores = json.loads(info)[0]["scores"]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert not torch.equal(cands[0], cands[1])


def test_gray_and_rgba_images_keep_their_channels(demo, images):
    gray = images[:, :, :, :1].clone()
    rgba = torch.cat([images, torch.ones(2, S, S, 1)], dim=3)
    for img in (gray, rgba):
        out = run("VarEditInpaint", model=demo, image=img, mask=box_mask(1, 40, 90, 30, 100), label="none",
                  **SAMPLING, **EDITING)[0]
        far = far_from_box(S, S, 40, 90, 30, 100, 8.0)
        assert out.shape == img.shape and torch.equal(out[:, far], img[:, far])


# ---- bad inputs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, err, text", [
    (dict(image=torch.rand(S, S, 3)), ValueError, "[B, H, W, C]"),
    (dict(image=torch.rand(1, S, S, 2)), ValueError, "2 channels"),
    (dict(image=torch.zeros(0, S, S, 3)), ValueError, "empty"),
    (dict(image=np.zeros((1, S, S, 3), np.float32)), TypeError, "torch tensor"),
    (dict(image=torch.full((1, S, S, 3), float("nan"))), ValueError, "NaN"),
    (dict(image=torch.zeros(1, S, S, 3, dtype=torch.uint8)), ValueError, "float"),
    (dict(mask=torch.ones(1, 64, 64)), ValueError, "64x64 but the image is 128x128"),
    (dict(mask=torch.ones(3, S, S)), ValueError, "batch of 3"),
    (dict(mask=torch.ones(1, 1, S, S)), ValueError, "MASK [B, H, W]"),
    (dict(mask=torch.zeros(1, S, S)), ValueError, "mask is empty"),
    (dict(mask=torch.full((1, S, S), 0.4)), ValueError, "mask is empty"),     # soft mask under the threshold
    (dict(mask=torch.zeros(1, 64, 64)), ValueError, "mask is empty: paint"),  # LoadImage's placeholder (no alpha)
    (dict(mask=torch.zeros(64, 64)), ValueError, "mask is empty: paint"),
    (dict(mask=torch.full((1, 64, 64), float("nan"))), ValueError, "NaN"),
    (dict(label="zebra"), ValueError, "unknown class 'zebra'"),
    (dict(label="42"), ValueError, "out of range"),
    (dict(model="demo"), TypeError, "Model Loader"),
    (dict(cfg=-0.5), ValueError, "cfg must be"),
    (dict(seed=-1), ValueError, "seed must be"),
])
def test_bad_inputs_are_clear_errors(demo, kw, err, text):
    base = dict(model=demo, image=torch.rand(2, S, S, 3), mask=box_mask(1, 40, 90, 30, 100), label="auto",
                **SAMPLING, **EDITING)
    with pytest.raises(err) as e:
        run("VarEditInpaint", **{**base, **kw})
    assert text in str(e.value) and "\n" not in str(e.value)


def test_comfyui_placeholder_mask_is_reported_as_empty_by_every_node(demo, images):
    """LoadImage of an image without alpha gives zeros [1, 64, 64] whatever the image's size: every node that
    takes a mask says the mask is empty (not that it has the wrong size), before any work."""
    placeholder = torch.zeros(1, 64, 64)
    calls = {
        "VarEditInpaint": dict(label="auto", **SAMPLING, **EDITING),
        "VarEditClassEdit": dict(class_name="heart", x=0, y=0, width=0, height=0, **SAMPLING, **EDITING),
        "VarEditInferLabel": {},
    }
    for name, kw in calls.items():
        with pytest.raises(ValueError) as e:
            run(name, model=demo, image=images, mask=placeholder, **kw)
        msg = str(e.value)
        assert msg.startswith("the mask is empty") and "mask editor" in msg and "resize" not in msg, (name, msg)
        assert "\n" not in msg
    # a painted mask of the wrong size is still a size error
    painted = placeholder.clone()
    painted[:, 10:20, 10:20] = 1
    with pytest.raises(ValueError, match="64x64 but the image is 128x128"):
        run("VarEditInpaint", model=demo, image=images, mask=painted, **calls["VarEditInpaint"])


def test_mask_2d_applies_to_the_whole_batch_and_is_thresholded(demo, images):
    soft = torch.zeros(S, S)
    soft[40:90, 30:100] = 0.75
    soft[0:10, 0:10] = 0.25                                           # under 0.5: kept
    out, _, mask, _ = run("VarEditInpaint", model=demo, image=images, mask=soft, label="none", **SAMPLING,
                          **EDITING)
    assert mask.shape == (2, S, S) and mask[:, 0:10, 0:10].eq(0).all() and mask[:, 40:90, 30:100].eq(1).all()
    assert torch.equal(out[:, 0:10, 0:10], images[:, 0:10, 0:10])


def test_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="backend must be"):
        run("VarEditModelLoader", model="demo", backend="tensorflow", device="cpu")
    with pytest.raises(ValueError, match="export folder"):
        run("VarEditModelLoader", model="demo", backend="onnx", device="cpu")
    with pytest.raises(ValueError, match="no model"):
        run("VarEditModelLoader", model="  ", backend="torch", device="cpu")
    with pytest.raises(ValueError):  # a mistyped preset: varedit's own one-line error with a suggestion
        run("VarEditModelLoader", model="var-d17", backend="torch", device="cpu")


# ---- the other nodes -----------------------------------------------------------------------------------
def test_outpaint_extends_and_keeps_the_original(demo, images):
    image, _cands, mask, info = run("VarEditOutpaint", model=demo, image=images, left=0, right=32, top=0, bottom=16,
                                   fill="blur", label="auto", **SAMPLING, **EDITING)
    assert image.shape == (2, S + 16, S + 32, 3) and mask.shape == (2, S + 16, S + 32)
    assert mask[:, :S, :S].eq(0).all() and mask[:, S:, :].eq(1).all() and mask[:, :, S:].eq(1).all()
    feather = json.loads(info)[0]["feather"]
    g = math.ceil(feather) + 1
    assert torch.equal(image[:, :S - g, :S - g], images[:, :S - g, :S - g])
    with pytest.raises(ValueError, match="nothing to extend"):
        run("VarEditOutpaint", model=demo, image=images, left=0, right=0, top=0, bottom=0, fill="blur",
            label="auto", **SAMPLING, **EDITING)


def test_class_edit_box_or_mask(demo, images):
    box = dict(x=30, y=40, width=70, height=50)
    out, _, mask, info = run("VarEditClassEdit", model=demo, image=images, class_name="heart", **box, **SAMPLING,
                             **EDITING)
    rows = json.loads(info)
    assert [r["label"] for r in rows] == [9, 9] and rows[0]["task"] == "edit"
    assert rows[0]["coverage"] == 1.0  # a class edit's plan (every touched cell regenerated), as in the CLI
    assert torch.equal(mask, box_mask(2, 40, 90, 30, 100))
    far = far_from_box(S, S, 40, 90, 30, 100, 8.0)
    assert torch.equal(out[:, far], images[:, far])
    by_mask = run("VarEditClassEdit", model=demo, image=images, class_name="heart", x=0, y=0, width=0, height=0,
                  mask=box_mask(1, 40, 90, 30, 100), **SAMPLING, **EDITING)[0]
    assert torch.equal(by_mask, out)  # the same region, seeds and class: the same pixels
    with pytest.raises(ValueError, match="not both"):
        run("VarEditClassEdit", model=demo, image=images, class_name="heart", **box,
            mask=box_mask(1, 40, 90, 30, 100), **SAMPLING, **EDITING)
    with pytest.raises(ValueError, match="no mask"):
        run("VarEditClassEdit", model=demo, image=images, class_name="heart", x=0, y=0, width=0, height=0,
            **SAMPLING, **EDITING)
    with pytest.raises(ValueError, match="unknown class"):
        run("VarEditClassEdit", model=demo, image=images, class_name="zebra", **box, **SAMPLING, **EDITING)


def test_upscale_and_generate(demo, images):
    small = images[:, ::2, ::2, :].contiguous()
    up, info = run("VarEditUpscale", model=demo, image=small, scale=2.0, keep_scales=-1, back_project=True,
                   **SAMPLING)
    assert up.shape == (2, S, S, 3) and json.loads(info)[0]["keep_scales"] == 4
    with pytest.raises(ValueError, match="keep_scales"):
        run("VarEditUpscale", model=demo, image=small, scale=2.0, keep_scales=9, back_project=True, **SAMPLING)
    gen, ginfo = run("VarEditGenerate", model=demo, class_name="star", batch_size=3, **SAMPLING)
    assert gen.shape == (3, S, S, 3) and json.loads(ginfo)[0]["labels"] == [3, 3, 3]
    again = run("VarEditGenerate", model=demo, class_name="3", batch_size=3, **SAMPLING)[0]
    assert torch.equal(gen, again)  # name or index, same seed: the same images
    uncond = run("VarEditGenerate", model=demo, class_name="none", batch_size=1, **SAMPLING)[0]
    assert uncond.shape == (1, S, S, 3)
    with pytest.raises(ValueError, match="unknown class"):
        run("VarEditGenerate", model=demo, class_name="zebra", batch_size=1, **SAMPLING)


def test_infer_label_lists_one_entry_per_image(demo, images):
    mask = box_mask(1, 40, 90, 30, 100)
    names, idxs, probs, posts = run("VarEditInferLabel", model=demo, image=images, mask=mask)
    cls = NODE_CLASS_MAPPINGS["VarEditInferLabel"]
    assert cls.OUTPUT_IS_LIST == (True, True, True, True)
    assert len(names) == len(idxs) == len(probs) == len(posts) == 2
    for i in range(2):
        g = demo.editor.infer_label(images[i].numpy(), mask[0].numpy() > 0.5)
        assert idxs[i] == g.label and names[i] == demo.class_names[g.label]
        assert probs[i] == pytest.approx(float(g.posterior[g.label]))
        top = json.loads(posts[i])
        assert top[0][0] == names[i] and len(top) == 5
    with pytest.raises(ValueError, match="empty"):
        run("VarEditInferLabel", model=demo, image=images, mask=torch.zeros(1, S, S))
    with pytest.raises(ValueError, match="whole image"):
        run("VarEditInferLabel", model=demo, image=images, mask=torch.ones(1, S, S))


# ---- progress and the model cache ------------------------------------------------------------------------
class Recorder:
    """Records ProgressBar.update_absolute calls (the one method the pack calls on ComfyUI's bar)."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []

    def update_absolute(self, value, total=None, preview=None):
        self.calls.append((value, total))


def test_progress_covers_the_whole_batch(demo, images):
    bar = Recorder()
    for i in range(2):
        demo.editor.inpaint(images[i].numpy(), np.asarray(box_mask(1, 40, 90, 30, 100)[0] > 0), label="none", seed=0,
                            output_type="np", callback=progress_callback(bar, i, 2))
    scales = len(demo.editor.backend.patch_nums)
    assert bar.calls == [(v, 2 * scales) for v in range(1, 2 * scales + 1)]


def test_model_cache_is_keyed_bounded_and_reused(tmp_path, official_files):
    cache = ModelCache(max_entries=2)
    loads = []

    def loader(tag):
        def f():
            loads.append(tag)
            return object()
        return f
    a = cache.get_or_load(("a",), loader("a"))
    assert cache.get_or_load(("a",), loader("a")) is a and loads == ["a"]
    cache.get_or_load(("b",), loader("b"))
    cache.get_or_load(("a",), loader("a"))          # a is now the most recent
    cache.get_or_load(("c",), loader("c"))          # evicts b, the least recently used
    assert cache.keys() == [("a",), ("c",)] and loads == ["a", "b", "c"]
    cache.get_or_load(("b",), loader("b"))
    assert loads == ["a", "b", "c", "b"] and len(cache) == 2
    with pytest.raises(ValueError):
        ModelCache(max_entries=0)

    # keys: a preset by its normalised name; a file by path, size and mtime (a replaced file reloads)
    assert model_key("torch", "demo") == model_key("torch", " DEMO ".strip())
    assert model_key("torch", "demo", device="cpu") != model_key("torch", "demo", device="cuda")
    f = tmp_path / "var_tiny.pth"
    f.write_bytes((official_files / "var_tiny.pth").read_bytes())
    (tmp_path / "vae_ch160v4096z32.pth").write_bytes((official_files / "vae_ch160v4096z32.pth").read_bytes())
    cache = ModelCache(max_entries=2)
    m1 = load_model(str(f), device="cpu", cache=cache)
    assert load_model(str(f), device="cpu", cache=cache) is m1
    loader = NODE_CLASS_MAPPINGS["VarEditModelLoader"]
    before = loader.IS_CHANGED(model=str(f), backend="torch", device="cpu")
    assert before == loader.IS_CHANGED(model=str(f), backend="torch", device="cpu")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert loader.IS_CHANGED(model=str(f), backend="torch", device="cpu") != before  # ComfyUI reloads
    m2 = load_model(str(f), device="cpu", cache=cache)
    assert m2 is not m1 and m2.name == "var_tiny"


def test_loader_node_reuses_the_cached_model(demo):
    (again,) = run("VarEditModelLoader", model="demo", backend="torch", device="cpu")
    assert again is demo and demo.key in MODEL_CACHE
    assert len(MODEL_CACHE) <= MODEL_CACHE.max_entries


# ---- the tiny official-format models (torch and onnxruntime) -----------------------------------------------
def test_official_pth_with_vae_runs_the_nodes(official_files):
    (m,) = run("VarEditModelLoader", model=str(official_files / "var_tiny.pth"), backend="torch", device="cpu",
               vae=str(official_files / "vae_ch160v4096z32.pth"))
    assert m.image_size == 128 and m.num_classes == 10 and m.class_names == ()
    img = torch.from_numpy(np.stack([render(1, 3, S), render(2, 4, S)]).astype(np.float32) / 255)
    out, _, _, info = run("VarEditInpaint", model=m, image=img, mask=box_mask(1, 32, 96, 32, 96), label="4",
                          **SAMPLING, **EDITING)
    far = far_from_box(S, S, 32, 96, 32, 96, json.loads(info)[0]["feather"])
    assert torch.equal(out[:, far], img[:, far]) and not torch.equal(out, img)
    gen = run("VarEditGenerate", model=m, class_name="7", batch_size=2, **SAMPLING)[0]
    assert gen.shape == (2, S, S, 3)
    with pytest.raises(ValueError, match="no class names"):
        run("VarEditGenerate", model=m, class_name="star", batch_size=1, **SAMPLING)


@pytest.mark.slow  # an ONNX export of the tiny models takes about 20 s on 2 shared cores
def test_onnx_backend_runs_the_same_nodes(tmp_path_factory, golden_models):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from varedit_onnx.exporter import export_onnx
    var, vae = golden_models
    d = tmp_path_factory.mktemp("onnx_comfy")
    export_onnx(var, vae, d, batch=1, name="tiny", class_names=[f"c{i}" for i in range(var.num_classes)], check=False)
    (m,) = run("VarEditModelLoader", model=str(d), backend="onnx", device="cpu", threads=1)
    assert m.backend == "onnx" and m.class_names[:2] == ("c0", "c1")
    img = torch.from_numpy(np.stack([render(1, 3, S), render(2, 4, S)]).astype(np.float32) / 255)
    out, _, _, info = run("VarEditInpaint", model=m, image=img, mask=box_mask(1, 32, 96, 32, 96), label="c4",
                          **SAMPLING, **EDITING)
    assert json.loads(info)[0]["backend"] == "onnx"
    far = far_from_box(S, S, 32, 96, 32, 96, json.loads(info)[0]["feather"])
    assert torch.equal(out[:, far], img[:, far]) and not torch.equal(out, img)


# ---- the example workflow -----------------------------------------------------------------------------
# ComfyUI's core nodes the workflow uses: their inputs and outputs, as ComfyUI's nodes.py declares them
CORE = {"LoadImage": ({"image"}, ("IMAGE", "MASK")), "SaveImage": ({"images", "filename_prefix"}, ()),
        "PreviewImage": ({"images"}, ()), "PreviewAny": ({"source"}, ("STRING",))}


def test_example_workflow_is_valid_and_runs(demo):
    wf = json.loads(WORKFLOW.read_text())
    ours = {k for k, v in wf.items() if v["class_type"] in NODE_CLASS_MAPPINGS}
    assert {wf[k]["class_type"] for k in ours} >= {"VarEditModelLoader", "VarEditInpaint", "VarEditOutpaint",
                                                    "VarEditUpscale", "VarEditClassEdit", "VarEditGenerate",
                                                    "VarEditInferLabel"}

    def outputs(k):
        t = wf[k]["class_type"]
        return NODE_CLASS_MAPPINGS[t].RETURN_TYPES if t in NODE_CLASS_MAPPINGS else CORE[t][1]

    for k, n in wf.items():
        t = n["class_type"]
        assert t in NODE_CLASS_MAPPINGS or t in CORE, t
        if t in NODE_CLASS_MAPPINGS:
            spec = NODE_CLASS_MAPPINGS[t].INPUT_TYPES()
            req, opt = spec["required"], spec.get("optional", {})
            assert set(req) <= set(n["inputs"]) <= set(req) | set(opt), (k, t)
        else:
            assert set(n["inputs"]) == CORE[t][0], (k, t)
        for name, v in n["inputs"].items():
            if isinstance(v, list):                                   # a link [node id, output index]
                src, idx = v
                want = (NODE_CLASS_MAPPINGS[t].INPUT_TYPES()["required"] | NODE_CLASS_MAPPINGS[t].INPUT_TYPES().get(
                    "optional", {}))[name][0] if t in NODE_CLASS_MAPPINGS else None
                got = outputs(src)[idx]
                assert want is None or want == got, (k, name, want, got)
            elif t in NODE_CLASS_MAPPINGS:                            # a widget value of the right kind
                kind = NODE_CLASS_MAPPINGS[t].INPUT_TYPES()["required"][name][0]
                if isinstance(kind, list):
                    assert v in kind
                else:
                    assert {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}[kind] == type(v), (k, name)

    # run our nodes in dependency order; LoadImage's outputs are a small synthetic picture (64 px, to keep
    # the upscale cheap) and a hole
    img = torch.from_numpy(render(3, 11, 64)[None].astype(np.float32) / 255)
    hole = torch.zeros(1, 64, 64)
    hole[:, 20:44, 16:48] = 1
    values = {k: (img, hole) for k, n in wf.items() if n["class_type"] == "LoadImage"}
    todo = sorted(ours, key=int)
    while todo:
        k = next(k for k in todo if all(v[0] in values for v in wf[k]["inputs"].values() if isinstance(v, list)))
        todo.remove(k)
        kw = {name: (values[v[0]][v[1]] if isinstance(v, list) else v) for name, v in wf[k]["inputs"].items()}
        kw = {name: (demo if name == "model" and wf[k]["class_type"] != "VarEditModelLoader" else v)
              for name, v in kw.items()}
        values[k] = run(wf[k]["class_type"], **kw)
    final = next(k for k, n in wf.items() if n["class_type"] == "VarEditUpscale")
    assert values[final][0].shape == (1, 2 * 64, 2 * (64 + 64), 3)


def test_nodes_work_under_inference_mode(images):
    """ComfyUI runs nodes under torch.inference_mode(): a model loaded there works there and after."""
    with torch.inference_mode():
        m = load_model("demo", device="cpu", cache=ModelCache(max_entries=1))
        inside = run("VarEditInpaint", model=m, image=images[:1], mask=box_mask(1, 40, 90, 30, 100), label="none",
                     **SAMPLING, **EDITING)[0]
        gen = run("VarEditGenerate", model=m, class_name="ring", batch_size=1, **SAMPLING)[0]
    outside = run("VarEditInpaint", model=m, image=images[:1], mask=box_mask(1, 40, 90, 30, 100), label="none",
                  **SAMPLING, **EDITING)[0]
    assert torch.equal(inside, outside) and gen.shape == (1, S, S, 3)


# ---- ComfyUI's model management --------------------------------------------------------------------------
# Stand-ins for the parts of ComfyUI the pack uses, condensed from ComfyUI's comfy/model_management.py and
# comfy/model_patcher.py (v0.3.64) and run as module code, so that, as there, unload_all_models reaches
# free_memory through the module's globals, load_models_gpu detaches and re-inserts a model already loaded,
# and free_memory unloads (detaches) the models of its device, least recently loaded first, until enough
# memory is free.
FAKE_MODEL_MANAGEMENT = '''
import weakref
import torch

current_loaded_models = []
free_bytes = [1 << 40]      # what get_free_memory reports
empty_cache_calls = []


def get_torch_device():
    return torch.device("cpu")


def get_free_memory(dev=None, torch_free_too=False):
    return (free_bytes[0], free_bytes[0]) if torch_free_too else free_bytes[0]


def soft_empty_cache(force=False):
    empty_cache_calls.append(force)


class LoadedModel:
    def __init__(self, model):
        self._model = weakref.ref(model)
        self.device = model.load_device
        self.real_model = None
        self.currently_used = True

    @property
    def model(self):
        return self._model()

    def model_memory(self):
        return self.model.model_size()

    def model_load(self, lowvram_model_memory=0, force_patch_weights=False):
        self.model.partially_load(self.device, 1e32, force_patch_weights=force_patch_weights)
        self.real_model = weakref.ref(self.model.model)
        return self.model.model

    def model_unload(self, memory_to_free=None, unpatch_weights=True):
        self.model.detach(unpatch_weights)
        self.real_model = None
        return True

    def __eq__(self, other):
        return self.model is other.model


def free_memory(memory_required, device, keep_loaded=[]):
    unloaded = []
    for i in range(len(current_loaded_models) - 1, -1, -1):
        m = current_loaded_models[i]
        if m.device != device or m in keep_loaded:
            continue
        if get_free_memory(device) > memory_required:
            break
        if m.model_unload(memory_required - get_free_memory(device)):
            unloaded.append(current_loaded_models.pop(i))
    if unloaded:
        soft_empty_cache()
    return unloaded


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    to_load = [LoadedModel(m) for m in models]
    for lm in to_load:
        for i in range(len(current_loaded_models) - 1, -1, -1):
            if lm.model.is_clone(current_loaded_models[i].model):
                current_loaded_models.pop(i).model.detach(unpatch_all=False)
    for lm in to_load:
        if lm.device != torch.device("cpu"):
            free_memory(lm.model_memory() * 1.1 + memory_required, lm.device)
    for lm in to_load:
        lm.model_load()
        current_loaded_models.insert(0, lm)


def unload_all_models():
    free_memory(1e30, get_torch_device())


def throw_exception_if_processing_interrupted():
    pass
'''

FAKE_MODEL_PATCHER = '''
class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size
        self.parent = None
        self.callbacks = {}
        if getattr(self.model, "device", None) is None:
            self.model.device = offload_device
        self.model.model_loaded_weight_memory = 0

    def model_size(self):
        if self.size <= 0:
            self.size = sum(t.nelement() * t.element_size() for t in self.model.state_dict().values())
        return self.size

    def loaded_size(self):
        return self.model.model_loaded_weight_memory

    def current_loaded_device(self):
        return self.model.device

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
        if self.model.model_loaded_weight_memory > 0:
            return 0
        self.model.to(device_to)
        self.model.device = device_to
        self.model.model_loaded_weight_memory = self.model_size()
        return self.model_size()

    def add_callback(self, call_type, callback):
        self.callbacks.setdefault(call_type, {}).setdefault(None, []).append(callback)

    def detach(self, unpatch_all=True):
        if unpatch_all:
            self.model.to(self.offload_device)
            self.model.device = self.offload_device
            self.model.model_loaded_weight_memory = 0
        for c in self.callbacks.get("on_detach_after", {}).values():
            for callback in c:
                callback(self, unpatch_all)
        return self.model
'''


@pytest.fixture
def fake_comfy(monkeypatch):
    """comfy.model_management, comfy.model_patcher and comfy.patcher_extension as inside ComfyUI."""
    import sys
    import types
    pkg = types.ModuleType("comfy")
    pkg.__path__ = []
    mods = {"comfy": pkg}
    for name, src in (("model_management", FAKE_MODEL_MANAGEMENT), ("model_patcher", FAKE_MODEL_PATCHER),
                      ("patcher_extension", "class CallbacksMP:\n    ON_DETACH = 'on_detach_after'\n")):
        m = types.ModuleType(f"comfy.{name}")
        exec(compile(src, f"<fake comfy.{name}>", "exec"), m.__dict__)
        setattr(pkg, name, m)
        mods[f"comfy.{name}"] = m
    for k, v in mods.items():
        monkeypatch.setitem(sys.modules, k, v)
    return mods["comfy.model_management"]


def _registered(mm) -> list:
    return [lm.model for lm in mm.current_loaded_models]


def test_outside_comfyui_models_are_not_registered(demo):
    from varedit_plugins.comfyui.loader import comfy_model_management
    assert comfy_model_management() is None and demo.patcher is None
    demo.ready()  # nothing to do


def test_comfyui_free_models_unloads_varedit_models_and_empties_the_cache(fake_comfy, images, caplog):
    mm = fake_comfy
    cache = ModelCache(max_entries=2)
    m = load_model("demo", device="auto", cache=cache)
    assert m.device == "cpu" and m.patcher is not None        # auto = ComfyUI's device
    assert _registered(mm) == [m.patcher] and m.key in cache
    assert m.patcher.loaded_size() == m.patcher.model_size() > 0
    assert {n for n, _ in m.patcher.model.named_children()} == {"var", "vae"}

    # enough memory free: ComfyUI keeps it
    mm.free_memory(1 << 20, mm.get_torch_device())
    assert _registered(mm) == [m.patcher] and m.key in cache

    # a node makes ComfyUI load it (a detach without unpatching is bookkeeping, not an unload)
    kw = dict(model=m, image=images[:1], mask=box_mask(1, 40, 90, 30, 100), label="none", **SAMPLING, **EDITING)
    first = run("VarEditInpaint", **kw)[0]
    assert _registered(mm) == [m.patcher] and m.key in cache

    # "free models": ComfyUI unloads it, and varedit's cache lets go of it
    with caplog.at_level("INFO", logger="varedit_plugins.comfyui.loader"):
        mm.unload_all_models()
    assert _registered(mm) == [] and m.key not in cache and len(cache) == 0
    assert m.patcher.loaded_size() == 0 and mm.empty_cache_calls
    assert any("ComfyUI unloaded demo" in r.getMessage() for r in caplog.records)

    # ComfyUI's node cache may still hand the model to a node: it is loaded again and gives the same pixels
    again = run("VarEditInpaint", **kw)[0]
    assert _registered(mm) == [m.patcher] and torch.equal(first, again)

    # free_memory of another device leaves it alone; of its own device with too little free, unloads it
    mm.free_memory(1e30, torch.device("cuda", 0))
    assert _registered(mm) == [m.patcher]
    mm.free_bytes[0] = 0
    mm.free_memory(1 << 20, torch.device("cpu"))
    assert _registered(mm) == []


def test_comfyui_registers_onnx_exports_by_their_size(fake_comfy, tmp_path):
    """An ONNX model is registered too (its memory is onnxruntime's: ComfyUI counts the export's size) and is
    dropped from the cache when ComfyUI unloads it."""
    from varedit_plugins.comfyui import loader
    d = tmp_path / "export"
    d.mkdir()
    (d / "a.onnx").write_bytes(b"\0" * 1000)
    (d / "manifest.json").write_text("{}")
    cache = ModelCache(max_entries=2)
    stub = loader.VarEditModel(editor=None, name="stub", backend="onnx", device="CPUExecutionProvider",
                               image_size=64, class_names=(), key=("onnx", str(d)))
    vm = cache.get_or_load(stub.key, lambda: loader._register_with_comfy(stub, cache, str(d)))
    vm.ready()
    assert vm.patcher.model_size() == 1002 and _registered(fake_comfy) == [vm.patcher]
    fake_comfy.unload_all_models()
    assert vm.key not in cache and _registered(fake_comfy) == []


# ---- the real-host check (python -m varedit_plugins.comfyui.check_real_host) ----------------------------
def test_real_host_check_graphs_cover_every_node_and_skips_without_comfyui(monkeypatch, tmp_path, caplog):
    from varedit_plugins.comfyui import check_real_host as chk
    gs = chk.graphs("hole.png", "plain.png")
    used = {n["class_type"] for g in gs for n in g.prompt.values()}
    assert set(NODE_CLASS_MAPPINGS) <= used and set(chk.NODES) == set(NODE_CLASS_MAPPINGS)
    assert [g.name for g in gs if g.error] == ["empty_mask"]
    for g in gs:  # every varedit node of every graph has the inputs its declaration asks for
        for n in g.prompt.values():
            if n["class_type"] in NODE_CLASS_MAPPINGS:
                spec = NODE_CLASS_MAPPINGS[n["class_type"]].INPUT_TYPES()
                assert set(spec["required"]) <= set(n["inputs"]) <= set(spec["required"]) | set(spec.get("optional", {}))
    from PIL import Image
    import io
    pics = chk.pictures()
    alpha = np.asarray(Image.open(io.BytesIO(pics["varedit_check_hole.png"])).getchannel("A"))
    assert (alpha == 0).sum() == 50 * 70 and Image.open(io.BytesIO(pics["varedit_check_plain.png"])).mode == "RGB"
    monkeypatch.delenv("VAREDIT_COMFYUI", raising=False)
    with caplog.at_level("INFO", logger="varedit.comfyui.check"):
        assert chk.main([]) == 0
    assert "skipped" in caplog.text
    assert chk.main(["--comfyui", str(tmp_path)]) == 2  # not a ComfyUI checkout


@pytest.mark.skipif(not os.environ.get("VAREDIT_COMFYUI"),
                    reason="no real ComfyUI: set VAREDIT_COMFYUI to a ComfyUI checkout (and VAREDIT_COMFYUI_PYTHON to "
                           "the interpreter it runs with, varedit installed in it)")
def test_real_comfyui_runs_every_node_and_the_shipped_workflow(tmp_path):
    """Starts the real ComfyUI twice (classic and schema registration), runs every node and the shipped workflow
    through /prompt, the empty-mask error and /free (a few minutes on 2 cores)."""
    import subprocess
    import sys
    out = tmp_path / "result.json"
    r = subprocess.run([sys.executable, "-m", "varedit_plugins.comfyui.check_real_host", "--json", str(out)],
                       capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    res = json.loads(out.read_text())
    assert res["ok"] and [x["api"] for x in res["results"]] == ["classic", "v3"]
    assert res["results"][1]["same_images_as_classic"] is True
    for x in res["results"]:
        assert x["ok"] and x["free"] and x["graphs"]["empty_mask"]["error"].startswith("the mask is empty")
