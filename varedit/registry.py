"""The one loading path: from what a user named to a VAR and its VQVAE.

A name is a preset (:mod:`varedit.presets`: the bundled demo, or an official release whose files
:mod:`varedit.hub` finds or downloads), a varedit model file, or an official VAR state dict with its
VQVAE beside it.  :func:`load_models` resolves it, reads the files safely
(:func:`varedit.fileformat.read_weights`), infers or reads the configuration (:mod:`varedit.official`,
:mod:`varedit.fileformat`) and builds the models strictly (:mod:`varedit.building`).
:meth:`varedit.pipeline.VarEditPipeline.from_pretrained`, and through it :func:`varedit.loading.load_editor`
(the command line, the server, ComfyUI), load every model this way.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .checkpoint import WeightsError
from .fileformat import check_self_describing, is_self_describing, load_self_describing, read_weights
from .models.var import VAR
from .models.vqvae import VQVAE
from .official import build_official, state_dict_of
from .options import SamplingOptions
from .presets import DEFAULT_MODEL, VAE_FILE, Preset, demo_notice, resolve_model

log = logging.getLogger(__name__)

__all__ = ["LoadedModels", "load_models", "load_official"]


@dataclass(frozen=True)
class LoadedModels:
    """A VAR and its VQVAE with what their file says about them.  ``notice``: a line for the user (the
    bundled demo says what it is and how to get a model for photographs)."""

    var: VAR
    vae: VQVAE
    name: str
    class_names: tuple[tuple[str, ...], ...] | None = None
    defaults: SamplingOptions | None = None
    notice: str | None = None


def load_official(var_path: str | os.PathLike, vae_path: str | os.PathLike, *, preset: Preset | None = None,
                  num_heads: int | None = None, patch_nums: tuple[int, ...] | None = None,
                  device: str | torch.device = "cpu") -> tuple[VAR, VQVAE]:
    """Load official-format state dicts (as released by FoundationVision), strictly."""
    var_name, vae_name = Path(var_path).name, Path(vae_path).name
    var_sd = state_dict_of(read_weights(var_path), var_name)
    vae_sd = state_dict_of(read_weights(vae_path), vae_name)
    return build_official(var_sd, vae_sd, var_name=var_name, vae_name=vae_name, preset=preset,
                          num_heads=num_heads, patch_nums=patch_nums, device=device)


def _self_describing(path: Path, device: str | torch.device, name: str, obj: Mapping[str, Any] | None = None,
                     notice: str | None = None) -> LoadedModels:
    obj = obj if obj is not None else read_weights(path)
    var, vae = load_self_describing(obj, path.name, device)
    if var is None or vae is None:
        raise WeightsError(f"{path.name} holds only the {'VQVAE' if var is None else 'VAR'}; a pipeline needs both")
    class_names, defaults = check_self_describing(obj, path.name)
    return LoadedModels(var, vae, name, class_names, defaults, notice)


def load_models(model: str | os.PathLike = DEFAULT_MODEL, *, device: str | torch.device = "cpu",
                vae_path: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None,
                num_heads: int | None = None, local_files_only: bool | None = None,
                patch_nums: tuple[int, ...] | None = None) -> LoadedModels:
    """The models ``model`` names: a preset name (``demo``, ``var-d16`` ...), a self-describing varedit
    file, or an official VAR state dict (its VQVAE from ``vae_path`` or ``vae_ch160v4096z32.pth`` beside
    it).  ``weights_dir`` and ``local_files_only``: where an official preset's files are looked for and
    whether they may be downloaded (:func:`varedit.hub.resolve_files`).  ``patch_nums``: the scale list
    of an official file that several lists fit."""
    target = resolve_model(model)
    if isinstance(target, Preset):
        if target.bundled is not None:
            notice = demo_notice() if target.name == DEFAULT_MODEL else None
            return _self_describing(target.bundled, device, target.name, notice=notice)
        from .hub import resolve_files
        files = resolve_files(target, weights_dir=weights_dir, local_files_only=local_files_only)
        var, vae = load_official(files[target.var_file], files[target.vae_file], preset=target,
                                 num_heads=num_heads, patch_nums=patch_nums, device=device)
        return LoadedModels(var, vae, target.name)
    p = target
    obj = read_weights(p)
    if is_self_describing(obj):
        return _self_describing(p, device, p.stem, obj)
    vae_file = Path(vae_path) if vae_path else p.parent / VAE_FILE
    if not vae_file.is_file():
        raise WeightsError(f"{p.name} needs its VQVAE: pass --vae PATH (looked for {vae_file})")
    var, vae = load_official(p, vae_file, num_heads=num_heads, patch_nums=patch_nums, device=device)
    return LoadedModels(var, vae, p.stem)
