"""Training the VAR transformer on a frozen VQVAE: from scratch or by fine-tuning an official checkpoint.

Every batch is tokenised on the fly (``vae.img_to_idx``; fp32, no gradients) and the transformer is
trained by teacher forcing: the input for scale k+1 is the cumulative f_hat after scale k, area-pooled
to that grid (``quantize.idx_to_var_input``), and the loss is the cross-entropy over all L tokens of all
scales, each token weighted equally (as the official trainer does), optionally with label smoothing.
Labels are replaced by the null class with probability ``model.cond_drop_rate`` (inside ``VAR.forward``)
so that the model also learns the unconditional distribution classifier-free guidance needs.

Fine-tuning (``init``) starts from an official-format state dict or a varedit file.  A different number
of classes is allowed: the class embedding is rebuilt with the new size, keeping the old rows where
indices overlap and moving the old null-class row (the guidance anchor) to the new last row; new rows
are drawn like a fresh model's.  ``freeze`` keeps parameter groups fixed (``embeddings``, ``blocks``,
``head``, ``class_emb``, or any parameter-name prefix such as ``blocks.0.``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.var import VAR, VARConfig
from ..models.vqvae import VQVAE
from .common import (TrainConfig, cleanup_distributed, config_to_dict, fit, hardware_name, seed_everything,
                     setup_distributed, write_summary)
from .data import DataConfig, build_dataset
from .vqvae import load_vqvae_file

log = logging.getLogger(__name__)

FREEZE_GROUPS: dict[str, tuple[str, ...]] = {
    "embeddings": ("class_emb.", "pos_start", "pos_1LC", "lvl_embed.", "word_embed."),
    "class_emb": ("class_emb.",),
    "blocks": ("blocks.",),
    "head": ("head_nm.", "head."),
}
DEFAULT_SAMPLING: dict[str, Any] = {"cfg": 4.0, "top_k": 0, "top_p": 0.95, "more_smooth": False,
                                    "guidance": "linear"}


@dataclass
class VARTrainConfig:
    vae: str = ""                      # the (frozen) VQVAE: varedit file or official state dict
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=4e-4, weight_decay=0.05, warmup_steps=200))
    data: DataConfig = field(default_factory=lambda: DataConfig(image_size=0))  # 0: the VQVAE's size
    # depth/width/heads/regularisation; vocab, Cvae and the scale list always come from the VQVAE,
    # num_classes from `num_classes` or the data
    model: VARConfig = field(default_factory=lambda: VARConfig(depth=6, embed_dim=256, num_heads=4))
    init: str | None = None            # fine-tune from this VAR (official state dict or varedit file)
    num_classes: int | None = None     # default: the dataset's number of classes
    freeze: tuple[str, ...] = ()
    label_smoothing: float = 0.0
    out_dir: str | None = None         # var.pt and model.pt; default: the run directory
    half: bool = False                 # store the final weights as fp16
    class_names: list[list[str]] | None = None   # default: the dataset's class names
    sampling: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SAMPLING))


def read_var_file(path: str | Path, patch_nums: tuple[int, ...] | None = None
                  ) -> tuple[VARConfig, dict[str, torch.Tensor]]:
    """Configuration and fp32 state dict of a VAR in a varedit file or an official state dict
    (``patch_nums``: the scale list of an official file that leaves it open)."""
    from ..checkpoint import WeightsError
    from ..fileformat import cfg_from_dict, is_self_describing, read_weights
    from ..official import infer_var_config, state_dict_of
    obj = read_weights(path)
    if is_self_describing(obj):
        if "var" not in obj:
            raise WeightsError(f"{Path(path).name} holds no VAR")
        vcfg = cfg_from_dict(VARConfig, obj["var"]["config"])
        sd = obj["var"]["state_dict"]
    else:
        sd = state_dict_of(obj, Path(path).name)
        vcfg = infer_var_config(sd, patch_nums=patch_nums)
    return vcfg, {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def remap_class_embedding(sd: Mapping[str, torch.Tensor], num_classes: int, embed_dim: int
                          ) -> dict[str, torch.Tensor]:
    """Resize ``class_emb`` to ``num_classes`` + 1 rows: overlapping rows kept, the null row moved to the
    end, new rows drawn like VAR's initialisation (global RNG, so seeded runs repeat)."""
    old = sd["class_emb.weight"]
    old_k = old.shape[0] - 1
    if old_k == num_classes:
        return dict(sd)
    new = torch.empty(num_classes + 1, embed_dim, dtype=old.dtype)
    nn.init.trunc_normal_(new, mean=0.0, std=math.sqrt(1 / embed_dim / 3))
    keep = min(old_k, num_classes)
    new[:keep] = old[:keep]
    new[num_classes] = old[old_k]
    log.info("class embedding: %d -> %d classes (kept rows 0..%d and the null row)", old_k, num_classes, keep - 1)
    return {**sd, "class_emb.weight": new}


def apply_freeze(var: VAR, names: tuple[str, ...] | list[str]) -> list[str]:
    """Freeze the named groups / name prefixes; returns the frozen parameter names."""
    prefixes: list[str] = []
    for n in names:
        prefixes += list(FREEZE_GROUPS.get(n, (n,)))
    frozen = []
    for pname, p in var.named_parameters():
        if any(pname.startswith(pre) for pre in prefixes):
            p.requires_grad_(False)
            frozen.append(pname)
    for n in names:
        pres = FREEZE_GROUPS.get(n, (n,))
        if not any(f.startswith(pre) for f in frozen for pre in pres):
            raise ValueError(f"--freeze {n!r} matches no parameter (groups: {', '.join(FREEZE_GROUPS)}, "
                             f"or a parameter-name prefix such as 'blocks.0.')")
    return frozen


class Tokenizer:
    """Images -> (teacher-forcing input (B, L - first_l, Cvae), targets (B, L)) with a frozen VQVAE, in fp32."""

    def __init__(self, vae: VQVAE):
        self.vae = vae

    @torch.no_grad()
    def __call__(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(img.device.type, enabled=False):
            idx = self.vae.img_to_idx(img.float())
            return self.vae.quantize.idx_to_var_input(idx), torch.cat(idx, dim=1)


def _vae_patch_nums_needed(path: str) -> bool:
    from ..fileformat import is_self_describing, read_weights
    return not is_self_describing(read_weights(path))


def _read_init(cfg: VARTrainConfig) -> tuple[VARConfig, dict[str, torch.Tensor]]:
    """The --init VAR; an official file whose scale list several lists fit takes the model's (--patch-nums)."""
    from ..checkpoint import WeightsError
    from ..official import ScaleListError
    assert cfg.init is not None
    try:
        return read_var_file(cfg.init)
    except ScaleListError as e:
        try:
            return read_var_file(cfg.init, tuple(cfg.model.patch_nums))
        except WeightsError:
            raise ScaleListError(f"{Path(cfg.init).name}: {e} (--patch-nums)") from None


def train_var(cfg: VARTrainConfig) -> dict[str, Any]:
    """Train (or resume) a VAR; writes checkpoints, metrics.jsonl, summary.json, ``var.pt`` (VAR only) and
    ``model.pt`` (VAR + VQVAE + meta: class names, sampling defaults, training summary).  Returns the
    summary (on every rank)."""
    from ..fileformat import save_models

    tc = cfg.train
    ctx = setup_distributed(tc.device, tc.threads)
    try:
        if not cfg.vae:
            raise ValueError("train_var needs a VQVAE file (--vae)")
        init_cfg, init_sd = _read_init(cfg) if cfg.init else (None, None)
        # an official VQVAE file does not record its scale list: take the init VAR's, else the config's
        pn = init_cfg.patch_nums if init_cfg is not None else cfg.model.patch_nums
        vae = load_vqvae_file(cfg.vae, pn if _vae_patch_nums_needed(cfg.vae) else None)
        vae = vae.to(ctx.device).eval().requires_grad_(False)
        if init_cfg is not None and (tuple(init_cfg.patch_nums) != tuple(vae.patch_nums)
                                     or init_cfg.vocab_size != vae.vocab_size or init_cfg.Cvae != vae.Cvae):
            raise ValueError(f"{Path(cfg.init).name} (scales {list(init_cfg.patch_nums)}, vocab {init_cfg.vocab_size}) "
                             f"does not fit the VQVAE (scales {list(vae.patch_nums)}, vocab {vae.vocab_size})")

        data_cfg = cfg.data
        if not data_cfg.image_size:
            data_cfg = dataclasses.replace(data_cfg, image_size=vae.image_size)
        elif data_cfg.image_size != vae.image_size:
            raise ValueError(f"the VQVAE works on {vae.image_size} px images, the data is {data_cfg.image_size} px")
        if data_cfg.photo_crops:
            raise ValueError("photo crops carry no class label: they are for tokenizer (VQVAE) training only")
        dataset = build_dataset(data_cfg)
        K = cfg.num_classes or dataset.num_classes
        if dataset.num_classes > K:
            raise ValueError(f"the data has {dataset.num_classes} classes but the model {K}")

        reg = {f: getattr(cfg.model, f) for f in ("cond_drop_rate", "drop_rate", "attn_drop_rate", "drop_path_rate")}
        if init_cfg is not None:
            var_cfg = dataclasses.replace(init_cfg, num_classes=K, **reg)
        else:
            var_cfg = dataclasses.replace(cfg.model, num_classes=K, vocab_size=vae.vocab_size, Cvae=vae.Cvae,
                                          patch_nums=tuple(vae.patch_nums))
        seed_everything(tc.seed)  # the same initial weights on every rank
        var = VAR(var_cfg)
        if init_sd is not None:
            var.load_state_dict(remap_class_embedding(init_sd, K, var_cfg.embed_dim), strict=True)
            log.info("fine-tuning %s", cfg.init)
        else:
            var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, init_std=-1)  # official recipe
        frozen = apply_freeze(var, cfg.freeze) if cfg.freeze else []
        if frozen and init_cfg is not None and K != init_cfg.num_classes and any(f.startswith("class_emb") for f in frozen):
            log.warning("the class embedding is frozen although %d classes are new", max(0, K - init_cfg.num_classes))
        var = var.to(ctx.device)
        n_params = sum(p.numel() for p in var.parameters())
        n_train = sum(p.numel() for p in var.parameters() if p.requires_grad)
        log.info("VAR: %.2fM parameters (%.2fM trained), depth %d, width %d, %d classes, L=%d", n_params / 1e6,
                 n_train / 1e6, var_cfg.depth, var_cfg.embed_dim, K, var.L)

        tokenize = Tokenizer(vae)
        V, last_l = vae.vocab_size, var.patch_nums[-1] ** 2

        def loss_fn(module: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
            img, label = batch
            x_BLCv, gt_BL = tokenize(img)
            logits_BLV = module(label, x_BLCv).float()
            ce_BL = F.cross_entropy(logits_BLV.view(-1, V), gt_BL.view(-1), reduction="none",
                                    label_smoothing=cfg.label_smoothing).view_as(gt_BL)
            hit_BL = (logits_BLV.argmax(-1) == gt_BL).float()
            return ce_BL.mean(), {"acc": hit_BL.mean(), "loss_last": ce_BL[:, -last_l:].mean().detach(),
                                  "acc_last": hit_BL[:, -last_l:].mean()}, None

        t0 = time.perf_counter()
        res = fit(tc, ctx, model=var, step_module=var, loss_fn=loss_fn, dataset=dataset,
                  config_dict=config_to_dict(cfg))
        out_dir = Path(cfg.out_dir or tc.run_dir)
        class_names = cfg.class_names or [[n] for n in getattr(dataset, "class_names", [])] or None
        summary = {
            "kind": "var", "finished": res.finished, "steps": res.step, "wall_time_s": round(res.wall_time_s, 1),
            "session_time_s": round(time.perf_counter() - t0, 1), "hardware": hardware_name(ctx),
            "world_size": ctx.world_size, "parameters": n_params, "trained_parameters": n_train,
            "final_metrics": res.last_metrics, "seeds": {"train": tc.seed, "data": data_cfg.synthetic_seed},
            "config": config_to_dict(cfg), "var_config": config_to_dict(var_cfg), "vqvae_config": config_to_dict(vae.cfg),
            "init": cfg.init, "frozen": len(frozen), "weights_sha256_per_rank": res.weights_sha256_per_rank,
            "data_digest_rank0": res.data_digest, "ema": res.ema is not None,
            "files": [str(out_dir / "var.pt"), str(out_dir / "model.pt")] if res.finished else [],
        }
        if ctx.is_main:
            if res.finished:
                if res.ema is not None:
                    var.load_state_dict(res.ema.state_dict_for(var))
                var, vae = var.cpu().eval(), vae.cpu().eval()
                meta = {"class_names": class_names, "sampling": {**DEFAULT_SAMPLING, **cfg.sampling},
                        "training": {k: v for k, v in summary.items() if k != "files"}, "vqvae_file": str(cfg.vae)}
                save_models(out_dir / "var.pt", var=var, meta=meta, half=cfg.half)
                save_models(out_dir / "model.pt", var=var, vae=vae, meta=meta, half=cfg.half)
                log.info("saved %s and %s", out_dir / "var.pt", out_dir / "model.pt")
            write_summary(tc.run_dir, summary)
        return summary
    finally:
        cleanup_distributed()
