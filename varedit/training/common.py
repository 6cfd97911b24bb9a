"""What both trainers share: distributed setup, seeding, optimizer and schedule, EMA, checkpoints with
exact resume, metrics, and the training loop itself (:func:`fit`).

Distributed runs start from ``torchrun`` (its RANK / WORLD_SIZE / LOCAL_RANK variables): NCCL on CUDA,
gloo on CPU.  Without those variables the run is a plain single process.

Exact resume rests on three things, all saved in every checkpoint:
* the step counter, from which the learning rate and the data position follow (the data order is a
  function of (seed, epoch) and the step, see :mod:`varedit.training.data`);
* the model, optimizer and EMA state;
* every rank's torch RNG state (label dropout, dropout ...).
A run killed at any point and started again with ``resume`` loses at most ``ckpt_every`` steps and then
computes bit for bit what the uninterrupted run would have (same hardware and thread count).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from ..io import atomic_write_with, save_json
from .data import ResumableBatchSampler, collate

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^ckpt_(\d{8})\.pt$")


@dataclass
class TrainConfig:
    run_dir: str = "runs/train"
    steps: int = 1000
    batch_size: int = 32               # global batch, split evenly across ranks
    lr: float = 2e-4
    min_lr_ratio: float = 0.1          # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 2.0             # max global gradient norm; 0 = no clipping
    ema_decay: float = 0.0             # 0 = no EMA weights
    ckpt_every: int = 500
    keep_ckpts: int = 2
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    threads: int = 0                   # torch CPU threads per process; 0 = torch's default
    resume: bool = False
    stop_after: int | None = None      # leave after this step, with a checkpoint (time-sliced jobs, tests)
    amp: bool = True                   # bf16 autocast; CUDA only (CPU bf16 is slow and changes results)
    progress: bool = True


# --------------------------------------------------------------------------------------------------
# distributed
# --------------------------------------------------------------------------------------------------
@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto", threads: int = 0) -> DistContext:
    """Join the torchrun process group if there is one; pick this rank's device."""
    if threads > 0:
        # on a shared machine fewer threads than cores is often faster: idle-spinning OpenMP workers
        # compete with other processes for the same cores
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked, but no CUDA GPU is usable here")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, init_method="env://")
        log.info("rank %d/%d joined the %s process group", rank, world, backend)
    dev = torch.device(f"cuda:{local}") if device.startswith("cuda") else torch.device(device)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev)


def hardware_name(ctx: DistContext) -> str:
    if ctx.device.type == "cuda":
        return f"{ctx.world_size}x {torch.cuda.get_device_name(ctx.device)}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores}-core CPU" + (f", {ctx.world_size} processes" if ctx.distributed else "")


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """Distinct, reproducible seeds per rank (label dropout must differ between ranks)."""
    return (seed * 1_000_003 + rank * 7919) % (2 ** 63)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device


def all_reduce_mean(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= ctx.world_size
    return t


def all_gather_object(obj: Any, ctx: DistContext) -> list[Any]:
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------------------
# the official VAR trainer's list of parameters exempt from weight decay (positions, gains, temperatures)
NO_DECAY_NAMES = ("pos_start", "pos_1LC", "lvl_embed", "ada_gss", "scale_mul", "gamma", "beta")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on biases, norm gains, embeddings and positional parameters."""
    no_decay_ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, (nn.Embedding, nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d)):
            no_decay_ids.update(id(p) for p in m.parameters(recurse=False))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in no_decay_ids or p.ndim <= 1 or name.endswith(".bias") or any(k in name for k in NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    groups = [g for g in param_groups(model, cfg.weight_decay) if g["params"]]
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen")
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from ``lr`` down to ``lr * min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, t)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


class EMA:
    """Exponential moving average of the trainable weights.

    The decay is ramped as min(decay, (1 + n) / (10 + n)) over the n updates so far: a short run's EMA
    would otherwise still be mostly the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1 - d)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.decay, self.updates = float(sd["decay"]), int(sd["updates"])
        for n, t in sd["shadow"].items():
            self.shadow[n].copy_(t)

    def state_dict_for(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the averaged values in place of the trained ones."""
        sd = model.state_dict()
        return {k: (self.shadow[k].to(v.dtype) if k in self.shadow else v) for k, v in sd.items()}


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def weights_digest(sd: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict's tensors (names, dtypes, shapes, bytes), independent of the device."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    s = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        s["cuda"] = torch.cuda.get_rng_state(device)
    return s


def set_rng_state(s: Mapping[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(s["cpu"])
    if device.type == "cuda" and "cuda" in s:
        torch.cuda.set_rng_state(s["cuda"], device)


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"ckpt_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    d = Path(run_dir)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if CKPT_RE.match(p.name)), key=lambda p: p.name)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    cks = list_checkpoints(run_dir)
    return cks[-1] if cks else None


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``ckpt_<step>.pt`` atomically, then drop all but the newest ``keep``."""
    path = atomic_write_with(checkpoint_path(run_dir, step), lambda f: torch.save(state, f))
    for old in list_checkpoints(run_dir)[:-max(1, keep)]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    # checkpoints hold only tensors and plain containers, so the safe loader reads them
    return torch.load(path, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------
class MetricsLogger:
    """JSON lines in ``<run_dir>/metrics.jsonl`` (rank 0 only) and a line on the python log.

    On resume the records written after the checkpoint by the interrupted run are dropped, so the file
    reads as one uninterrupted run.
    """

    def __init__(self, run_dir: str | Path, enabled: bool, resume_step: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except ValueError:
                    break  # a line cut by the kill: nothing valid follows it
        data = "".join(f"{ln}\n" for ln in kept).encode()
        atomic_write_with(self.path, lambda f: f.write(data))

    def log(self, step: int, **metrics: float) -> None:
        if not self.enabled:
            return
        rec = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        log.info("step %d %s", step, " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in metrics.items()))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The logged records, one per step in step order. A run killed after its last checkpoint logged
    some steps that the resumed run logs again; the later record of a step wins."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    by_step: dict[Any, dict[str, Any]] = {}
    for line in p.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[rec.get("step")] = rec
    return sorted(by_step.values(), key=lambda r: (r.get("step") is None, r.get("step") or 0))


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------
Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, torch.Tensor], Any]]


class Hooks(Protocol):
    """Trainer-specific state and work after each optimizer step (e.g. dead-code restarts)."""

    def after_step(self, step: int, aux: Any, optimizer: torch.optim.Optimizer) -> dict[str, float]: ...
    # optional: ``before_step(step)``, called before the loss of that step is computed
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, sd: Mapping[str, Any]) -> None: ...


@dataclass
class FitResult:
    step: int                          # steps completed
    finished: bool                     # reached cfg.steps (False: stopped by stop_after)
    wall_time_s: float                 # training time summed over all sessions of the run
    last_metrics: dict[str, float]
    data_digest: str                   # hash chain of every sample key this rank consumed, in order
    ema: EMA | None
    weights_sha256_per_rank: list[str]


def _chain(digest: str, keys: Iterable[tuple[int, int]]) -> str:
    return hashlib.sha256((digest + ",".join(f"{i}:{s}" for i, s in keys)).encode()).hexdigest()


def fit(cfg: TrainConfig, ctx: DistContext, *, model: nn.Module, step_module: nn.Module, loss_fn: LossFn,
        dataset: Dataset, hooks: Hooks | None = None, config_dict: Mapping[str, Any] | None = None,
        unit: str = "img") -> FitResult:
    """Train ``model`` for ``cfg.steps`` optimizer steps.

    ``step_module`` owns ``model``'s trainable parameters; ``loss_fn(module, batch) -> (loss, metrics, aux)``
    gets it wrapped in DistributedDataParallel when there are several ranks.  ``metrics`` are
    scalar tensors, averaged over ranks and steps for logging; ``aux`` goes to the hooks.
    """
    run_dir = Path(cfg.run_dir)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    optimizer = build_optimizer(model, cfg, ctx.device)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    trainable = [p for p in model.parameters() if p.requires_grad]

    start, elapsed, digest = 0, 0.0, ""
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if cfg.resume and ckpt is None:
        log.info("resume: no checkpoint in %s, starting from scratch", run_dir)
    if ckpt is not None:
        state = load_checkpoint(ckpt)
        _check_resumable(state, cfg, ctx, len(dataset))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        if hooks is not None and state.get("hooks") is not None:
            hooks.load_state_dict(state["hooks"])
        set_rng_state(state["rng"][ctx.rank], ctx.device)
        start, elapsed, digest = int(state["step"]), float(state["elapsed"]), state["data_digest"][ctx.rank]
        log.info("resumed from %s at step %d", ckpt, start)
    else:
        torch.manual_seed(rank_seed(cfg.seed, ctx.rank))

    wrapped: nn.Module = step_module
    if ctx.distributed:
        wrapped = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

    stop = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
    sampler = ResumableBatchSampler(len(dataset), cfg.batch_size, seed=cfg.seed, rank=ctx.rank,
                                    world_size=ctx.world_size, start_step=start, total_steps=stop)
    # an explicit generator: otherwise creating the loader's iterator draws from the global RNG, and a
    # resumed run (one more iterator) would continue with another label-dropout stream
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers, collate_fn=collate,
                        pin_memory=ctx.device.type == "cuda",
                        generator=torch.Generator().manual_seed(rank_seed(cfg.seed, ctx.rank)))
    metrics_log = MetricsLogger(run_dir, ctx.is_main, resume_step=start if ckpt is not None else None)

    def checkpoint(step: int) -> None:
        rngs = all_gather_object(rng_state(ctx.device), ctx)
        digests = all_gather_object(digest, ctx)
        if ctx.is_main:
            state = {"step": step, "elapsed": elapsed + (time.perf_counter() - t_session),
                     "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "ema": ema.state_dict() if ema is not None else None,
                     "hooks": hooks.state_dict() if hooks is not None else None,
                     "rng": rngs, "data_digest": digests,
                     "world_size": ctx.world_size, "batch_size": cfg.batch_size, "seed": cfg.seed,
                     "dataset_len": len(dataset), "config": json.loads(json.dumps(config_dict or {}, default=str))}
            p = save_checkpoint(run_dir, step, state, cfg.keep_ckpts)
            log.info("checkpoint %s", p)

    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm
    bar = tqdm(total=cfg.steps, initial=start, disable=not (ctx.is_main and cfg.progress), unit="step",
               dynamic_ncols=True)
    sums: dict[str, torch.Tensor] = {}
    n_sum, t_window, seen_window = 0, time.perf_counter(), 0
    t_session = time.perf_counter()
    last: dict[str, float] = {}
    step = start
    model.train()
    with logging_redirect_tqdm():
        for step, (batch_keys, batch) in enumerate(_with_keys(loader, sampler), start=start):
            digest = _chain(digest, batch_keys)
            lr = lr_at(step, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            if hooks is not None and hasattr(hooks, "before_step"):
                hooks.before_step(step)
            with autocast(ctx.device, cfg.amp):
                loss, metrics, aux = loss_fn(wrapped, (batch[0].to(ctx.device, non_blocking=True),
                                                batch[1].to(ctx.device, non_blocking=True)))
            loss.backward()
            grad_norm = (torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip) if cfg.grad_clip > 0
                         else torch.zeros((), device=ctx.device))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            extra = hooks.after_step(step, aux, optimizer) if hooks is not None else {}

            for k, v in {"loss": loss.detach(), "grad_norm": grad_norm.detach(), **metrics}.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            n_sum += 1
            seen_window += cfg.batch_size
            done = step + 1
            bar.update(1)
            if done % cfg.log_every == 0 or done == stop:
                vals = torch.stack([sums[k] / n_sum for k in sums]).cpu()
                vals = all_reduce_mean(vals.to(ctx.device), ctx).cpu()
                dt = time.perf_counter() - t_window
                last = {k: float(v) for k, v in zip(sums, vals)}
                last.update(lr=lr, **{f"{unit}_per_s": seen_window / max(dt, 1e-9)}, **extra)
                metrics_log.log(done, **last)
                bar.set_postfix({k: f"{last[k]:.3g}" for k in ("loss", "acc") if k in last})
                sums, n_sum, t_window, seen_window = {}, 0, time.perf_counter(), 0
            if done % cfg.ckpt_every == 0 or done == stop:
                checkpoint(done)
    bar.close()
    end = step + 1 if stop > start else start
    elapsed += time.perf_counter() - t_session
    hashes = all_gather_object(weights_digest(model.state_dict()), ctx)
    if ctx.is_main and len(set(hashes)) > 1:
        log.error("ranks ended with different weights: %s", hashes)
    return FitResult(step=end, finished=end >= cfg.steps, wall_time_s=elapsed, last_metrics=last,
                     data_digest=digest, ema=ema, weights_sha256_per_rank=hashes)


def _with_keys(loader: DataLoader, sampler: ResumableBatchSampler) -> Iterable[tuple[list[tuple[int, int]], Batch]]:
    """Pair each loaded batch with the sample keys it was built from (recomputed: they are a function
    of the step, so the loader's workers need not send them back)."""
    for i, batch in enumerate(loader):
        yield sampler.keys(sampler.start_step + i), batch


def _check_resumable(state: Mapping[str, Any], cfg: TrainConfig, ctx: DistContext, n_data: int) -> None:
    """Refuse to resume with settings that would change the data order or the per-rank RNG streams."""
    diffs = [f"{name} {state[name]} -> {now}" for name, now in
             (("batch_size", cfg.batch_size), ("seed", cfg.seed), ("world_size", ctx.world_size),
              ("dataset_len", n_data))
             if state.get(name) != now]
    if diffs:
        raise ValueError("cannot resume exactly with changed settings: " + ", ".join(diffs))


def write_summary(run_dir: str | Path, summary: Mapping[str, Any]) -> Path:
    return save_json(dict(summary), Path(run_dir) / "summary.json")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
