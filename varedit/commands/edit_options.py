"""The options the editing commands share (``varedit inpaint|outpaint|edit|upscale``, and plugins such as
``varedit remove``) and their translation into the fields of a task request (:mod:`varedit.requests`).
An option that is a request field is made from that field (:func:`varedit.commands.common.request_opt`):
its help text, default and choices are the request's, so ``--help``, the HTTP schema and the ComfyUI nodes
say the same. Their limits are the requests' too (the request validates them again, so every front-end
refuses the same numbers with the same message); only what click must know at parse time is written here.
"""
from __future__ import annotations

from dataclasses import MISSING
from pathlib import Path
from typing import Any, Callable

import click

from .. import requests as R
from ..requests import check_scale
from .common import backend_options, check_class, model_options, opt, request_opt, sampling_options

from ..options import LABEL_KEYWORDS  # noqa: F401  (the label keywords --class takes besides a class)


def output_options(f: Any) -> Any:
    for o in reversed([
        opt("--out", "-o", group="Output", required=True, type=click.Path(),
            help="Output file (one input) or folder; outputs are named after the inputs."),
        opt("--overwrite", group="Output", is_flag=True, help="Replace outputs that exist (they are listed)."),
        opt("--skip-existing", group="Output", is_flag=True, help="Skip inputs whose outputs exist (resume)."),
    ]):
        f = o(f)
    return f


def editing_options(request: type) -> Callable[[Any], Any]:
    """The editing options of a masked task, the fields of its ``request`` type (the strategy's default is
    the task's), with --no-rank (the request's rank turned off), --max-windows and --batch-size."""
    def add(f: Any) -> Any:
        for o in reversed([
            request_opt("--n", "-n", request=request, name="n", group="Editing"),
            opt("--no-rank", group="Editing", is_flag=True,
                help="Keep the candidates in sampling order (do not rank them by the model's log-likelihood)."),
            request_opt("--mode", request=request, name="mode", group="Editing"),
            request_opt("--strategy", request=request, name="strategy", group="Editing"),
            request_opt("--keep-scales", request=request, name="keep_scales", group="Editing"),
            request_opt("--feather", request=request, name="feather", group="Editing"),
            request_opt("--harmonize/--no-harmonize", request=request, name="harmonize", group="Editing"),
            max_windows_option,
            batch_size_option,
        ]):
            f = o(f)
        return f
    return add


max_windows_option = opt("--max-windows", group="Editing", type=click.IntRange(min=1), default=512, show_default=True,
                         help="Refuse jobs that need more model windows (sampling passes) per image.")


batch_size_option = opt("--batch-size", group="Editing", type=click.IntRange(1, 256), default=1, show_default=True,
                        help="Images edited at once (their model calls run as one batch; each image keeps its "
                             "own random stream, so its result does not depend on the batch).")


def images_argument(f: Any) -> Any:
    return click.argument("images", nargs=-1, required=True, type=click.Path())(f)


def common_options(request: type) -> Callable[[Any], Any]:
    """The images, output, editing, sampling, model and backend options of a masked task's command."""
    def add(f: Any) -> Any:
        return images_argument(output_options(editing_options(request)(sampling_options(model_options(
            backend_options(f))))))
    return add


def label_option(request: type, default: Any = MISSING) -> Callable[[Any], Any]:
    """``--class``: the ``label`` of a masked task's ``request`` (``default``: a command's own, e.g. remove's)."""
    over = {} if default is MISSING else {"default": default}
    return request_opt("--class", "-c", "class_", request=request, name="label", group="Task", **over)


# the processing fill methods (the request's prefill choices less none; a test checks they agree)
PREFILL_CHOICES = R.PREFILL_METHODS


def prefill_option(request: type) -> Callable[[Any], Any]:
    """``--prefill``: the request's prefill, with the task's default."""
    return request_opt("--prefill", request=request, name="prefill", group="Editing")


def parse_box(s: str | None) -> tuple[float, ...] | None:
    if s is None:
        return None
    from ..validation import parse_number
    try:
        vals = tuple(parse_number(p) for p in s.split(","))
    except ValueError:
        raise click.BadParameter(f"box must be x0,y0,x1,y1 numbers, got {s!r}", param_hint="--box") from None
    if len(vals) != 4:
        raise click.BadParameter(f"box needs 4 numbers x0,y0,x1,y1, got {len(vals)}", param_hint="--box")
    return vals


def parse_amount(value: str | None, name: str) -> int | float:
    """An outpaint amount, read as every front-end reads it (:func:`varedit.processing.outpaint_amount`):
    whole pixels (``64``), a ratio of the side below 1 (``0.5``) or a percentage (``50%``, ``350%``)."""
    if value is None:
        return 0
    from ..processing import outpaint_amount
    try:
        return outpaint_amount(value, name)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=f"--{name}") from None


def masked_fields(kw: dict[str, Any], sampling: dict[str, Any]) -> dict[str, Any]:
    """The options of a masked request (:mod:`varedit.requests`) from the command's options."""
    return dict(n=kw["n"], rank=not kw["no_rank"], mode=kw["mode"], strategy=kw["strategy"],
                keep_scales=kw["keep_scales"], feather=kw["feather"], harmonize=kw["harmonize"], seed=kw["seed"],
                prefill=kw["prefill"], output_type="np", sampling=R.Sampling(**sampling))


def scale_option(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """``--scale`` with the limit and message of every front-end (:func:`varedit.requests.check_scale`)."""
    try:
        return check_scale(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def say_windows(src: Path, windows: list[Any], size: int) -> None:
    """A large job says what it will take before it starts."""
    if len(windows) > 8:
        click.echo(f"{src.name}: {len(windows)} model windows of {size} px", err=True)


def keep_scales_check(keep: int | None) -> Callable[[Any], None]:
    def setup(info: Any) -> None:
        if keep is not None and info.num_scales is not None and keep > info.num_scales:
            raise click.BadParameter(f"{keep} is more than the model's {info.num_scales} scales",
                                     param_hint="--keep-scales")
    return setup


def class_check(spec: str, keywords: tuple[str, ...], then: Callable[[Any], None]) -> Callable[[Any], Any]:
    def setup(info: Any) -> None:
        check_class(spec, info, keywords)  # an unknown class fails now, before the model loads
        then(info)
    return setup
