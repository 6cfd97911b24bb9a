"""The Python API: a pipeline holds a VAR + VQVAE pair and runs the tasks.

    from varedit import VarEditPipeline
    pipe = VarEditPipeline.from_pretrained("demo")          # or "var-d16", or a path
    out = pipe.generate("circle", n=4, seed=0)
    out.images[0].save("circle.png")
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .classes import imagenet_classes
from .models.var import VAR
from .models.vqvae import VQVAE
from .options import SamplingOptions
from .editing.backend import TorchBackend
from .requests import GenerateRequest
from .tasks import EditResult, Editor, LabelGuess, ProgressCallback
from .checkpoint import WeightsError
from .fileformat import load_file
from .presets import DEFAULT_MODEL
from .registry import load_models

log = logging.getLogger(__name__)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked, but no CUDA GPU is usable here (use --device auto or cpu)")
    return d


@dataclass
class GenerateOutput:
    images: list[Any]                    # PIL images, or HxWx3 uint8 arrays (output_type='np')
    labels: list[int]
    seed: int
    tensors: torch.Tensor | None = None  # (n, 3, H, W) float in [0, 1] (the 8-bit images' values)
    settings: dict[str, Any] = field(default_factory=dict)


class VarEditPipeline:
    """A VAR transformer and its VQVAE on one device, with class names and default settings."""

    def __init__(self, var: VAR, vae: VQVAE, *, device: str | torch.device = "cpu", name: str = "custom",
                 class_names: Sequence[Sequence[str]] | None = None, defaults: SamplingOptions | None = None,
                 impl: str = "fast", precision: str = "fp32"):
        """``impl``: the sampler's ``fast`` path (default) or its ``eager`` reference, which follows the
        official code's structure (:func:`varedit.editing.sampler.masked_sample`); both choose the same
        tokens.  ``precision``: ``fp32`` (default), ``bf16``/``fp16`` autocast of the transformer blocks, or
        ``auto`` (bf16 on CPUs with AVX-512 BF16 / AMX and on GPUs that support it, else fp32:
        :func:`varedit.cpu.resolve_precision`; see :class:`varedit.editing.backend.TorchBackend`)."""
        self.device = torch.device(device)
        self.var = var.to(self.device).eval()
        self.vae = vae.to(self.device).eval()
        self.name = name
        if class_names is None and var.num_classes == 1000:
            class_names = imagenet_classes()
        self.class_names = tuple(tuple(c) if not isinstance(c, str) else (c,) for c in class_names) \
            if class_names else None
        self.defaults = defaults or SamplingOptions()
        if self.device.type == "cuda":
            var.use_fused_attention(True)
        self.editor = Editor(TorchBackend(self.var, self.vae, self.device, impl=impl, precision=precision),
                             class_names=self.class_names,
                             defaults=self.defaults, model_name=name)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model: str | os.PathLike = DEFAULT_MODEL, *, device: str | torch.device = "auto",
                        vae_path: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None,
                        num_heads: int | None = None, local_files_only: bool | None = None,
                        patch_nums: Sequence[int] | None = None, impl: str = "fast",
                        precision: str = "fp32") -> "VarEditPipeline":
        """Load a preset name (``demo``, ``var-d16`` ...), a self-describing varedit file, or an official
        VAR state dict (its VQVAE from ``vae_path`` or ``vae_ch160v4096z32.pth`` beside it).
        ``impl`` and ``precision``: see :class:`VarEditPipeline`.

        ``patch_nums``: the scale list of an official file whose list cannot be inferred (the file holds
        only the number of scales and the sum of their squares, which several lists may share)."""
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"model must be a preset name or a path, not {type(model).__name__}")
        if patch_nums is not None:
            if isinstance(patch_nums, (str, bytes)) or not all(
                    isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in patch_nums):
                raise TypeError(f"patch_nums must be a sequence of positive ints, not {patch_nums!r}")
            patch_nums = tuple(patch_nums)
        dev = pick_device(device)
        m = load_models(model, device=dev, vae_path=vae_path, weights_dir=weights_dir, num_heads=num_heads,
                        local_files_only=local_files_only, patch_nums=patch_nums)
        if m.notice:  # once per load; the CLI says it on stderr unless -q
            log.info("%s", m.notice)
        return cls(m.var, m.vae, device=dev, name=m.name, class_names=m.class_names, defaults=m.defaults,
                   impl=impl, precision=precision)

    @classmethod
    def from_files(cls, var_path: str | os.PathLike, vae_path: str | os.PathLike | None = None, *,
                   device: str | torch.device = "auto") -> "VarEditPipeline":
        if vae_path is None:
            var, vae = load_file(var_path, pick_device(device))
            if var is None or vae is None:
                raise WeightsError("one file with both models, or a VAR file and its VQVAE file, is needed")
            return cls(var, vae, device=pick_device(device), name=Path(var_path).stem)
        return cls.from_pretrained(var_path, vae_path=vae_path, device=device)

    # -- facts -----------------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.vae.image_size

    @property
    def num_classes(self) -> int:
        return self.var.num_classes

    def class_index(self, spec: int | str) -> int:
        return self.editor.class_index(spec)

    def class_name(self, i: int) -> str:
        return self.editor.class_name(i)

    def options(self, **overrides: Any) -> SamplingOptions:
        return self.defaults.replace(**overrides)

    # -- tasks -----------------------------------------------------------------------------------------
    def generate(self, class_: int | str | Sequence[int | str] | None = None, *,
                 callback: ProgressCallback | None = None, preview: bool = False, output_type: str = "pil",
                 **options: Any) -> GenerateOutput:
        """Class-conditional sampling. ``class_`` is an index, a name, a list of them (one per image), or
        None for unconditional (the null class). ``options``: the fields of
        :class:`varedit.requests.GenerateRequest` (``n``, ``seed``, ``batch_size``) and the sampling
        options (cfg, top_k, top_p, more_smooth, guidance). The same path as every task
        (:meth:`varedit.tasks.Editor.run`); ``output_type='pt'`` leaves ``images`` empty and gives only
        ``tensors``."""
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be pil, np or pt, not {output_type!r}")
        req = GenerateRequest.of(class_=class_, output_type="pil" if output_type == "pil" else "np", **options)
        r = self.editor.run(req, callback=callback, preview=preview)
        arr = np.stack([np.asarray(im) for im in r.images])
        t = torch.from_numpy(arr.astype(np.float32) / 255).permute(0, 3, 1, 2)
        images: list[Any] = [] if output_type == "pt" else list(r.images)
        return GenerateOutput(images, list(r.settings["labels"]), r.seed, t, r.settings)

    # -- editing (image level; see varedit.tasks.Editor for every option) -----------------------------
    def inpaint(self, image: Any, mask: Any = None, **kw: Any) -> EditResult:
        """Regenerate the white (255 / True) part of ``mask``. See :meth:`varedit.tasks.Editor.inpaint`."""
        return self.editor.inpaint(image, mask, **kw)

    def outpaint(self, image: Any, **kw: Any) -> EditResult:
        """Extend by left/right/top/bottom (pixels or ratios). See :meth:`varedit.tasks.Editor.outpaint`."""
        return self.editor.outpaint(image, **kw)

    def edit(self, image: Any, box: Sequence[float], class_: int | str, **kw: Any) -> EditResult:
        """Regenerate ``box`` as class ``class_``. See :meth:`varedit.tasks.Editor.edit`."""
        return self.editor.edit(image, box, class_, **kw)

    def upscale(self, image: Any, **kw: Any) -> EditResult:
        """Zero-shot restoration to ``scale`` x. See :meth:`varedit.tasks.Editor.upscale`."""
        return self.editor.upscale(image, **kw)

    def infer_label(self, image: Any, mask: Any = None, **kw: Any) -> LabelGuess:
        """The class the model finds most likely outside ``mask``. See :meth:`varedit.tasks.Editor.infer_label`."""
        return self.editor.infer_label(image, mask, **kw)
