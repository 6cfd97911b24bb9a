"""The graphs' inputs: each call's arrays checked against the export and turned into feeds of the
export's fixed batch (numpy only, torch-free).

An export has a fixed batch B: fewer than B rows are padded with copies of the last one (valid inputs,
dropped after the run), more are split into chunks of B (:func:`run_in_batches`).  Every check names the
input and the shape this model takes, in one line (:class:`OnnxRuntimeError`).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from varedit.editing import guidance as _guidance
from varedit.editing.noise import portable_uniforms
from varedit.options import SamplingOptions
from varedit.validation import check_number, check_seed

from .errors import OnnxRuntimeError
from .manifest import ExportInfo


# --------------------------------------------------------------------------------------------------
# sampling settings as graph inputs (shared with the exporter: this side stays torch-free)
# --------------------------------------------------------------------------------------------------
def guidance_t(cfg: float, SN: int, schedule: str | Sequence[float] = "linear") -> list[float]:
    """Per-scale guidance weight t (:func:`varedit.editing.guidance.guidance_t`, the torch sampler's)."""
    return _guidance.guidance_t(cfg, SN, schedule, OnnxRuntimeError)


def guidance_weights(cfg: float, SN: int, schedule: str | Sequence[float] = "linear") -> np.ndarray:
    """The sampler's ``guidance`` input: per scale [1 + t, t] float32
    (:func:`varedit.editing.guidance.guidance_weights`)."""
    return _guidance.guidance_weights(cfg, SN, schedule, OnnxRuntimeError)


def top_p_threshold(top_p: float) -> np.float32:
    """The sampler's ``top_p_threshold`` input: 1 - top_p (from double, as torch compares), < 0 = off."""
    if not 0 <= top_p <= 1:
        raise OnnxRuntimeError(f"top_p must be in [0, 1], not {top_p}")
    return np.float32(1 - top_p) if top_p > 0 else np.float32(-1)


# --------------------------------------------------------------------------------------------------
# the fixed batch
# --------------------------------------------------------------------------------------------------
def pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` padded to ``rows`` rows with copies of its last row (valid inputs, dropped after the run)."""
    return a if a.shape[0] == rows else np.concatenate([a, np.repeat(a[-1:], rows - a.shape[0], axis=0)])


def chunks(N: int, rows: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each run over N rows, ``rows`` at a time."""
    for s in range(0, N, rows):
        yield s, min(s + rows, N)


def fit(a: np.ndarray, s: int, e: int, rows: int) -> np.ndarray:
    """Rows s:e, padded to ``rows`` with copies of the last row (valid inputs, dropped after)."""
    return np.ascontiguousarray(pad_rows(a[s:e], rows))


class Runner(Protocol):
    """What :func:`run_in_batches` needs of a session (:class:`varedit_onnx.session.OrtSession`)."""

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def run_in_batches(session: Runner, batched: Mapping[str, np.ndarray], rows: int,
                   fixed: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Run ``session`` over the N rows of the ``batched`` inputs, ``rows`` at a time (the last run padded),
    with the ``fixed`` inputs in every run: every output with its N rows."""
    N = next(iter(batched.values())).shape[0]
    if N == 0:
        raise OnnxRuntimeError(f"{', '.join(batched)} has no rows: give at least one image")
    parts: dict[str, list[np.ndarray]] = {}
    for s, e in chunks(N, rows):
        o = session.run({**(fixed or {}), **{k: fit(a, s, e, rows) for k, a in batched.items()}})
        for k, v in o.items():
            parts.setdefault(k, []).append(v[: e - s])
    return {k: np.concatenate(v) for k, v in parts.items()}


# --------------------------------------------------------------------------------------------------
# each call's inputs, checked against the export
# --------------------------------------------------------------------------------------------------
class SamplerFeeds(NamedTuple):
    batched: dict[str, np.ndarray]  # N rows each: label, f_known, keep_s, known_s, uniform_s, pool_w_s
    fixed: dict[str, np.ndarray]    # the same in every run: guidance, top_k, top_p_threshold, closed_loop


class Feeds:
    """Checks a call's arrays against an export (:class:`ExportInfo`) and makes them the graphs' inputs:
    per-scale arrays broadcast to N rows, labels, latents, images, the sampler's whole feed."""

    def __init__(self, info: ExportInfo):
        self.info = info

    def _width(self, s: int) -> int:
        pn = self.info.patch_nums[s]
        return pn * pn

    def per_scale(self, what: str, arrs: Sequence[Any], N: int, dtype: Any) -> list[np.ndarray]:
        """A list of per-scale arrays, each broadcast to N rows and checked against the scale's pn^2 columns."""
        pns = self.info.patch_nums
        SN = len(pns)
        if len(arrs) != SN:
            raise OnnxRuntimeError(f"{what}: {len(arrs)} scales given, this model has {SN}")
        out = []
        for s, a in enumerate(arrs):
            a = np.asarray(a)
            cols = self._width(s)
            if a.ndim == 1:
                a = a[None]
            a = a.reshape(a.shape[0], -1) if a.ndim >= 2 else a
            if a.shape[1] != cols or a.shape[0] not in (1, N):
                raise OnnxRuntimeError(f"{what}[{s}] has shape {list(np.asarray(arrs[s]).shape)}; expected "
                                       f"({N} or 1, {cols}) for scale {s} ({pns[s]}x{pns[s]})")
            out.append(np.ascontiguousarray(np.broadcast_to(a, (N, cols)), dtype=dtype))
        return out

    def tokens(self, what: str, arrs: Sequence[Any], N: int) -> list[np.ndarray]:
        """Per-scale token indices (N or 1, pn^2), in the vocabulary."""
        toks = self.per_scale(what, arrs, N, np.int64)
        V = self.info.vocab_size
        if any((t.min() < 0) | (t.max() >= V) for t in toks):
            raise OnnxRuntimeError(f"{what} must be in [0, {V})")
        return toks

    def labels(self, labels: int | Sequence[int] | np.ndarray) -> np.ndarray:
        """N class indices (``num_classes`` = unconditional), int64."""
        C = self.info.num_classes
        lab = np.atleast_1d(np.asarray(labels))
        if lab.ndim != 1 or lab.size == 0 or not np.issubdtype(lab.dtype, np.integer):
            raise OnnxRuntimeError(f"labels must be one or more class indices, got {labels!r}")
        if lab.min() < 0 or lab.max() > C:
            raise OnnxRuntimeError(f"class index {int(lab.max() if lab.max() > C else lab.min())} "
                                   f"is out of range: this model has classes 0..{C - 1} "
                                   f"({C} = unconditional)")
        return lab.astype(np.int64)

    def latent(self, what: str, a: Any, N: int) -> np.ndarray:
        """A latent (N or 1, Cvae, h, w), broadcast to N rows, float32."""
        h, Cvae = self.info.latent_size, self.info.Cvae
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[1:] != (Cvae, h, h) or a.shape[0] not in (1, N):
            raise OnnxRuntimeError(f"{what} has shape {list(a.shape)}; this model takes ({N} or 1, {Cvae}, "
                                   f"{h}, {h})")
        return np.ascontiguousarray(np.broadcast_to(a, (N, Cvae, h, h)))

    def latents(self, what: str, a: Any) -> np.ndarray:
        """Any number of latents (N, Cvae, h, w) (one may come without its batch dimension)."""
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 3:
            a = a[None]
        return self.latent(what, a, a.shape[0] if a.ndim == 4 else 1)  # any N, checked per image

    def image(self, img: np.ndarray) -> np.ndarray:
        """The tokenizer's input: images (N, 3, H, W) float in [-1, 1], float32."""
        a = np.asarray(img)
        if a.ndim == 3:
            a = a[None]
        H = self.info.image_size
        if a.ndim != 4 or a.shape[1:] != (3, H, H):
            raise OnnxRuntimeError(f"image has shape {list(a.shape)}; this model takes (N, 3, {H}, {H}) RGB in "
                                   f"[-1, 1]: resize or crop it to {H}x{H} first")
        if not np.issubdtype(a.dtype, np.floating):
            raise OnnxRuntimeError(f"image is {a.dtype}; tokenize takes float RGB in [-1, 1] (x / 127.5 - 1 for uint8)")
        a = a.astype(np.float32, copy=False)
        if a.size and (a.min() < -1.001 or a.max() > 1.001):
            raise OnnxRuntimeError(f"image values span [{a.min():.3g}, {a.max():.3g}]; tokenize takes [-1, 1] "
                                   f"(2 * x - 1 for images in [0, 1])")
        return a

    def sampler(self, labels: int | Sequence[int] | np.ndarray, keep_maps: Sequence[Any] | None = None,
                known_tokens: Sequence[Any] | None = None, uniforms: Sequence[Any] | None = None, *,
                f_known: np.ndarray | None = None, pool_w: Sequence[Any | None] | None = None, cfg: float = 4.0,
                guidance: str | Sequence[float] = "linear", top_k: int = 900, top_p: float = 0.95,
                seed: int | None = None) -> SamplerFeeds:
        """The sampler graph's feed for ``OnnxVAR.sample``'s arguments (see there), every one checked."""
        # the torch path's one validation (SamplingOptions): NaN, infinite, negative or mistyped options fail here
        opts = SamplingOptions(cfg=cfg, top_k=top_k, top_p=top_p,
                               guidance=guidance if isinstance(guidance, str) else "linear")
        cfg, top_k, top_p = opts.cfg, opts.top_k, opts.top_p
        if not isinstance(guidance, str):
            guidance = [check_number(t, f"guidance[{i}]") for i, t in enumerate(guidance)]
        seed = check_seed(seed)
        lab = self.labels(labels)
        N, pns, SN, h = lab.shape[0], self.info.patch_nums, len(self.info.patch_nums), self.info.latent_size
        if (known_tokens is not None or f_known is not None) and keep_maps is None:
            raise OnnxRuntimeError("known_tokens / f_known need keep_maps (which cells to force)")
        if keep_maps is not None and (known_tokens is None) == (f_known is None):
            raise OnnxRuntimeError("keep_maps need exactly one of known_tokens (open loop) or f_known (closed loop)")
        if pool_w is not None and f_known is None:
            raise OnnxRuntimeError("pool_w is for the closed loop (f_known)")
        if uniforms is None:
            if seed is None:
                raise OnnxRuntimeError("sample needs uniforms or a seed")
            uniforms = portable_uniforms(seed, N, pns)
        for s, x in enumerate(uniforms):  # noise is per image: no broadcasting of one row
            if np.ndim(x) != 2 or np.shape(x)[0] != N:
                raise OnnxRuntimeError(f"uniforms[{s}] has shape {list(np.shape(x))}: give one row per image "
                                       f"({N}, {self._width(s) if s < SN else '?'})")
        u = self.per_scale("uniforms", uniforms, N, np.float32)
        keep = self.per_scale("keep_maps", keep_maps, N, np.bool_) if keep_maps is not None else \
            [np.zeros((N, self._width(s)), dtype=np.bool_) for s in range(SN)]
        known = self.tokens("known_tokens", known_tokens, N) if known_tokens is not None else \
            [np.zeros((N, self._width(s)), dtype=np.int64) for s in range(SN)]
        closed = f_known is not None
        f = self.latent("f_known", f_known, N) if closed else np.zeros((N, self.info.Cvae, h, h), np.float32)
        pw = [np.ones((N, 1, h, h), np.float32) for _ in range(SN - 1)]
        if pool_w is not None:
            if len(pool_w) not in (SN, SN - 1):
                raise OnnxRuntimeError(f"pool_w has {len(pool_w)} entries; give {SN} (or {SN - 1}: the last scale "
                                       f"never pools)")
            for s in range(SN - 1):
                if pool_w[s] is not None:
                    w = np.asarray(pool_w[s], dtype=np.float32)
                    w = w.reshape((-1, 1, h, h)) if w.size % (h * h) == 0 else w
                    if w.ndim != 4 or w.shape[0] not in (1, N) or w.shape[1:] != (1, h, h):
                        raise OnnxRuntimeError(f"pool_w[{s}] has shape {list(np.asarray(pool_w[s]).shape)}; "
                                               f"expected ({N} or 1, 1, {h}, {h})")
                    pw[s] = np.ascontiguousarray(np.broadcast_to(w, (N, 1, h, h)))
        fixed = {"guidance": guidance_weights(cfg, SN, guidance), "top_k": np.array(int(top_k), np.int64),
                 "top_p_threshold": np.array(top_p_threshold(top_p), np.float32),
                 "closed_loop": np.array(closed, np.bool_)}
        batched = {"label": lab, "f_known": f}
        for k in range(SN):
            batched.update({f"keep_{k}": keep[k], f"known_{k}": known[k], f"uniform_{k}": u[k]})
        batched.update({f"pool_w_{k}": pw[k] for k in range(SN - 1)})
        return SamplerFeeds(batched, fixed)


__all__ = ["Feeds", "SamplerFeeds", "Runner", "run_in_batches", "pad_rows", "chunks", "fit", "guidance_t",
           "guidance_weights", "top_p_threshold"]
