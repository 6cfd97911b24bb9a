"""Model files: reading any weights file safely, and varedit's own self-describing format.

* :func:`read_weights` reads every file: its structure is checked first without materialising anything
  (:func:`varedit.checkpoint.peek`), then ``torch.load(..., weights_only=True)``: a pickle that would run
  code is refused.
* Models trained by varedit are saved *self-describing*: a dict with ``format = "varedit"``, a
  ``version``, the ``vqvae`` and ``var`` entries with their configs, ``meta`` with class names and
  sampling defaults, so they load with no flags (:func:`save_models`, :func:`load_self_describing`,
  :func:`pack_models`).  Every field is validated before a tensor is used.
* :func:`load_file` and :func:`file_info` take a single file of either format (the official one is read
  by :mod:`varedit.official`).

The module imports torch only where a function needs it: its torch-free checks
(:func:`check_varedit_meta`) serve :mod:`varedit.modelinfo`, which argument checks use before torch is
imported.  Loading a model by name (a preset, a file, a folder) is :mod:`varedit.registry`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .checkpoint import TensorInfo, WeightsError, peek, tensor_dims as _dims
from .options import SamplingOptions
from .validation import check_class_names, check_config, check_sampling

if TYPE_CHECKING:
    import torch

    from .models.var import VAR
    from .models.vqvae import VQVAE

log = logging.getLogger(__name__)

FORMAT = "varedit"          # the self-describing file format (models trained by varedit)
FORMAT_VERSION = 1

__all__ = ["FORMAT", "FORMAT_VERSION", "check_varedit_meta", "is_self_describing", "check_self_describing",
           "cfg_to_dict", "cfg_from_dict", "read_weights", "save_models", "load_self_describing", "load_file",
           "file_info", "pack_models"]


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_varedit_meta(obj: Mapping[str, Any], name: str) -> tuple[tuple[tuple[str, ...], ...] | None,
                                                                    SamplingOptions | None]:
    """The torch-free part of validating a self-describing file (on :func:`peek`'s structure or a loaded
    one): version, the vqvae/var entries' shape, meta, class names (one per class of the VAR config,
    printable text) and sampling defaults.  Returns (class names, sampling defaults)."""
    v = obj.get("version")
    if not _int(v) or v < 1:
        raise WeightsError(f"{name}: version is {v!r}, expected a positive integer")
    if v > FORMAT_VERSION:
        raise WeightsError(f"{name} is format version {v}; this varedit reads up to {FORMAT_VERSION}: upgrade varedit")
    parts = [k for k in ("vqvae", "var") if k in obj]
    if not parts:
        raise WeightsError(f"{name} holds neither a VQVAE nor a VAR")
    for kind in parts:
        part = obj[kind]
        if not isinstance(part, Mapping) or not isinstance(part.get("config"), Mapping) \
                or not isinstance(part.get("state_dict"), Mapping):
            raise WeightsError(f"{name}: the {kind} entry needs a config and a state_dict mapping")
    meta = obj.get("meta", {})
    if not isinstance(meta, Mapping):
        raise WeightsError(f"{name}: meta is a {type(meta).__name__}, not a mapping")
    names = meta.get("class_names")
    if "var" in obj:
        nc = obj["var"]["config"].get("num_classes")
        if not _int(nc) or nc < 1:
            raise WeightsError(f"{name}: VARConfig.num_classes is {nc!r}, expected a positive integer")
        classes = check_class_names(names, nc, name, WeightsError)
    else:  # a tokeniser may record its data's classes
        classes = check_class_names(names, len(names) if isinstance(names, (list, tuple)) else 0, name,
                                    WeightsError) if names is not None else None
    defaults = None
    if meta.get("sampling") is not None:
        try:
            defaults = SamplingOptions(**check_sampling(meta["sampling"], name, WeightsError))
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{name}: bad sampling default ({e})") from None
    return classes, defaults


def is_self_describing(obj: Mapping[str, Any]) -> bool:
    return obj.get("format") == FORMAT


def check_self_describing(obj: Mapping[str, Any], name: str
                          ) -> tuple[tuple[tuple[str, ...], ...] | None, SamplingOptions | None]:
    """Every field of a self-describing file, before its tensors are used (works on :func:`peek`'s
    structure too): the torch-free checks of :func:`check_varedit_meta` (version, meta,
    class names, sampling defaults), then the configurations (types and ranges) and the state dicts'
    values.  Returns (class names, sampling defaults)."""
    import torch

    from .models.var import VARConfig
    from .models.vqvae import VQVAEConfig
    classes, defaults = check_varedit_meta(obj, name)
    for kind in ("vqvae", "var"):
        if kind in obj:
            sd = obj[kind]["state_dict"]
            bad = [k for k, t in sd.items() if not isinstance(t, (torch.Tensor, TensorInfo))]
            if bad or not sd:
                raise WeightsError(f"{name}: the {kind} state_dict is not a mapping of tensors (e.g. {bad[:1]})")
            cfg_from_dict(VQVAEConfig if kind == "vqvae" else VARConfig, obj[kind]["config"], name)
    return classes, defaults


def cfg_to_dict(cfg: Any) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def cfg_from_dict(cls: type, d: Any, name: str = "the file") -> Any:
    """A configuration from a file's dict: field names, types and ranges checked (one WeightsError)."""
    fields = check_config(cls, d, name, WeightsError)
    try:
        return cls(**fields)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{name}: {e}") from None


def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    """Read a weights file safely: its structure is checked first without materialising anything
    (:func:`varedit.checkpoint.peek`: an allow-listed unpickler, record sizes bounded by the file's size;
    self-describing files are validated field by field), then ``torch.load(weights_only=True)``."""
    import zipfile

    import torch

    p = Path(path)
    structure = peek(p)
    if not isinstance(structure, Mapping):
        raise WeightsError(f"{p.name} holds a {type(structure).__name__}, not a state dict")
    if is_self_describing(structure):
        check_self_describing(structure, p.name)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - classify and re-raise as one clear error
        msg = str(e)
        if "Weights only load failed" in msg or "Unsupported global" in msg or "unpickl" in msg.lower():
            raise WeightsError(f"refused {p.name}: it is a pickle with objects other than weights (it could run "
                               f"code); only plain state dicts are loaded") from None
        if isinstance(e, (zipfile.BadZipFile, EOFError)) or "central directory" in msg or "failed finding" in msg \
                or "PytorchStreamReader" in msg or "truncated" in msg.lower():
            raise WeightsError(f"{p.name} is truncated or corrupt ({p.stat().st_size} bytes); download it again") \
                from None
        raise WeightsError(f"cannot read {p.name} as torch weights: {msg.splitlines()[0][:200]}") from None
    return dict(obj)


def save_models(path: str | os.PathLike, *, var: VAR | None = None, vae: VQVAE | None = None,
                meta: Mapping[str, Any] | None = None, half: bool = False) -> None:
    """Write a self-describing file (configuration + weights), atomically."""
    import torch

    from .io import atomic_write_with
    obj: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "meta": dict(meta or {})}

    def pack(m: torch.nn.Module) -> dict[str, torch.Tensor]:
        sd = {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
        if half:
            sd = {k: (v.half() if v.is_floating_point() and v.dtype == torch.float32 else v) for k, v in sd.items()}
        return sd

    if vae is not None:
        obj["vqvae"] = {"config": cfg_to_dict(vae.cfg), "state_dict": pack(vae)}
    if var is not None:
        obj["var"] = {"config": cfg_to_dict(var.cfg), "state_dict": pack(var)}
    atomic_write_with(path, lambda f: torch.save(obj, f))


def load_self_describing(obj: Mapping[str, Any], name: str, device: str | torch.device = "cpu"
                         ) -> tuple[VAR | None, VQVAE | None]:
    """The models of a self-describing file (read by :func:`read_weights`), validated and built strictly."""
    from .building import as_float32, build_var, build_vqvae, var_vae_consistent
    from .models.var import VARConfig
    from .models.vqvae import VQVAEConfig
    check_self_describing(obj, name)
    var = vae = None
    if "vqvae" in obj:
        vae = build_vqvae(cfg_from_dict(VQVAEConfig, obj["vqvae"]["config"], name),
                          as_float32((obj["vqvae"]["state_dict"]), name), f"{name}:vqvae", device)
    if "var" in obj:
        var = build_var(cfg_from_dict(VARConfig, obj["var"]["config"], name),
                        as_float32((obj["var"]["state_dict"]), name), f"{name}:var", device)
    if var is not None and vae is not None:
        var_vae_consistent(var.cfg, vae.cfg)
    return var, vae


def load_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[VAR | None, VQVAE | None]:
    """Load any single weights file: self-describing, or an official VAR or VQVAE state dict."""
    from .building import build_var, build_vqvae
    from .official import describe_var, describe_vqvae, infer_var_config, infer_vqvae_config, state_dict_of
    name = Path(path).name
    obj = read_weights(path)
    if is_self_describing(obj):
        return load_self_describing(obj, name, device)
    sd = state_dict_of(obj, name)
    if "class_emb.weight" in sd:
        cfg = infer_var_config(sd, name=name)
        log.info("VAR %s: inferred %s", name, describe_var(cfg))
        return build_var(cfg, sd, name, device), None
    if "quantize.embedding.weight" in sd:
        cfg_v = infer_vqvae_config(sd, name=name)
        log.info("VQVAE %s: inferred %s", name, describe_vqvae(cfg_v))
        return None, build_vqvae(cfg_v, sd, name, device)
    raise WeightsError(f"{name} is neither a VAR nor a VQVAE state dict")


def file_info(path: str | os.PathLike) -> dict[str, Any]:
    """What a weights file holds, from its structure alone (:func:`varedit.checkpoint.peek`): no tensor is
    read, so it is fast on multi-gigabyte files, and everything reported has been validated."""
    from .checkpoint import unwrap_state_dict
    from .official import candidate_patch_nums, infer_patch_nums, infer_var_config, infer_vqvae_config
    name = Path(path).name
    obj = peek(path)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{name} holds a {type(obj).__name__}, not a state dict")
    info: dict[str, Any] = {"file": str(path), "bytes": Path(path).stat().st_size}
    if is_self_describing(obj):
        check_self_describing(obj, name)
        info["format"] = f"varedit v{obj.get('version')}"
        info["meta"] = dict(obj.get("meta", {}))
        for kind in ("vqvae", "var"):
            if kind in obj:
                sd = obj[kind]["state_dict"]
                info[kind] = {"config": dict(obj[kind]["config"]),
                              "parameters": sum(v.numel for v in sd.values() if v.is_floating_point())}
        return info
    sd = unwrap_state_dict(obj)
    bad = [k for k, v in sd.items() if not isinstance(v, TensorInfo)]
    if not sd or bad:
        raise WeightsError(f"{name} is not a state dict of tensors (e.g. key {bad[0] if bad else None!r})")
    info["format"] = "official state dict"
    info["keys"] = len(sd)
    info["parameters"] = sum(v.numel for k, v in sd.items() if v.is_floating_point() and "ema_vocab" not in k)
    dtypes = sorted({v.dtype for v in sd.values() if v.is_floating_point()})
    info["dtypes"] = dtypes
    if "class_emb.weight" in sd:
        # a file holds the number of scales and the sum of their squares; several scale lists may fit
        cands = []
        if "pos_1LC" in sd and "lvl_embed.weight" in sd:
            L = _dims(sd, "pos_1LC", "[1, L, width]", name)[1]
            SN = _dims(sd, "lvl_embed.weight", "[scales, width]", name)[0]
            if infer_patch_nums(L, SN) is None:
                cands = candidate_patch_nums(L, SN)
        info["var"] = cfg_to_dict(infer_var_config(sd, name=name, patch_nums=cands[0] if cands else None))
        if cands:
            info["var"]["patch_nums"] = None
            info["var"]["patch_nums_candidates"] = [list(c) for c in cands]
    elif "quantize.embedding.weight" in sd:
        info["vqvae"] = cfg_to_dict(infer_vqvae_config(sd, name=name))
    else:
        raise WeightsError(f"{name} is neither a VAR nor a VQVAE state dict")
    return info


def pack_models(var_path: str | os.PathLike, vae_path: str | os.PathLike, out: str | os.PathLike, *,
                half: bool = False, description: str | None = None, allow_new_tokens: bool = False,
                training: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One self-describing file from the VAR (and meta: class names, sampling defaults) of ``var_path`` and
    the VQVAE of ``vae_path`` (e.g. a decoder trained further with ``--decoder-only``).

    The VAR was trained on the tokens of the VQVAE stored beside it in ``var_path``; unless
    ``allow_new_tokens``, the new VQVAE must tokenise exactly as that one does (the same encoder,
    quant_conv, codebook and residual convolutions), so only the decoder may differ.  Returns a summary.
    """
    import torch

    from .building import build_vqvae, var_vae_consistent
    from .official import infer_vqvae_config, state_dict_of
    src = read_weights(var_path)
    if not is_self_describing(src) or "var" not in src:
        raise WeightsError(f"{Path(var_path).name} is not a varedit file with a VAR (train var writes model.pt)")
    var, old_vae = load_self_describing(src, Path(var_path).name)
    new_obj = read_weights(vae_path)
    if is_self_describing(new_obj):
        if "vqvae" not in new_obj:
            raise WeightsError(f"{Path(vae_path).name} holds no VQVAE")
        _, vae = load_self_describing({k: v for k, v in new_obj.items() if k != "var"}, Path(vae_path).name)
    else:
        sd = state_dict_of(new_obj, Path(vae_path).name)
        vae = build_vqvae(infer_vqvae_config(sd, name=Path(vae_path).name), sd, Path(vae_path).name)
    assert var is not None and vae is not None
    var_vae_consistent(var.cfg, vae.cfg)
    changed: list[str] = []
    if old_vae is not None:
        old_sd, new_sd = old_vae.state_dict(), vae.state_dict()
        changed = [k for k in new_sd if not k.startswith(("decoder.", "post_quant_conv."))
                   and "ema_vocab_hit" not in k  # usage statistics, not used to tokenise
                   and not (k in old_sd and torch.equal(old_sd[k].float(), new_sd[k].float()))]
        if changed and not allow_new_tokens:
            raise WeightsError(f"{Path(vae_path).name} tokenises differently from the VQVAE the VAR was trained on "
                               f"({len(changed)} tensors differ outside the decoder, e.g. {changed[0]}): train it with "
                               f"--decoder-only, or pass allow_new_tokens")
    meta = dict(src.get("meta", {}))
    if description is not None:
        meta["description"] = description
    if training is not None:
        meta["training"] = dict(training)
    save_models(out, var=var, vae=vae, meta=meta, half=half)
    return {"file": str(out), "bytes": Path(out).stat().st_size, "tokens_unchanged": not changed,
            "var_from": str(var_path), "vqvae_from": str(vae_path)}
