"""The ONNX path's one error type: a leaf module, so that the manifest, the sessions and the runtime
can all raise it without importing each other."""
from __future__ import annotations


class OnnxRuntimeError(ValueError):
    """An ONNX export cannot be used as asked (missing / corrupt files, another format version, wrong
    inputs, an execution provider that cannot run).  The message is one line and says what to do."""


__all__ = ["OnnxRuntimeError"]
