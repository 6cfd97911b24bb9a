"""Latency of one call: what a command imports before it needs it (timings live in `varedit bench`)."""
from __future__ import annotations

import subprocess
import sys

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
    from varedit.commands.edit import PREFILL_CHOICES
    from varedit.processing import FILL_METHODS
    assert PREFILL_CHOICES == FILL_METHODS
