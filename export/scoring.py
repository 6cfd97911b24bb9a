"""Label inference on an export: log p(kept tokens | class) for every class (numpy only, torch-free).

Two ways give the same numbers: the scorer graph teacher-forces every (image, class) pair, in runs of the
graph's rows; exports made before it run the sampler once per class with every cell forced (closed loop,
plain pooling = the tokeniser's tokens, unguided) and read its per-cell log-probabilities.
"""
from __future__ import annotations

from typing import Callable, Container

import numpy as np

from .feeds import Runner, pad_rows

# a cold call that would need this many sampler runs or more opens the scorer graph instead
SCORER_AT_RUNS = 32


def prefer_scorer(open_graphs: Container[str], N: int, batch: int, num_classes: int) -> bool:
    """Whether label inference should take the scorer graph (``class_log_likelihood``'s ``use_scorer=None``).

    Yes when its session is open, or when the sampler's is (a warm process: the scorer's one-time opening
    pays for itself within a few calls, a scored image then costs one run instead of one per class:
    docs/decisions.md, "The ONNX scorer graph"), or when the sampler would need ``SCORER_AT_RUNS`` runs or
    more; a cold one-shot call with few classes scores with the sampler, whose session it opens anyway
    (opening a second graph would cost more than the runs it saves)."""
    runs = -(-N // batch) * num_classes
    return "scorer" in open_graphs or "sampler" in open_graphs or runs >= SCORER_AT_RUNS


def kept_sum(cell_logprobs: list[np.ndarray], keep: list[np.ndarray]) -> np.ndarray:
    """Per row, the cells' log-probabilities (per scale (R, pn^2)) summed in float64 over ``keep`` (per
    scale bool (R, pn^2)): the known cells' log-likelihood."""
    return sum((lp.astype(np.float64) * k).sum(axis=1) for lp, k in zip(cell_logprobs, keep))


def score_with_scorer(session: Runner, rows: int, tokens: list[np.ndarray], keep: list[np.ndarray],
                      num_classes: int) -> np.ndarray:
    """(N, num_classes) float64: the scorer graph's cell log-probabilities of ``tokens`` (per scale (N, pn^2),
    checked) summed over ``keep`` (per scale bool (N, pn^2)), ``rows`` (image, class) pairs a run."""
    N, C, SN = tokens[0].shape[0], num_classes, len(tokens)
    img_i = np.repeat(np.arange(N), C)   # rows: image-major, every class of an image side by side
    cls_i = np.tile(np.arange(C), N)
    out = np.zeros(N * C, np.float64)
    for s in range(0, N * C, rows):
        e = min(s + rows, N * C)
        feeds = {"label": pad_rows(cls_i[s:e].astype(np.int64), rows)}
        feeds.update({f"tokens_{k}": pad_rows(tokens[k][img_i[s:e]], rows) for k in range(SN)})
        res = session.run(feeds)
        out[s:e] = kept_sum([res[f"cell_logprob_{k}"][: e - s] for k in range(SN)],
                            [keep[k][img_i[s:e]] for k in range(SN)])
    return out.reshape(N, C)


def score_with_sampler(cell_logprobs: Callable[[int], list[np.ndarray]], keep: list[np.ndarray],
                       num_classes: int) -> np.ndarray:
    """(N, num_classes) float64: for each class c, ``cell_logprobs(c)`` (the sampler's per-scale (N, pn^2)
    log-probabilities with every cell forced to the image's tokens) summed over ``keep``."""
    out = np.zeros((keep[0].shape[0], num_classes), np.float64)
    for c in range(num_classes):
        out[:, c] = kept_sum(cell_logprobs(c), keep)
    return out


__all__ = ["prefer_scorer", "score_with_scorer", "score_with_sampler", "SCORER_AT_RUNS"]
