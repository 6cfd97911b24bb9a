"""Building a model from a configuration and a state dict, strictly: every key present and every
tensor of the shape the model has, or one :class:`~varedit.checkpoint.WeightsError` naming the key, the
shape expected and the shape found.  Both file formats (:mod:`varedit.official`,
:mod:`varedit.fileformat`) end here."""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch

from .checkpoint import WeightsError
from .models.var import VAR, VARConfig
from .models.vqvae import VQVAE, VQVAEConfig

log = logging.getLogger(__name__)

__all__ = ["as_float32", "check_state_dict", "build_var", "build_vqvae", "var_vae_consistent"]


def as_float32(sd: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Half-precision files (fp16 / bf16 exports of the official weights) load as float32: the models run in
    float32 (autocast, not parameter dtypes, gives the speed on GPUs), and mixed dtypes fail at first use."""
    sd = dict(sd)
    low = [k for k, v in sd.items() if v.is_floating_point() and v.dtype != torch.float32]
    if low:
        log.info("%s: %d tensors stored as %s, converted to float32", name, len(low), sd[low[0]].dtype)
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    return sd


def check_state_dict(model: torch.nn.Module, sd: Mapping[str, Any], name: str) -> None:
    """Same keys and every tensor of the same full shape as the model, or one error naming what differs
    (for a shape: the key, the shape the model expects and the shape found).  ``sd`` may hold tensors or
    :class:`~varedit.checkpoint.TensorInfo` (a file's structure, nothing loaded)."""
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
    wrong = [f"{k} has shape {list(sd[k].shape)}, expected {list(want[k].shape)}" for k in want
             if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)
             and k != "quantize.ema_vocab_hit_SV"]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape (e.g. {wrong[0]})")
        raise WeightsError(f"{name} does not match the model: " + "; ".join(parts))


def _construct(cls: type, cfg: Any, sd: Mapping[str, torch.Tensor] | None, name: str,
               device: str | torch.device) -> Any:
    """The model's layers (on the meta device when weights follow); a configuration its layers refuse (e.g.
    a width GroupNorm's 32 groups do not divide) is one :class:`WeightsError`."""
    try:
        with torch.device("meta") if sd is not None else torch.device(device):
            return cls(cfg)
    except ValueError as e:
        raise WeightsError(f"{name}: cannot build a {cls.__name__} with these sizes ({str(e).splitlines()[0]})") \
            from None


def _build(cls: type, cfg: Any, sd: Mapping[str, torch.Tensor] | None, name: str,
           device: str | torch.device) -> Any:
    """``cls(cfg)`` in eval mode, with ``sd`` loaded strictly when given (every key, every shape checked)."""
    model = _construct(cls, cfg, sd, name, device)
    if sd is not None:
        check_state_dict(model, sd, name)
        model.load_state_dict(dict(sd), strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


def build_vqvae(cfg: VQVAEConfig, sd: Mapping[str, torch.Tensor] | None = None, name: str = "VQVAE",
                device: str | torch.device = "cpu") -> VQVAE:
    return _build(VQVAE, cfg, sd, name, device)


def build_var(cfg: VARConfig, sd: Mapping[str, torch.Tensor] | None = None, name: str = "VAR",
              device: str | torch.device = "cpu") -> VAR:
    return _build(VAR, cfg, sd, name, device)


def var_vae_consistent(var_cfg: VARConfig, vae_cfg: VQVAEConfig) -> None:
    if var_cfg.vocab_size != vae_cfg.vocab_size or var_cfg.Cvae != vae_cfg.z_channels:
        raise WeightsError(f"VAR (vocab {var_cfg.vocab_size}, Cvae {var_cfg.Cvae}) and VQVAE (vocab "
                           f"{vae_cfg.vocab_size}, z {vae_cfg.z_channels}) do not belong together")
