"""``varedit bench``: speed per workload, backend, batch and device (see varedit.benchmark)."""
from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from .common import GroupedCommand, opt


def _ints(value: str, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=name) from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"expected positive integers, got {value!r}", param_hint=name)
    return out


def _names(value: str, allowed: tuple[str, ...], name: str) -> tuple[str, ...]:
    out = tuple(v for v in value.replace(" ", "").split(",") if v)
    bad = [v for v in out if v not in allowed]
    if bad or not out:
        raise click.BadParameter(f"{', '.join(bad) or value!r}: choose from {', '.join(allowed)}", param_hint=name)
    return out


def register(main: click.Group) -> None:
    @main.command(cls=GroupedCommand)
    @opt("--model", "-m", group="Model", default="demo", show_default=True,
         help="Preset or file to measure (ignored with --random).")
    @opt("--random", "random_depth", group="Model", type=click.IntRange(1, 64), default=None,
         help="Measure a random-weight configuration of this depth instead (width 64 x depth, heads = depth).")
    @opt("--scales", group="Model", default="1,2,3,4,5,6,8,10,13,16", show_default=True,
         help="Scale list of the random configuration (image size = 16 x the last).")
    @opt("--vae-ch", group="Model", type=click.IntRange(8, 512), default=160, show_default=True,
         help="VQVAE base channels of the random configuration (160: the official VQVAE).")
    @opt("--vocab", group="Model", type=click.IntRange(2, 65536), default=4096, show_default=True)
    @opt("--classes", group="Model", type=click.IntRange(1, 100000), default=1000, show_default=True)
    @opt("--workloads", group="Task", default="generate,inpaint,inpaint-uncond,label", show_default=True)
    @opt("--backends", group="Task", default="eager,fast", show_default=True, help="eager, fast, onnx.")
    @opt("--batch", group="Task", default="1,8", show_default=True, help="Batch sizes.")
    @opt("--device", group="Task", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
    @opt("--threads", group="Task", type=click.IntRange(min=1), default=None, help="CPU threads (torch and onnx).")
    @opt("--reps", group="Task", type=click.IntRange(1, 1000), default=3, show_default=True)
    @opt("--warmup", group="Task", type=click.IntRange(0, 100), default=1, show_default=True)
    @opt("--precision", group="Task", default="fp32", show_default=True,
         help="One or several (comma-separated, measured interleaved) of fp32, bf16, fp16, int8, auto. Torch "
              "backends: fp32 (exact), or bf16 / fp16 autocast of the transformer (bf16 is faster only on CPUs with "
              "AVX-512 BF16 or AMX, and on GPUs); onnx: a fp32, fp16 or int8 export; auto: bf16 where the hardware "
              "has it, else fp32.")
    @opt("--cfg", group="Task", type=float, default=4.0, show_default=True, help="Guidance scale of the workloads.")
    @opt("--top-k", group="Task", type=click.IntRange(min=0), default=900, show_default=True,
         help="Top-k of the workloads (1: greedy, where token agreement between precisions measures the arithmetic "
              "alone; sampled tokens diverge once one flips).")
    @opt("--top-p", group="Task", type=click.FloatRange(0, 1), default=0.95, show_default=True)
    @opt("--decode/--no-decode", group="Task", default=True, show_default=True,
         help="Time the VQVAE too; --no-decode times the transformer alone (inputs are tokenised once beforehand, "
              "nothing is decoded).")
    @opt("--cli/--no-cli", group="Task", default=False, show_default=True,
         help="Also time one `varedit inpaint` call in a fresh process, phase by phase.")
    @opt("--strategies", group="Task", type=click.IntRange(0, 10000), default=0, show_default=True,
         help="Also measure outpaint's size strategies (crop, original) on this many canvases of twice the model "
              "size: time and the eval's quality measure (FD).")
    @opt("--picture", group="Task", type=click.IntRange(0, 100000), default=0, show_default=True,
         help="Also judge the picture of each precision against fp32 on this many held-out shapes (the eval's "
              "default inpainting, same noise for every precision: KID and paired distance with standard errors); "
              "bf16 / fp16 on torch, int8 on a quantized export of --model.")
    @opt("--picture-real", group="Task", type=click.IntRange(0, 100000), default=0, show_default=True,
         help="The same on this many real photo crops (`varedit eval --real`; needs varedit[photos]).")
    @opt("--picture-masks", group="Task", default="box,strokes", show_default=True, help="Mask kinds of --picture.")
    @opt("--speed/--no-speed", group="Task", default=True, show_default=True,
         help="--no-speed: only the picture (--picture), no timings.")
    @opt("--out", "-o", group="Output", type=click.Path(dir_okay=False), default=None,
         help="Write the JSON report here (default: stdout).")
    @opt("--overwrite", group="Output", is_flag=True, help="Replace an existing --out file.")
    def bench(**kw: Any) -> None:
        """Images/s and ms/image per workload, backend and batch, token agreement between backends, and
        optionally the time breakdown of one CLI call; writes JSON."""
        from pathlib import Path

        from ..benchmark import BACKENDS, PRECISIONS, WORKLOADS, BenchConfig, RandomModel, run_bench, run_label
        from ..cpu import cpu_features
        from ..io import save_json
        from .outputs import check_file_output
        if kw["out"]:  # before minutes of measuring; never over the model measured
            check_file_output(Path(kw["out"]), [kw["model"] if kw["random_depth"] is None else None],
                              overwrite=kw["overwrite"])
        model: Any = kw["model"]
        if kw["random_depth"] is not None:
            model = RandomModel(depth=kw["random_depth"], patch_nums=_ints(kw["scales"], "--scales"),
                                num_classes=kw["classes"], vocab_size=kw["vocab"], vae_ch=kw["vae_ch"])
        cfg = BenchConfig(model=model, workloads=_names(kw["workloads"], WORKLOADS, "--workloads"),
                          backends=_names(kw["backends"], BACKENDS, "--backends"),
                          batches=_ints(kw["batch"], "--batch"), device=kw["device"], threads=kw["threads"],
                          reps=kw["reps"], warmup=kw["warmup"], cli=kw["cli"], cfg=kw["cfg"], top_k=kw["top_k"],
                          top_p=kw["top_p"],
                          decode=kw["decode"], precision=_names(kw["precision"], PRECISIONS, "--precision"))
        click.echo(f"CPU: {cpu_features().summary()}", err=True)  # the header: what bf16 / int8 can expect here
        command = " ".join(["varedit"] + [shlex.quote(a) for a in sys.argv[1:]])
        if not kw["speed"] and not (kw["picture"] or kw["picture_real"]):
            raise click.UsageError("--no-speed measures nothing without --picture or --picture-real")
        masks = _names(kw["picture_masks"], ("box", "strokes", "outpaint", "objects"), "--picture-masks")
        if kw["speed"]:
            doc = run_bench(cfg, command=command)
        else:
            doc = {"schema": "varedit-bench/1", "command": command, "results": [], "speedups": {}}
        if kw["picture"] or kw["picture_real"]:
            from ..benchmark import precision_picture, resolve_precisions
            precs = tuple(dict.fromkeys(("fp32", *resolve_precisions(cfg.precision, "cpu"))))
            doc["picture"] = precision_picture(kw["model"], precs, n=max(kw["picture"], 20) if kw["picture"] else 0,
                                               real=kw["picture_real"], masks=masks, threads=kw["threads"],
                                               progress=lambda s: click.echo(s, err=True))
            for prec, ok in doc["picture"]["holds"].items():
                click.echo(f"picture {prec} vs fp32: {'within' if ok else 'NOT within'} two standard errors", err=True)
        if kw["strategies"]:
            from ..benchmark import outpaint_strategies
            doc["outpaint_strategies"] = outpaint_strategies(kw["model"], n=kw["strategies"])
            for k, v in doc["outpaint_strategies"]["strategies"].items():
                click.echo(f"outpaint {k}: {v['s_per_image']:.2f} s/image, FD {v['fd']:.1f}", err=True)
        for r in doc["results"]:
            agree = r["token_agreement_with_eager"]
            vs32 = r.get("token_agreement_with_fp32")
            click.echo(f"{r['workload']:15s} {run_label(r['backend'], r.get('precision', 'fp32')):10s} b{r['batch']:<4d} "
                       f"{r['ms_per_image']:10.1f} ms/image {r['images_per_s']:9.2f} img/s"
                       + ("" if agree is None else f"  tokens {agree:.1%}")
                       + ("" if vs32 is None else f"  tokens vs fp32 {vs32:.1%}"), err=True)
        for k, v in doc["speedups"].items():
            click.echo(f"{k}: {v:.2f}", err=True)
        if kw["out"]:
            save_json(doc, kw["out"])
            click.echo(kw["out"])
        else:
            import json
            click.echo(json.dumps(doc, indent=2))
