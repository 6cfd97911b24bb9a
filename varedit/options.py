"""Sampling settings shared by every backend (torch-free)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class SamplingOptions:
    """Defaults are the official demo's (cfg 4, top-k 900, top-p 0.95); a model file may carry its own."""

    cfg: float = 4.0
    top_k: int = 900
    top_p: float = 0.95
    more_smooth: bool = False
    guidance: str = "linear"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **overrides: Any) -> "SamplingOptions":
        d = self.as_dict()
        d.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingOptions(**d)

    def __post_init__(self) -> None:
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")
        if self.guidance not in ("linear", "constant"):
            raise ValueError(f"guidance must be linear or constant, got {self.guidance!r}")
