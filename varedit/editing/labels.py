"""Label inference over any backend (torch-free): the class the model finds most likely for the known
pixels of an image, and what a masked task's ``label`` option resolves to."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .. import processing as P
from ..options import LABEL_KEYWORDS
from .runner import class_log_likelihood

log = logging.getLogger(__name__)



@dataclass
class LabelGuess:
    """The class the model finds most likely for the known pixels (``Editor.infer_label``)."""

    label: int
    posterior: np.ndarray          # (num_classes,), softmax of the summed log-likelihoods (overconfident)
    log_likelihood: np.ndarray     # (num_classes,)


def can_score(backend: Any) -> bool:
    """Whether ``backend`` (and, for exports, its export) can score classes."""
    return hasattr(backend, "score_labels") and bool(getattr(backend, "can_score_labels", True))


def infer(backend: Any, rgb: np.ndarray, mask: np.ndarray, windows: Sequence[P.Window]) -> LabelGuess:
    """The most likely class for what lies outside ``mask``, read over ``windows`` (uniform prior)."""
    if not can_score(backend):
        raise ValueError(f"the {backend.name} backend cannot score classes: give a class, or label none")
    ll = class_log_likelihood(backend, rgb, mask, windows)
    post = np.exp(ll - ll.max())
    return LabelGuess(int(np.argmax(ll)), post / post.sum(), ll)


def label_key(label: Any, class_index: Callable[[Any], int]) -> int | str:
    """The class index of a class (index or name; an unknown one is a ``ValueError``), else the keyword
    (``auto``, ``infer``, ``none``; None means ``none``)."""
    if label is None:
        return "none"
    if isinstance(label, bool) or not isinstance(label, (int, str, np.integer)):
        raise TypeError(f"label must be a class index or name, 'auto', 'infer' or 'none', not "
                        f"{type(label).__name__} {label!r}")
    label = int(label) if isinstance(label, np.integer) else label
    key = label.strip().lower() if isinstance(label, str) else label
    return key if key in LABEL_KEYWORDS else class_index(label)


def resolve(backend: Any, key: int | str, mask: np.ndarray, guess: Callable[[], LabelGuess],
            auto_max_classes: int) -> tuple[int, dict[str, Any], LabelGuess | None]:
    """The label a masked task samples with, for ``key`` (:func:`label_key`): (label, how it was chosen,
    the guess when one was made). ``guess`` infers the class; ``auto`` infers only when the backend can
    and the model has at most ``auto_max_classes`` classes (one teacher-forced pass per class)."""
    null = backend.num_classes
    if not isinstance(key, str):
        return key, {"label_source": "given"}, None
    if key == "none":
        return null, {"label_source": "unconditional"}, None
    if key == "auto":
        if not can_score(backend):
            log.info("label auto: the %s backend cannot score classes; filling unconditionally", backend.name)
            return null, {"label_source": "unconditional (backend cannot infer)"}, None
        if backend.num_classes > auto_max_classes:
            log.info("label auto: %d classes is more than %d passes; filling unconditionally "
                     "(label='infer' infers anyway)", backend.num_classes, auto_max_classes)
            return null, {"label_source": "unconditional (too many classes to infer)"}, None
    if not mask.any():
        return null, {"label_source": "unconditional (empty mask)"}, None
    if mask.all():
        return null, {"label_source": "unconditional (nothing known: the whole image is masked)"}, None
    g = guess()
    return g.label, {"label_source": "inferred"}, g
