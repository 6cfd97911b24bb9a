"""Reduced precision on the CPU: feature detection, ``--precision auto``, the bf16 autocast path (sampler
arithmetic in float32) and int8 onnxruntime exports (the transformer's MatMuls only).  Speed is not
asserted here (docs/performance.md records it)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from varedit import cpu
from varedit.cpu import CpuFeatures, cpu_features, parse_cpuinfo, resolve_precision

# two processors of a Sapphire-Rapids-like CPU (abridged), the second missing amx_tile: common flags only
CPUINFO_AMX = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_int8
"""
# an AVX2-only EPYC as a VM reports it
CPUINFO_AVX2 = """\
processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 ssse3 fma avx f16c avx2 bmi2 vaes vpclmulqdq
"""
CPUINFO_ARM = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16 i8mm
"""
GENOA = CpuFeatures("AMD EPYC 9654", frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}))
AVX2 = CpuFeatures("AMD EPYC", frozenset({"avx2", "fma"}))


def test_parse_cpuinfo_flags_and_model_name():
    f = parse_cpuinfo(CPUINFO_AMX)
    assert f.model_name == "Intel(R) Xeon(R) Platinum 8480+"
    assert f.has_avx512 and f.has_avx512_bf16 and f.has_amx_bf16 and f.has_avx512_vnni and f.has_amx_int8
    assert f.has_avx_vnni and f.has_bf16_instructions and f.has_int8_instructions
    assert "amx_tile" not in f.flags  # only what every processor has
    g = parse_cpuinfo(CPUINFO_AVX2)
    assert g.model_name == "AMD EPYC" and "avx2" in g.flags
    assert not (g.has_avx512 or g.has_avx512_bf16 or g.has_amx_bf16 or g.has_avx512_vnni or g.has_amx_int8
                or g.has_avx_vnni or g.has_bf16_instructions or g.has_int8_instructions)
    assert "no AVX-512, bf16 or int8 instructions" in g.summary()
    assert "AVX-512 BF16" in f.summary() and "AMX-BF16" in f.summary()
    d = f.as_dict()
    assert d["model_name"] == f.model_name and d["has_avx512_bf16"] is True and d["has_amx_int8"] is True
    arm = parse_cpuinfo(CPUINFO_ARM)  # Arm lists "Features"; x86's bf16 instruction sets are not there
    assert "bf16" in arm.flags and not arm.has_bf16_instructions and arm.model_name


def test_cpu_features_reads_a_file_and_survives_a_missing_one(tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text(CPUINFO_AMX)
    assert cpu_features(p).has_amx_bf16
    missing = cpu_features(tmp_path / "nope")
    assert missing.flags == frozenset() and missing.model_name
    t = cpu_features(p, torch_capability=True)
    assert t.torch_capability == torch.backends.cpu.get_cpu_capability()


def test_auto_resolves_by_the_cpu_flags(monkeypatch):
    assert resolve_precision("auto", "cpu", GENOA) == "bf16"
    assert resolve_precision("auto", "cpu", AVX2) == "fp32"
    assert resolve_precision("auto", torch.device("cpu"), parse_cpuinfo(CPUINFO_AMX)) == "bf16"
    for p in ("fp32", "bf16", "fp16"):  # explicit choices are taken as given, whatever the CPU
        assert resolve_precision(p, "cpu", AVX2) == p
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int4", "cpu", GENOA)
    # this machine's own flags when none are given
    monkeypatch.setattr(cpu, "cpu_features", lambda *a, **k: GENOA)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(cpu, "cpu_features", lambda *a, **k: AVX2)
    assert resolve_precision("auto", "cpu") == "fp32"
    # CUDA: bf16 where the GPU supports it
    monkeypatch.setattr(cpu, "_cuda_bf16", lambda device: True)
    assert resolve_precision("auto", "cuda:0", AVX2) == "bf16"
    monkeypatch.setattr(cpu, "_cuda_bf16", lambda device: False)
    assert resolve_precision("auto", torch.device("cuda"), GENOA) == "fp32"
    # without the measured verdict on the picture, auto never picks bf16
    monkeypatch.setattr(cpu, "BF16_PICTURE_HOLDS", False)
    assert resolve_precision("auto", "cpu", GENOA) == "fp32"


def test_backend_resolves_auto(monkeypatch, golden_models):
    from varedit.editing.backend import TorchBackend
    var, vae = golden_models
    monkeypatch.setattr(cpu, "cpu_features", lambda *a, **k: GENOA)
    b = TorchBackend(var, vae, torch.device("cpu"), precision="auto")
    assert b.precision == "bf16" and b.amp_dtype == torch.bfloat16
    monkeypatch.setattr(cpu, "cpu_features", lambda *a, **k: AVX2)
    b = TorchBackend(var, vae, torch.device("cpu"), precision="auto")
    assert b.precision == "fp32" and b.amp_dtype is None
    with pytest.raises(ValueError, match="precision"):
        TorchBackend(var, vae, torch.device("cpu"), precision="int8")  # int8 is an onnx export's
    from varedit.pipeline import VarEditPipeline
    with pytest.raises(ValueError, match="precision"):
        VarEditPipeline(var, vae, device="cpu", precision="int8")


def _sample(var, vae, amp, seed=0, B=2, **kw):
    from varedit.editing.noise import portable_uniforms
    from varedit.editing.sampler import masked_sample
    u = [torch.from_numpy(x) for x in portable_uniforms(seed, B, tuple(var.patch_nums))]
    labels = torch.arange(B) % var.num_classes
    with torch.no_grad():
        return masked_sample(var, vae, labels, uniforms=u, decode=False, amp_dtype=amp,
                             **{"cfg": 3.0, "top_k": 20, "top_p": 0.9, **kw})


def test_bf16_runs_the_blocks_in_bf16_and_the_sampler_in_float32(golden_models, monkeypatch):
    from varedit.editing import sampler
    var, vae = golden_models
    seen: dict[str, set] = {"block": set(), "head_in": set(), "head_out": set(), "icdf": set(), "filter": set()}
    def on_head(m, i, o):  # a forward hook returning None leaves the output as it is
        seen["head_in"].add(i[0].dtype)
        seen["head_out"].add(o.dtype)

    hooks = [var.blocks[0].ffn.fc1.register_forward_hook(lambda m, i, o: seen["block"].add(o.dtype)),
             var.head.register_forward_hook(on_head)]
    icdf, filt = sampler.sample_icdf, sampler.filter_top_k_top_p_fast_

    def spy_icdf(logits, u):
        seen["icdf"].add((logits.dtype, torch.is_autocast_enabled("cpu")))
        return icdf(logits, u)

    def spy_filter(logits, *a):
        seen["filter"].add(logits.dtype)
        return filt(logits, *a)

    monkeypatch.setattr(sampler, "sample_icdf", spy_icdf)
    monkeypatch.setattr(sampler, "filter_top_k_top_p_fast_", spy_filter)
    try:
        r = _sample(var, vae, torch.bfloat16, record_logits=True)
    finally:
        for h in hooks:
            h.remove()
    assert seen["block"] == {torch.bfloat16}  # the transformer's products ran in bf16
    assert seen["head_in"] == {torch.float32} and seen["head_out"] == {torch.float32}  # the head did not
    assert seen["icdf"] == {(torch.float32, False)} and seen["filter"] == {torch.float32}
    assert all(x.dtype == torch.float32 for x in r.logits_per_scale)
    assert r.logprob_B.dtype == torch.float32 and r.fhat_per_scale[-1].dtype == torch.float32


def test_bf16_agrees_with_fp32(golden_models):
    """Same noise, same model: bf16 autocast picks float32's tokens almost everywhere when greedy (measured
    on these tiny weights: 99.2%), and most of them when sampling (top-k 20, top-p 0.9, seed 0: 75.8%;
    tiny models have flat distributions, and one flipped token changes the conditioning of every finer
    scale); the coarsest scales agree exactly."""
    var, vae = golden_models

    def agreement(**kw):
        a, b = _sample(var, vae, None, B=4, **kw), _sample(var, vae, torch.bfloat16, B=4, **kw)
        same = sum(int((x == y).sum()) for x, y in zip(a.idx_per_scale, b.idx_per_scale))
        return same / sum(x.numel() for x in a.idx_per_scale), [bool(torch.equal(x, y)) for x, y in
                                                                zip(a.idx_per_scale, b.idx_per_scale)]

    greedy, _ = agreement(top_k=1)
    sampled, equal_scales = agreement()
    assert greedy >= 0.98, greedy
    assert sampled >= 0.65 and equal_scales[:2] == [True, True], (sampled, equal_scales)
    # through the pipeline: the images' settings (the sidecars) say when a reduced precision made them
    from varedit.pipeline import VarEditPipeline
    x = VarEditPipeline(var, vae, device="cpu").generate(3, n=1, seed=0, top_k=1, output_type="np")
    y = VarEditPipeline(var, vae, device="cpu", precision="bf16").generate(3, n=1, seed=0, top_k=1,
                                                                            output_type="np")
    assert "precision" not in x.settings and y.settings["precision"] == "bf16"
    assert x.tensors.shape == y.tensors.shape


# --------------------------------------------------------------------------------------------------
# int8 onnxruntime
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def int8_dirs(tmp_path_factory, tiny_onnx_export):
    """The session's float32 export of the tiny models (conftest.py; read only) and its int8 quantization."""
    from varedit_onnx.quantize import quantize_export
    d = tmp_path_factory.mktemp("int8")
    m = quantize_export(tiny_onnx_export, d / "int8", images=2)
    return tiny_onnx_export, d / "int8", m


def test_int8_export_quantizes_only_the_transformer(int8_dirs, golden_models):
    import onnx

    from varedit_onnx.quantize import INTEGER_OPS, integer_op_counts
    fp32, int8, m = int8_dirs
    var, _ = golden_models
    assert m["precision"] == "int8" and json.loads((int8 / "manifest.json").read_text())["precision"] == "int8"
    q = m["quantization"]
    # four products per block (qkv, proj, fc1, fc2) at every unrolled scale of the sampler
    assert q["graphs"]["sampler"]["matmuls"] == 4 * var.depth * len(var.patch_nums)
    for g in ("sampler", "scorer"):
        counts = integer_op_counts(int8 / f"{g}.onnx")
        assert sum(counts.get(op, 0) for op in INTEGER_OPS) == q["graphs"][g]["integer_ops"] > 0
        model = onnx.load(str(int8 / f"{g}.onnx"))
        inits = {i.name for i in model.graph.initializer}
        # the head's weight is still a float initializer, multiplied by float MatMuls only
        assert "head.weight" in inits
        producer = {o: n for n in model.graph.node for o in n.output}
        head_mm = [n for n in model.graph.node if n.op_type == "MatMul"
                   and producer.get(n.input[1]) is not None and "head.weight" in producer[n.input[1]].input]
        assert head_mm, g
        # no float copy of a quantized transformer weight is left behind
        assert not any(i.startswith("blocks.") and i.endswith(("fc1.weight", "fc1.weight.T")) for i in inits)
    for g in ("tokenizer", "decoder"):  # the VQVAE: unchanged, float
        assert integer_op_counts(int8 / f"{g}.onnx") == {}
        assert (int8 / f"{g}.onnx").read_bytes() == (fp32 / f"{g}.onnx").read_bytes()
    assert integer_op_counts(fp32 / "sampler.onnx") == {}  # the source export is left as it was
    # the recorded check: sampled tokens (top-k 50, top-p 0.9, guidance 4) from the same noise; on these
    # tiny weights 36% agree (one flip changes every finer scale), the coarsest scale always (random: 0.2%)
    v = q["validation"]
    assert v["images"] == 2 and 0.2 <= v["token_agreement"] <= 1.0 and v["token_agreement_per_scale"][0] == 1.0


def test_int8_export_loads_and_runs_in_the_runtime(int8_dirs):
    from varedit_onnx.runtime import OnnxVAR
    fp32, int8, _ = int8_dirs
    a = OnnxVAR.from_dir(fp32, providers="cpu", spinning=False)
    b = OnnxVAR.from_dir(int8, providers="cpu", spinning=False)  # checksums verified
    assert b.precision == "int8"
    ia, ib = a.generate([0, 1, 2], seed=3, top_k=20, top_p=0.9), b.generate([0, 1, 2], seed=3, top_k=20, top_p=0.9)
    assert ib.shape == ia.shape and np.isfinite(ib).all() and 0 <= ib.min() and ib.max() <= 1
    ta = a.sample([0, 1], seed=3, top_k=1).tokens
    tb = b.sample([0, 1], seed=3, top_k=1).tokens
    agree = sum(int((x == y).sum()) for x, y in zip(ta, tb)) / sum(x.size for x in ta)
    assert agree >= 0.9, agree  # greedy: 96.5% measured on these tiny weights
    # image-level tasks through the int8 export (tokenizer and decoder in float, scorer int8)
    img = np.full((64, 64, 3), 0.5, np.float32)
    r = b.editor().inpaint(img, box=(16, 16, 48, 48), seed=0)
    assert np.asarray(r.image).shape[:2] == (64, 64) and r.settings["precision"] == "int8"  # in the sidecar
    assert "precision" not in a.editor().inpaint(img, box=(16, 16, 48, 48), seed=0).settings  # fp32: as before


def test_quantize_refuses_what_it_cannot_check(int8_dirs, tmp_path):
    from varedit_onnx.quantize import quantize_export
    fp32, int8, _ = int8_dirs
    with pytest.raises(ValueError, match="float32 export"):
        quantize_export(int8, tmp_path / "again")
    with pytest.raises(ValueError, match="another folder"):
        quantize_export(fp32, fp32)


def test_quantize_in_place_keeps_other_files_and_restores_on_failure(int8_dirs, tmp_path, monkeypatch):
    """What `varedit export onnx --quantize int8` does after the float32 export: the export's own files are
    replaced, anything else in the folder stays; a failed quantization puts the float32 export back."""
    import shutil

    from varedit_onnx import quantize
    from varedit_onnx.runtime import OnnxVAR, read_manifest, verify_files
    fp32, _, _ = int8_dirs
    e = tmp_path / "e"
    shutil.copytree(fp32, e)
    (e / "notes.txt").write_text("mine")
    m = quantize.quantize_in_place(e, check=False)
    assert m["precision"] == "int8" and (e / "notes.txt").read_text() == "mine"
    assert OnnxVAR.from_dir(e, providers="cpu").precision == "int8"
    assert [p.name for p in tmp_path.iterdir()] == ["e"]  # no temporary folder left behind
    f = tmp_path / "f"
    shutil.copytree(fp32, f)

    def broken(*a, **k):
        raise RuntimeError("quantizer failed")

    monkeypatch.setattr(quantize, "quantize_graph", broken)
    with pytest.raises(RuntimeError, match="quantizer failed"):
        quantize.quantize_in_place(f, check=False)
    back = read_manifest(f)
    assert back["precision"] == "fp32"
    verify_files(f, back)  # every file present with its checksum
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "f"]


def test_export_cli_rejects_int8_with_fp16_before_loading(tmp_path):
    from varedit.cli import main
    res = CliRunner().invoke(main, ["export", "onnx", "-m", str(tmp_path / "missing.pt"), "--fp16", "--quantize",
                                    "int8", "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "--fp16" in res.output
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------
# varedit bench: several precisions in one interleaved run
# --------------------------------------------------------------------------------------------------
def test_bench_measures_precisions_side_by_side():
    from varedit.benchmark import BenchConfig, RandomModel, run_bench
    tiny = RandomModel(depth=1, patch_nums=(1, 2, 4), num_classes=3, vocab_size=32, vae_ch=32)
    doc = run_bench(BenchConfig(model=tiny, backends=("fast",), precision=("fp32", "bf16", "auto"), batches=(1,),
                                workloads=("generate",), reps=1, warmup=0, decode=False))
    rows = {(r["backend"], r["precision"]): r for r in doc["results"]}
    assert set(rows) == {("fast", "fp32"), ("fast", "bf16")}  # auto resolved (to one of them) and deduplicated
    assert rows[("fast", "fp32")]["token_agreement_with_fp32"] is None
    assert 0.5 <= rows[("fast", "bf16")]["token_agreement_with_fp32"] <= 1.0
    assert "generate b1 fast-bf16/fast" in doc["speedups"]
    assert doc["settings"]["precision"] == ["fp32", "bf16"]
    c = doc["device"]["cpu"]
    assert c["model_name"] == cpu_features().model_name and isinstance(c["has_avx512_bf16"], bool)
    with pytest.raises(ValueError, match="int8"):  # int8 is an onnx export: no torch backend runs it
        run_bench(BenchConfig(model=tiny, backends=("fast",), precision="int8", batches=(1,)))


def test_precision_is_refused_with_the_onnx_backend(tmp_path):
    """An export's precision is fixed when exporting: asking the onnx backend for bf16 is an error before
    anything loads, not a silently ignored option (auto and fp32 are accepted)."""
    from PIL import Image

    from varedit.cli import main
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    res = CliRunner().invoke(main, ["inpaint", str(tmp_path / "a.png"), "--box", "8,8,32,32", "--backend", "onnx",
                                    "--onnx-dir", str(tmp_path / "none"), "--precision", "bf16",
                                    "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 2 and "--quantize int8" in res.output and not (tmp_path / "o.png").exists()
