"""``varedit generate``: class-conditional generation, written image by image as batches finish."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..requests import MAX_BATCH, MAX_GENERATE, GenerateRequest, Sampling
from .common import GroupedCommand, ModelSpec, backend_options, check_class, model_options, opt, pop_sampling, \
    request_opt, sampling_options
from .outputs import candidate_names, check_not_stdout, check_outputs, is_image_name, write_result

# images are written as they come (memory does not grow); the request's limit bounds the time asked for
MAX_IMAGES = MAX_GENERATE


def register(main: click.Group) -> None:
    @main.command(cls=GroupedCommand)
    @opt("--class", "-c", "class_", group="Task", required=True,
         help="Class index or name (ImageNet names for official models); none = unconditional.")
    @request_opt("--n", "-n", request=GenerateRequest, name="n", group="Task", type=click.IntRange(1, MAX_IMAGES))
    @request_opt("--batch-size", request=GenerateRequest, name="batch_size", group="Task",
                 type=click.IntRange(1, MAX_BATCH))
    @opt("--out", "-o", group="Output", type=click.Path(), required=True,
         help="Output folder, or an image file name (with --n > 1: NAME_0.png, NAME_1.png, ...).")
    @opt("--overwrite", group="Output", is_flag=True, help="Replace outputs that exist.")
    @sampling_options
    @model_options
    @backend_options
    def generate(**kw: Any) -> None:
        """Class-conditional generation: writes PNGs, each with a JSON sidecar of its settings."""
        from .. import __version__
        from ..processing import encode_image, output_format
        from ..validation import safe_filename
        spec = ModelSpec.pop(kw)
        sampling = pop_sampling(kw)
        info = spec.info()
        label = check_class(kw["class_"], info, ("none",))
        check_not_stdout(kw["out"])
        o, n = Path(kw["out"]), kw["n"]
        if is_image_name(o):
            output_format(o)
        elif o.exists() and not o.is_dir():
            raise click.ClickException(f"-o {o} is a file; give a folder, or a name with an image suffix")
        req = GenerateRequest(class_=None if label == "none" else label, n=n, seed=kw["seed"],
                              batch_size=kw["batch_size"], output_type="np", sampling=Sampling(**sampling))
        req.validate()  # the limits of every front-end, before the model loads
        editor = spec.editor(announce=False)  # the demo's shapes are what it is for: no note
        settings: dict[str, Any] = {}
        batches = editor.run_batches(req, settings=settings)
        if is_image_name(o):
            targets = candidate_names(o, n)
        else:
            # class names come from model files: made safe for file systems (no separators, no '..')
            name = "unconditional" if label == "none" else safe_filename(editor.class_name(label), f"class{label}")
            targets = [o / f"{name}_{settings['seed']}_{i:03d}.png" for i in range(n)]
        plan = check_outputs({"generate": targets}, [], overwrite=kw["overwrite"], skip_existing=False)
        fmt = {t: output_format(t) for t in targets}
        from tqdm import tqdm
        from .common import quiet
        bar = tqdm(total=n, desc="generate", unit="img", disable=n < 2 or quiet(), file=sys.stderr)
        i = 0
        for batch in batches:
            for img in batch:
                t = plan.paths("generate")[i]
                write_result(encode_image(img, fmt[t]), t, {**settings, "index": i, "label": settings["labels"][i],
                                                            "output": str(t), "varedit_version": __version__})
                click.echo(str(t))
                i += 1
            bar.update(len(batch))
        bar.close()
        click.echo(f"seed {settings['seed']}", err=True)
