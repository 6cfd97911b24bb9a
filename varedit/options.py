"""Sampling settings shared by every backend, and the few names every layer reads (torch- and numpy-free).

:class:`SamplingOptions` is the one place sampling options are validated: the torch and onnxruntime
backends, the CLI and the defaults stored in model files all construct it, so a bad value (a NaN
guidance scale, a float top-k) fails before any work, with the same message everywhere.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .validation import check_int, check_number

GUIDANCE_SCHEDULES = ("linear", "constant")
# what a masked task's ``label`` takes besides a class index or name (read by the request types, the label
# resolver in editing/ and the command line, which must start without importing numpy)
LABEL_KEYWORDS = ("auto", "infer", "none")
# how a canvas is encoded: ``default`` (prefill, coverage keep maps, open loop) or ``official`` (as is)
MODES = ("default", "official")
# a fill regenerates a latent cell when more than 1 - FILL_COVERAGE of it is hole, and encodes a lightly or
# half-touched cell from the prefilled canvas: the planner's default (editing.plan.make_plan) and the inpaint
# and outpaint requests' (docs/quality.md, "Why each default")
FILL_COVERAGE = 0.25
# guidance scales beyond this overflow the guided logits (the sampler's probabilities become inf/NaN);
# useful ones are below 10
MAX_CFG = 100.0


@dataclass
class SamplingOptions:
    """Defaults are the official demo's (cfg 4, top-k 900, top-p 0.95); a model file may carry its own.

    ``cfg``: guidance scale (in [0, ``MAX_CFG``]; 0 = purely conditional); ``top_k``: keep the k most likely
    tokens (0 = off, 1 = greedy); ``top_p``: nucleus in [0, 1] (0 = off); ``more_smooth``: Gumbel
    smoothing of the code embeddings (torch only); ``guidance``: schedule over scales (``linear`` from
    0 at the first scale, as the official code, or ``constant``).
    """

    cfg: float = 4.0
    top_k: int = 900
    top_p: float = 0.95
    more_smooth: bool = False
    guidance: str = "linear"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **overrides: Any) -> "SamplingOptions":
        """A copy with the given (non-None) settings replaced; unknown names are a TypeError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown sampling option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
        d = self.as_dict()
        d.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingOptions(**d)

    def __post_init__(self) -> None:
        self.cfg = check_number(self.cfg, "cfg", lo=0, hi=MAX_CFG)
        self.top_k = check_int(self.top_k, "top_k", lo=0)
        self.top_p = check_number(self.top_p, "top_p", lo=0, hi=1)
        if not isinstance(self.more_smooth, bool):
            raise TypeError(f"more_smooth must be True or False, not {self.more_smooth!r}")
        if self.guidance not in GUIDANCE_SCHEDULES:
            raise ValueError(f"guidance must be linear or constant, got {self.guidance!r}")
