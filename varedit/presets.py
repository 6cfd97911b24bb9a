"""Named model presets (torch-free): what each name means and where its files come from.

The one loading path (building models from weights) is :mod:`varedit.registry`; this table is kept
free of torch so that argument checks, ``varedit models list`` and downloads run without it.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint import WeightsError

if TYPE_CHECKING:
    from .models.var import VARConfig
    from .models.vqvae import VQVAEConfig

HF_REPO = "FoundationVision/var"
VAE_FILE = "vae_ch160v4096z32.pth"
PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
KNOWN_PATCH_NUMS = (PATCH_NUMS_256, PATCH_NUMS_512)
DEMO_FILE = Path(__file__).parent / "assets" / "demo" / "demo.pt"
DEFAULT_MODEL = "demo"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    image_size: int
    patch_nums: tuple[int, ...]
    var_file: str | None = None        # file in the Hugging Face repo (official presets)
    vae_file: str | None = VAE_FILE
    depth: int | None = None
    shared_aln: bool = False
    bundled: Path | None = None        # self-describing file shipped in the package

    @property
    def files(self) -> list[str]:
        return [f for f in (self.vae_file, self.var_file) if f]

    @property
    def num_classes(self) -> int | None:
        """1000 (ImageNet) for the official presets; a bundled model says it in its file."""
        return 1000 if self.depth is not None else None

    def var_config(self, num_heads: int | None = None) -> "VARConfig":
        from .models.var import VARConfig
        if self.depth is None:
            raise WeightsError(f"preset {self.name} has no fixed architecture")
        d = self.depth
        # the official rule: width = 64 * depth, heads = depth, drop path 0.1 * depth / 24
        return VARConfig(depth=d, embed_dim=64 * d, num_heads=num_heads or d, num_classes=1000, vocab_size=4096,
                         Cvae=32, shared_aln=self.shared_aln, attn_l2_norm=True, patch_nums=self.patch_nums,
                         drop_path_rate=0.1 * d / 24)

    def vae_config(self) -> "VQVAEConfig":
        from .models.vqvae import VQVAEConfig
        return VQVAEConfig(vocab_size=4096, z_channels=32, ch=160, share_quant_resi=4, v_patch_nums=self.patch_nums)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("demo", "small model trained by varedit on its synthetic shapes (bundled, offline)", 128,
               (1, 2, 3, 4, 6, 8), vae_file=None, bundled=DEMO_FILE),
        Preset("var-d16", "official VAR d16, ImageNet 256 px (FID 3.30)", 256, PATCH_NUMS_256, "var_d16.pth", depth=16),
        Preset("var-d20", "official VAR d20, ImageNet 256 px (FID 2.57)", 256, PATCH_NUMS_256, "var_d20.pth", depth=20),
        Preset("var-d24", "official VAR d24, ImageNet 256 px (FID 2.09)", 256, PATCH_NUMS_256, "var_d24.pth", depth=24),
        Preset("var-d30", "official VAR d30, ImageNet 256 px (FID 1.92)", 256, PATCH_NUMS_256, "var_d30.pth", depth=30),
        Preset("var-d36", "official VAR d36, ImageNet 512 px (shared AdaLN)", 512, PATCH_NUMS_512, "var_d36.pth",
               depth=36, shared_aln=True),
    ]
}


def preset_key(name: str) -> str:
    return name.lower().replace("_", "-")


def is_preset(name: str) -> bool:
    return preset_key(name) in PRESETS


def get_preset(name: str) -> Preset:
    key = preset_key(name)
    if key in PRESETS:
        return PRESETS[key]
    close = difflib.get_close_matches(key, list(PRESETS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise WeightsError(f"unknown model {name!r}{hint}; presets: {', '.join(PRESETS)}")


def resolve_model(model: str | os.PathLike[str]) -> "Preset | Path":
    """What a model argument names: a :class:`Preset` (a bundled one is checked to be installed), or the
    path of a weights file.  A folder, or a name that is neither a preset nor a file path, is a
    WeightsError (a mistyped preset gets a suggestion)."""
    p = Path(model)
    if is_preset(str(model)) and not p.exists():
        preset = get_preset(str(model))
        if preset.bundled is not None and not preset.bundled.is_file():
            raise WeightsError(f"the bundled {preset.name} model is missing from the installation ({preset.bundled})")
        return preset
    if p.is_dir():
        raise WeightsError(f"{p} is a folder: give a preset name or a weights file (use --weights-dir for a folder "
                           f"of official files, --onnx-dir for an ONNX export)")
    if not p.exists() and not p.suffix:
        get_preset(str(model))  # raises with a suggestion for a mistyped preset
    return p
