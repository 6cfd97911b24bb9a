"""``varedit data synthetic``: write the synthetic-shapes dataset as an ImageNet-style folder."""
from __future__ import annotations

import sys
from typing import Any

import click


def register(main: click.Group) -> None:
    @main.group()
    def data() -> None:
        """Datasets for training and evaluation."""

    @data.command("synthetic")
    @click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Output folder.")
    @click.option("--n", "-n", type=click.IntRange(min=1), required=True, help="Number of images.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--size", type=click.IntRange(min=16), default=128, show_default=True,
                  help="Image size in px (128 = the demo model's).")
    @click.option("--num-classes", type=click.IntRange(1, 10), default=None, help="Only the first K classes.")
    def synthetic(out: str, n: int, seed: int, size: int, num_classes: int | None) -> None:
        """Render N synthetic-shapes images into OUT/<NN_class>/<index>.png (+ classes.json)."""
        from ..data.synthetic import write_image_folder
        with click.progressbar(length=n, label="rendering", file=sys.stderr) as bar:
            info: dict[str, Any] = write_image_folder(out, n, seed=seed, size=size, num_classes=num_classes,
                                                      progress=lambda i: bar.update(1))
        counts = ", ".join(f"{k} {v}" for k, v in info["counts"].items())
        click.echo(f"{info['n']} images ({info['size']} px, seed {info['seed']}) in {info['out_dir']}: {counts}")
