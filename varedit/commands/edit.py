"""``varedit inpaint|outpaint|edit|upscale``: batch image editing from the command line.

Each command only translates its options into a task request (:mod:`varedit.requests`): the request
validates every input before a model is loaded (with the input's size, read from its header), and the
Editor runs it.  The options they share and their translation: :mod:`varedit.commands.edit_options`;
the batch loop (inputs, checks, loading, writing, failures): :mod:`varedit.commands.batch`; output
names and collisions: :mod:`varedit.commands.outputs`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import requests as R
from .batch import edit_command, run_request
from .common import GroupedCommand, backend_options, model_options, opt, pop_sampling, request_opt, sampling_options
from .edit_options import (LABEL_KEYWORDS, batch_size_option, class_check, common_options, images_argument,
                           keep_scales_check, label_option, masked_fields, max_windows_option, output_options,
                           parse_amount, parse_box, prefill_option, say_windows, scale_option)


def _amount(value: str | None, name: str) -> int | float | str:
    """An outpaint amount as the request should receive it: pixels as an int, a ratio below 1 as a float,
    a larger percentage as its text (``"150%"``)."""
    v = parse_amount(value, name)
    return v if isinstance(v, int) or v < 1 else str(value)


def _mask_arg(mask: Path | None) -> str | None:
    return None if mask is None else str(mask)


def register(main: click.Group) -> None:

    @main.command(cls=GroupedCommand)
    @opt("--mask", group="Input", type=click.Path(), default=None,
         help="Mask file for all inputs, or a folder of masks paired by file stem (white = regenerate).")
    @request_opt("--box", request=R.InpaintRequest, name="box", group="Input", type=str)
    @request_opt("--invert", request=R.InpaintRequest, name="invert", group="Input", is_flag=True)
    @label_option(R.InpaintRequest)
    @prefill_option(R.InpaintRequest)
    @common_options(R.InpaintRequest)
    def inpaint(**kw: Any) -> None:
        """Regenerate the masked part of each image (white = regenerate; no mask: the transparent pixels)."""
        s = pop_sampling(kw)
        box = parse_box(kw["box"])
        if box is not None and kw["mask"] is not None:
            raise click.UsageError("give --mask or --box, not both")

        def request(image: Any, mask: Path | None) -> R.InpaintRequest:
            return R.InpaintRequest(image=image, mask=_mask_arg(mask), box=box, invert=kw["invert"],
                                    label=kw["class_"], **masked_fields(kw, s))

        def check(src: Path, header: Any) -> tuple[int, int]:
            if box is None and kw["mask"] is None and not header.has_alpha:
                raise ValueError("no mask: give --mask, --box, or an image with transparent pixels to fill")
            request(None, None).validate(kw["model_info"].num_scales, header.size)
            return header.size

        edit_command("inpaint", kw, kw["n"], check, run_request(request), kw["mask"],
                     class_check(kw["class_"], LABEL_KEYWORDS, keep_scales_check(kw["keep_scales"])))

    @main.command(cls=GroupedCommand)
    @request_opt("--left", request=R.OutpaintRequest, name="left", group="Task", type=str)
    @request_opt("--right", request=R.OutpaintRequest, name="right", group="Task", type=str)
    @request_opt("--top", request=R.OutpaintRequest, name="top", group="Task", type=str)
    @request_opt("--bottom", request=R.OutpaintRequest, name="bottom", group="Task", type=str)
    @request_opt("--fill", request=R.OutpaintRequest, name="fill", group="Task")
    @label_option(R.OutpaintRequest)
    @prefill_option(R.OutpaintRequest)
    @common_options(R.OutpaintRequest)
    def outpaint(**kw: Any) -> None:
        """Extend each image and fill the new area."""
        s = pop_sampling(kw)
        # each amount is read here (a bad one fails before any file is read); a percentage of 100 or more
        # is handed on as given, since the request reads it again and 1.5 alone would be ambiguous
        amounts = {k: _amount(kw[k], k) for k in ("left", "right", "top", "bottom")}
        if not any(parse_amount(v, k) for k, v in amounts.items()):
            raise click.UsageError("nothing to extend: give --left, --right, --top and/or --bottom")

        def request(image: Any, mask: Path | None) -> R.OutpaintRequest:
            return R.OutpaintRequest(image=image, **amounts, fill=kw["fill"], label=kw["class_"],
                                     **masked_fields(kw, s))

        def check(src: Path, header: Any) -> tuple[int, int]:
            from ..processing import extended_size
            req = request(None, None)
            req.validate(kw["model_info"].num_scales, header.size)
            size = extended_size(header.size, **amounts)
            S = kw["model_info"].image_size
            if S:  # the windows this canvas needs, counted now rather than after the model loaded
                import numpy as np

                from ..processing import outpaint_pads
                from ..tasks import plan_windows
                w, h = header.size
                l, _, t, _ = outpaint_pads(header.size, **amounts)
                new_area = np.ones((size[1], size[0]), bool)
                new_area[t:t + h, l:l + w] = False
                say_windows(src, plan_windows(req.strategy, new_area, size, S, kw["max_windows"]), S)
            return size

        edit_command("outpaint", kw, kw["n"], check, run_request(request), None,
                     class_check(kw["class_"], LABEL_KEYWORDS, keep_scales_check(kw["keep_scales"])))

    @main.command(cls=GroupedCommand)
    @request_opt("--box", request=R.EditRequest, name="box", group="Task", type=str)
    @opt("--mask", group="Task", type=click.Path(), default=None,
         help="Or the region as a mask file for all inputs, or a folder of masks paired by file stem "
              "(white = redraw).")
    @request_opt("--invert", request=R.EditRequest, name="invert", group="Task", is_flag=True)
    @request_opt("--class", "-c", "class_", request=R.EditRequest, name="class_", group="Task")
    @prefill_option(R.EditRequest)
    @common_options(R.EditRequest)
    def edit(**kw: Any) -> None:
        """Class-conditional edit: redraw a box (or a masked region) as another class."""
        s = pop_sampling(kw)
        box = parse_box(kw["box"])
        if (box is None) == (kw["mask"] is None):
            raise click.UsageError("give the region to redraw: --box or --mask (one of them)")

        def request(image: Any, mask: Path | str | None) -> R.EditRequest:
            return R.EditRequest(image=image, box=box, class_=kw["class_"], mask=_mask_arg(mask),
                                 invert=kw["invert"], **masked_fields(kw, s))

        def check(src: Path, header: Any) -> tuple[int, int]:
            request(None, kw["mask"]).validate(kw["model_info"].num_scales, header.size)
            return header.size

        edit_command("edit", kw, kw["n"], check, run_request(request), kw["mask"],
                     class_check(kw["class_"], (), keep_scales_check(kw["keep_scales"])))

    @main.command(cls=GroupedCommand)
    # --scale: a number checked with the message of every front-end (scale_option)
    @request_opt("--scale", request=R.UpscaleRequest, name="scale", group="Task", type=float, callback=scale_option)
    @request_opt("--keep-scales", request=R.UpscaleRequest, name="keep_scales", group="Task")
    @opt("--no-back-project", group="Task", is_flag=True,
         help="Do not re-impose the input's low frequencies.")
    @max_windows_option
    @batch_size_option
    @images_argument
    @output_options
    @sampling_options
    @model_options
    @backend_options
    def upscale(**kw: Any) -> None:
        """Zero-shot restoration/upscaling: coarse scales from the input, fine scales sampled."""
        s = pop_sampling(kw)

        def request(image: Any, mask: Path | None) -> R.UpscaleRequest:
            return R.UpscaleRequest(image=image, scale=kw["scale"], keep_scales=kw["keep_scales"], seed=kw["seed"],
                                    back_project=not kw["no_back_project"], output_type="np",
                                    sampling=R.Sampling(**s))

        def check(src: Path, header: Any) -> tuple[int, int]:
            from ..tasks import plan_windows
            request(None, None).validate(kw["model_info"].num_scales, header.size)
            size = R.upscaled_size(header.size, kw["scale"])
            S = kw["model_info"].image_size
            if S:
                say_windows(src, plan_windows("original", None, size, S, kw["max_windows"]), S)
            return size

        edit_command("upscale", kw, 1, check, run_request(request), None, keep_scales_check(kw["keep_scales"]))
