"""The official weights (as FoundationVision released them: ``vae_ch160v4096z32.pth``, ``var_d16.pth``
...): flat state dicts that record no configuration.  Everything varedit knows about that foreign format
is here (the wrappers around a state dict aside: :func:`varedit.checkpoint.unwrap_state_dict`, torch-free
for the argument checks): the configuration read off the keys and shapes (depth, width,
classes, vocabulary, shared AdaLN, cosine attention, scale list), the official constructors' arguments,
and the check against a preset.  Every tensor the inference reads is checked for its rank and non-empty
dimensions first (:func:`varedit.checkpoint.tensor_dims`), and the model built from it compares every
tensor's full shape (:func:`varedit.building.check_state_dict`).  Reading the files is
:func:`varedit.fileformat.read_weights`; the one loading path is :mod:`varedit.registry`.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping

import torch

from .building import as_float32, build_var, build_vqvae, check_state_dict, var_vae_consistent
from .checkpoint import WeightsError, tensor_dims as _dims, unwrap_state_dict
from .models.var import VAR, VARConfig
from .models.vqvae import VQVAE, VQVAEConfig
from .presets import KNOWN_PATCH_NUMS, PATCH_NUMS_256, Preset

log = logging.getLogger(__name__)

def state_dict_of(obj: Mapping[str, Any], name: str) -> dict[str, torch.Tensor]:
    """The float32 state dict of a loaded official file, or one :class:`WeightsError`."""
    sd = unwrap_state_dict(obj)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if not sd or bad:
        raise WeightsError(f"{name} is not a state dict of tensors (e.g. key {bad[0] if bad else None!r})")
    return as_float32(sd, name)


def _require(sd: Mapping[str, Any], keys: tuple[str, ...], name: str, what: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise WeightsError(f"{name} is not a complete {what} state dict: it lacks {', '.join(missing)}")


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


def infer_patch_nums(L: int, SN: int) -> tuple[int, ...] | None:
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
        patch_nums = infer_patch_nums(L, SN)
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


def check_against_preset(sd: Mapping[str, torch.Tensor], preset: Preset, name: str, num_heads: int | None) -> None:
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


def check_release(sd: Mapping[str, Any], preset: Preset, filename: str, name: str) -> None:
    """A file of an official release (``filename`` of ``preset``) has the key and shape of every tensor
    of the preset's model: ``sd`` is its structure (:class:`~varedit.checkpoint.TensorInfo`, nothing
    loaded), so this is quick whatever the file's size.  Raises WeightsError naming what differs."""
    if filename == preset.var_file:
        cfg = infer_var_config(sd, patch_nums=preset.patch_nums, name=name)
        want = preset.var_config()
        diffs = [f"{k} {getattr(cfg, k)} (expected {getattr(want, k)})"
                 for k in ("depth", "embed_dim", "num_heads", "num_classes", "vocab_size", "Cvae", "shared_aln")
                 if getattr(cfg, k) != getattr(want, k)]
        if diffs:
            raise WeightsError(f"{name} is not {preset.name}: it has " + ", ".join(diffs))
        with torch.device("meta"):
            model: torch.nn.Module = VAR(cfg)
    else:
        cfg_v = infer_vqvae_config(sd, patch_nums=preset.patch_nums, name=name)
        want_v = preset.vae_config()
        diffs = [f"{k} {getattr(cfg_v, k)} (expected {getattr(want_v, k)})"
                 for k in ("vocab_size", "z_channels", "ch") if getattr(cfg_v, k) != getattr(want_v, k)]
        if diffs:
            raise WeightsError(f"{name} is not the official VQVAE: it has " + ", ".join(diffs))
        with torch.device("meta"):
            model = VQVAE(cfg_v)
    check_state_dict(model, sd, name)


def build_official(var_sd: Mapping[str, torch.Tensor], vae_sd: Mapping[str, torch.Tensor], *, var_name: str,
                   vae_name: str, preset: Preset | None = None, num_heads: int | None = None,
                   patch_nums: tuple[int, ...] | None = None, device: str | torch.device = "cpu"
                   ) -> tuple[VAR, VQVAE]:
    """The VAR and VQVAE of two official state dicts (:func:`state_dict_of`), their configurations
    inferred and checked against ``preset`` when given, strictly."""
    if "class_emb.weight" not in var_sd and "class_emb.weight" in vae_sd:
        raise WeightsError(f"the VAR and VQVAE files look swapped: {var_name} is a VQVAE")
    if preset is not None and preset.depth is not None:
        check_against_preset(var_sd, preset, var_name, num_heads)
    pn = patch_nums or (preset.patch_nums if preset else None)
    var_cfg = infer_var_config(var_sd, num_heads=num_heads, patch_nums=pn, name=var_name)
    vae_cfg = infer_vqvae_config(vae_sd, patch_nums=var_cfg.patch_nums, name=vae_name)
    if not var_cfg.attn_l2_norm:
        log.warning("%s has no cosine-attention scales: loading it with plain scaled attention", var_name)
    var_vae_consistent(var_cfg, vae_cfg)
    log.info("VAR %s: inferred %s", var_name, describe_var(var_cfg))
    log.info("VQVAE %s: inferred %s", vae_name, describe_vqvae(vae_cfg))
    return build_var(var_cfg, var_sd, var_name, device), build_vqvae(vae_cfg, vae_sd, vae_name, device)
