"""What the CPU can do for reduced-precision inference, and what ``--precision auto`` picks from it.

Torch-free: the instruction-set flags come from ``/proc/cpuinfo`` (Linux); torch's own view
(``torch.backends.cpu.get_cpu_capability()``: DEFAULT, AVX2, AVX512, ...) is added only when asked for.

The flags that matter:

* ``avx512_bf16`` (AVX-512 BF16) and ``amx_bf16`` (AMX): bfloat16 dot products. On such CPUs an
  autocast of the transformer to bfloat16 is faster than float32 (docs/performance.md, "What to expect
  on which CPU"); without them bfloat16 is emulated through float32 and is *slower*.
* ``avx512_vnni``, ``avx_vnni`` and ``amx_int8``: int8 dot products (onnxruntime's quantized MatMuls).

``--precision auto`` (:func:`resolve_precision`) picks bfloat16 only where the CPU has bf16
instructions (or on a CUDA GPU that supports bfloat16) and because the measured picture held
(:data:`BF16_PICTURE_HOLDS`); everywhere else float32.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
PRECISIONS = ("fp32", "bf16", "fp16")  # what the torch backend runs
CHOICES = ("auto", "fp32", "bf16", "fp16")  # what --precision accepts

# The judge's verdict on bfloat16 autocast: the picture it gives held against float32's on the demo
# model's eval (docs/decisions.md, "Automatic precision"). Without it, auto would never pick bf16, whatever
# the hardware.
BF16_PICTURE_HOLDS = True


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name and instruction-set flags (lower case, as /proc/cpuinfo spells them)."""

    model_name: str
    flags: frozenset[str] = field(default_factory=frozenset)
    torch_capability: str | None = None  # torch.backends.cpu.get_cpu_capability(), when asked for

    @property
    def has_avx512_bf16(self) -> bool:
        return "avx512_bf16" in self.flags

    @property
    def has_amx_bf16(self) -> bool:
        return "amx_bf16" in self.flags

    @property
    def has_avx512_vnni(self) -> bool:
        return "avx512_vnni" in self.flags

    @property
    def has_amx_int8(self) -> bool:
        return "amx_int8" in self.flags

    @property
    def has_avx_vnni(self) -> bool:
        return "avx_vnni" in self.flags

    @property
    def has_avx512(self) -> bool:
        return "avx512f" in self.flags

    @property
    def has_bf16_instructions(self) -> bool:
        """bfloat16 dot products in hardware (AVX-512 BF16 or AMX): where bf16 autocast is faster."""
        return self.has_avx512_bf16 or self.has_amx_bf16

    @property
    def has_int8_instructions(self) -> bool:
        """int8 dot products in hardware (AVX-512 VNNI, AVX-VNNI or AMX)."""
        return self.has_avx512_vnni or self.has_avx_vnni or self.has_amx_int8

    def as_dict(self) -> dict[str, Any]:
        """The report's form: model name, the flags above, and torch's capability when known."""
        return {"model_name": self.model_name, "has_avx512": self.has_avx512,
                "has_avx512_bf16": self.has_avx512_bf16, "has_amx_bf16": self.has_amx_bf16,
                "has_avx512_vnni": self.has_avx512_vnni, "has_amx_int8": self.has_amx_int8,
                "has_avx_vnni": self.has_avx_vnni, "torch_capability": self.torch_capability}

    def summary(self) -> str:
        """One line: the model name and the reduced-precision instructions present (or 'none')."""
        names = [n for n, on in (("AVX-512", self.has_avx512), ("AVX-512 BF16", self.has_avx512_bf16),
                                 ("AMX-BF16", self.has_amx_bf16), ("AVX-512 VNNI", self.has_avx512_vnni),
                                 ("AVX-VNNI", self.has_avx_vnni), ("AMX-INT8", self.has_amx_int8)) if on]
        extra = f"; torch {self.torch_capability}" if self.torch_capability else ""
        return f"{self.model_name} ({', '.join(names) if names else 'no AVX-512, bf16 or int8 instructions'}{extra})"


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The features in the text of ``/proc/cpuinfo``: the first processor's model name and the flags
    (x86 ``flags``, Arm ``Features``) that every processor listed has."""
    name = ""
    per_cpu: list[set[str]] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "features"):
            per_cpu.append(set(value.lower().split()))
    flags = frozenset(set.intersection(*per_cpu)) if per_cpu else frozenset()
    return CpuFeatures(model_name=name or platform.processor() or platform.machine() or "unknown CPU", flags=flags)


def cpu_features(cpuinfo: str | Path = CPUINFO, *, torch_capability: bool = False) -> CpuFeatures:
    """This machine's CPU features (:func:`parse_cpuinfo` of ``cpuinfo``; an unreadable file gives no
    flags).  ``torch_capability``: also ask torch (imports it) which kernels it dispatches to."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    feats = parse_cpuinfo(text)
    if torch_capability:
        cap = _torch_capability()
        if cap is not None:
            feats = CpuFeatures(feats.model_name, feats.flags, cap)
    return feats


def _torch_capability() -> str | None:
    try:
        import torch
        return str(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError, RuntimeError):
        return None


def resolve_precision(precision: str, device: Any = "cpu", features: CpuFeatures | None = None) -> str:
    """The precision the torch backend runs for ``precision`` on ``device``.

    ``fp32``, ``bf16`` and ``fp16`` are taken as given; ``auto`` gives ``bf16`` on a CPU with bf16
    instructions (:attr:`CpuFeatures.has_bf16_instructions`) and on a CUDA GPU that supports bfloat16,
    provided the measured picture held (:data:`BF16_PICTURE_HOLDS`), and ``fp32`` everywhere else (a CPU
    without them would emulate bf16 and run slower).  ``features``: the CPU's (default: this machine's).
    """
    if precision not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, not {precision!r}")
    if precision != "auto":
        return precision
    if not BF16_PICTURE_HOLDS:
        return "fp32"
    kind = device if isinstance(device, str) else getattr(device, "type", str(device))
    kind = kind.split(":")[0]
    if kind == "cuda":
        return "bf16" if _cuda_bf16(device) else "fp32"
    if kind != "cpu":
        return "fp32"
    feats = features if features is not None else cpu_features()
    return "bf16" if feats.has_bf16_instructions else "fp32"


def _cuda_bf16(device: Any) -> bool:
    try:
        import torch
        if not torch.cuda.is_available():
            return False
        with torch.cuda.device(torch.device(device)):
            return bool(torch.cuda.is_bf16_supported())
    except (ImportError, RuntimeError, AssertionError):
        return False
