"""Torch-free pre- and post-processing for VAR editing tasks (inpaint, outpaint, edits).

This package is shared with the onnxruntime runtime, so it only depends on numpy, Pillow and
OpenCV (``opencv-python-headless``). It must never import torch. One module per concern:

* :mod:`.images`: decoding any input to a :class:`LoadedImage`, encoding results back (mode, bit depth);
* :mod:`.masks`: mask files, arrays, boxes and alpha channels to one bool array;
* :mod:`.windows`: size strategies (crop, resize, tiles) and the canvas <-> image mapping;
* :mod:`.fills`: hole fills from known pixels (the prefill before tokenising);
* :mod:`.blending`: feathered paste-back, compositing, colour harmonisation;
* :mod:`.canvas`: canvas extension for outpainting.

Data flow::

    src image --load_image--> LoadedImage (rgb float32 in [0,1], alpha, raw pixels)
    src mask  --load_mask / box_mask / mask_from_alpha--> bool HxW (True = regenerate)
    plan_crop / plan_resize / plan_tiles --> Window(s): image region <-> square model canvas
    extract(window, rgb, mask) --> canvas rgb (model_size^2) + canvas mask   [model runs here]
    place(window, canvas_rgb, shape) / merge_windows --> edited rgb at image resolution
    feather(mask, radius, grow) --> weight HxW (1 in mask, 0 beyond the band)
    compose(loaded.raw, edited_rgb, weight) --> raw array (untouched pixels bit-identical)
    to_output / raw_to_image --> PIL.Image (or numpy) in the input's mode and bit depth

Conventions
-----------
* Sizes are ``(width, height)`` tuples (PIL order); array shapes are ``(height, width, ...)``.
* Masks are ``bool`` arrays of shape ``(H, W)``; ``True`` means *regenerate* and ``False``
  means *keep*. Mask files follow IOPaint / diffusers / ComfyUI: white (full scale) = regenerate.
* Colour values handed to and returned by the model side are float32 RGB in ``[0, 1]``.
* Pixels whose paste-back weight is exactly 0 are copied from the original raw array, so
  they are bit-identical to the input (same dtype, same channels, alpha untouched).
"""

from __future__ import annotations

from ._common import Box, ImageError, MaskError, Size
from .blending import compose, feather, grow_mask, harmonize
from .canvas import AMOUNT_HELP, extend_canvas, extend_loaded, extended_size, outpaint_amount, outpaint_pads
from .fills import FILL_METHODS, FillMethod, prefill_hole
from .images import (
    DEFAULT_MAX_PIXELS,
    ImageHeader,
    ImageSource,
    LoadedImage,
    encode_image,
    limit_pixels,
    load_image,
    original_array,
    output_format,
    probe_image,
    raw_to_image,
    save_image,
    to_output,
)
from .masks import MaskSource, box_mask, box_pixels, load_mask, mask_bbox, mask_from_alpha, region_mask
from .windows import (
    Window,
    extract,
    latent_mask,
    merge_windows,
    place,
    plan_crop,
    plan_resize,
    plan_tiles,
)

__all__ = [
    "AMOUNT_HELP",
    "outpaint_amount",
    "region_mask",
    "ImageError",
    "MaskError",
    "LoadedImage",
    "Window",
    "DEFAULT_MAX_PIXELS",
    "FILL_METHODS",
    "FillMethod",
    "ImageSource",
    "MaskSource",
    "Size",
    "Box",
    "load_image",
    "limit_pixels",
    "original_array",
    "compose",
    "to_output",
    "raw_to_image",
    "save_image",
    "encode_image",
    "output_format",
    "probe_image",
    "ImageHeader",
    "load_mask",
    "box_mask",
    "box_pixels",
    "mask_from_alpha",
    "mask_bbox",
    "plan_crop",
    "plan_resize",
    "plan_tiles",
    "extract",
    "place",
    "merge_windows",
    "latent_mask",
    "grow_mask",
    "feather",
    "harmonize",
    "prefill_hole",
    "extend_canvas",
    "extend_loaded",
    "extended_size",
    "outpaint_pads",
]
