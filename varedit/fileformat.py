"""varedit's own model file format: a self-describing checkpoint (``format``, ``version``, the ``vqvae``
and ``var`` entries with their configs, ``meta`` with class names and sampling defaults). The torch-free
checks of its structure live here, apart from reading official weights (:mod:`varedit.registry`) and
describing a model before loading it (:mod:`varedit.modelinfo`)."""
from __future__ import annotations

from typing import Any, Mapping

from .checkpoint import WeightsError
from .options import SamplingOptions
from .validation import check_class_names, check_sampling

FORMAT = "varedit"          # the self-describing file format (models trained by varedit)
FORMAT_VERSION = 1

__all__ = ["FORMAT", "FORMAT_VERSION", "check_varedit_meta"]


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_varedit_meta(obj: Mapping[str, Any], name: str) -> tuple[tuple[tuple[str, ...], ...] | None,
                                                                    SamplingOptions | None]:
    """The torch-free part of validating a self-describing file (on :func:`peek`'s structure or a loaded
    one): version, the vqvae/var entries' shape, meta, class names (one per class of the VAR config,
    printable text) and sampling defaults.  Returns (class names, sampling defaults)."""
    v = obj.get("version")
    if not _int(v) or v < 1:
        raise WeightsError(f"{name}: version is {v!r}, expected a positive integer")
    if v > FORMAT_VERSION:
        raise WeightsError(f"{name} is format version {v}; this varedit reads up to {FORMAT_VERSION}: upgrade varedit")
    parts = [k for k in ("vqvae", "var") if k in obj]
    if not parts:
        raise WeightsError(f"{name} holds neither a VQVAE nor a VAR")
    for kind in parts:
        part = obj[kind]
        if not isinstance(part, Mapping) or not isinstance(part.get("config"), Mapping) \
                or not isinstance(part.get("state_dict"), Mapping):
            raise WeightsError(f"{name}: the {kind} entry needs a config and a state_dict mapping")
    meta = obj.get("meta", {})
    if not isinstance(meta, Mapping):
        raise WeightsError(f"{name}: meta is a {type(meta).__name__}, not a mapping")
    names = meta.get("class_names")
    if "var" in obj:
        nc = obj["var"]["config"].get("num_classes")
        if not _int(nc) or nc < 1:
            raise WeightsError(f"{name}: VARConfig.num_classes is {nc!r}, expected a positive integer")
        classes = check_class_names(names, nc, name, WeightsError)
    else:  # a tokeniser may record its data's classes
        classes = check_class_names(names, len(names) if isinstance(names, (list, tuple)) else 0, name,
                                    WeightsError) if names is not None else None
    defaults = None
    if meta.get("sampling") is not None:
        try:
            defaults = SamplingOptions(**check_sampling(meta["sampling"], name, WeightsError))
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{name}: bad sampling default ({e})") from None
    return classes, defaults
