"""Named model presets and the one loading path for weights.

* Official checkpoints (``vae_ch160v4096z32.pth``, ``var_d16.pth`` ...) are flat state dicts.  Their
  configuration is inferred from the keys and shapes (depth, width, classes, vocabulary, shared AdaLN,
  cosine attention, scale list), logged, and checked against the preset when one was asked for.
  Every tensor the inference reads is checked for its rank and non-empty dimensions first, and once
  the model is built every tensor's full shape is compared with the model's: a crafted file gives one
  :class:`WeightsError` naming the key, the shape expected and the shape found.
* Models trained by varedit are saved *self-describing*: a dict with ``format = "varedit"`` and the
  configuration beside the weights, so they load with no flags.

Every file is read with ``torch.load(..., weights_only=True)``: a pickle that would run code is refused.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .models.var import VAR, VARConfig
from .models.vqvae import VQVAE, VQVAEConfig
from .checkpoint import TensorInfo, WeightsError, peek, tensor_dims as _dims
from .fileformat import FORMAT, FORMAT_VERSION, check_varedit_meta
from .options import SamplingOptions
from .validation import check_config
from .presets import (DEFAULT_MODEL, DEMO_FILE, HF_REPO, KNOWN_PATCH_NUMS, PATCH_NUMS_256, PATCH_NUMS_512,  # noqa: F401
                      PRESETS, VAE_FILE, Preset, get_preset)

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------------
# reading files
# --------------------------------------------------------------------------------------------------
def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    """Read a weights file safely: its structure is checked first without materialising anything
    (:func:`varedit.checkpoint.peek`: an allow-listed unpickler, record sizes bounded by the file's size;
    self-describing files are validated field by field), then ``torch.load(weights_only=True)``."""
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


def is_self_describing(obj: Mapping[str, Any]) -> bool:
    return obj.get("format") == FORMAT


def check_self_describing(obj: Mapping[str, Any], name: str
                          ) -> tuple[tuple[tuple[str, ...], ...] | None, SamplingOptions | None]:
    """Every field of a self-describing file, before its tensors are used (works on :func:`peek`'s
    structure too): the torch-free checks of :func:`varedit.modelinfo.check_varedit_meta` (version, meta,
    class names, sampling defaults), then the configurations (types and ranges) and the state dicts'
    values.  Returns (class names, sampling defaults)."""
    classes, defaults = check_varedit_meta(obj, name)
    for kind in ("vqvae", "var"):
        if kind in obj:
            sd = obj[kind]["state_dict"]
            bad = [k for k, t in sd.items() if not isinstance(t, (torch.Tensor, TensorInfo))]
            if bad or not sd:
                raise WeightsError(f"{name}: the {kind} state_dict is not a mapping of tensors (e.g. {bad[:1]})")
            _cfg_from_dict(VQVAEConfig if kind == "vqvae" else VARConfig, obj[kind]["config"], name)
    return classes, defaults


def _state_dict(obj: Mapping[str, Any], name: str) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "model", "trainer"):
        # common wrappers around a state dict (e.g. the official trainer's checkpoints)
        if wrapper in obj and isinstance(obj[wrapper], Mapping) and not isinstance(next(iter(obj.values())), torch.Tensor):
            obj = obj[wrapper]
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not obj or bad:
        raise WeightsError(f"{name} is not a state dict of tensors (e.g. key {bad[0] if bad else None!r})")
    return _float32(dict(obj), name)


def _float32(sd: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Half-precision files (fp16 / bf16 exports of the official weights) load as float32: the models run in
    float32 (autocast, not parameter dtypes, gives the speed on GPUs), and mixed dtypes fail at first use."""
    low = [k for k, v in sd.items() if v.is_floating_point() and v.dtype != torch.float32]
    if low:
        log.info("%s: %d tensors stored as %s, converted to float32", name, len(low), sd[low[0]].dtype)
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    return sd


def _require(sd: Mapping[str, Any], keys: tuple[str, ...], name: str, what: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise WeightsError(f"{name} is not a complete {what} state dict: it lacks {', '.join(missing)}")


# --------------------------------------------------------------------------------------------------
# inferring configurations from official state dicts
# --------------------------------------------------------------------------------------------------
def _count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def _config(cls: type, name: str, **fields: Any) -> Any:
    """A configuration inferred from shapes; its own range checks fail as one :class:`WeightsError`."""
    try:
        return cls(**fields)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{name}: the tensors' shapes describe no valid model ({e})") from None


def infer_vqvae_config(sd: Mapping[str, torch.Tensor], patch_nums: tuple[int, ...] | None = None,
                       name: str = "the VQVAE file") -> VQVAEConfig:
    if "quantize.embedding.weight" not in sd or "encoder.conv_in.weight" not in sd:
        raise WeightsError("not a VQVAE state dict (no quantize.embedding.weight / encoder.conv_in.weight)")
    _require(sd, ("quant_conv.weight", "encoder.down.0.block.0.conv1.weight"), name, "VQVAE")
    V, Cvae = _dims(sd, "quantize.embedding.weight", "[vocab, Cvae]", name)
    ch = _dims(sd, "encoder.conv_in.weight", "[ch, 3, k, k]", name)[0]
    n_levels = _count(sd, r"encoder\.down\.(\d+)\.")
    ch_mult = tuple(_dims(sd, f"encoder.down.{i}.block.0.conv1.weight", "[ch_out, ch_in, k, k]", name)[0] // ch
                    for i in range(n_levels))
    nrb = _count(sd, r"encoder\.down\.0\.block\.(\d+)\.")
    share = _count(sd, r"quantize\.quant_resi\.qresi_ls\.(\d+)\.")
    # usage statistics, replaced by zeros when their shape differs (VQVAE._load_from_state_dict): they only hint
    # at the number of scales
    ema = sd.get("quantize.ema_vocab_hit_SV")
    SN = int(ema.shape[0]) if ema is not None and len(ema.shape) == 2 else None
    if patch_nums is None:
        matches = [p for p in KNOWN_PATCH_NUMS if len(p) == SN]
        patch_nums = matches[0] if matches else PATCH_NUMS_256
    return _config(
        VQVAEConfig, name,
        vocab_size=int(V), z_channels=int(Cvae), ch=int(ch), ch_mult=ch_mult, num_res_blocks=nrb,
        quant_conv_ks=_dims(sd, "quant_conv.weight", "[Cvae, Cvae, k, k]", name)[-1], share_quant_resi=share,
        using_sa=f"encoder.down.{n_levels - 1}.attn.0.qkv.weight" in sd,
        using_mid_sa="encoder.mid.attn_1.qkv.weight" in sd, v_patch_nums=tuple(patch_nums))


def candidate_patch_nums(L: int, SN: int, limit: int = 50) -> list[tuple[int, ...]]:
    """Strictly increasing scale lists starting at 1 with SN scales and sum of squares L."""
    out: list[tuple[int, ...]] = []

    def dfs(prefix: list[int], rest: int) -> None:
        if len(out) >= limit:
            return
        k = SN - len(prefix)
        if k == 0:
            if rest == 0:
                out.append(tuple(prefix))
            return
        lo = prefix[-1] + 1
        # the k remaining scales are at least lo, lo+1, ...: prune when even those do not fit
        if sum((lo + j) ** 2 for j in range(k)) > rest:
            return
        x = lo
        while x * x <= rest:
            dfs(prefix + [x], rest - x * x)
            x += 1

    if SN >= 1 and L >= 1:
        dfs([1], L - 1)
    return out


class ScaleListError(WeightsError):
    """An official VAR file whose scale list several lists fit (it records only their number and the sum
    of their squares): the caller has to give it."""


def _infer_patch_nums(L: int, SN: int) -> tuple[int, ...] | None:
    for p in KNOWN_PATCH_NUMS:
        if len(p) == SN and sum(x * x for x in p) == L:
            return p
    cands = candidate_patch_nums(L, SN, limit=2)
    if len(cands) == 1:
        log.info("scale list %s is the only one with %d scales and L=%d", list(cands[0]), SN, L)
        return cands[0]
    return None


def infer_var_config(sd: Mapping[str, torch.Tensor], num_heads: int | None = None,
                     patch_nums: tuple[int, ...] | None = None, name: str = "the VAR file") -> VARConfig:
    if "class_emb.weight" not in sd or "head.weight" not in sd:
        raise WeightsError("not a VAR state dict (no class_emb.weight / head.weight)")
    _require(sd, ("word_embed.weight", "pos_1LC", "lvl_embed.weight", "blocks.0.ffn.fc1.weight"), name, "VAR")
    ncls1, C = _dims(sd, "class_emb.weight", "[classes + 1, width]", name)
    V = _dims(sd, "head.weight", "[vocab, width]", name)[0]
    Cvae = _dims(sd, "word_embed.weight", "[width, Cvae]", name)[1]
    depth = _count(sd, r"blocks\.(\d+)\.")
    shared = "shared_ada_lin.1.weight" in sd
    l2 = "blocks.0.attn.scale_mul_1H11" in sd
    if l2:
        heads_in_file = _dims(sd, "blocks.0.attn.scale_mul_1H11", "[1, heads, 1, 1]", name)[1]
        if num_heads is not None and num_heads != heads_in_file:
            raise WeightsError(f"num_heads={num_heads} asked, but the file has {heads_in_file} heads")
        num_heads = heads_in_file
    elif num_heads is None:
        num_heads = depth  # the official rule; not recorded in files without cosine attention
    L = _dims(sd, "pos_1LC", "[1, L, width]", name)[1]
    SN = _dims(sd, "lvl_embed.weight", "[scales, width]", name)[0]
    if patch_nums is None:
        patch_nums = _infer_patch_nums(L, SN)
        if patch_nums is None:
            cands = candidate_patch_nums(L, SN, limit=4)
            fits = "; ".join(",".join(map(str, c)) for c in cands[:3]) + (" ..." if len(cands) > 3 else "")
            raise ScaleListError(f"cannot infer the scale list (L={L}, {SN} scales"
                               + (f" fit {fits}" if cands else "") + "): pass patch_nums")
    elif sum(p * p for p in patch_nums) != L or len(patch_nums) != SN:
        raise WeightsError(f"scale list {patch_nums} does not fit the file (L={L}, {SN} scales)")
    mlp_ratio = _dims(sd, "blocks.0.ffn.fc1.weight", "[hidden, width]", name)[0] / C
    return _config(VARConfig, name, depth=depth, embed_dim=int(C), num_heads=num_heads, num_classes=int(ncls1) - 1,
                   vocab_size=int(V), Cvae=int(Cvae), mlp_ratio=mlp_ratio, shared_aln=shared, attn_l2_norm=l2,
                   patch_nums=tuple(patch_nums))


def configs_from_official_ctor(vqvae_ctor: Mapping[str, Any], var_ctor: Mapping[str, Any],
                               vqvae_defaults: Mapping[str, Any] | None = None) -> tuple[VQVAEConfig, VARConfig]:
    """Map the official constructors' arguments (``VQVAE(...)``, ``VAR(...)``) to varedit configs."""
    v = {**(vqvae_defaults or {}), **vqvae_ctor}
    vae_cfg = VQVAEConfig(
        vocab_size=v["vocab_size"], z_channels=v["z_channels"], ch=v["ch"],
        ch_mult=tuple(v.get("ch_mult", (1, 1, 2, 2, 4))), num_res_blocks=v.get("num_res_blocks", 2),
        dropout=v.get("dropout", 0.0), beta=v.get("beta", 0.25), quant_conv_ks=v.get("quant_conv_ks", 3),
        quant_resi=v.get("quant_resi", 0.5), share_quant_resi=v.get("share_quant_resi", 4),
        using_sa=v.get("using_sa", True), using_mid_sa=v.get("using_mid_sa", True),
        v_patch_nums=tuple(v.get("v_patch_nums", PATCH_NUMS_256)))
    a = var_ctor
    var_cfg = VARConfig(
        depth=a.get("depth", 16), embed_dim=a.get("embed_dim", 1024), num_heads=a.get("num_heads", 16),
        num_classes=a.get("num_classes", 1000), vocab_size=vae_cfg.vocab_size, Cvae=vae_cfg.z_channels,
        mlp_ratio=a.get("mlp_ratio", 4.0), norm_eps=a.get("norm_eps", 1e-6), shared_aln=a.get("shared_aln", False),
        attn_l2_norm=a.get("attn_l2_norm", False), cond_drop_rate=a.get("cond_drop_rate", 0.1),
        drop_rate=a.get("drop_rate", 0.0), attn_drop_rate=a.get("attn_drop_rate", 0.0),
        drop_path_rate=a.get("drop_path_rate", 0.0), patch_nums=tuple(a.get("patch_nums", PATCH_NUMS_256)))
    return vae_cfg, var_cfg


def describe_var(cfg: VARConfig) -> str:
    return (f"depth {cfg.depth}, width {cfg.embed_dim}, {cfg.num_heads} heads, {cfg.num_classes} classes, "
            f"vocab {cfg.vocab_size}, scales {list(cfg.patch_nums)}, shared AdaLN {cfg.shared_aln}, "
            f"cosine attention {cfg.attn_l2_norm}")


def describe_vqvae(cfg: VQVAEConfig) -> str:
    return (f"vocab {cfg.vocab_size}, z {cfg.z_channels}, ch {cfg.ch}, ch_mult {list(cfg.ch_mult)}, "
            f"{cfg.share_quant_resi} shared phi, scales {list(cfg.v_patch_nums)}")


def check_state_dict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], name: str) -> None:
    """Same keys and every tensor of the same full shape as the model, or one error naming what differs
    (for a shape: the key, the shape the model expects and the shape found)."""
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


# --------------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------------
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


def build_vqvae(cfg: VQVAEConfig, sd: Mapping[str, torch.Tensor] | None = None, name: str = "VQVAE",
                device: str | torch.device = "cpu") -> VQVAE:
    vae = _construct(VQVAE, cfg, sd, name, device)
    if sd is not None:
        check_state_dict(vae, sd, name)
        vae.load_state_dict(dict(sd), strict=True, assign=True)
    return vae.to(device).eval().requires_grad_(False)


def build_var(cfg: VARConfig, sd: Mapping[str, torch.Tensor] | None = None, name: str = "VAR",
              device: str | torch.device = "cpu") -> VAR:
    var = _construct(VAR, cfg, sd, name, device)
    if sd is not None:
        check_state_dict(var, sd, name)
        var.load_state_dict(dict(sd), strict=True, assign=True)
    return var.to(device).eval().requires_grad_(False)


def var_vae_consistent(var_cfg: VARConfig, vae_cfg: VQVAEConfig) -> None:
    if var_cfg.vocab_size != vae_cfg.vocab_size or var_cfg.Cvae != vae_cfg.z_channels:
        raise WeightsError(f"VAR (vocab {var_cfg.vocab_size}, Cvae {var_cfg.Cvae}) and VQVAE (vocab "
                           f"{vae_cfg.vocab_size}, z {vae_cfg.z_channels}) do not belong together")


def _check_against_preset(sd: Mapping[str, torch.Tensor], preset: Preset, name: str, num_heads: int | None) -> None:
    """Compare what the keys say with the preset before anything else, naming every difference."""
    if "class_emb.weight" not in sd or "head.weight" not in sd:
        raise WeightsError(f"{name} is not a VAR state dict (no class_emb.weight / head.weight)")
    exp = preset.var_config(num_heads)
    ncls1, width = _dims(sd, "class_emb.weight", "[classes + 1, width]", name)
    found = {"depth": _count(sd, r"blocks\.(\d+)\."), "embed_dim": width, "num_classes": ncls1 - 1,
             "vocab_size": _dims(sd, "head.weight", "[vocab, width]", name)[0],
             "shared_aln": "shared_ada_lin.1.weight" in sd, "L": _dims(sd, "pos_1LC", "[1, L, width]", name)[1]}
    want = {"depth": exp.depth, "embed_dim": exp.embed_dim, "num_classes": exp.num_classes,
            "vocab_size": exp.vocab_size, "shared_aln": exp.shared_aln, "L": exp.L}
    diffs = [f"{k} {found[k]} (expected {want[k]})" for k in want if found[k] != want[k]]
    if diffs:
        raise WeightsError(f"{name} is not {preset.name}: it has " + ", ".join(diffs))


def load_official(var_path: str | os.PathLike, vae_path: str | os.PathLike, *, preset: Preset | None = None,
                  num_heads: int | None = None, patch_nums: tuple[int, ...] | None = None,
                  device: str | torch.device = "cpu") -> tuple[VAR, VQVAE]:
    """Load official-format state dicts (as released by FoundationVision), strictly."""
    var_sd = _state_dict(read_weights(var_path), Path(var_path).name)
    vae_sd = _state_dict(read_weights(vae_path), Path(vae_path).name)
    if "class_emb.weight" not in var_sd and "class_emb.weight" in vae_sd:
        raise WeightsError(f"the VAR and VQVAE files look swapped: {Path(var_path).name} is a VQVAE")
    if preset is not None and preset.depth is not None:
        _check_against_preset(var_sd, preset, Path(var_path).name, num_heads)
    pn = patch_nums or (preset.patch_nums if preset else None)
    var_cfg = infer_var_config(var_sd, num_heads=num_heads, patch_nums=pn, name=Path(var_path).name)
    vae_cfg = infer_vqvae_config(vae_sd, patch_nums=var_cfg.patch_nums, name=Path(vae_path).name)
    if not var_cfg.attn_l2_norm:
        log.warning("%s has no cosine-attention scales: loading it with plain scaled attention", var_path)
    var_vae_consistent(var_cfg, vae_cfg)
    log.info("VAR %s: inferred %s", Path(var_path).name, describe_var(var_cfg))
    log.info("VQVAE %s: inferred %s", Path(vae_path).name, describe_vqvae(vae_cfg))
    return (build_var(var_cfg, var_sd, Path(var_path).name, device),
            build_vqvae(vae_cfg, vae_sd, Path(vae_path).name, device))


# --------------------------------------------------------------------------------------------------
# self-describing format (models trained by varedit)
# --------------------------------------------------------------------------------------------------
def _cfg_to_dict(cfg: Any) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _cfg_from_dict(cls: type, d: Any, name: str = "the file") -> Any:
    """A configuration from a file's dict: field names, types and ranges checked (one WeightsError)."""
    fields = check_config(cls, d, name, WeightsError)
    try:
        return cls(**fields)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{name}: {e}") from None


def save_models(path: str | os.PathLike, *, var: VAR | None = None, vae: VQVAE | None = None,
                meta: Mapping[str, Any] | None = None, half: bool = False) -> None:
    """Write a self-describing file (configuration + weights), atomically."""
    obj: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "meta": dict(meta or {})}

    def pack(m: torch.nn.Module) -> dict[str, torch.Tensor]:
        sd = {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
        if half:
            sd = {k: (v.half() if v.is_floating_point() and v.dtype == torch.float32 else v) for k, v in sd.items()}
        return sd

    if vae is not None:
        obj["vqvae"] = {"config": _cfg_to_dict(vae.cfg), "state_dict": pack(vae)}
    if var is not None:
        obj["var"] = {"config": _cfg_to_dict(var.cfg), "state_dict": pack(var)}
    from .io import atomic_write_with
    atomic_write_with(path, lambda f: torch.save(obj, f))


def load_self_describing(obj: Mapping[str, Any], name: str, device: str | torch.device = "cpu"
                         ) -> tuple[VAR | None, VQVAE | None]:
    check_self_describing(obj, name)
    var = vae = None
    if "vqvae" in obj:
        vae = build_vqvae(_cfg_from_dict(VQVAEConfig, obj["vqvae"]["config"], name),
                          _float32(dict(obj["vqvae"]["state_dict"]), name), f"{name}:vqvae", device)
    if "var" in obj:
        var = build_var(_cfg_from_dict(VARConfig, obj["var"]["config"], name),
                        _float32(dict(obj["var"]["state_dict"]), name), f"{name}:var", device)
    if var is not None and vae is not None:
        var_vae_consistent(var.cfg, vae.cfg)
    return var, vae


def load_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[VAR | None, VQVAE | None]:
    """Load any single weights file: self-describing, or an official VAR or VQVAE state dict."""
    name = Path(path).name
    obj = read_weights(path)
    if is_self_describing(obj):
        return load_self_describing(obj, name, device)
    sd = _state_dict(obj, name)
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
    sd = obj
    for wrapper in ("state_dict", "model", "trainer"):
        if isinstance(sd.get(wrapper), Mapping) and not isinstance(next(iter(sd.values())), TensorInfo):
            sd = sd[wrapper]
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
            if _infer_patch_nums(L, SN) is None:
                cands = candidate_patch_nums(L, SN)
        info["var"] = _cfg_to_dict(infer_var_config(sd, name=name, patch_nums=cands[0] if cands else None))
        if cands:
            info["var"]["patch_nums"] = None
            info["var"]["patch_nums_candidates"] = [list(c) for c in cands]
    elif "quantize.embedding.weight" in sd:
        info["vqvae"] = _cfg_to_dict(infer_vqvae_config(sd, name=name))
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
        vae = build_vqvae(infer_vqvae_config(_state_dict(new_obj, Path(vae_path).name)),
                          _state_dict(new_obj, Path(vae_path).name), Path(vae_path).name)
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
