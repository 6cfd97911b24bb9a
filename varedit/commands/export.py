"""``varedit export onnx``: write the ONNX graphs and manifest of a model."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .common import load_pipeline, model_options


def register(main: click.Group) -> None:
    @main.group()
    def export() -> None:
        """Export models for other runtimes."""

    @export.command("onnx")
    @model_options
    @click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Output folder.")
    @click.option("--fp16", is_flag=True, help="Half-precision transformer and VQVAE (sampling stays fp32).")
    @click.option("--batch", type=click.IntRange(1, 4096), default=1, show_default=True,
                  help="Fixed batch of the graphs (the runtime pads and chunks).")
    @click.option("--opset", type=click.IntRange(min=18), default=23, show_default=True)
    @click.option("--no-check", is_flag=True, help="Skip onnx.checker and the parity run (not recommended).")
    @click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
    def export_onnx_cmd(model: str, vae_path: str | None, weights_dir: str | None, num_heads: int | None,
                        device: str, out: str, fp16: bool, batch: int, opset: int, no_check: bool,
                        as_json: bool) -> None:
        """Tokenizer, masked sampler and decoder graphs + manifest.json (default model: demo)."""
        from varedit_onnx.exporter import export_onnx
        pipe = load_pipeline(model, vae_path, weights_dir, num_heads, "cpu")
        m = export_onnx(pipe.var, pipe.vae, out, batch=batch, fp16=fp16, opset=opset, check=not no_check,
                        name=pipe.name, class_names=pipe.class_names, defaults=pipe.defaults.as_dict())
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
