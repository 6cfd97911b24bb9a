"""``varedit export onnx``: write the ONNX graphs and manifest of a model."""
from __future__ import annotations

import json

import click


def register(main: click.Group) -> None:
    from ..cli import model_options

    @main.group()
    def export() -> None:
        """Export models for other runtimes."""

    @export.command("onnx")
    @model_options
    @click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Output folder.")
    @click.option("--fp16", is_flag=True, help="Half-precision transformer and VQVAE (sampling stays fp32).")
    @click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
                  help="Fixed batch of the graphs (the runtime pads and chunks).")
    @click.option("--opset", type=click.IntRange(min=18), default=23, show_default=True)
    @click.option("--no-check", is_flag=True, help="Skip onnx.checker and the parity run (not recommended).")
    def export_onnx_cmd(model: str, vae_path: str | None, weights_dir: str | None, num_heads: int | None,
                        device: str, out: str, fp16: bool, batch: int, opset: int, no_check: bool) -> None:
        """Tokenizer, masked sampler and decoder graphs + manifest.json (default model: demo)."""
        from varedit_onnx.exporter import export_onnx

        from ..cli import load_pipeline
        pipe = load_pipeline(model, vae_path, weights_dir, num_heads, "cpu")
        m = export_onnx(pipe.var, pipe.vae, out, batch=batch, fp16=fp16, opset=opset, check=not no_check,
                        name=pipe.name, class_names=pipe.class_names, defaults=pipe.defaults.as_dict())
        click.echo(json.dumps({k: m[k] for k in ("model", "batch", "precision", "opset") if k in m}, indent=2))
        click.echo(f"wrote {out}", err=True)
