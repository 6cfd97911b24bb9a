"""Named model presets (torch-free): what each name means and where its files come from.

The one loading path (from a name to built models) is :mod:`varedit.registry`; this table is kept
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
#: the environment variable naming the model the commands (and ``varedit serve``) use by default
MODEL_ENV = "VAREDIT_MODEL"

#: licences: the official weights (FoundationVision/var on Hugging Face) are released under MIT with the
#: official code; the demo model is trained by varedit and ships under varedit's MIT licence
OFFICIAL_LICENSE = "MIT"
DEMO_LICENSE = "MIT"

# The released files, from the official code's own models (every key, shape and dtype, built on the
# 'meta' device at commit 78b95394; tests/test_frontdoor.py checks these numbers against that record when
# it is present): parameters, and the exact bytes of the tensors a file holds (float32 parameters and
# buffers).  A file adds its zip structure (kilobytes) to the tensors' bytes.
OFFICIAL_FILES: dict[str, dict[str, int]] = {
    VAE_FILE: {"parameters": 108_948_355, "tensor_bytes": 435_957_260},
    "var_d16.pth": {"parameters": 310_283_520, "tensor_bytes": 1_243_054_656},
    "var_d20.pth": {"parameters": 600_917_136, "tensor_bytes": 2_405_625_984},
    "var_d24.pth": {"parameters": 1_033_399_360, "tensor_bytes": 4_135_599_936},
    "var_d30.pth": {"parameters": 2_010_020_356, "tensor_bytes": 8_042_166_864},
    "var_d36.pth": {"parameters": 2_353_893_904, "tensor_bytes": 9_435_995_712},
}
#: how far a downloaded file's size may be from its tensors' bytes and still be taken for the released file
#: (its zip structure adds kilobytes; an older d24 file lacks a few small tensors): anything outside this
#: is a truncated or different file
SIZE_TOLERANCE = 0.01


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
    def license(self) -> str:
        return DEMO_LICENSE if self.bundled is not None else OFFICIAL_LICENSE

    @property
    def parameters(self) -> int:
        """VAR + VQVAE parameters (a bundled model: counted in its file, without loading it)."""
        if self.bundled is not None:
            return bundled_facts(self.bundled)["parameters"]
        return sum(OFFICIAL_FILES[f]["parameters"] for f in self.files)

    def file_bytes(self, filename: str) -> int:
        """The exact bytes of the tensors in one of the preset's official files (its download size, to
        a few kilobytes of zip structure)."""
        return OFFICIAL_FILES[filename]["tensor_bytes"]

    @property
    def download_bytes(self) -> int:
        """Bytes to download for the preset with nothing cached (0 for a bundled model)."""
        return 0 if self.bundled is not None else sum(self.file_bytes(f) for f in self.files)

    def memory_bytes(self, dtype: str = "fp32") -> int:
        """The weights alone in memory: parameters and buffers at 4 bytes each (fp32) or 2 (bf16 / fp16).
        Activations, the attention cache and the framework come on top (a few hundred MB at 256 px)."""
        per = {"fp32": 4, "bf16": 2, "fp16": 2}[dtype]
        if self.bundled is not None:
            return self.parameters * per
        return sum(self.file_bytes(f) for f in self.files) * per // 4

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


def bundled_facts(path: Path) -> dict[str, int]:
    """Parameters and file bytes of a bundled self-describing model, from its structure (no tensor is read)."""
    from .checkpoint import peek
    obj = peek(path)
    n = 0
    for part in ("var", "vqvae"):
        sd = obj.get(part, {}).get("state_dict", {}) if isinstance(obj, dict) else {}
        n += sum(t.numel for t in sd.values() if hasattr(t, "numel") and t.is_floating_point())
    return {"parameters": n, "file_bytes": path.stat().st_size}


def default_model() -> str:
    """The model a command uses when none is named: ``$VAREDIT_MODEL``, else the bundled demo."""
    return os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL


def human_bytes(n: float) -> str:
    """1.24 GB, 436 MB, 22.1 MB, 950 kB (powers of 1000, as download sizes are shown)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{int(n)} B"


def photo_model_hint() -> str:
    """How to get a model for photographs (the smallest official preset)."""
    p = PRESETS["var-d16"]
    return (f"`varedit models pull {p.name}` ({human_bytes(p.download_bytes)}) then `--model {p.name}` "
            f"(or set {MODEL_ENV}={p.name})")


def demo_notice() -> str:
    """One line said whenever the bundled demo model is loaded for editing or generation."""
    p = PRESETS[DEFAULT_MODEL]
    return (f"note: the bundled demo model is small and trained on synthetic shapes at {p.image_size} px, so "
            f"results on photographs are blurred; for photographs: {photo_model_hint()}")
