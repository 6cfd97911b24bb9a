"""varedit's ONNX path (installed as ``varedit_onnx``).

* ``varedit_onnx.exporter``: ``export_onnx(var, vae, out_dir, ...)`` (needs torch).
* ``varedit_onnx.runtime``: ``OnnxVAR.from_dir(dir, providers=...)`` (numpy + onnxruntime only), a facade
  over ``manifest`` (the format), ``session`` (the sessions), ``feeds`` (each call's inputs) and
  ``scoring`` (label inference).
* ``varedit_onnx.backend``: the onnxruntime backend of varedit's image-level tasks.

This module imports nothing heavy: the runtime must import without torch.
"""
