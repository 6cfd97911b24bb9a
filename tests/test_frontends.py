"""One request, one meaning: the same numbers through the Python API, the command line, the HTTP server
and the ComfyUI nodes give the same canvas, hit the same limits and fail with the same message.

The demo model is loaded once (through the ComfyUI loader) and its Editor serves the API and the server;
only the one successful command-line run loads it again. Every refusal happens before any model work."""
from __future__ import annotations

import base64
import io
from dataclasses import MISSING, fields, replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image
from varedit_plugins.comfyui import NODE_CLASS_MAPPINGS

from varedit.cli import main
from varedit.processing import AMOUNT_HELP
from varedit.requests import (MAX_UPSCALE, REQUESTS, EditRequest, GenerateRequest, InferLabelRequest,
                              InpaintRequest, OutpaintRequest, Sampling, UpscaleRequest)
from varedit.server import ServerConfig, create_app

W, H = 64, 48
AMBIGUOUS = f"is ambiguous (pixels or a ratio of the side?): give {AMOUNT_HELP}"
NOTHING = "nothing to extend: left, right, top and bottom are all 0"


def node(name: str, **kw):
    n = NODE_CLASS_MAPPINGS[name]()
    return getattr(n, n.FUNCTION)(**kw)


@pytest.fixture(scope="module")
def model():
    (m,) = node("VarEditModelLoader", model="demo", backend="torch", device="cpu")
    return m


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model.editor, ServerConfig())) as c:
        yield c


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return (np.random.default_rng(3).random((H, W, 3)) * 255).astype(np.uint8)


def b64(a: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def server_error(client, task: str, body: dict) -> str:
    r = client.post(f"/api/v1/{task}", json=body)
    assert r.status_code == 422, r.text
    return r.json()["detail"]


def cli_error(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code != 0 and "Traceback" not in res.output
    return " ".join(res.output.split())


SAMPLING = dict(seed=0, cfg=-1.0, top_k=-1, top_p=-1.0)
EDITING = dict(candidates=1, keep_scales=0, mode="default", feather=-1.0)


def test_outpaint_amounts_make_the_same_canvas_everywhere(model, client, photo, tmp_path):
    """32 px on the right and half the height below: an int, a float below 1 or a percentage."""
    want = (W + 32, H + H // 2)
    api = model.editor.outpaint(photo, right=32, bottom=0.5, seed=0, output_type="np").image
    assert api.shape[1::-1] == want
    r = client.post("/api/v1/outpaint", json={"image": b64(photo), "right": 32, "bottom": "50%", "seed": 0})
    assert r.status_code == 200, r.text and (r.json()["width"], r.json()["height"]) == want
    assert (r.json()["width"], r.json()["height"]) == want
    image = torch.from_numpy(photo[None].astype(np.float32) / 255)
    out = node("VarEditOutpaint", model=model, image=image, left=0, right=32, top=0, bottom=H // 2, fill="blur",
               label="auto", **SAMPLING, **EDITING)[0]
    assert tuple(out.shape[2:0:-1]) == want
    src = tmp_path / "in.png"
    Image.fromarray(photo).save(src)
    res = CliRunner().invoke(main, ["outpaint", str(src), "--right", "32", "--bottom", "50%", "-m", "demo",
                                    "--seed", "0", "-o", str(tmp_path / "out.png")])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "out.png").size == want


def test_an_ambiguous_amount_is_refused_with_one_message(model, client, photo):
    """64.0 is pixels to a JavaScript client and a ratio to a Python one: every front-end refuses it."""
    with pytest.raises(ValueError) as e:
        model.editor.outpaint(photo, right=64.0, seed=0)
    assert AMBIGUOUS in str(e.value)
    assert AMBIGUOUS in server_error(client, "outpaint", {"image": b64(photo), "right": 64.0})
    assert AMBIGUOUS in cli_error("outpaint", "in.png", "--right", "64.0", "-o", "out.png")


def test_nothing_to_extend_is_one_message(model, client, photo):
    with pytest.raises(ValueError, match=NOTHING):
        model.editor.outpaint(photo, seed=0)
    assert NOTHING in server_error(client, "outpaint", {"image": b64(photo)})
    image = torch.from_numpy(photo[None].astype(np.float32) / 255)
    with pytest.raises(ValueError, match=NOTHING):
        node("VarEditOutpaint", model=model, image=image, left=0, right=0, top=0, bottom=0, fill="blur",
             label="auto", **SAMPLING, **EDITING)


@pytest.mark.parametrize("scale", [MAX_UPSCALE + 0.5, 0.0])
def test_the_upscale_limit_is_one_limit(model, client, photo, scale):
    msg = "scale must be at most 16, got 16.5" if scale else "scale must be above 0, got 0"
    with pytest.raises(ValueError, match=msg):
        model.editor.upscale(photo, scale=scale)
    assert msg in server_error(client, "upscale", {"image": b64(photo), "scale": scale})
    assert msg in cli_error("upscale", "in.png", "--scale", str(scale), "-o", "out.png")
    image = torch.from_numpy(photo[None].astype(np.float32) / 255)
    with pytest.raises(ValueError, match=msg):
        node("VarEditUpscale", model=model, image=image, scale=scale, keep_scales=-1, back_project=True, **SAMPLING)
    param = NODE_CLASS_MAPPINGS["VarEditUpscale"].INPUT_TYPES()["required"]["scale"][1]
    assert param["max"] == MAX_UPSCALE == 16
    schema = client.get("/api/v1/schema").json()  # what the browser editor reads
    assert schema["upscale"]["properties"]["scale"]["maximum"] == MAX_UPSCALE


def test_a_mask_and_a_box_are_refused_with_one_message(model, client, photo):
    msg = "give a mask or a box, not both"
    hole = np.zeros((H, W), bool)
    hole[10:20, 10:20] = True
    with pytest.raises(ValueError, match=msg):
        model.editor.inpaint(photo, hole, box=(1, 1, 9, 9), seed=0)
    assert msg in server_error(client, "inpaint", {"image": b64(photo), "mask": b64(hole.astype(np.uint8) * 255),
                                                   "box": [1, 1, 9, 9]})
    image = torch.from_numpy(photo[None].astype(np.float32) / 255)
    with pytest.raises(ValueError, match=msg):
        node("VarEditClassEdit", model=model, image=image, class_name="0", x=1, y=1, width=8, height=8,
             mask=torch.from_numpy(hole[None].astype(np.float32)), **SAMPLING, **EDITING)
    no_region = "no mask: give a mask image, a box, or an image with transparent pixels to fill"
    with pytest.raises(ValueError, match=no_region):
        model.editor.inpaint(photo, seed=0)
    assert no_region in server_error(client, "inpaint", {"image": b64(photo)})


def test_a_request_runs_as_the_method_call(model, photo):
    """Editor.run(request) is the documented call with the same numbers: the same pixels and settings."""
    ed = model.editor
    req = OutpaintRequest(image=photo, right=32, bottom="50%", seed=0, output_type="np",
                          sampling=Sampling(cfg=2.0, top_k=50))
    a = ed.run(req)
    b = ed.outpaint(photo, right=32, bottom=0.5, seed=0, output_type="np", cfg=2.0, top_k=50)
    assert np.array_equal(a.image, b.image) and a.settings["cfg"] == 2.0 and a.image.shape[1::-1] == (W + 32, H + 24)
    g = ed.run(InferLabelRequest(image=photo, box=(10, 10, 40, 30)))
    assert g.label == ed.infer_label(photo, box=(10, 10, 40, 30)).label


@pytest.mark.parametrize("request_, needle", [
    (OutpaintRequest(right=64.0), AMBIGUOUS),
    (OutpaintRequest(), NOTHING),
    (OutpaintRequest(right=10, fill="plaid"), "unknown fill"),
    (OutpaintRequest(right=100_000, bottom=2000), "MP, above the limit"),
    (InpaintRequest(mask=np.ones((H, W), bool), box=(1, 1, 9, 9)), "not both"),
    (InpaintRequest(box=(1, 1, 9, 9), n=65), "n must be in 1..64"),
    (InpaintRequest(box=(1, 1, 9, 9), keep_scales=7), "keep_scales must be in 0..6"),
    (InpaintRequest(box=(1.0, 0, 9, 9)), "must have values in [0, 1]"),
    (InpaintRequest(box=(1, 1, 9, 9), sampling=Sampling(cfg=float("nan"))), "finite"),
    (EditRequest(class_=1), "give the region to redraw"),
    (UpscaleRequest(scale=17), "scale must be at most 16"),
    (UpscaleRequest(scale=16, keep_scales=9), "keep_scales must be in 0..6"),
    (GenerateRequest(class_=[]), "the list of classes is empty"),
    (InferLabelRequest(strategy="zoom"), "unknown strategy"),
])
def test_requests_check_every_limit_before_any_work(request_, needle):
    with pytest.raises((ValueError, TypeError)) as e:
        request_.validate(6, (W, H))
    assert needle in str(e.value)


def test_the_server_schemas_ask_for_what_the_requests_hold():
    """Every field a client may send maps onto the request type of its task (or its sampling options):
    the HTTP parameters cannot drift from what the API takes."""
    from dataclasses import fields

    from varedit.server import schemas as Sch
    pairs = {Sch.InpaintParams: InpaintRequest, Sch.OutpaintParams: OutpaintRequest, Sch.EditParams: EditRequest,
             Sch.UpscaleParams: UpscaleRequest, Sch.GenerateParams: GenerateRequest,
             Sch.InferLabelParams: InferLabelRequest}
    sampling = {f.name for f in fields(Sampling)}
    server_only = {"top"}  # infer-label: how many classes of the posterior the answer lists
    for params, request in pairs.items():
        held = {f.name for f in fields(request)} | sampling
        assert set(params.model_fields) - held - server_only == set(), params.__name__


# ---- one definition: the request types ------------------------------------------------------------------
NOT_HTTP = {"image", "mask", "output_type", "mask_mismatch"}  # images travel as files/base64; the server picks


def test_every_request_option_is_a_server_parameter_with_its_default(client):
    """GET /api/v1/schema (what the browser editor reads) lists every option of every request type, under
    its name, with the request type's default (required where the request has none): a new option reaches
    the HTTP API without a second definition."""
    schema = client.get("/api/v1/schema").json()
    assert set(schema) == set(REQUESTS)
    for task, request in REQUESTS.items():
        props, required = schema[task]["properties"], set(schema[task].get("required", []))
        opts = [g for f in fields(request) for g in (fields(Sampling) if f.name == "sampling" else [f])]
        hidden = {f.name for f in opts if not f.metadata["http"]}
        assert hidden <= NOT_HTTP, (task, hidden - NOT_HTTP)
        for f in opts:
            if f.name in hidden:  # the images are in the schema as base64 strings, not as the API's objects
                assert f.name not in props or props[f.name]["contentEncoding"] == "base64", (task, f.name)
                continue
            name = f.metadata["alias"] or f.name
            if f.default is MISSING:
                assert name in required, (task, name)
            else:
                assert props[name]["default"] == f.default, (task, name)
            assert props[name].get("description") == f.metadata["doc"], (task, name)
        # besides the options: the images (base64) and infer-label's answer size
        assert set(props) - {f.metadata["alias"] or f.name for f in opts} <= {"image", "mask", "top"}, task
        if "image" in {f.name for f in opts}:
            assert props["image"]["contentEncoding"] == "base64" and "image" in required, task


CALLS = [  # (task, a pipeline call, the same request as JSON)
    ("inpaint", lambda p, im: p.inpaint(im, box=[4, 4, 30, 20], label="none", n=2, seed=3, cfg=2.5, top_k=40,
                                        strategy="resize", coverage=0.5, threshold=0.3, rank=False),
     {"box": [4, 4, 30, 20], "label": "none", "n": 2, "seed": 3, "cfg": 2.5, "top_k": 40, "strategy": "resize",
      "coverage": 0.5, "threshold": 0.3, "rank": False}),
    ("outpaint", lambda p, im: p.outpaint(im, right=32, bottom="50%", fill="edge", seed=1, guidance="constant"),
     {"right": 32, "bottom": "50%", "fill": "edge", "seed": 1, "guidance": "constant"}),
    ("edit", lambda p, im: p.edit(im, [4, 4, 30, 20], 1, seed=2, grow_tokens=1, paste_back=False, feather=2.0),
     {"box": [4, 4, 30, 20], "class": 1, "seed": 2, "grow_tokens": 1, "paste_back": False, "feather": 2.0}),
    ("upscale", lambda p, im: p.upscale(im, scale=1.5, keep_scales=3, back_project=False, top_p=0.5),
     {"scale": 1.5, "keep_scales": 3, "back_project": False, "top_p": 0.5}),
    ("generate", lambda p, im: p.generate([0, 1], seed=4, batch_size=1, cfg=1.0),
     {"class": [0, 1], "seed": 4, "batch_size": 1, "cfg": 1.0}),
    ("infer-label", lambda p, im: p.infer_label(im, box=[4, 4, 30, 20], strategy="resize"),
     {"box": [4, 4, 30, 20], "strategy": "resize"}),
]


class Captured(Exception):
    pass


@pytest.mark.parametrize("task, call, body", CALLS, ids=[c[0] for c in CALLS])
def test_a_pipeline_call_and_its_json_make_the_same_request(model, photo, monkeypatch, task, call, body):
    """VarEditPipeline's keyword methods and the server's JSON build one request (the server's inputs,
    image and mask, aside): the same options, the same defaults for everything not given."""
    from varedit.pipeline import VarEditPipeline
    from varedit.server import schemas as Sch

    def capture(request, **progress):
        raise Captured(request)

    pipe = object.__new__(VarEditPipeline)  # the methods only reach the editor
    pipe.editor = model.editor
    monkeypatch.setattr(model.editor, "run", capture)
    with pytest.raises(Captured) as got:
        call(pipe, photo)
    from_api = got.value.args[0]
    request = REQUESTS[task]
    from_json = Sch.to_request(request, Sch.PARAMS[task].model_validate(body),
                               **({"output_type": "pil"} if task != "infer-label" else {}))
    inputs = {f.name: None for f in fields(request) if f.name in ("image", "mask")}
    assert replace(from_api, **inputs) == replace(from_json, **inputs)
    assert type(from_api) is request


@pytest.mark.parametrize("task, body, call", [
    ("inpaint", {"box": [1, 1, 9, 9], "coverage": 0}, lambda ed, im: ed.inpaint(im, box=[1, 1, 9, 9], coverage=0)),
    ("inpaint", {"box": [1, 1, 9, 9], "n": 0}, lambda ed, im: ed.inpaint(im, box=[1, 1, 9, 9], n=0)),
    ("outpaint", {"right": 8, "prefill": "magic"}, lambda ed, im: ed.outpaint(im, right=8, prefill="magic")),
    ("edit", {"box": [1, 1, 9, 9], "class": 0, "grow_tokens": 99},
     lambda ed, im: ed.edit(im, [1, 1, 9, 9], 0, grow_tokens=99)),
    ("upscale", {"keep_scales": 9}, lambda ed, im: ed.upscale(im, keep_scales=9)),
    ("generate", {"n": 0}, lambda ed, im: ed.generate(n=0)),
    ("generate", {"top_p": 2}, lambda ed, im: ed.generate(top_p=2)),
    ("generate", {"cfg": 1e300}, lambda ed, im: ed.generate(cfg=1e300)),  # would overflow the logits
])
def test_a_bad_value_gets_one_message(model, client, photo, task, body, call):
    """The request type's check speaks for every front-end: the server's 422 is the API's error, word for word."""
    with pytest.raises((ValueError, TypeError)) as e:
        call(model.editor, photo)
    image = {} if task == "generate" else {"image": b64(photo)}
    assert server_error(client, task, {**image, **body}) == str(e.value)


def test_an_unknown_option_names_the_known_ones(model, photo):
    with pytest.raises(TypeError, match="inpaint: unknown option colour; known: .*cfg.*coverage"):
        model.editor.inpaint(photo, box=(1, 1, 9, 9), colour="red")


def test_none_means_the_tasks_default():
    """The command line and the nodes pass None for an option left unset: the task's default, held once,
    on the request type (a label of None keeps its meaning: unconditional)."""
    assert (OutpaintRequest(strategy=None, prefill=None).strategy, OutpaintRequest(prefill=None).prefill) == \
        ("auto", "pushpull")
    assert (InpaintRequest(strategy=None).strategy, InpaintRequest(prefill=None).prefill) == ("crop", "ns")
    assert (InpaintRequest(coverage=None).coverage, EditRequest(class_=1, coverage=None).coverage) == (0.25, 1.0)
    assert InpaintRequest(label=None).label is None and InpaintRequest().label == "auto"
    from varedit.options import SamplingOptions
    assert [f.name for f in fields(Sampling)] == [f.name for f in fields(SamplingOptions)]  # overrides of each
    from varedit.editing.plan import COVERAGE
    assert InpaintRequest().coverage == COVERAGE  # a fill's coverage is the planner's default


def test_a_percentage_of_100_or_more_extends_by_that_share(model, client, photo, tmp_path):
    """"150%" is a ratio of 1.5: read once, never re-read as the ambiguous number 1.5."""
    want = (W + W * 3 // 2, H)
    assert model.editor.outpaint(photo, right="150%", seed=0, output_type="np").image.shape[1::-1] == want
    r = client.post("/api/v1/outpaint", json={"image": b64(photo), "right": "150%", "seed": 0})
    assert r.status_code == 200, r.text
    assert (r.json()["width"], r.json()["height"]) == want
    src = tmp_path / "in.png"
    Image.fromarray(photo).save(src)
    res = CliRunner().invoke(main, ["outpaint", str(src), "--right", "150%", "-m", "demo", "--seed", "0",
                                    "-o", str(tmp_path / "out.png")])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "out.png").size == want


def test_a_grey_mask_is_read_with_the_requests_threshold(model, client, photo):
    """threshold is an option of the inpaint request, so the server reads an uploaded grey mask with it."""
    grey = np.zeros((H, W), np.uint8)
    grey[10:30, 10:40] = 100  # 0.39: regenerated at threshold 0.3, kept at the default 0.5
    api = model.editor.inpaint(photo, grey, threshold=0.3, label="none", seed=0, output_type="np")
    assert api.mask.sum() == 20 * 30
    r = client.post("/api/v1/inpaint", json={"image": b64(photo), "mask": b64(grey), "threshold": 0.3,
                                             "label": "none", "seed": 0})
    assert r.status_code == 200, r.text
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["mask"])))) > 0
    assert np.array_equal(served, api.mask)


# ---- one description: the command line's options and the nodes' inputs are the request's fields ---------
SAMPLING_OPTIONS = {"seed": "seed", "cfg": "cfg", "top_k": "top_k", "top_p": "top_p", "more_smooth": "more_smooth",
                    "guidance": "guidance"}
EDITING_OPTIONS = {"n": "n", "mode": "mode", "strategy": "strategy", "keep_scales": "keep_scales",
                   "feather": "feather", "harmonize": "harmonize"}
CLI_FIELDS = {  # command: (its request type, {click parameter: request field})
    "inpaint": (InpaintRequest, {"box": "box", "invert": "invert", "class_": "label", "prefill": "prefill",
                                 **EDITING_OPTIONS, **SAMPLING_OPTIONS}),
    "outpaint": (OutpaintRequest, {"left": "left", "right": "right", "top": "top", "bottom": "bottom", "fill": "fill",
                                   "class_": "label", "prefill": "prefill", **EDITING_OPTIONS, **SAMPLING_OPTIONS}),
    "edit": (EditRequest, {"box": "box", "invert": "invert", "class_": "class_", "prefill": "prefill",
                           **EDITING_OPTIONS, **SAMPLING_OPTIONS}),
    "upscale": (UpscaleRequest, {"scale": "scale", "keep_scales": "keep_scales", **SAMPLING_OPTIONS}),
    "generate": (GenerateRequest, {"n": "n", "batch_size": "batch_size", **SAMPLING_OPTIONS}),
    "remove": (InpaintRequest, {"box": "box", "invert": "invert", "class_": "label", **EDITING_OPTIONS,
                                **SAMPLING_OPTIONS}),
}
# options named like a field that really differ: --mask is a file or a folder of masks paired by file stem;
# generate's --class is required and takes the word none (the request: null, or a list of classes)
CLI_OWN = {("inpaint", "mask"), ("edit", "mask"), ("remove", "mask"), ("generate", "class_")}


def _cli_command(name: str):
    if name == "remove":
        from varedit_plugins.remove import _command
        return _command()
    return main.commands[name]


@pytest.mark.parametrize("command", sorted(CLI_FIELDS))
def test_cli_options_are_the_request_fields(command):
    """Every option of a command that is a request field has the field's description as its help, the
    field's default and the field's choices (and its limits, where click checks them)."""
    import click
    from varedit.requests import option_info
    request, table = CLI_FIELDS[command]
    params = {p.name: p for p in _cli_command(command).params if isinstance(p, click.Option)}
    names = {f.name for f in fields(request)} | {f.name for f in fields(Sampling)}
    assert set(params) & names <= set(table) | {n for c, n in CLI_OWN if c == command}, command
    for param, name in table.items():
        info, p = option_info(request, name), params[param]
        assert p.help == info.doc, (command, param)
        if command == "remove" and name == "label":  # removal's own default: an unconditional fill
            from varedit_plugins.remove import REMOVE_LABEL
            assert p.default == REMOVE_LABEL != info.default
        elif info.required:
            assert p.required, (command, param)
        else:
            assert p.default == info.default, (command, param)
        if info.choices is None:
            assert not isinstance(p.type, click.Choice), (command, param)
        else:
            assert tuple(p.type.choices) == info.choices, (command, param)
        if isinstance(p.type, (click.IntRange, click.FloatRange)):
            assert info.lo is None or p.type.min == info.lo, (command, param)
            assert info.max is None or p.type.max == info.max, (command, param)


NODE_FIELDS = {  # node: (its request type, {input: request field})
    "VarEditInpaint": (InpaintRequest, {"label": "label", "candidates": "n", "keep_scales": "keep_scales",
                                        "mode": "mode", "feather": "feather"}),
    "VarEditOutpaint": (OutpaintRequest, {"fill": "fill", "label": "label", "candidates": "n",
                                          "keep_scales": "keep_scales", "mode": "mode", "feather": "feather"}),
    "VarEditClassEdit": (EditRequest, {"class_name": "class_", "candidates": "n", "keep_scales": "keep_scales",
                                       "mode": "mode", "feather": "feather"}),
    "VarEditUpscale": (UpscaleRequest, {"scale": "scale", "keep_scales": "keep_scales",
                                        "back_project": "back_project"}),
    "VarEditGenerate": (GenerateRequest, {"batch_size": "n"}),
}
# inputs named like a field that really differ: ComfyUI's seed (a widget always holds one; image i of a batch
# uses seed + i), outpaint's sides (whole pixels only, INT widgets), the images and masks (tensors)
NODE_OWN = {"seed", "left", "right", "top", "bottom", "image", "mask"}


@pytest.mark.parametrize("node_id", sorted(NODE_FIELDS))
def test_node_inputs_are_the_request_fields(node_id):
    """Every input of a node that is a request field: the field's description as its tooltip (then what the
    node adds, e.g. that -1 stands for the default), the field's default (-1 where it is None: the model's
    or the task's) and the field's choices."""
    from varedit.requests import option_info
    request, table = NODE_FIELDS[node_id]
    spec = NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    table = {**table, **{k: k for k in ("cfg", "top_k", "top_p")}}
    names = {f.name for f in fields(request)} | {f.name for f in fields(Sampling)}
    assert set(inputs) & names <= set(table) | NODE_OWN, node_id
    for inp, name in table.items():
        info = option_info(request, name)
        kind, opts = inputs[inp][0], inputs[inp][1]
        tip = opts["tooltip"]
        assert tip == info.doc or tip.startswith(info.doc + " "), (node_id, inp)
        if info.required:
            assert opts["default"] == "", (node_id, inp)
        elif info.default is None:
            assert opts["default"] == opts["min"] == -1 and "-1 = the default" in tip, (node_id, inp)
        else:
            assert opts["default"] == info.default, (node_id, inp)
        assert (kind if isinstance(kind, list) else None) == (None if info.choices is None else list(info.choices))
        if "max" in opts and info.max is not None:
            assert opts["max"] <= info.max, (node_id, inp)


def test_the_figures_in_the_descriptions_are_the_codes():
    """A description that names a default the code keeps elsewhere names that default."""
    import inspect

    from varedit.commands.edit_options import PREFILL_CHOICES
    from varedit.processing import FILL_METHODS
    from varedit.processing.blending import DEFAULT_FEATHER_PX
    from varedit.requests import PREFILLS, option_info
    from varedit.tasks import EDIT_CFG, Editor
    assert f"default: {EDIT_CFG:g} for inpaint, outpaint and edit" in option_info(Sampling, "cfg").doc
    assert f"(default: {DEFAULT_FEATHER_PX:g})" in option_info(InpaintRequest, "feather").doc
    most = inspect.signature(Editor.__init__).parameters["auto_label_max_classes"].default
    assert f"at most {most} classes" in option_info(InpaintRequest, "label").doc
    assert PREFILL_CHOICES == FILL_METHODS and PREFILLS == (*FILL_METHODS, "none")
    with pytest.raises(KeyError, match="inpaint has no option 'colour'"):
        option_info(InpaintRequest, "colour")


def test_every_comfyui_seed_is_a_seed_the_request_takes():
    """ComfyUI's seed widget (and its randomize control) spans 64 bits; a request takes 0..2**63-1: the node
    folds the widget's seed into that range, keeping every seed below 2**63 as it is."""
    from varedit.validation import MAX_SEED
    from varedit_plugins.comfyui.nodes import MAX_SEED as WIDGET_MAX, _seed
    for widget, i, want in ((41, 1, 42), (MAX_SEED, 0, MAX_SEED), (MAX_SEED, 1, 0), (2 ** 63 + 5, 0, 5),
                            (WIDGET_MAX, 0, MAX_SEED)):
        seed = _seed(widget, i)
        assert seed == want
        InpaintRequest(box=(1, 1, 9, 9), seed=seed).validate(6, (W, H))
