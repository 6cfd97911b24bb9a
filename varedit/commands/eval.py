"""``varedit eval``: the quality report on the synthetic domain (see varedit.evaluation.quality)."""
from __future__ import annotations

from pathlib import Path

import click

CLASSIFIER = Path(__file__).resolve().parents[1] / "assets" / "demo" / "classifier.pt"


def register(main: click.Group) -> None:
    from .common import model_options

    @main.command("eval")
    @model_options
    @click.option("--n", type=click.IntRange(min=20), default=200, show_default=True, help="Held-out test images.")
    @click.option("--n-ref", type=click.IntRange(min=50), default=1000, show_default=True, help="Reference images.")
    @click.option("--per-class", type=click.IntRange(min=1), default=20, show_default=True,
                  help="Generated samples per class.")
    @click.option("--seed", type=int, default=20_000, show_default=True)
    @click.option("--classifier", type=click.Path(dir_okay=False), default=None,
                  help="Shape classifier (default: the bundled one; trained when missing).")
    @click.option("--train-classifier", is_flag=True, help="Train the classifier anew and save it to --classifier.")
    @click.option("--no-ablations", is_flag=True)
    @click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Report folder.")
    def eval_cmd(model: str, vae_path: str | None, weights_dir: str | None, num_heads: int | None, device: str,
                 n: int, n_ref: int, per_class: int, seed: int, classifier: str | None, train_classifier: bool,
                 no_ablations: bool, out: str) -> None:
        """Measure generation, inpainting and upscaling quality on held-out synthetic images."""
        from .common import load_pipeline
        from ..evaluation.classifier import load_classifier, save_classifier, train_classifier as train
        from ..evaluation.quality import run_eval, to_markdown, write_report
        path = Path(classifier) if classifier else CLASSIFIER
        if train_classifier or not path.is_file():
            click.echo("training the shape classifier ...", err=True)
            clf, info = train()
            save_classifier(clf, path, info)
            click.echo(f"classifier: held-out accuracy {info['heldout_accuracy']:.3f} -> {path}", err=True)
        clf, _ = load_classifier(path)
        pipe = load_pipeline(model, vae_path, weights_dir, num_heads, device)
        res = run_eval(pipe, classifier=clf, n=n, n_ref=n_ref, n_gen_per_class=per_class, seed=seed,
                       ablations=not no_ablations, progress=lambda s: click.echo(s, err=True))
        write_report(res, out)
        click.echo(to_markdown(res))
