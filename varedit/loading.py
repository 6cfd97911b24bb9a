"""One way to a loaded model: :func:`load_editor` turns what a user named (a preset, a model file or an
exported ONNX folder, and the backend) into the :class:`varedit.tasks.Editor` every front-end drives.
The command line, the server and the ComfyUI loader all call it, so the torch-or-ONNX choice is made
in one place."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .presets import DEFAULT_MODEL

BACKENDS = ("torch", "onnx")


@dataclass(frozen=True)
class EditorSpec:
    """What to load. ``backend="torch"``: ``model`` is a preset name, a varedit file or an official VAR
    ``.pth`` (``vae_path``: its VQVAE); ``precision`` and ``num_heads`` apply. ``backend="onnx"``: the
    folder made by ``varedit export onnx`` is ``onnx_dir`` (or ``model``); ``threads`` sets onnxruntime's
    threads (None: its default). ``device``: ``auto``, ``cpu``, ``cuda`` (or ``cuda:N`` for torch)."""

    model: str = DEFAULT_MODEL
    backend: str = "torch"
    onnx_dir: str | None = None
    vae_path: str | None = None
    weights_dir: str | None = None
    num_heads: int | None = None
    device: str = "auto"
    threads: int | None = None
    precision: str = "fp32"


def load_editor(spec: EditorSpec) -> Any:
    """The :class:`varedit.tasks.Editor` of ``spec`` (ValueError for a spec that names nothing loadable)."""
    if spec.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {spec.backend!r}")
    if spec.backend == "onnx":
        folder = spec.onnx_dir or spec.model
        if not folder or not Path(folder).is_dir():
            raise ValueError(f"the onnx backend needs an export folder (made by `varedit export onnx`), "
                             f"not {folder!r}")
        from varedit_onnx.runtime import OnnxVAR
        return OnnxVAR.from_dir(folder, providers=spec.device, threads=spec.threads).editor()
    from .pipeline import VarEditPipeline
    return VarEditPipeline.from_pretrained(spec.model, vae_path=spec.vae_path, weights_dir=spec.weights_dir,
                                           num_heads=spec.num_heads, device=spec.device,
                                           precision=spec.precision).editor
