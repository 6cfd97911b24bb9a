"""An export's manifest (``manifest.json``): its format, reading it, checking its schema, verifying the
files it lists, and checking each graph file's interface against it (numpy-free, torch-free).

The manifest is the export's contract: the runtime trusts nothing in it before :func:`check_manifest`
has checked it, and no graph file before :func:`verify_files` (sizes, sha256) and
:func:`check_interface` (input names and shapes, the export's batch) have.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from varedit.options import SamplingOptions
from varedit.validation import check_class_names, check_sampling, confined_path

from .errors import OnnxRuntimeError

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


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """The hex sha256 the manifest records for each file (the exporter writes it with this function too)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
    for g in listed_graphs(manifest):
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


def listed_graphs(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The graphs of this export: the required ones and the optional ones its manifest lists."""
    return GRAPHS + tuple(g for g in OPTIONAL_GRAPHS if g in manifest["graphs"])


def graph_path(model_dir: str | Path, manifest: dict[str, Any], graph: str) -> Path:
    """The file of ``graph``, confined to the export's folder."""
    d = Path(model_dir)
    return confined_path(d, manifest["graphs"][graph]["file"], str(d / MANIFEST), OnnxRuntimeError)


def check_interface(manifest: dict[str, Any], graph: str, inputs: Mapping[str, Sequence[Any]]) -> None:
    """The graph file takes what the manifest says (names, shapes, the export's batch); ``inputs``: the
    opened graph's input names and shapes."""
    spec = manifest["graphs"][graph]
    for io in spec["inputs"]:
        got = inputs.get(io["name"])
        if got is None:
            raise OnnxRuntimeError(f"{spec['file']} has no input {io['name']!r} that the manifest lists: "
                                   f"the files come from different exports; export the model again")
        shape = list(got)
        rows = int(spec["rows"]) if graph == "scorer" else int(manifest["batch"])
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


def has_cell_logprob(manifest: dict[str, Any]) -> bool:
    """Whether the sampler graph returns per-cell log-probabilities (exports made before label inference
    do not, and cannot infer labels)."""
    return any(o["name"] == "cell_logprob_0" for o in manifest["graphs"]["sampler"]["outputs"])


def has_scorer(manifest: dict[str, Any]) -> bool:
    """Whether the export has the scorer graph (label inference in one teacher-forced pass per chunk of
    classes; exports made before it score with the sampler, one run per class)."""
    return "scorer" in manifest["graphs"]


@dataclass(frozen=True)
class ExportInfo:
    """What a checked manifest says about the model and the export, typed."""

    name: str
    image_size: int
    patch_nums: tuple[int, ...]
    vocab_size: int
    Cvae: int
    num_classes: int
    class_names: list[list[str]] | None
    batch: int
    precision: str

    @property
    def latent_size(self) -> int:
        return self.patch_nums[-1]

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "ExportInfo":
        m = manifest["model"]
        return cls(name=m["name"], image_size=int(m["image_size"]),
                   patch_nums=tuple(int(p) for p in m["patch_nums"]), vocab_size=int(m["vocab_size"]),
                   Cvae=int(m["Cvae"]), num_classes=int(m["num_classes"]), class_names=m.get("class_names"),
                   batch=int(manifest["batch"]), precision=manifest["precision"])


__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "GRAPHS", "OPTIONAL_GRAPHS", "ExportInfo", "sha256_file",
           "read_manifest", "check_manifest", "verify_files", "listed_graphs", "graph_path", "check_interface",
           "has_cell_logprob", "has_scorer"]
