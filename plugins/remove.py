"""Object removal, varedit's first-party plugin (entry point ``remove`` in the ``varedit.plugins`` group).

Adds the command ``varedit remove IMAGE... (--mask M | --box x0,y0,x1,y1) -o OUT`` and the task
``remove`` (``varedit.extensions.get_task("remove")(editor, image, mask)``). Removal is inpainting
with two changes, both measured on the demo model (``python -m varedit_plugins.bench_remove``; the
figures: docs/plugins.md, "First-party plugin"): the region is grown by 2 pixels first, so an
object's anti-aliased rim that a tight mask leaves outside goes too instead of standing as a ghost
outline (a wider growth costs context again), and the fill is unconditional by default: guided by
the class inferred from the surroundings (inpaint's ``auto``), more of the object is drawn back.

The task uses only the public Python API: :mod:`varedit.processing` for masks and
:meth:`varedit.tasks.Editor.inpaint` for the fill; the command is built from the CLI's own pieces
(:mod:`varedit.commands`). Importing this module and registering it imports nothing beyond click and
those CLI modules (``varedit --help`` does both).
"""
from __future__ import annotations

from typing import Any, Sequence

import click

#: pixels the region is grown by before filling (measured: see the module docstring)
REMOVE_GROW = 2.0
#: the class that guides the fill: none = unconditional (measured: see the module docstring)
REMOVE_LABEL = "none"


def remove(editor: Any, image: Any, mask: Any = None, *, box: Sequence[float] | None = None, invert: bool = False,
           grow: float = REMOVE_GROW, label: int | str | None = REMOVE_LABEL, **kwargs: Any) -> Any:
    """Remove what ``mask`` (white / True = remove) or ``box`` covers and fill it from the surroundings.

    ``editor`` is a :class:`varedit.tasks.Editor` (``pipe.editor``, ``OnnxVAR.editor()``). The region
    is grown by ``grow`` pixels (Euclidean) before the fill; ``label`` guides the fill as in
    :meth:`~varedit.tasks.Editor.inpaint` (default unconditional). Every other keyword (``seed``,
    ``n``, ``cfg``, ``feather``, ``output_type`` ...) is an option of the inpaint request it runs
    (:class:`varedit.requests.InpaintRequest`, run by ``Editor.run``). Returns its ``EditResult``
    with ``settings["task"] == "remove"`` and ``settings["grow"]``; ``result.mask`` is the grown region.
    """
    from varedit import processing as P
    if grow < 0:
        raise ValueError(f"grow must be >= 0 pixels, got {grow}")
    loaded = image if isinstance(image, P.LoadedImage) else P.load_image(image)
    region = P.region_mask(loaded.size, mask, box, alpha=loaded.alpha, invert=invert)  # as inpaint reads it
    if not region.any():
        raise ValueError("the mask is empty: nothing to remove (white / True marks what to remove)")
    if grow > 0:
        region = P.grow_mask(region, grow)
    res = editor.run(_request(loaded, region, label, kwargs), callback=kwargs.get("callback"),
                     preview=bool(kwargs.get("preview", False)))
    res.settings.update(task="remove", grow=float(grow))
    return res


def _request(loaded: Any, region: Any, label: int | str | None, kwargs: dict[str, Any]) -> Any:
    """The inpaint request of a removal (:mod:`varedit.requests`), read as ``Editor.inpaint`` reads its
    keywords; the progress keywords go to ``Editor.run``."""
    from varedit.requests import InpaintRequest
    own = {k: v for k, v in kwargs.items() if k not in ("callback", "preview")}
    return InpaintRequest.of(image=loaded, mask=region, label=label, **own)


def _command() -> click.Command:
    """The command, built from the CLI's own pieces (``varedit.commands``): every argument is checked
    before the model loads, outputs are named, written and reported as ``varedit inpaint`` does."""
    from varedit.commands.batch import edit_command
    from varedit.commands.common import (GroupedCommand, backend_options, check_class, model_options, opt,
                                         pop_sampling, request_opt, sampling_options)
    from varedit.commands.edit_options import (LABEL_KEYWORDS, editing_options, label_option, output_options,
                                               parse_box)
    from varedit.requests import InpaintRequest

    @click.command("remove", cls=GroupedCommand)
    @opt("--mask", group="Input", type=click.Path(), default=None,
         help="Mask file for all inputs, or a folder of masks paired by file stem (white = remove).")
    @request_opt("--box", request=InpaintRequest, name="box", group="Input", type=str)
    @request_opt("--invert", request=InpaintRequest, name="invert", group="Input", is_flag=True)
    @opt("--grow", group="Task", type=click.FloatRange(min=0, max=1024), default=REMOVE_GROW, show_default=True,
         help="Grow the region by this many pixels first (takes the object's soft rim along).")
    @label_option(InpaintRequest, default=REMOVE_LABEL)  # the fill's class; removal's default: unconditional
    @click.argument("images", nargs=-1, required=True, type=click.Path())
    @output_options
    @editing_options(InpaintRequest)
    @sampling_options
    @model_options
    @backend_options
    def remove_command(**kw: Any) -> None:
        """Remove objects: fill the masked region (grown a little) from its surroundings."""
        sampling = pop_sampling(kw)
        box, n = parse_box(kw["box"]), kw["n"]
        if box is not None and kw["mask"] is not None:
            raise click.UsageError("give --mask or --box, not both")

        def check(src: Any, header: Any) -> tuple[int, int]:
            from varedit.requests import check_candidates
            if box is not None:
                from varedit.processing import box_pixels
                box_pixels(header.size, box)
            elif kw["mask"] is None and not header.has_alpha:
                raise ValueError("nothing to remove: give --mask, --box, or an image with transparent pixels")
            check_candidates(n, header.size)
            return header.size

        def setup(info: Any) -> None:
            check_class(kw["class_"], info, LABEL_KEYWORDS)  # an unknown class fails before the model loads

        def call(ed: Any, loaded: Any, mask: Any, bar: Any) -> Any:
            return remove(ed, loaded, None if mask is None else str(mask), box=box, invert=kw["invert"],
                          grow=kw["grow"], label=kw["class_"], n=n, rank=not kw["no_rank"], mode=kw["mode"],
                          strategy=kw["strategy"], keep_scales=kw["keep_scales"], feather=kw["feather"],
                          harmonize=kw["harmonize"], seed=kw["seed"], output_type="np", callback=bar, **sampling)

        edit_command("remove", kw, n, check, call, kw["mask"], setup)

    return remove_command


def register(api: Any) -> None:
    """The ``varedit.plugins`` entry point: adds ``varedit remove`` and the task ``remove``."""
    api.add_command(_command())
    api.add_task("remove", remove)
