"""varedit: image editing and restoration with VAR (Visual Autoregressive Modeling)."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["VarEditPipeline", "__version__"]


def __getattr__(name: str):  # lazy: `import varedit` stays cheap and torch-free until needed
    if name == "VarEditPipeline":
        from .pipeline import VarEditPipeline
        return VarEditPipeline
    raise AttributeError(name)
