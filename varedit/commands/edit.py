"""``varedit inpaint|outpaint|edit|upscale``: batch image editing from the command line.

IMAGE arguments are files or folders.  ``-o OUT`` is a file for a single input (when it has an image
suffix), otherwise a folder; outputs keep the input's file stem (``stem.png``, or ``stem_1.png`` ...
for ``--n`` > 1) and get a JSON sidecar with every setting and the seed.  A bad file is reported and
skipped; the exit status is 1 when any input failed.  Inputs are never overwritten.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _collect(images: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for s in images:
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise click.ClickException(f"no images in folder {p}")
            out.extend(files)
        else:
            out.append(p)  # a missing or unreadable file is reported per input, the batch goes on
    return out


def _mask_for(mask: str | None, image: Path) -> str | None:
    if mask is None:
        return None
    m = Path(mask)
    if m.is_dir():
        for suf in IMAGE_SUFFIXES:
            for cand in (m / f"{image.stem}{suf}", m / f"{image.stem}_mask{suf}"):
                if cand.is_file():
                    return str(cand)
        raise FileNotFoundError(f"no mask for {image.name} in {m} (looked for {image.stem}.png / {image.stem}_mask.png)")
    return str(m)


def _outputs(out: Path, inputs: list[Path], image: Path, n: int) -> list[Path]:
    single_file = len(inputs) == 1 and out.suffix.lower() in IMAGE_SUFFIXES
    if single_file:
        base = out
    else:
        base = out / f"{image.stem}.png"
    if n == 1:
        return [base]
    return [base.with_name(f"{base.stem}_{i}{base.suffix}") for i in range(n)]


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    from ..cli import model_options, sampling_options
    opts = [
        click.argument("images", nargs=-1, required=True),
        click.option("--out", "-o", required=True, type=click.Path(),
                     help="Output file (one input) or folder."),
        click.option("--n", "-n", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Candidates per input (ranked by the model's log-likelihood)."),
        click.option("--no-rank", is_flag=True, help="Keep candidates in sampling order."),
        click.option("--mode", type=click.Choice(["default", "official"]), default="default", show_default=True,
                     help="default: prefill + closed loop; official: the notebook method."),
        click.option("--strategy", type=click.Choice(["auto", "crop", "resize", "original"]), default=None,
                     help="Size strategy (default per task: inpaint/edit crop, outpaint auto)."),
        click.option("--keep-scales", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Keep the input's first k scales inside the hole (structure kept)."),
        click.option("--feather", type=click.FloatRange(min=0), default=None,
                     help="Paste-back feather width in pixels (default: half a token)."),
        click.option("--harmonize/--no-harmonize", default=True, show_default=True,
                     help="Remove the tokeniser's colour error from the fill (membrane correction)."),
        click.option("--skip-existing", is_flag=True, help="Skip inputs whose outputs exist."),
        click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True),
        click.option("--onnx-dir", type=click.Path(file_okay=False), default=None,
                     help="Exported ONNX folder (with --backend onnx)."),
        click.option("--threads", type=int, default=None, help="CPU threads (onnx backend)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return model_options(sampling_options(f))


def make_editor(backend: str, onnx_dir: str | None, model: str, vae_path: str | None, weights_dir: str | None,
                num_heads: int | None, device: str, threads: int | None) -> Any:
    if backend == "onnx":
        if not onnx_dir:
            raise click.ClickException("--backend onnx needs --onnx-dir DIR (made by `varedit export onnx`)")
        from varedit_onnx.runtime import OnnxVAR
        providers = {"auto": "auto", "cpu": "cpu", "cuda": "cuda"}[device]
        return OnnxVAR.from_dir(onnx_dir, providers=providers, threads=threads).editor()
    from ..cli import load_pipeline
    return load_pipeline(model, vae_path, weights_dir, num_heads, device).editor


def run_batch(task: str, images: tuple[str, ...], out: str, n: int, skip_existing: bool, mask: str | None,
              call: Callable[[Any, Path, str | None], Any], editor: Any) -> None:
    from ..io import save_image, save_json
    from ..processing import save_image as save_any
    inputs = _collect(images)
    out_p = Path(out)
    if len(inputs) > 1 and out_p.suffix.lower() in IMAGE_SUFFIXES:
        raise click.ClickException(f"{len(inputs)} inputs need an output folder, not the file {out_p}")
    in_set = {p.resolve() for p in inputs if p.exists()}
    failures: list[str] = []
    from tqdm import tqdm
    bar = tqdm(inputs, desc=task, unit="img", disable=len(inputs) < 2, file=sys.stderr)
    for img in bar:
        targets = _outputs(out_p, inputs, img, n)
        if any(t.resolve() in in_set for t in targets):
            failures.append(f"{img}: the output would overwrite an input; choose another -o")
            continue
        if skip_existing and all(t.exists() for t in targets):
            log.info("skip %s (outputs exist)", img)
            continue
        try:
            res = call(editor, img, _mask_for(mask, img))
        except (ValueError, OSError, RuntimeError) as e:
            failures.append(f"{img}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        for i, (t, im) in enumerate(zip(targets, res.images)):
            if hasattr(im, "save"):
                save_image(im, t)
            else:
                tmp_dir = t.parent
                tmp_dir.mkdir(parents=True, exist_ok=True)
                save_any(im, t)
            side = {**res.settings, "input": str(img), "mask": mask and _mask_for(mask, img), "candidate": i,
                    "score": res.scores[i] if i < len(res.scores) else None}
            save_json(side, t.with_suffix(".json"))
            click.echo(str(t))
    if failures:
        for f in failures:
            click.echo(f"failed: {f}", err=True)
        raise click.ClickException(f"{len(failures)} of {len(inputs)} inputs failed")


def _sampling(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw.pop(k) for k in ("cfg", "top_k", "top_p", "more_smooth", "guidance")}


def _editor_from(kw: dict[str, Any]) -> Any:
    return make_editor(kw.pop("backend"), kw.pop("onnx_dir"), kw.pop("model"), kw.pop("vae_path"),
                       kw.pop("weights_dir"), kw.pop("num_heads"), kw.pop("device"), kw.pop("threads"))


def label_option(f: Any) -> Any:
    return click.option("--class", "-c", "class_", default="auto", show_default=True,
                        help="Class that guides the fill: index or name; auto = the class the model finds most "
                             "likely for the known pixels (models with at most 100 classes, else none); infer = "
                             "always infer; none = unconditional.")(f)


def prefill_option(f: Any) -> Any:
    from ..processing import FILL_METHODS
    return click.option("--prefill", type=click.Choice(list(FILL_METHODS)), default=None,
                        help="How the hole is filled from known pixels before tokenising (default per task: "
                             "inpaint/edit ns = OpenCV Navier-Stokes, outpaint pushpull).")(f)


def _prefill(kw: dict[str, Any]) -> dict[str, Any]:
    p = kw.pop("prefill")
    return {} if p is None else {"prefill": p}


def register(main: click.Group) -> None:
    @main.command()
    @common_options
    @click.option("--mask", type=click.Path(), default=None,
                  help="Mask file for all inputs, or a folder of masks paired by file stem (white = regenerate).")
    @click.option("--box", type=str, default=None, help="Region x0,y0,x1,y1 (pixels, or fractions 0-1).")
    @click.option("--invert", is_flag=True, help="Invert the mask (black = regenerate).")
    @label_option
    @prefill_option
    def inpaint(**kw: Any) -> None:
        """Regenerate the masked part of each image (white = regenerate; no mask: the transparent pixels)."""
        editor = _editor_from(kw)
        s = {**_sampling(kw), **_prefill(kw)}
        box = _parse_box(kw.pop("box"))
        editor.check_label(kw["class_"])  # an unknown class fails once, before the batch
        run_batch("inpaint", kw["images"], kw["out"], kw["n"], kw["skip_existing"], kw["mask"],
                  lambda ed, img, m: ed.inpaint(str(img), m, box=box, invert=kw["invert"], label=kw["class_"],
                                                n=kw["n"],
                                                rank=not kw["no_rank"], mode=kw["mode"],
                                                strategy=kw["strategy"] or "crop", keep_scales=kw["keep_scales"],
                                                feather=kw["feather"], harmonize=kw["harmonize"],
                                                seed=kw["seed"], **s), editor)

    @main.command()
    @common_options
    @click.option("--left", type=float, default=0, help="Pixels (int) or ratio of the width (<1 float).")
    @click.option("--right", type=float, default=0)
    @click.option("--top", type=float, default=0)
    @click.option("--bottom", type=float, default=0)
    @click.option("--fill", type=click.Choice(["blur", "edge", "mean", "gray"]), default="blur", show_default=True,
                  help="What fills the new canvas before encoding.")
    @label_option
    @prefill_option
    def outpaint(**kw: Any) -> None:
        """Extend each image and fill the new area."""
        editor = _editor_from(kw)
        s = {**_sampling(kw), **_prefill(kw)}
        amounts = {k: _amount(kw[k], k) for k in ("left", "right", "top", "bottom")}
        editor.check_label(kw["class_"])  # an unknown class fails once, before the batch
        run_batch("outpaint", kw["images"], kw["out"], kw["n"], kw["skip_existing"], None,
                  lambda ed, img, m: ed.outpaint(str(img), **amounts, fill=kw["fill"], label=kw["class_"],
                                                 n=kw["n"],
                                                 rank=not kw["no_rank"], mode=kw["mode"],
                                                 strategy=kw["strategy"] or "auto", keep_scales=kw["keep_scales"],
                                                 feather=kw["feather"], harmonize=kw["harmonize"],
                                                seed=kw["seed"], **s), editor)

    @main.command()
    @common_options
    @click.option("--box", type=str, required=True, help="Region x0,y0,x1,y1 (pixels, or fractions 0-1).")
    @click.option("--class", "-c", "class_", required=True, help="Target class index or name.")
    @prefill_option
    def edit(**kw: Any) -> None:
        """Class-conditional edit: regenerate a box as another class."""
        editor = _editor_from(kw)
        s = {**_sampling(kw), **_prefill(kw)}
        box = _parse_box(kw.pop("box"))
        editor.class_index(kw["class_"])  # an unknown class fails once, before the batch
        run_batch("edit", kw["images"], kw["out"], kw["n"], kw["skip_existing"], None,
                  lambda ed, img, m: ed.edit(str(img), box, kw["class_"], n=kw["n"], rank=not kw["no_rank"],
                                             mode=kw["mode"], strategy=kw["strategy"] or "crop",
                                             keep_scales=kw["keep_scales"], feather=kw["feather"],
                                             harmonize=kw["harmonize"], seed=kw["seed"], **s), editor)

    @main.command()
    @common_options
    @click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True)
    @click.option("--no-back-project", is_flag=True, help="Do not re-impose the input's low frequencies.")
    def upscale(**kw: Any) -> None:
        """Zero-shot restoration/upscaling: coarse scales from the input, fine scales sampled."""
        editor = _editor_from(kw)
        s = _sampling(kw)
        keep = kw["keep_scales"] or None
        run_batch("upscale", kw["images"], kw["out"], 1, kw["skip_existing"], None,
                  lambda ed, img, m: ed.upscale(str(img), scale=kw["scale"], keep_scales=keep, seed=kw["seed"],
                                                back_project=not kw["no_back_project"], **s), editor)


def _amount(v: float, name: str) -> float | int:
    if v < 0:
        raise click.BadParameter(f"--{name} must not be negative", param_hint=f"--{name}")
    return int(v) if float(v).is_integer() and v >= 1 else float(v)


def _parse_box(s: str | None) -> tuple[float, ...] | None:
    if s is None:
        return None
    try:
        parts = [p.strip() for p in s.split(",")]
        vals = tuple(float(p) if ("." in p or "e" in p.lower()) else int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"box must be x0,y0,x1,y1 numbers, got {s!r}", param_hint="--box") from None
    if len(vals) != 4:
        raise click.BadParameter(f"box needs 4 numbers x0,y0,x1,y1, got {len(vals)}", param_hint="--box")
    return vals
