"""``varedit showcase``: every task on held-out synthetic images, as before/after pictures
(:mod:`varedit.evaluation.showcase`)."""
from __future__ import annotations

from pathlib import Path

import click


def register(main: click.Group) -> None:
    from .common import model_options

    @main.command()
    @model_options(env=False)  # the demo's synthetic domain: named explicitly, never $VAREDIT_MODEL
    @click.option("--out", "-o", type=click.Path(file_okay=False), required=True)
    @click.option("--seed", type=int, default=7, show_default=True)
    def showcase(model: str, vae_path: str | None, weights_dir: str | None, num_heads: int | None, device: str,
                 out: str, seed: int) -> None:
        """Before/after pictures of every task on held-out synthetic images (offline with the demo model)."""
        from ..evaluation.showcase import make_showcase
        from .common import load_pipeline
        pipe = load_pipeline(model, vae_path, weights_dir, num_heads, device)
        for p in make_showcase(pipe, Path(out), seed):
            click.echo(str(p))
