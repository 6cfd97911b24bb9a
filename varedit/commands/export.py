"""``varedit export onnx``: write the ONNX graphs and manifest of a model."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from .common import load_pipeline, model_options, quiet


class StagePrinter:
    """Prints each stage on stderr with the seconds since the start (nothing when quiet)."""

    def __init__(self, silent: bool):
        self.silent = silent
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, line: str) -> None:
        if not self.silent:
            click.echo(f"[{self.elapsed():6.1f} s] {line}", err=True)


def register(main: click.Group) -> None:
    @main.group()
    def export() -> None:
        """Export models for other runtimes."""

    @export.command("onnx")
    @model_options
    @click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Output folder.")
    @click.option("--fp16", is_flag=True, help="Half-precision transformer and VQVAE (sampling stays fp32).")
    @click.option("--quantize", type=click.Choice(["int8"]), default=None,
                  help="int8: the transformer blocks' matrix products quantized (onnxruntime dynamic int8); the "
                       "head, the sampling and the VQVAE stay float32.")
    @click.option("--batch", type=click.IntRange(1, 4096), default=1, show_default=True,
                  help="Fixed batch of the graphs (the runtime pads and chunks).")
    @click.option("--opset", type=click.IntRange(min=18), default=23, show_default=True)
    @click.option("--no-check", is_flag=True, help="Skip onnx.checker and the parity run (not recommended).")
    @click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
    def export_onnx_cmd(model: str, vae_path: str | None, weights_dir: str | None, num_heads: int | None,
                        device: str, out: str, fp16: bool, batch: int, opset: int, no_check: bool,
                        as_json: bool, quantize: str | None = None) -> None:
        """Tokenizer, masked sampler and decoder graphs + manifest.json (default model: $VAREDIT_MODEL, else
        the demo).  Needs `pip install 'varedit[export,cpu]'` (or [export,gpu]): onnx and onnxscript to
        export, onnxruntime for the parity check.  Progress by stage goes to stderr (-q: none)."""
        from .._optional import require
        require(["onnx", "onnxscript", "onnxruntime"], "varedit export onnx")
        from varedit_onnx.exporter import export_onnx
        if quantize and fp16:
            raise click.UsageError("--quantize int8 starts from the float32 graphs: leave out --fp16")
        say = StagePrinter(quiet())
        say(f"loading {model}")
        pipe = load_pipeline(model, vae_path, weights_dir, num_heads, "cpu")
        m = export_onnx(pipe.var, pipe.vae, out, batch=batch, fp16=fp16, opset=opset, check=not no_check,
                        name=pipe.name, class_names=pipe.class_names, defaults=pipe.defaults.as_dict(),
                        progress=say)
        if quantize:  # from the float32 graphs just written (and checked against torch)
            from varedit_onnx.quantize import quantize_in_place
            say("quantizing the transformer's matrix products to int8")
            m = quantize_in_place(out, check=not no_check)
        say(f"done in {say.elapsed():.1f} s: {Path(out)}")
        if as_json:
            click.echo(json.dumps(m, indent=2))
            return
        files = ", ".join(f"{fn} ({info['bytes'] / 1e6:.1f} MB)" for fn, info in m["files"].items())
        click.echo(f"exported {m['model']['name']} ({m['precision']}, batch {m['batch']}, opset {m['opset']}) to "
                   f"{Path(out)}: {files}")
        v = m.get("validation")
        if v:
            agree = min(c["token_agreement"] for c in v["sampler"].values())
            click.echo(f"parity with torch: token agreement {agree:.1%}, decoded image within "
                       f"{v['decoder']['image_max_abs']:.1e}")
        qv = m.get("quantization", {}).get("validation")
        if qv:
            click.echo(f"int8 against the float32 graphs: {qv['token_agreement']:.1%} of sampled tokens equal "
                       f"({qv['images']} generations from the same noise; one flipped token changes the finer scales)")
