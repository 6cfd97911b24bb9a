"""Run an exported VAR (``export_onnx``'s folder) with numpy + onnxruntime only: no torch.

    from varedit_onnx.runtime import OnnxVAR
    m = OnnxVAR.from_dir("var_onnx", providers="auto", threads=4)
    images = m.generate([3, 5], seed=0, cfg=4.0, top_k=900, top_p=0.95)   # (2, 3, H, W) in [0, 1]

Tensor-level methods (arrays are numpy, batch first, any number N of images):

* ``tokenize(img)``: image (N,3,H,W) in [-1,1] -> latent f (N,Cvae,h,w), tokens per scale (N,pn^2);
* ``sample(labels, keep_maps, known_tokens, uniforms, f_known=, pool_w=, cfg=, guidance=, top_k=, top_p=)``:
  masked next-scale prediction -> SampleOutput(tokens per scale, f_hat (N,Cvae,h,w), logprob (N,));
* ``decode(f_hat)``: -> image (N,3,H,W) in [0,1];
* ``class_log_likelihood(f, keep_maps)``: log p(kept tokens | class) for every class (N, num_classes),
  the label inference behind ``inpaint(label="auto")``;
* ``generate(labels, seed, ...)``: sample with ``portable_uniforms(seed, N, patch_nums)`` and decode.

An export has a fixed batch B: fewer than B inputs are padded (with copies of the last one), more
are split into chunks of B.  The noise for N images is drawn for all N at once, so the images do not
depend on B, and equal torch's ``masked_sample(..., uniforms=portable_uniforms(seed, N, patch_nums))``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from varedit.editing import guidance as _guidance
from varedit.editing.noise import portable_uniforms
from varedit.options import SamplingOptions
from varedit.validation import check_class_names, check_number, check_sampling, check_seed, confined_path

from .backend import onnx_editor
from .session import OnnxRuntimeError, OrtSession, check_provider_choice

log = logging.getLogger(__name__)

FORMAT = "varedit-onnx"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPHS = ("tokenizer", "sampler", "decoder")
# graphs an export may have: exports made before label inference's scorer lack it (the sampler scores then)
OPTIONAL_GRAPHS = ("scorer",)
# graph inputs whose first dimension is the export's batch
_BATCHED_INPUTS = {"tokenizer": ("image",), "sampler": ("label", "f_known"), "decoder": ("f_hat",),
                   "scorer": ("label",)}
_BATCHED_PREFIXES = ("keep_", "known_", "uniform_", "pool_w_")


# --------------------------------------------------------------------------------------------------
# helpers shared with the exporter (kept here because this side must stay torch-free)
# --------------------------------------------------------------------------------------------------
def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """Read and check ``manifest.json``: format, version, and the whole schema (:func:`check_manifest`)."""
    d = Path(model_dir)
    if not d.is_dir():
        raise OnnxRuntimeError(f"ONNX model folder not found: {d}")
    p = d / MANIFEST
    if not p.is_file():
        raise OnnxRuntimeError(f"{d} has no {MANIFEST}: not a (complete) varedit ONNX export; export it again "
                               f"(varedit_onnx.exporter.export_onnx)")
    try:
        m = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise OnnxRuntimeError(f"{p} is not valid JSON ({e}); export the model again") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        fmt = m.get("format") if isinstance(m, dict) else None
        raise OnnxRuntimeError(f"{p} is not a varedit ONNX manifest (format {fmt!r})")
    v = m.get("format_version")
    if v != FORMAT_VERSION:
        what = "upgrade varedit" if isinstance(v, int) and v > FORMAT_VERSION else \
            "export the model again with this varedit"
        raise OnnxRuntimeError(f"{d} is varedit ONNX format version {v}; this runtime reads version "
                               f"{FORMAT_VERSION}: {what}")
    check_manifest(m, p)
    return m


def _need(cond: bool, where: Path, msg: str) -> None:
    if not cond:
        raise OnnxRuntimeError(f"{where}: {msg}; export the model again")


def _is_int(v: Any, lo: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def check_manifest(m: dict[str, Any], where: Path) -> None:
    """The manifest's schema, before anything in it is used: types, ranges, graph interfaces, the files
    it lists (names confined to the export's folder, sizes, checksums), class names and defaults."""
    for key in ("model", "batch", "precision", "graphs", "files"):
        _need(key in m, where, f"it lacks {key!r}")
    model = m["model"]
    _need(isinstance(model, dict), where, "'model' is not an object")
    _need(isinstance(model.get("name"), str) and bool(model["name"].strip()), where, "model.name is not a name")
    pns = model.get("patch_nums")
    _need(isinstance(pns, list) and 0 < len(pns) <= 64 and all(_is_int(x) and x <= 1024 for x in pns)
          and all(b > a for a, b in zip(pns, pns[1:])), where, f"model.patch_nums {pns!r} is not a scale list")
    _need(_is_int(model.get("image_size")) and model["image_size"] % pns[-1] == 0 and model["image_size"] <= 8192,
          where, f"model.image_size {model.get('image_size')!r} is not a multiple of the last scale")
    for k, hi in (("vocab_size", 1 << 20), ("Cvae", 4096), ("num_classes", 1 << 20)):
        _need(_is_int(model.get(k)) and model[k] <= hi, where, f"model.{k} {model.get(k)!r} is not in 1..{hi}")
    check_class_names(model.get("class_names"), model["num_classes"], str(where), OnnxRuntimeError)
    _need(_is_int(m["batch"]) and m["batch"] <= 4096, where, f"batch {m['batch']!r} is not in 1..4096")
    _need(m["precision"] in ("fp32", "fp16", "int8"), where, f"precision {m['precision']!r} is not fp32, fp16 or int8")
    try:
        SamplingOptions().replace(**check_sampling(m.get("defaults"), str(where), OnnxRuntimeError,
                                                   keys=("cfg", "top_k", "top_p", "guidance")))
    except (TypeError, ValueError) as e:
        raise OnnxRuntimeError(f"{where}: bad sampling default ({e}); export the model again") from None
    graphs, files = m["graphs"], m["files"]
    _need(isinstance(graphs, dict), where, "'graphs' is not an object")
    _need(isinstance(files, dict) and bool(files), where, "'files' is not an object of file names")
    for g in GRAPHS + tuple(g for g in OPTIONAL_GRAPHS if g in graphs):
        spec = graphs.get(g)
        _need(isinstance(spec, dict), where, f"it lists no {g} graph")
        if g == "scorer":
            _need(_is_int(spec.get("rows")) and spec["rows"] <= 1 << 16, where, "scorer.rows is not in 1..65536")
        _need(isinstance(spec.get("file"), str) and spec["file"] in files, where, f"the {g} graph's file is not "
              f"among the checksummed files")
        for side in ("inputs", "outputs"):
            ios = spec.get(side)
            _need(isinstance(ios, list) and all(
                isinstance(io, dict) and isinstance(io.get("name"), str) and isinstance(io.get("shape"), list)
                and all(_is_int(d, 0) for d in io["shape"]) for io in ios), where, f"{g}.{side} is malformed")
    for fn, info in files.items():
        confined_path(where.parent, fn, str(where), OnnxRuntimeError)
        _need(isinstance(info, dict) and _is_int(info.get("bytes"), 0), where, f"files[{fn!r}] has no byte count")
        sha = info.get("sha256")
        _need(isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha), where,
              f"files[{fn!r}] has no sha256")


def verify_files(model_dir: str | Path, manifest: dict[str, Any], checksums: bool = True) -> None:
    """Every file of the manifest is present, of the recorded size and (``checksums``) sha256."""
    d = Path(model_dir)
    for g in GRAPHS + tuple(g for g in OPTIONAL_GRAPHS if g in manifest["graphs"]):
        if manifest["graphs"][g]["file"] not in manifest["files"]:
            raise OnnxRuntimeError(f"the manifest in {d} has no checksum for {manifest['graphs'][g]['file']}: "
                                   f"export the model again")
    for fn, info in manifest["files"].items():
        p = confined_path(d, fn, str(d / MANIFEST), OnnxRuntimeError)
        if not p.is_file():
            raise OnnxRuntimeError(f"{fn} is missing from {d}: copy the whole export folder, or export again")
        if p.stat().st_size != info["bytes"]:
            raise OnnxRuntimeError(f"{fn} in {d} is {p.stat().st_size} bytes, the manifest says {info['bytes']}: "
                                   f"the file is truncated or replaced; copy it again or export again")
        if checksums and sha256_file(p) != info["sha256"]:
            raise OnnxRuntimeError(f"{fn} in {d} fails its sha256 check (corrupt or modified): copy it again "
                                   f"or export again")


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------
def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` padded to ``rows`` rows with copies of its last row (valid inputs, dropped after the run)."""
    return a if a.shape[0] == rows else np.concatenate([a, np.repeat(a[-1:], rows - a.shape[0], axis=0)])


class SampleOutput(NamedTuple):
    tokens: list[np.ndarray]   # per scale (N, pn^2) int64, forced cells included
    f_hat: np.ndarray          # (N, Cvae, h, w) float32: decode it for the image
    logprob: np.ndarray        # (N,) mean log-likelihood of the sampled (not forced) tokens



class OnnxVAR:
    """An exported VAR + VQVAE on onnxruntime.  Build it with :meth:`from_dir`.

    Sessions are opened on first use (a generation never loads the tokenizer) and reused.
    """

    def __init__(self, model_dir: str | Path, manifest: dict[str, Any] | None = None, *, providers: str = "auto",
                 threads: int | None = None, inter_op_threads: int | None = None, verify: bool = True,
                 cuda_graph: bool | None = None, device_id: int = 0, spinning: bool | None = None):
        check_provider_choice(providers)  # 'cuda' without CUDA fails here, not at the first generation
        self.dir = Path(model_dir)
        self.manifest = manifest if manifest is not None else read_manifest(self.dir)
        if verify:
            verify_files(self.dir, self.manifest, checksums=True)
        m = self.manifest["model"]
        self.name: str = m["name"]
        self.image_size: int = int(m["image_size"])
        self.patch_nums: tuple[int, ...] = tuple(int(p) for p in m["patch_nums"])
        self.latent_size: int = self.patch_nums[-1]
        self.vocab_size: int = int(m["vocab_size"])
        self.Cvae: int = int(m["Cvae"])
        self.num_classes: int = int(m["num_classes"])
        self.class_names: list[list[str]] | None = m.get("class_names")
        self.batch: int = int(self.manifest["batch"])
        self.precision: str = self.manifest["precision"]
        self._opts = dict(providers=providers, threads=threads, inter_op_threads=inter_op_threads,
                          cuda_graph=cuda_graph, device_id=device_id, spinning=spinning)
        self._sessions: dict[str, OrtSession] = {}

    @classmethod
    def from_dir(cls, model_dir: str | Path, *, providers: str = "auto", threads: int | None = None,
                 inter_op_threads: int | None = None, verify: bool = True, cuda_graph: bool | None = None,
                 device_id: int = 0, spinning: bool | None = None) -> "OnnxVAR":
        """Open an export folder.

        Args:
            providers: "auto" (CUDA when it can run, else CPU with a warning), "cuda" (or an error), "cpu".
            threads, inter_op_threads: onnxruntime intra- / inter-op threads.
            verify: check every file's sha256 against the manifest (reads the files once).
            cuda_graph: capture runs as CUDA graphs on CUDA (default on).
            device_id: the CUDA device.
            spinning: onnxruntime's busy-waiting worker threads (None: its default, on); turn it off when
                the process also computes with torch.
        """
        return cls(model_dir, providers=providers, threads=threads, inter_op_threads=inter_op_threads,
                   verify=verify, cuda_graph=cuda_graph, device_id=device_id, spinning=spinning)

    # -- sessions ------------------------------------------------------------------------------
    def session(self, graph: str) -> OrtSession:
        if graph not in self._sessions:
            spec = self.manifest["graphs"][graph]
            s = OrtSession(confined_path(self.dir, spec["file"], str(self.dir / MANIFEST), OnnxRuntimeError),
                           **self._opts)
            self._check_interface(graph, s)
            self._sessions[graph] = s
        return self._sessions[graph]

    def load(self, graphs: Sequence[str] = GRAPHS) -> "OnnxVAR":
        """Open the sessions now rather than on first use."""
        for g in graphs:
            self.session(g)
        return self

    @property
    def provider(self) -> str | None:
        """The active provider of the open sessions (None before the first one is opened)."""
        return next(iter(self._sessions.values())).provider if self._sessions else None

    def _check_interface(self, graph: str, s: OrtSession) -> None:
        """The graph file takes what the manifest says (names, shapes, the export's batch)."""
        spec = self.manifest["graphs"][graph]
        for io in spec["inputs"]:
            got = s.inputs.get(io["name"])
            if got is None:
                raise OnnxRuntimeError(f"{spec['file']} has no input {io['name']!r} that the manifest lists: "
                                       f"the files come from different exports; export the model again")
            shape = list(got.shape)
            rows = int(spec["rows"]) if graph == "scorer" else self.batch
            if io["name"] in _BATCHED_INPUTS[graph] or io["name"].startswith(_BATCHED_PREFIXES) \
                    or (graph == "scorer" and io["name"].startswith("tokens_")):
                if not shape or shape[0] != rows:
                    raise OnnxRuntimeError(
                        f"{spec['file']} was exported for batch {shape[0] if shape else None}, but the manifest "
                        f"says batch {rows}: the graph and the manifest come from different exports; export "
                        f"the model again")
            if shape != list(io["shape"]):
                raise OnnxRuntimeError(f"{spec['file']} takes {io['name']} of shape {shape}, the manifest says "
                                       f"{io['shape']}: the files come from different exports; export the model "
                                       f"again")

    # -- input checks --------------------------------------------------------------------------
    def _per_scale(self, what: str, arrs: Sequence[Any] | None, N: int, dtype: Any, width: Any,
                   n_scales: int | None = None) -> list[np.ndarray] | None:
        """A list of per-scale arrays, each broadcast to N rows and checked against ``width(s)`` columns."""
        if arrs is None:
            return None
        SN = n_scales or len(self.patch_nums)
        if len(arrs) != SN:
            raise OnnxRuntimeError(f"{what}: {len(arrs)} scales given, this model has {SN}")
        out = []
        for s, a in enumerate(arrs):
            a = np.asarray(a)
            cols = width(s)
            if a.ndim == 1:
                a = a[None]
            a = a.reshape(a.shape[0], -1) if a.ndim >= 2 else a
            if a.shape[1] != cols or a.shape[0] not in (1, N):
                raise OnnxRuntimeError(f"{what}[{s}] has shape {list(np.asarray(arrs[s]).shape)}; expected "
                                       f"({N} or 1, {cols}) for scale {s} ({self.patch_nums[s]}x{self.patch_nums[s]})")
            out.append(np.ascontiguousarray(np.broadcast_to(a, (N, cols)), dtype=dtype))
        return out

    def _labels(self, labels: int | Sequence[int] | np.ndarray) -> np.ndarray:
        lab = np.atleast_1d(np.asarray(labels))
        if lab.ndim != 1 or lab.size == 0 or not np.issubdtype(lab.dtype, np.integer):
            raise OnnxRuntimeError(f"labels must be one or more class indices, got {labels!r}")
        if lab.min() < 0 or lab.max() > self.num_classes:
            raise OnnxRuntimeError(f"class index {int(lab.max() if lab.max() > self.num_classes else lab.min())} "
                                   f"is out of range: this model has classes 0..{self.num_classes - 1} "
                                   f"({self.num_classes} = unconditional)")
        return lab.astype(np.int64)

    def _latent(self, what: str, a: Any, N: int) -> np.ndarray:
        h = self.latent_size
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[1:] != (self.Cvae, h, h) or a.shape[0] not in (1, N):
            raise OnnxRuntimeError(f"{what} has shape {list(a.shape)}; this model takes ({N} or 1, {self.Cvae}, "
                                   f"{h}, {h})")
        return np.ascontiguousarray(np.broadcast_to(a, (N, self.Cvae, h, h)))

    # -- batching ------------------------------------------------------------------------------
    def _chunks(self, N: int) -> Iterator[tuple[int, int]]:
        for s in range(0, N, self.batch):
            yield s, min(s + self.batch, N)

    def _fit(self, a: np.ndarray, s: int, e: int) -> np.ndarray:
        """Rows s:e, padded to the export's batch with copies of the last row (valid inputs, dropped after)."""
        return np.ascontiguousarray(_pad_rows(a[s:e], self.batch))

    # -- tensor-level API ----------------------------------------------------------------------
    def tokenize(self, img: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Image (N,3,H,W) float in [-1,1] -> (latent f (N,Cvae,h,w) float32, tokens per scale (N,pn^2) int64)."""
        a = np.asarray(img)
        if a.ndim == 3:
            a = a[None]
        H = self.image_size
        if a.ndim != 4 or a.shape[1:] != (3, H, H):
            raise OnnxRuntimeError(f"image has shape {list(a.shape)}; this model takes (N, 3, {H}, {H}) RGB in "
                                   f"[-1, 1]: resize or crop it to {H}x{H} first")
        if not np.issubdtype(a.dtype, np.floating):
            raise OnnxRuntimeError(f"image is {a.dtype}; tokenize takes float RGB in [-1, 1] (x / 127.5 - 1 for uint8)")
        a = a.astype(np.float32, copy=False)
        if a.size and (a.min() < -1.001 or a.max() > 1.001):
            raise OnnxRuntimeError(f"image values span [{a.min():.3g}, {a.max():.3g}]; tokenize takes [-1, 1] "
                                   f"(2 * x - 1 for images in [0, 1])")
        sess = self.session("tokenizer")
        fs, toks = [], []
        for s, e in self._chunks(a.shape[0]):
            o = sess.run({"image": self._fit(a, s, e)})
            fs.append(o["f"][: e - s])
            toks.append([o[f"tokens_{k}"][: e - s] for k in range(len(self.patch_nums))])
        return np.concatenate(fs), [np.concatenate([t[k] for t in toks]) for k in range(len(self.patch_nums))]

    def sample(self, labels: int | Sequence[int] | np.ndarray, keep_maps: Sequence[Any] | None = None,
               known_tokens: Sequence[Any] | None = None, uniforms: Sequence[Any] | None = None, *,
               f_known: np.ndarray | None = None, pool_w: Sequence[Any | None] | None = None, cfg: float = 4.0,
               guidance: str | Sequence[float] = "linear", top_k: int = 900, top_p: float = 0.95,
               seed: int | None = None, _cells: list[np.ndarray] | None = None) -> SampleOutput:
        """Masked next-scale prediction, as torch's ``masked_sample(..., uniforms=...)``.

        Args:
            labels: N class indices (``num_classes`` = unconditional).
            keep_maps: None (generate), or per scale bool (N or 1, pn^2): True = forced cell.
            known_tokens: open loop: per scale int (N or 1, pn^2), the tokens of the kept cells.
            uniforms: per scale (N, pn^2) float32 in [0, 1); None: ``portable_uniforms(seed, N, patch_nums)``.
            f_known: closed loop: the real latent (N or 1, Cvae, h, w) (``tokenize``'s f).
            pool_w: closed loop: per scale (SN, or SN - 1 as the last scale never pools) weights
                (N or 1, 1, h, w) of the latent cells to pool (None entries = all cells), e.g.
                ``varedit.editing.masks.pool_weights``.
            cfg, guidance: guidance scale and schedule ("linear", "constant", or SN weights t).
            top_k, top_p: filters (top_k 0 / top_p 0 = off; top_k 1 = greedy).

        Returns :class:`SampleOutput` (tokens per scale (N, pn^2) int64, f_hat (N, Cvae, h, w) float32,
        logprob (N,) float32 as ``masked_sample``'s ``logprob_B``).
        """
        # the torch path's one validation (SamplingOptions): NaN, infinite, negative or mistyped options fail here
        opts = SamplingOptions(cfg=cfg, top_k=top_k, top_p=top_p,
                               guidance=guidance if isinstance(guidance, str) else "linear")
        cfg, top_k, top_p = opts.cfg, opts.top_k, opts.top_p
        if not isinstance(guidance, str):
            guidance = [check_number(t, f"guidance[{i}]") for i, t in enumerate(guidance)]
        seed = check_seed(seed)
        lab = self._labels(labels)
        N, pns, SN, h = lab.shape[0], self.patch_nums, len(self.patch_nums), self.latent_size
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
        width = lambda s: pns[s] * pns[s]  # noqa: E731
        for s, x in enumerate(uniforms):  # noise is per image: no broadcasting of one row
            if np.ndim(x) != 2 or np.shape(x)[0] != N:
                raise OnnxRuntimeError(f"uniforms[{s}] has shape {list(np.shape(x))}: give one row per image "
                                       f"({N}, {width(s) if s < SN else '?'})")
        u = self._per_scale("uniforms", uniforms, N, np.float32, width)
        keep = self._per_scale("keep_maps", keep_maps, N, np.bool_, width) or \
            [np.zeros((N, width(s)), dtype=np.bool_) for s in range(SN)]
        known = self._per_scale("known_tokens", known_tokens, N, np.int64, width) or \
            [np.zeros((N, width(s)), dtype=np.int64) for s in range(SN)]
        if known_tokens is not None and any((k.min() < 0) | (k.max() >= self.vocab_size) for k in known):
            raise OnnxRuntimeError(f"known_tokens must be in [0, {self.vocab_size})")
        closed = f_known is not None
        f = self._latent("f_known", f_known, N) if closed else np.zeros((N, self.Cvae, h, h), np.float32)
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
        sess = self.session("sampler")
        cells_out = self.has_cell_logprob
        toks: list[list[np.ndarray]] = [[] for _ in range(SN)]
        cells: list[list[np.ndarray]] = [[] for _ in range(SN)]
        fh, lp = [], []
        for s, e in self._chunks(N):
            feeds = dict(fixed, label=self._fit(lab, s, e), f_known=self._fit(f, s, e))
            for k in range(SN):
                feeds[f"keep_{k}"] = self._fit(keep[k], s, e)
                feeds[f"known_{k}"] = self._fit(known[k], s, e)
                feeds[f"uniform_{k}"] = self._fit(u[k], s, e)
            for k in range(SN - 1):
                feeds[f"pool_w_{k}"] = self._fit(pw[k], s, e)
            o = sess.run(feeds)
            for k in range(SN):
                toks[k].append(o[f"tokens_{k}"][: e - s])
                if cells_out:
                    cells[k].append(o[f"cell_logprob_{k}"][: e - s])
            fh.append(o["f_hat"][: e - s])
            lp.append(o["logprob"][: e - s])
        if _cells is not None and cells_out:
            _cells.extend(np.concatenate(c) for c in cells)
        return SampleOutput([np.concatenate(t) for t in toks], np.concatenate(fh), np.concatenate(lp))

    @property
    def has_cell_logprob(self) -> bool:
        """Whether the sampler graph returns per-cell log-probabilities (exports made before label
        inference do not, and cannot infer labels)."""
        outs = self.manifest["graphs"]["sampler"]["outputs"]
        return any(o["name"] == "cell_logprob_0" for o in outs)

    @property
    def has_scorer(self) -> bool:
        """Whether the export has the scorer graph (label inference in one teacher-forced pass per chunk of
        classes; exports made before it score with the sampler, one run per class)."""
        return "scorer" in self.manifest["graphs"]

    def class_log_likelihood(self, f: np.ndarray, keep_maps: Sequence[Any],
                             tokens: Sequence[Any] | None = None, use_scorer: bool | None = None) -> np.ndarray:
        """log p(kept tokens | class) for every class, (N, num_classes), as torch's
        ``varedit.editing.sampler.class_log_likelihood`` on the tokenisation of ``f`` (the tokenizer's
        latent), unguided, the cells' log-probabilities summed over ``keep_maps`` (per scale bool (N or
        1, pn^2)).  With the scorer graph and ``tokens`` (the tokenizer's, per scale (N, pn^2)): every
        (image, class) pair teacher-forced in runs of ``rows``; otherwise one sampler run per class with
        every cell forced (closed loop, plain pooling = the tokeniser's tokens). Both give the same numbers.

        ``use_scorer`` None (auto) takes the scorer when its session is open, when the sampler's is (a warm
        process: the scorer's one-time opening pays for itself within a few calls, a scored image then
        costs one run instead of one per class: docs/decisions.md, "The ONNX scorer graph"), or when the sampler
        would need 32 runs or more; a cold one-shot call with few classes scores with the sampler, whose
        session it opens anyway (opening a second graph would cost more than the runs it saves)."""
        fk = self._latent("f", f, np.shape(f)[0] if np.ndim(f) == 4 else 1)
        N, pns = fk.shape[0], self.patch_nums
        width = lambda s: pns[s] * pns[s]  # noqa: E731
        keep = self._per_scale("keep_maps", keep_maps, N, np.bool_, width)
        if use_scorer is None:
            runs = -(-N // self.batch) * self.num_classes
            use_scorer = bool({"scorer", "sampler"} & set(self._sessions)) or runs >= 32
        if tokens is not None and self.has_scorer and use_scorer:
            return self._score_with_scorer(self._per_scale("tokens", tokens, N, np.int64, width), keep, N)
        if not self.has_cell_logprob:
            raise OnnxRuntimeError("this export has no cell_logprob outputs (made before label inference): "
                                   "export the model again, or give a class")
        every = [np.ones((N, width(s)), np.bool_) for s in range(len(pns))]
        zeros = [np.zeros((N, width(s)), np.float32) for s in range(len(pns))]  # no cell is sampled
        out = np.zeros((N, self.num_classes), np.float64)
        for c in range(self.num_classes):
            cells: list[np.ndarray] = []
            self.sample(np.full(N, c), every, uniforms=zeros, f_known=fk, cfg=0.0, top_k=0, top_p=0.0, _cells=cells)
            out[:, c] = sum((cl.astype(np.float64) * k).sum(axis=1) for cl, k in zip(cells, keep))
        return out

    def _score_with_scorer(self, tokens: list[np.ndarray], keep: list[np.ndarray], N: int) -> np.ndarray:
        C, SN = self.num_classes, len(self.patch_nums)
        if any(t.min() < 0 or t.max() >= self.vocab_size for t in tokens):
            raise OnnxRuntimeError(f"tokens must be in [0, {self.vocab_size})")
        R = int(self.manifest["graphs"]["scorer"]["rows"])
        img_i = np.repeat(np.arange(N), C)   # rows: image-major, every class of an image side by side
        cls_i = np.tile(np.arange(C), N)
        sess = self.session("scorer")
        out = np.zeros(N * C, np.float64)
        for s in range(0, N * C, R):
            e = min(s + R, N * C)
            feeds = {"label": _pad_rows(cls_i[s:e].astype(np.int64), R)}
            feeds.update({f"tokens_{k}": _pad_rows(tokens[k][img_i[s:e]], R) for k in range(SN)})
            res = sess.run(feeds)
            out[s:e] = sum((res[f"cell_logprob_{k}"][: e - s].astype(np.float64) * keep[k][img_i[s:e]]).sum(axis=1)
                           for k in range(SN))
        return out.reshape(N, C)

    def editor(self) -> Any:
        """The image-level tasks (varedit.tasks.Editor) on this model: inpaint, outpaint, edit, upscale."""
        return onnx_editor(self)

    def decode(self, f_hat: np.ndarray) -> np.ndarray:
        """f_hat (N,Cvae,h,w) -> image (N,3,H,W) float32 in [0, 1]."""
        a = np.asarray(f_hat, dtype=np.float32)
        if a.ndim == 3:
            a = a[None]
        a = self._latent("f_hat", a, a.shape[0] if a.ndim == 4 else 1)  # any N, checked per image
        sess = self.session("decoder")
        return np.concatenate([sess.run({"f_hat": self._fit(a, s, e)})["image"][: e - s]
                               for s, e in self._chunks(a.shape[0])])

    def generate(self, labels: int | Sequence[int] | np.ndarray, seed: int, *, cfg: float = 4.0,
                 guidance: str | Sequence[float] = "linear", top_k: int = 900, top_p: float = 0.95) -> np.ndarray:
        """Class-conditional generation: images (N,3,H,W) float32 in [0, 1]; the same images as torch's
        ``masked_sample(var, vae, labels, uniforms=portable_uniforms(seed, N, patch_nums), ...)``."""
        out = self.sample(labels, seed=seed, cfg=cfg, guidance=guidance, top_k=top_k, top_p=top_p)
        return self.decode(out.f_hat)


__all__ = ["OnnxVAR", "SampleOutput", "OnnxRuntimeError", "read_manifest", "verify_files", "guidance_weights",
           "guidance_t", "top_p_threshold", "sha256_file", "portable_uniforms", "FORMAT", "FORMAT_VERSION", "MANIFEST"]
