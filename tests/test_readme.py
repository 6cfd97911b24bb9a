"""README's examples stay true: the Python API block runs as written, and every command its command list
names exists (with the options it shows)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from varedit.cli import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _block(section: str, lang: str) -> str:
    """The first fenced ``lang`` block after the heading ``section``."""
    start = README.index(f"\n{section}\n")
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, start)
    assert m, f"no {lang} block under {section}"
    return m.group(1)


def test_python_api_example_runs_as_written(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((96, 160, 3)) * 255).astype(np.uint8)).save(tmp_path / "photo.png")
    mask = np.zeros((96, 160), np.uint8)
    mask[30:70, 50:110] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray((rng.random((40, 60, 3)) * 255).astype(np.uint8)).save(tmp_path / "small.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scope: dict = {}
    exec(compile(_block("## Python API", "python"), "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert Image.open(tmp_path / "star.png").size == (128, 128)
    assert Image.open(tmp_path / "out.png").size == (120, 80)  # the upscaled small.png
    assert scope["r"].settings["task"] == "upscale" and scope["r"].settings["seed"] == 4


def _commands() -> list[tuple[list[str], list[str]]]:
    """(command path, long options shown) for every line of README's command list."""
    out = []
    for line in _block("## Command line", "text").splitlines():
        if not line.startswith("varedit "):
            continue
        words = line.split("(")[0].split()
        path = [words[1]]
        if words[1] in ("models", "train"):
            # `models list | info MODEL ... | pack ...`, `train vqvae|var ...`: every alternative
            alts = re.findall(r"(?:^|\| )(\w+)", " ".join(words[2:])) if words[1] == "models" else words[2].split("|")
            out += [([words[1], a], []) for a in alts]
            continue
        if len(words) > 2 and re.fullmatch(r"[a-z]+", words[2]):  # a group's subcommand: `data synthetic`
            path.append(words[2])
        out.append((path, [w.strip("[]|") for w in words if w.strip("[]").startswith("--")]))
    return out


@pytest.mark.parametrize("path,options", _commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_command_list_names_real_commands_and_options(path, options):
    res = CliRunner().invoke(main, path + ["--help"])
    assert res.exit_code == 0, res.output
    for o in options:
        assert o.split("=")[0] in res.output, f"varedit {' '.join(path)} has no {o}"
