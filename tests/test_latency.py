"""Latency of one call: what a command imports before it needs it (timings live in `varedit bench`)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "onnx", "onnxruntime", "cv2", "numpy", "torch._dynamo")


def _imported_by(argv: list[str]) -> set[str]:
    code = ("import sys\nfrom varedit.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print('IMPORTED:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("IMPORTED:"))
    return set(filter(None, line[len("IMPORTED:"):].split(",")))


@pytest.mark.parametrize("argv,allowed", [
    (["--help"], set()),
    (["inpaint", "--help"], set()),
    (["models", "list"], {"numpy"}),                       # huggingface_hub's cache lookup
    (["models", "classes", "demo"], set()),
    (["inpaint", "nope.png", "--box", "1,1,9,9", "-o", "o.png"], {"numpy", "cv2"}),
])
def test_commands_import_nothing_heavy_before_it_is_needed(argv, allowed):
    assert _imported_by(argv) <= allowed


def test_prefill_choices_match_the_fills():
    from varedit.commands.edit_options import PREFILL_CHOICES
    from varedit.processing import FILL_METHODS
    assert PREFILL_CHOICES == FILL_METHODS


def _console(argv: list[str], cwd) -> subprocess.CompletedProcess:
    """The installed ``varedit`` script's entry point (``varedit.cli:run``) in a fresh process."""
    code = f"import sys\nsys.argv = ['varedit'] + {argv!r}\nfrom varedit.cli import run\nrun()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_fast_exit_keeps_outputs_and_exit_status(tmp_path):
    """Editing commands leave with os._exit once their outputs are written: the image and its sidecar are
    complete, stdout is flushed, and the exit status is the command's (0, 1 for an error, 2 for usage)."""
    import json

    from PIL import Image
    r = _console(["generate", "--class", "circle", "--n", "2", "--seed", "3", "-o", "g/"], tmp_path)
    assert r.returncode == 0, r.stderr
    written = sorted((tmp_path / "g").iterdir())
    assert [p.name for p in written] == ["circle_3_000.json", "circle_3_000.png", "circle_3_001.json",
                                         "circle_3_001.png"]
    assert json.loads(written[0].read_text())["seed"] == 3 and Image.open(written[1]).size == (128, 128)
    assert r.stdout.split() == [str(Path("g") / "circle_3_000.png"), str(Path("g") / "circle_3_001.png")]
    r = _console(["generate", "--class", "circle", "--seed", "3", "-o", "g/"], tmp_path)
    assert r.returncode == 1 and r.stderr.strip().startswith("Error:") and "exists" in r.stderr
    r = _console(["generate", "--bogus"], tmp_path)
    assert r.returncode == 2 and "No such option" in r.stderr
