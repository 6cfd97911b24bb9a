"""int8 exports: the transformer's matrix products quantized for onnxruntime (torch-free).

``quantize_export(src, out)`` turns a float32 export folder (``export_onnx``'s) into an int8 one:

* **what is quantized**: in the sampler and scorer graphs, the MatMuls of the transformer blocks whose
  weights are ``blocks.N.attn.mat_qkv``, ``blocks.N.attn.proj``, ``blocks.N.ffn.fc1`` and
  ``blocks.N.ffn.fc2`` (about 92% of a d16 transformer's multiply-adds), by onnxruntime's **dynamic**
  quantization: weights int8 per output channel, activations uint8 with a scale computed per run;
* **what stays float32**: the head (the final logits projection) and its AdaLN, the blocks' AdaLN
  projections, attention's softmax, the word and class embeddings, the sampling arithmetic (guidance,
  top-k / top-p, softmax, cumulative sums, inverse-CDF sampling), the quantiser and the whole
  tokenizer and decoder graphs (the VQVAE), which are copied unchanged;
* the weights are found by the names torch's exporter gives them (the module paths); the exporter
  feeds each unrolled scale through its own ``Transpose`` of the weight, so the transposes are
  folded into one shared constant first (the quantized weight is stored once, not once per scale).

The manifest records ``precision: "int8"`` and a ``quantization`` object (method, the counts of
quantized MatMuls per graph, what stays float); the runtime opens the folder like any export.  With
``check=True`` the int8 sampler is run against the float32 one on onnxruntime's CPU provider from the
same noise, and the token agreement is recorded (it is not 100%: int8 products change some tokens
where the model hesitates; see docs/performance.md for the measured picture).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .manifest import MANIFEST, read_manifest, sha256_file
from .runtime import OnnxVAR

log = logging.getLogger(__name__)

QUANTIZED_GRAPHS = ("sampler", "scorer")  # the graphs holding the transformer
# the transformer blocks' matrix products (attention in/out projections, MLP): the only weights quantized
TRANSFORMER_WEIGHT = re.compile(r"^blocks\.\d+\.(attn\.mat_qkv|attn\.proj|ffn\.fc1|ffn\.fc2)\.weight$")
INTEGER_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "MatMulIntegerToFloat")
EXTERNAL_DATA_BYTES = 1_500_000_000  # as the exporter: larger graphs keep their weights in a .data file


def _fold_transposed_weights(model: Any) -> list[str]:
    """Point every MatMul that multiplies by ``Transpose(W)`` of a transformer weight ``W`` at one shared
    constant ``W.T`` (added once per weight), and return those MatMuls' names (each given a unique name
    if it had none).  Other MatMuls (the head, the AdaLN, the quantiser's interpolation matrices,
    attention's own products) are left untouched."""
    from onnx import numpy_helper
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    added: dict[str, str] = {}
    names: list[str] = []
    used = {n.name for n in g.node}
    for k, node in enumerate(g.node):
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        src = producer.get(node.input[1])
        if src is None or src.op_type != "Transpose" or not src.input or src.input[0] not in inits:
            continue
        w_name = src.input[0]
        perm = next((list(a.ints) for a in src.attribute if a.name == "perm"), [1, 0])
        if not TRANSFORMER_WEIGHT.match(w_name) or perm != [1, 0]:
            continue
        if w_name not in added:
            wt = np.ascontiguousarray(numpy_helper.to_array(inits[w_name]).T)
            t_name = f"{w_name}.T"
            g.initializer.append(numpy_helper.from_array(wt, t_name))
            added[w_name] = t_name
        node.input[1] = added[w_name]
        if not node.name:
            node.name = f"transformer_matmul_{k}"
            while node.name in used:
                node.name += "_"
            used.add(node.name)
        names.append(node.name)
    _prune(model)
    return names


def _prune(model: Any) -> None:
    """Drop nodes whose outputs nothing uses any more (the folded Transposes) and unused initializers."""
    g = model.graph
    while True:
        needed = {o.name for o in g.output} | {i for n in g.node for i in n.input}
        dead = [n for n in g.node if n.output and not any(o in needed for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)


class _DropPreprocessingHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_preprocessing_hint() -> Iterator[None]:
    """onnxruntime's quantizer logs a hint to run its shape-inference pre-processing on the root logger,
    for static (calibrated) quantization; dynamic quantization of constant-weight MatMuls needs none."""
    f = _DropPreprocessingHint()
    root = logging.getLogger()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def quantize_graph(src: str | Path, dst: str | Path, *, per_channel: bool = True,
                   reduce_range: bool = False) -> dict[str, Any]:
    """Quantize one graph file's transformer MatMuls (dynamic int8) into ``dst``; everything else as it
    was.  Returns ``{"matmuls": quantized count, "integer_ops": count in the result}``.  Raises
    ``ValueError`` when the graph has no transformer MatMul to quantize."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    names = _fold_transposed_weights(model)
    if not names:
        raise ValueError(f"{Path(src).name} has no transformer MatMul with a blocks.N weight to quantize "
                         f"(not an export of varedit's exporter?)")
    dst = Path(dst)
    big = model.ByteSize() > EXTERNAL_DATA_BYTES
    with tempfile.TemporaryDirectory(prefix="varedit_quant_", dir=dst.parent) as tmp:
        folded = Path(tmp) / "folded.onnx"
        onnx.save(model, str(folded), save_as_external_data=big, location="folded.onnx.data")
        del model
        with _quiet_preprocessing_hint():
            quantize_dynamic(folded, dst, op_types_to_quantize=["MatMul"], nodes_to_quantize=names,
                             per_channel=per_channel, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                             use_external_data_format=big,
                             extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
    q = onnx.load(str(dst), load_external_data=False)
    n_int = sum(1 for n in q.graph.node if n.op_type in INTEGER_OPS)
    if n_int == 0:
        raise RuntimeError(f"onnxruntime quantized none of the {len(names)} transformer MatMuls of {Path(src).name}")
    return {"matmuls": len(names), "integer_ops": n_int}


def quantize_export(src_dir: str | Path, out_dir: str | Path, *, check: bool = True, threads: int | None = None,
                    images: int = 2, per_channel: bool = True, reduce_range: bool = False) -> dict[str, Any]:
    """An int8 export in ``out_dir`` from the float32 export in ``src_dir`` (left unchanged): the
    transformer's MatMuls of the sampler and scorer graphs quantized (:func:`quantize_graph`), the
    tokenizer and decoder copied.  ``check``: run both samplers on ``images`` generations from the same
    noise and record the token agreement (``quantization.validation``).  Returns the manifest (written
    last, so a folder with a manifest is complete)."""
    src, out = Path(src_dir), Path(out_dir)
    m = read_manifest(src)
    if m["precision"] != "fp32":
        raise ValueError(f"int8 quantization starts from a float32 export; {src} is {m['precision']}")
    if src.resolve() == out.resolve():
        raise ValueError("quantize into another folder: the float32 export is the reference it is checked against")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # an interrupted quantization must not look complete
    t0 = time.perf_counter()
    counts: dict[str, dict[str, Any]] = {}
    files: dict[str, dict[str, Any]] = {}
    for g, spec in m["graphs"].items():
        f = spec["file"]
        if g in QUANTIZED_GRAPHS:
            for old in out.glob(f + "*"):
                old.unlink()
            counts[g] = quantize_graph(src / f, out / f, per_channel=per_channel, reduce_range=reduce_range)
        else:
            for fn, info in m["files"].items():
                if info.get("graph") == g:
                    _copy(src / fn, out / fn)
        for fn in sorted(p.name for p in out.iterdir() if p.name == f or p.name.startswith(f + ".")):
            files[fn] = {"sha256": sha256_file(out / fn), "bytes": (out / fn).stat().st_size, "graph": g}
    import onnxruntime
    q = dict(m)
    q["precision"] = "int8"
    q["files"] = files
    q["quantization"] = {
        "method": "onnxruntime dynamic quantization (quantize_dynamic)",
        "weights": "int8, per output channel" if per_channel else "int8, per tensor",
        "reduce_range": reduce_range,
        "activations": "uint8, scale and zero point computed per run",
        "quantized": "the transformer blocks' MatMuls (attn.mat_qkv, attn.proj, ffn.fc1, ffn.fc2)",
        "float32": "head and its AdaLN, the blocks' AdaLN, attention softmax, embeddings, sampling, "
                   "quantiser, tokenizer and decoder graphs",
        "graphs": counts,
        "source_export": {"precision": m["precision"], "created": m.get("created")},
        "onnxruntime_version": onnxruntime.__version__,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if check:
        q["quantization"]["validation"] = compare_samplers(src, m, out, q, threads=threads, images=images)
    (out / MANIFEST).write_text(json.dumps(q, indent=2))
    log.info("int8 export of %s written to %s (%s)", m["model"]["name"], out, counts)
    return q


def quantize_in_place(export_dir: str | Path, **kw: Any) -> dict[str, Any]:
    """Turn the float32 export in ``export_dir`` into an int8 one (:func:`quantize_export`): its files move
    to a temporary folder beside it, serve as the source and the reference, and are removed after; on
    failure they are put back (other files in the folder are never touched)."""
    d = Path(export_dir)
    m = read_manifest(d)
    names = [*m["files"], MANIFEST]
    with tempfile.TemporaryDirectory(prefix=".varedit-fp32-", dir=d.parent) as tmp:
        for fn in names:
            (d / fn).rename(Path(tmp) / fn)
        try:
            return quantize_export(tmp, d, **kw)
        except BaseException:
            for fn in names:
                (d / fn).unlink(missing_ok=True)
                (Path(tmp) / fn).rename(d / fn)
            raise


def _copy(a: Path, b: Path) -> None:
    b.unlink(missing_ok=True)
    try:
        os.link(a, b)  # same file system: no second copy of the VQVAE's weights
    except OSError:
        shutil.copyfile(a, b)


def compare_samplers(ref_dir: Path, ref_manifest: dict[str, Any], dir_: Path, manifest: dict[str, Any], *,
                     threads: int | None = None, images: int = 2, seed: int = 0) -> dict[str, Any]:
    """Token agreement of two exports' samplers (generation, guided, from the same portable noise) on
    onnxruntime's CPU provider: the fraction of tokens equal, over every scale, and at the first scale
    where they differ."""
    a = OnnxVAR(ref_dir, ref_manifest, providers="cpu", threads=threads, verify=False, spinning=False)
    b = OnnxVAR(dir_, manifest, providers="cpu", threads=threads, verify=False, spinning=False)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, ref_manifest["model"]["num_classes"], size=max(1, images)).astype(np.int64)
    from varedit.editing.noise import portable_uniforms
    u = portable_uniforms(seed, len(labels), tuple(ref_manifest["model"]["patch_nums"]))
    kw = dict(cfg=4.0, top_k=min(50, ref_manifest["model"]["vocab_size"] // 2), top_p=0.9, uniforms=u)
    ta, tb = a.sample(labels, **kw).tokens, b.sample(labels, **kw).tokens
    per_scale = [float((x == y).mean()) for x, y in zip(ta, tb)]
    total = sum(int((x == y).sum()) for x, y in zip(ta, tb)) / sum(x.size for x in ta)
    return {"images": len(labels), "token_agreement": float(total), "token_agreement_per_scale": per_scale,
            "provider": "CPUExecutionProvider"}


def integer_op_counts(path: str | Path) -> dict[str, int]:
    """How many nodes of each integer-arithmetic type a graph file holds (for tests and reports)."""
    import onnx
    g = onnx.load(str(path), load_external_data=False).graph
    out: dict[str, int] = {}
    for n in g.node:
        if n.op_type in INTEGER_OPS or n.op_type in ("DynamicQuantizeLinear", "QuantizeLinear"):
            out[n.op_type] = out.get(n.op_type, 0) + 1
    return out
