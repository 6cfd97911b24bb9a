"""The ``varedit`` command line: a thin shell over the Python API."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .extensions import PluginCommandsMixin

log = logging.getLogger("varedit")


class VareditGroup(PluginCommandsMixin, click.Group):
    """Turns expected failures (bad input, missing weights) into one-line errors with exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        from .classes import ClassError
        from .registry import WeightsError
        expected: tuple[type[BaseException], ...] = (WeightsError, ClassError, ValueError, FileNotFoundError,
                                                     RuntimeError, OSError, MemoryError)
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except expected as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise click.ClickException(msg) from None


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@click.group(cls=VareditGroup)
@click.version_option(__version__, prog_name="varedit")
@click.option("-v", "--verbose", count=True, help="-v: info, -vv: debug logging.")
@click.option("--debug", is_flag=True, hidden=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: int, debug: bool) -> None:
    """varedit: image generation and editing with VAR (next-scale prediction)."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    _setup_logging(verbose)


# ---- shared options ----------------------------------------------------------------------------------
def model_options(f: Any) -> Any:
    f = click.option("--model", "-m", default="demo", show_default=True,
                     help="Preset name (demo, var-d16 ... var-d36), a varedit file, or an official VAR .pth.")(f)
    f = click.option("--vae", "vae_path", type=click.Path(dir_okay=False), default=None,
                     help="Official VQVAE .pth (default: vae_ch160v4096z32.pth beside --model).")(f)
    f = click.option("--weights-dir", type=click.Path(file_okay=False), default=None, envvar="VAREDIT_WEIGHTS",
                     help="Folder holding official weight files (env VAREDIT_WEIGHTS).")(f)
    f = click.option("--num-heads", type=int, default=None, help="Override the inferred head count.")(f)
    f = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)(f)
    return f


def sampling_options(f: Any) -> Any:
    f = click.option("--seed", type=int, default=None, help="Random seed (default: drawn and reported).")(f)
    f = click.option("--cfg", type=float, default=None,
                     help="Guidance scale (default: the model's for generate, 3 for inpaint, outpaint and edit).")(f)
    f = click.option("--top-k", type=int, default=None, help="Top-k filter (1 = greedy).")(f)
    f = click.option("--top-p", type=float, default=None, help="Top-p (nucleus) filter.")(f)
    f = click.option("--smooth/--no-smooth", "more_smooth", default=None, help="Gumbel-softmax smoothing.")(f)
    f = click.option("--guidance", type=click.Choice(["linear", "constant"]), default=None,
                     help="Guidance schedule over scales (official: linear).")(f)
    return f


def load_pipeline(model: str, vae_path: str | None, weights_dir: str | None, num_heads: int | None,
                  device: str) -> Any:
    from .pipeline import VarEditPipeline
    return VarEditPipeline.from_pretrained(model, vae_path=vae_path, weights_dir=weights_dir, num_heads=num_heads,
                                           device=device)


# ---- generate ----------------------------------------------------------------------------------------
@main.command()
@click.option("--class", "-c", "class_", required=True, help="Class index or name (ImageNet names for official models).")
@click.option("--n", "-n", type=click.IntRange(min=1), default=1, show_default=True, help="Number of images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--out", "-o", type=click.Path(), required=True, help="Output folder, or a .png file when --n 1.")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True)
@click.option("--onnx-dir", type=click.Path(file_okay=False), default=None, help="Exported ONNX folder.")
@model_options
@sampling_options
def generate(class_: str, n: int, batch_size: int, out: str, backend: str, onnx_dir: str | None, model: str,
             vae_path: str | None, weights_dir: str | None, num_heads: int | None, device: str, seed: int | None,
             cfg: float | None, top_k: int | None, top_p: float | None, more_smooth: bool | None,
             guidance: str | None) -> None:
    """Class-conditional generation: writes PNGs (and a JSON sidecar with the settings)."""
    from .io import save_image, save_json
    if backend == "onnx":
        from .commands.edit import make_editor
        pipe = make_editor("onnx", onnx_dir, model, vae_path, weights_dir, num_heads, device, None)
    else:
        pipe = load_pipeline(model, vae_path, weights_dir, num_heads, device)
    label = pipe.class_index(class_)
    res = pipe.generate(label, n=n, seed=seed, batch_size=batch_size, cfg=cfg, top_k=top_k, top_p=top_p,
                        more_smooth=more_smooth, guidance=guidance)
    o = Path(out)
    single = n == 1 and o.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")
    name = pipe.class_name(label).replace(" ", "_")
    for i, img in enumerate(res.images):
        path = o if single else o / f"{name}_{res.seed}_{i:03d}.png"
        save_image(img, path)
        save_json({**res.settings, "index": i}, path.with_suffix(".json"))
        click.echo(str(path))
    click.echo(f"seed {res.seed}", err=True)


# ---- models ------------------------------------------------------------------------------------------
@main.group()
def models() -> None:
    """List, download and inspect models."""


@models.command("list")
def models_list() -> None:
    """Known presets and where their files are."""
    from .registry import PRESETS
    for p in PRESETS.values():
        where = "bundled" if p.bundled else f"{', '.join(p.files)}"
        click.echo(f"{p.name:9s} {p.image_size:4d}px  {p.description}  [{where}]")


@models.command("download")
@click.argument("name")
def models_download(name: str) -> None:
    """Download a preset's files into the Hugging Face cache."""
    from .hub import download
    from .registry import get_preset
    preset = get_preset(name)
    if preset.bundled:
        click.echo(f"{preset.name} is bundled with varedit: nothing to download")
        return
    for f, path in download(preset).items():
        click.echo(f"{f}: {path}")


@models.command("info")
@click.argument("file", type=click.Path(dir_okay=False))
def models_info(file: str) -> None:
    """What a weights file holds (format, configuration inferred from keys)."""
    from .registry import file_info
    click.echo(json.dumps(file_info(file), indent=2, default=str))


def _register_subcommands() -> None:
    """Each area keeps its commands in its own module (varedit/commands/*.py); each defines
    ``register(main)``.  Imported lazily here so `varedit --help` stays fast."""
    import importlib
    import pkgutil

    from . import commands
    for m in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{commands.__name__}.{m.name}")
        mod.register(main)


_register_subcommands()

if __name__ == "__main__":  # pragma: no cover
    main()
