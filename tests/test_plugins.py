"""The ``varedit.plugins`` entry-point group and the first-party plugin (``varedit remove``).

Broken plugins are real distributions: a ``.dist-info`` folder with an ``entry_points.txt`` in a
temporary directory put on ``sys.path``, found by ``importlib.metadata`` like any installed package.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from varedit.cli import main
from varedit.data.synthetic import render
from varedit.extensions import GROUP, PluginAPI, get_task, load_plugins

REPO = Path(__file__).resolve().parents[1]
BUILTIN = ("data", "edit", "eval", "export", "generate", "inpaint", "models", "outpaint", "showcase", "train",
           "upscale")

GOOD = '''
import click

@click.command("hello")
@click.option("--name", default="world")
def hello(name):
    """Say hello (a test plugin)."""
    click.echo(f"hello {name}")

def shout(editor, text):
    """Upper-case a text (a test task)."""
    return text.upper()

def register(api):
    api.add_command(hello)
    api.add_task("shout", shout)
'''

BAD = '''
import click

NOT_CALLABLE = 42

@click.command("half")
def half():
    """Never published: its plugin raises after adding it."""

def register_raises(api):
    api.add_command(half)
    raise RuntimeError("boom in register")

@click.command("inpaint")
def inpaint():
    """Clashes with the built-in command."""

def register_clash(api):
    api.add_command(inpaint)
'''


def fake_dist(root: Path, name: str, eps: dict[str, str], modules: dict[str, str]) -> Path:
    """An installed-looking distribution in ``root`` (put ``root`` on sys.path to install it)."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    for mod, src in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(src))
    return root


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A good plugin and four broken ones, installed for this test only."""
    tag = tmp_path.name.replace("-", "_")
    good, bad = f"fakegood_{tag}", f"fakebad_{tag}"
    root = fake_dist(tmp_path / "site", "fakeplug", {
        "good": f"{good}:register",
        "missing": f"no_such_module_{tag}:register",
        "raises": f"{bad}:register_raises",
        "clash": f"{bad}:register_clash",
        "notcallable": f"{bad}:NOT_CALLABLE",
    }, {good: GOOD, bad: BAD})
    monkeypatch.syspath_prepend(str(root))
    yield root
    for m in (good, bad):
        sys.modules.pop(m, None)


# ---- the group and the first-party plugin ------------------------------------------------------------
def test_first_party_plugin_is_registered_through_the_group():
    eps = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    assert eps.get("remove") == "varedit_plugins.remove:register"
    found = load_plugins(reserved_commands=BUILTIN)
    assert "remove" in found.loaded and found.command_plugin["remove"] == "remove"
    assert get_task("remove", found).plugin == "remove" and not found.failures


def test_help_lists_plugin_commands_apart_from_builtin_ones():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0, res.output
    builtin, plugins = res.output.split("Plugin commands:")
    assert "inpaint" in builtin and "remove" not in builtin and "remove" in plugins


def test_broken_plugins_are_named_and_the_rest_works(plugin_path, caplog):
    found = load_plugins(reserved_commands=BUILTIN)
    assert "good" in found.loaded and "remove" in found.loaded
    failed = {f.plugin: f.error for f in found.failures}
    assert set(failed) == {"missing", "raises", "clash", "notcallable"}
    assert failed["missing"].startswith("ModuleNotFoundError") and "boom in register" in failed["raises"]
    assert "built-in" in failed["clash"] and "not callable" in failed["notcallable"]
    assert all("\n" not in e for e in failed.values())
    assert "half" not in found.commands            # a plugin that raises adds nothing
    assert found.commands["hello"].name == "hello" and get_task("shout", found)(None, "hi") == "HI"
    warnings = [r.getMessage() for r in caplog.records if r.name == "varedit.extensions"]
    assert len(warnings) == 4 and all("failed to load" in w and "fakeplug 0.1" in w for w in warnings)

    caplog.clear()
    runner = CliRunner()
    res = runner.invoke(main, ["hello", "--name", "plugin"])
    assert res.exit_code == 0 and res.output.strip() == "hello plugin"
    res = runner.invoke(main, ["--help"])
    assert res.exit_code == 0 and "hello" in res.output and "Say hello" in res.output
    res = runner.invoke(main, ["nosuchcommand"])
    assert res.exit_code == 2 and "No such command" in res.output


def test_builtin_commands_do_not_load_plugins(plugin_path, caplog):
    res = CliRunner().invoke(main, ["models", "list"])
    assert res.exit_code == 0 and "demo" in res.output
    assert not [r for r in caplog.records if r.name == "varedit.extensions"]


def test_broken_plugin_warning_is_one_stderr_line_in_a_real_run(plugin_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "varedit.cli", "--help"], capture_output=True, text=True, env=env, check=False,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "hello" in res.stdout and "remove" in res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 4 and all("failed to load" in ln for ln in lines), res.stderr
    assert {ln.split("'")[1] for ln in lines} == {"missing", "raises", "clash", "notcallable"}
    res = subprocess.run([sys.executable, "-m", "varedit.cli", "hello"], capture_output=True, text=True, env=env, check=False,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "hello world" and len(res.stderr.strip().splitlines()) == 4


def test_plugin_api_rejects_bad_additions():
    api = PluginAPI("p", reserved_commands=BUILTIN)
    with pytest.raises(TypeError):
        api.add_command(lambda: None)
    with pytest.raises(TypeError):
        api.add_task("t", 3)
    with pytest.raises(ValueError):
        api.add_task("", len)
    api.add_task("t", len)
    with pytest.raises(ValueError, match="already"):
        api.add_task("t", len)
    with pytest.raises(ValueError, match="no plugin task 'nope'"):
        get_task("nope", load_plugins(entry_points=[]))


# ---- varedit remove ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_editor(demo_pipeline):
    return demo_pipeline.editor


def test_remove_task_fills_the_grown_region_and_keeps_the_rest(demo_editor):
    remove = get_task("remove", load_plugins(reserved_commands=BUILTIN))
    img = render(3, 21)
    mask = np.zeros((128, 128), bool)
    mask[50:80, 40:90] = True
    res = remove(demo_editor, img, mask, seed=3, output_type="np")
    assert res.settings["task"] == "remove" and res.settings["grow"] == 2.0
    assert res.settings["label_source"] == "unconditional"
    yy, xx = np.mgrid[:128, :128]
    dist = np.hypot(np.maximum.reduce([50 - yy, 0 * yy, yy - 79]), np.maximum.reduce([40 - xx, 0 * xx, xx - 89]))
    assert np.array_equal(res.mask, dist <= 2.0)       # the region grown by 2 px (Euclidean)
    grown = res.mask
    out = res.image
    assert out.shape == img.shape and out.dtype == np.uint8
    far = np.ones((128, 128), bool)
    far[48 - 9:82 + 9, 38 - 9:92 + 9] = False          # the grown region plus the feather (8 px)
    assert np.array_equal(out[far], img[far])
    assert np.abs(out[55:75, 45:85].astype(int) - img[55:75, 45:85]).max() > 10
    # the same fill as inpainting the grown region unconditionally with the same seed
    same = demo_editor.inpaint(img, grown, label="none", seed=3, output_type="np").image
    assert np.array_equal(out, same)


def test_remove_task_bad_input(demo_editor):
    from varedit_plugins.remove import remove
    img = render(1, 2)
    with pytest.raises(ValueError, match="not both"):
        remove(demo_editor, img, np.ones((128, 128), bool), box=(0, 0, 10, 10))
    with pytest.raises(ValueError, match="empty"):
        remove(demo_editor, img, np.zeros((128, 128), bool))
    with pytest.raises(ValueError, match="no mask"):
        remove(demo_editor, img)
    with pytest.raises(ValueError, match="grow"):
        remove(demo_editor, img, box=(0, 0, 10, 10), grow=-1)


def test_remove_command(tmp_path):
    img = render(7, 5)
    Image.fromarray(img).save(tmp_path / "in.png")
    m = np.zeros((128, 128), np.uint8)
    m[30:70, 30:70] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    before = (tmp_path / "in.png").read_bytes()
    runner = CliRunner()
    res = runner.invoke(main, ["remove", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--seed", "2",
                               "-o", str(tmp_path / "out.png")])
    assert res.exit_code == 0, res.output
    out = np.asarray(Image.open(tmp_path / "out.png"))
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["task"] == "remove" and side["seed"] == 2 and side["grow"] == 2.0
    assert (tmp_path / "in.png").read_bytes() == before
    assert np.array_equal(out[100:], img[100:]) and not np.array_equal(out[35:65, 35:65], img[35:65, 35:65])
    res = runner.invoke(main, ["remove", str(tmp_path / "in.png"), "--box", "10,10,40,40", "--grow", "0",
                               "--class", "auto", "-o", str(tmp_path / "box")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "box" / "in.json").read_text())["label_source"] == "inferred"
    res = runner.invoke(main, ["remove", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
                               "--box", "1,1,5,5", "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and "not both" in res.output
    res = runner.invoke(main, ["remove", str(tmp_path / "in.png"), "--box", "1,1,5,5", "--class", "zebra",
                               "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 1 and res.output.strip().splitlines()[-1].startswith("Error") and "zebra" in res.output


# ---- discovery: the fast scan against importlib.metadata ----------------------------------------------------
def test_fast_scan_finds_what_importlib_metadata_finds(plugin_path):
    from importlib.metadata import distributions

    from varedit.extensions import _scan
    groups = {ep.group for d in distributions() for ep in d.entry_points} | {GROUP}
    assert len(groups) > 3
    for g in sorted(groups):
        fast = _scan(g)
        assert fast is not None
        assert [(e.name, e.value) for e in fast] == [(e.name, e.value) for e in entry_points(group=g)], g
    good = next(e for e in _scan(GROUP) if e.name == "good")
    assert good.load().__name__ == "register" and good.dist.name == "fakeplug"


def test_zip_on_sys_path_falls_back_to_importlib_metadata(tmp_path, monkeypatch):
    import zipfile

    from varedit.extensions import _entry_points, _scan
    z = tmp_path / "zipped.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("zipplug-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipplug\nVersion: 0.1\n")
        zf.writestr("zipplug-0.1.dist-info/entry_points.txt", f"[{GROUP}]\nzipped = zipplug_mod:register\n")
        zf.writestr("zipplug_mod.py", GOOD.replace('"hello"', '"zipped-hello"'))
    monkeypatch.syspath_prepend(str(z))
    assert _scan(GROUP) is None                       # the fast path cannot read zips
    found = load_plugins(entry_points=_entry_points(GROUP), reserved_commands=BUILTIN)
    assert "zipped" in found.loaded and "zipped-hello" in found.commands and "remove" in found.loaded
    sys.modules.pop("zipplug_mod", None)
