"""What a model is, without loading it (torch-free): classes, sizes, defaults, files and their presence.

The command line uses it to check every argument (classes, keep-scales, ...) before a model is
loaded, and ``varedit models info|list|classes`` to answer in milliseconds.  Everything comes from the
files' structure (:func:`varedit.checkpoint.peek`), an ONNX export's manifest, or the preset table,
and passes the same validation as a real load.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .checkpoint import TensorInfo, WeightsError, peek, tensor_dims, unwrap_state_dict
from .classes import imagenet_classes
from .fileformat import FORMAT, FORMAT_VERSION, _int, check_varedit_meta  # noqa: F401 (re-exported)
from .options import SamplingOptions
from .presets import VAE_FILE, Preset, resolve_model
from .validation import check_class_names


__all__ = ["ModelInfo", "model_info", "check_varedit_meta", "FORMAT", "FORMAT_VERSION"]


@dataclass
class ModelInfo:
    name: str
    kind: str                                   # "bundled", "preset", "varedit file", "official file", "onnx"
    num_classes: int
    class_names: tuple[tuple[str, ...], ...] | None
    num_scales: int | None = None
    image_size: int | None = None
    defaults: SamplingOptions | None = None     # the file's sampling defaults (None: the library's)
    files: dict[str, Path | None] = field(default_factory=dict)   # role -> path (None: not found locally)
    description: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return [role for role, p in self.files.items() if p is None]


def _from_varedit_file(path: Path, obj: Any, name: str, kind: str, description: str = "") -> ModelInfo:
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise WeightsError(f"{path.name} is not a varedit model file")
    classes, defaults = check_varedit_meta(obj, path.name)
    if "var" not in obj or "vqvae" not in obj:
        raise WeightsError(f"{path.name} holds only the {'VQVAE' if 'var' not in obj else 'VAR'}; a pipeline "
                           f"needs both")
    var_cfg, vae_cfg = obj["var"]["config"], obj["vqvae"]["config"]
    pns = var_cfg.get("patch_nums")
    ch_mult = vae_cfg.get("ch_mult", (1, 1, 2, 2, 4))
    size = None
    if isinstance(pns, (list, tuple)) and pns and _int(pns[-1]) and isinstance(ch_mult, (list, tuple)):
        size = pns[-1] * 2 ** (len(ch_mult) - 1)
    meta = obj.get("meta", {})
    return ModelInfo(name, kind, var_cfg["num_classes"], classes, len(pns) if isinstance(pns, (list, tuple)) else None,
                     size, defaults, {"model": path}, description or str(meta.get("description", "")),
                     {"format": f"varedit v{obj['version']}", "var": dict(var_cfg), "vqvae": dict(vae_cfg)})


def _from_official_file(path: Path, obj: Any, vae_path: Path | None) -> ModelInfo:
    sd = unwrap_state_dict(obj) if isinstance(obj, Mapping) and obj else None
    if not isinstance(sd, Mapping) or not isinstance(sd.get("class_emb.weight"), TensorInfo) \
            or not isinstance(sd.get("lvl_embed.weight"), TensorInfo):
        raise WeightsError(f"{path.name} is neither a varedit model file nor an official VAR state dict "
                           f"(no class_emb.weight / lvl_embed.weight)")
    nc = tensor_dims(sd, "class_emb.weight", "[classes + 1, width]", path.name)[0] - 1
    vae = vae_path or path.parent / VAE_FILE
    return ModelInfo(path.stem, "official file", nc, imagenet_classes() if nc == 1000 else None,
                     tensor_dims(sd, "lvl_embed.weight", "[scales, width]", path.name)[0], None, None,
                     {"var": path, "vqvae": vae if vae.is_file() else None})


def model_info(model: str | os.PathLike[str], *, vae_path: str | os.PathLike[str] | None = None,
               weights_dir: str | os.PathLike[str] | None = None, onnx_dir: str | os.PathLike[str] | None = None
               ) -> ModelInfo:
    """Facts about ``model`` (a preset name, a varedit file, an official VAR ``.pth``), or about the ONNX
    export in ``onnx_dir``, checked like a load but without torch and without the network: a preset's
    files are looked up locally (``files`` says which are missing; a download happens at load)."""
    if onnx_dir is not None:
        from varedit_onnx.manifest import read_manifest  # neither torch nor onnxruntime
        m = read_manifest(onnx_dir)
        mod = m["model"]
        return ModelInfo(mod["name"], "onnx", mod["num_classes"], check_class_names(
            mod.get("class_names"), mod["num_classes"], "manifest"), len(mod["patch_nums"]), mod["image_size"],
            SamplingOptions().replace(**(m.get("defaults") or {})), {"export": Path(onnx_dir)},
            details={"batch": m["batch"], "precision": m["precision"]})
    target = resolve_model(model)
    if isinstance(target, Preset):
        if target.bundled is not None:
            return _from_varedit_file(target.bundled, peek(target.bundled), target.name, "bundled",
                                      target.description)
        return _from_preset(target, weights_dir)
    p = target
    obj = peek(p)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        return _from_varedit_file(p, obj, p.stem, "varedit file")
    return _from_official_file(p, obj, Path(vae_path) if vae_path else None)


def _from_preset(preset: Preset, weights_dir: str | os.PathLike[str] | None) -> ModelInfo:
    from .hub import local_files
    found = local_files(preset, weights_dir)
    files: dict[str, Path | None] = {f: found.get(f) for f in preset.files}
    return ModelInfo(preset.name, "preset", 1000, imagenet_classes(), len(preset.patch_nums), preset.image_size,
                     None, files, preset.description)
