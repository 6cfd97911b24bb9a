"""ONNX export and the torch-free onnxruntime runtime, on the tiny golden models.

One fp32 export (batch 2, so that 1 image is padded and 3 are chunked) and one fp16 export per module.
Parity is checked against torch's ``masked_sample(..., uniforms=...)`` with the same uniforms.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from varedit.editing.masks import coverage_keep_maps, official_keep_maps, pool_weights  # noqa: E402
from varedit.editing.noise import portable_uniforms  # noqa: E402
from varedit.editing.sampler import Known, masked_sample  # noqa: E402
from varedit_onnx.exporter import FP16_TOL, export_onnx  # noqa: E402
from varedit_onnx.runtime import (FORMAT_VERSION, MANIFEST, OnnxRuntimeError, OnnxVAR, read_manifest,  # noqa: E402
                                  sha256_file, verify_files)

BATCH = 2
IMG_TOL = 1e-4    # decoded images, [0, 1] scale
FHAT_TOL = 1e-4   # latents
CFG, TOP_K, TOP_P = 4.0, 50, 0.9
REPO = Path(__file__).resolve().parents[1]


def _cls(k: int, num_classes: int) -> int:
    """Class k of a model with any number of classes (the golden directory decides how many)."""
    return k % num_classes


@pytest.fixture(scope="module")
def fp32_dir(tiny_onnx_export) -> Path:
    # the session's one export of the tiny models (conftest.py: batch 2, class names c0..; read only);
    # the export's own parity check (check=True) is exercised by the fp16 test; these tests do their own
    assert read_manifest(tiny_onnx_export)["batch"] == BATCH
    return tiny_onnx_export


@pytest.fixture(scope="module")
def rt(fp32_dir) -> OnnxVAR:
    return OnnxVAR.from_dir(fp32_dir, providers="cpu", spinning=False)


@pytest.fixture(scope="module")
def image(golden_cases) -> np.ndarray:
    return golden_cases["img_B3HW"].numpy().astype(np.float32)  # (2, 3, S, S) in [-1, 1]


def _torch_sample(golden_models, labels, uniforms, known=None):
    var, vae = golden_models
    return masked_sample(var, vae, torch.as_tensor(labels), known=known, cfg=CFG, top_k=TOP_K, top_p=TOP_P,
                         uniforms=[torch.from_numpy(u) for u in uniforms], decode=True, record_logits=True)


# onnxruntime and torch compute the same graph with other kernels: the guided log-probabilities differ by
# up to 7.4e-6 on the tiny golden sets (measured, fp32, CPU).  A sampling decision that close to flipping
# (two logits at a top-k or top-p edge, or the uniform at a CDF step) may go either way: on a golden set
# with 7 classes and scales 1,2,3,5,7, two logits 1.2e-7 apart sat at the nucleus edge and torch's SDPA and
# onnxruntime kept different ones.  A near tie is a decision within NEAR_TIE of flipping.
NEAR_TIE = 2e-5  # about 3x the measured difference


def _decision_margin(logits_V: torch.Tensor, u: float, top_k: int, top_p: float) -> float:
    """How far one cell's sampling decision (top-k, top-p, inverse CDF at ``u``) is from flipping: the
    smallest logit gap at a filter edge, cumulative-probability gap at the nucleus edge or CDF gap at u."""
    lg = logits_V.double().clone()
    V = lg.numel()
    gaps = []
    v, order = lg.sort(descending=True)
    if 0 < top_k < V:
        gaps.append(float(v[top_k - 1] - v[top_k]))
        lg[order[top_k:]] = -torch.inf
    if top_p > 0:
        srt, idx = lg.sort()
        cum = srt.softmax(0).cumsum(0)
        remove = cum <= 1 - top_p
        remove[-1] = False
        j = int(remove.sum())  # srt[:j] removed, srt[j:] kept
        gaps.append(float(cum[j] - (1 - top_p)))
        if j > 0:
            gaps += [float(srt[j] - srt[j - 1]), float((1 - top_p) - cum[j - 1])]
        lg[idx[:j]] = -torch.inf
    cdf = lg.softmax(0).cumsum(0)
    t = u * float(cdf[-1])
    i = int((cdf < t).sum())
    gaps += [t - (float(cdf[i - 1]) if i > 0 else 0.0), float(cdf[min(i, V - 1)]) - t]
    return min(abs(g) for g in gaps)


def _parity_rows(tokens: list[np.ndarray], ref, uniforms: list[np.ndarray], top_k: int, top_p: float,
                 keep: list[np.ndarray] | None = None) -> np.ndarray:
    """Which rows have every token equal to torch's; a row that differs must first differ only at sampled
    cells whose decision was a near tie in torch's guided logits (then the rest of the row diverges)."""
    B = ref.idx_per_scale[0].shape[0]
    assert len(tokens) == len(ref.idx_per_scale)
    same = np.ones(B, bool)
    for b in range(B):
        for si, (x, y) in enumerate(zip(tokens, ref.idx_per_scale)):
            cells = np.nonzero(x[b] != y[b].numpy())[0]
            if cells.size == 0:
                continue
            for c in cells:
                assert keep is None or not keep[si][min(b, keep[si].shape[0] - 1), c], \
                    f"row {b}, scale {si}: forced cell {c} differs"
                m = _decision_margin(ref.logits_per_scale[si][b, c], float(uniforms[si][b, c]), top_k, top_p)
                assert m < NEAR_TIE, f"row {b}, scale {si}, cell {c}: tokens differ at a clear decision ({m:.1e})"
            same[b] = False
            break
    return same


def _assert_tokens_equal(a: list[np.ndarray], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for si, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_array_equal(x, y.numpy(), err_msg=f"tokens differ at scale {si}")


# --------------------------------------------------------------------------------------------------
# export and manifest
# --------------------------------------------------------------------------------------------------
def test_checker_and_manifest(fp32_dir, golden_models):
    var, vae = golden_models
    m = read_manifest(fp32_dir)
    for g in ("tokenizer", "sampler", "decoder"):
        onnx.checker.check_model(str(fp32_dir / m["graphs"][g]["file"]))
    for key in ("varedit_version", "format_version", "model", "batch", "precision", "opset", "graphs", "files",
                "export", "sampling"):
        assert key in m
    assert m["format_version"] == FORMAT_VERSION and m["batch"] == BATCH and m["precision"] == "fp32"
    mo = m["model"]
    assert mo["patch_nums"] == list(var.patch_nums) and mo["vocab_size"] == var.V and mo["Cvae"] == var.Cvae
    assert mo["num_classes"] == var.num_classes and mo["image_size"] == vae.image_size
    assert mo["class_names"][3] == ["c3"]
    SN = len(var.patch_nums)
    assert len(m["graphs"]["sampler"]["inputs"]) == 6 + 3 * SN + (SN - 1)
    names = [o["name"] for o in m["graphs"]["sampler"]["outputs"]]
    assert names[SN:] == ["f_hat", "logprob"] + [f"cell_logprob_{k}" for k in range(SN)]
    for g, spec in m["graphs"].items():
        sess = ort.InferenceSession(str(fp32_dir / spec["file"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == [i["name"] for i in spec["inputs"]]
        assert [o.name for o in sess.get_outputs()] == [o["name"] for o in spec["outputs"]]
        for i, s in zip(sess.get_inputs(), spec["inputs"]):
            assert list(i.shape) == s["shape"] and s["meaning"]
    for fn, info in m["files"].items():
        assert sha256_file(fp32_dir / fn) == info["sha256"]
    verify_files(fp32_dir, m)


# --------------------------------------------------------------------------------------------------
# parity with torch (fp32, CPU)
# --------------------------------------------------------------------------------------------------
def test_tokenizer_parity(rt, golden_models, image):
    var, vae = golden_models
    f, tokens = rt.tokenize(image)
    with torch.no_grad():
        f_t = vae.encode(torch.from_numpy(image))
        tok_t = vae.quantize.f_to_idx_and_fhat(f_t)[0]
    _assert_tokens_equal(tokens, tok_t)
    np.testing.assert_allclose(f, f_t.numpy(), atol=FHAT_TOL, rtol=0)


def test_generate_parity_chunked_and_padded(rt, golden_models):
    C = rt.num_classes  # 3 images on a batch-2 export: one full chunk and one padded; C = unconditional
    labels = [_cls(3, C), _cls(5, C), C]
    seed = 7
    images = rt.generate(labels, seed, cfg=CFG, top_k=TOP_K, top_p=TOP_P)
    tokens, f_hat, logprob = rt.sample(labels, seed=seed, cfg=CFG, top_k=TOP_K, top_p=TOP_P)
    u = portable_uniforms(seed, len(labels), rt.patch_nums)
    ref = _torch_sample(golden_models, labels, u)
    ok = _parity_rows(tokens, ref, u, TOP_K, TOP_P)
    assert ok.sum() >= 2
    np.testing.assert_allclose(f_hat[ok], ref.fhat_per_scale[-1].numpy()[ok], atol=FHAT_TOL, rtol=0)
    np.testing.assert_allclose(logprob[ok], ref.logprob_B.numpy()[ok], atol=1e-4, rtol=0)
    assert images.shape == (3, 3, rt.image_size, rt.image_size) and images.dtype == np.float32
    np.testing.assert_allclose(images[ok], ref.img_B3HW.numpy()[ok], atol=IMG_TOL, rtol=0)
    # the batch split does not change the result: image 1 alone (now padded) with its own noise rows
    tok1, f1, _ = rt.sample([labels[1]], uniforms=[x[1:2] for x in u], cfg=CFG, top_k=TOP_K, top_p=TOP_P)
    for a, b in zip(tok1, tokens):
        np.testing.assert_array_equal(a[0], b[1])
    np.testing.assert_array_equal(rt.decode(f1)[0], images[1])


def test_greedy_and_unfiltered_parity(rt, golden_models):
    labels = [_cls(1, rt.num_classes), _cls(2, rt.num_classes)]
    for top_k, top_p in ((1, 0.0), (0, 0.5)):  # greedy; top-p alone (no top-k)
        u = portable_uniforms(11, 2, rt.patch_nums)
        tok = rt.sample(labels, uniforms=u, cfg=1.5, top_k=top_k, top_p=top_p, guidance="constant").tokens
        var, vae = golden_models
        ref = masked_sample(var, vae, torch.tensor(labels), cfg=1.5, top_k=top_k, top_p=top_p, guidance="constant",
                            uniforms=[torch.from_numpy(x) for x in u], decode=False, record_logits=True)
        assert _parity_rows(tok, ref, u, top_k, top_p).any()


def test_inpaint_open_loop_parity(rt, golden_models, image):
    var, vae = golden_models
    pns = rt.patch_nums
    _, tokens_in = rt.tokenize(image[:1])
    h = pns[-1]
    keep_last = np.ones((h, h), dtype=bool)
    keep_last[h // 4:3 * h // 4, h // 8:5 * h // 8] = False  # the hole ([2:6, 1:5] on an 8x8 grid)
    keep = official_keep_maps(keep_last, pns)
    label = _cls(4, rt.num_classes)
    known = Known([torch.from_numpy(k) for k in keep], idx_per_scale=[torch.from_numpy(t) for t in tokens_in])
    for seed in (3, 4, 5):  # one image: a near tie (see NEAR_TIE) leaves nothing to compare, so try the next
        u = portable_uniforms(seed, 1, pns)
        tok, f_hat, logprob = rt.sample([label], keep, tokens_in, u, cfg=CFG, top_k=TOP_K, top_p=TOP_P)
        ref = _torch_sample(golden_models, [label], u, known)
        if _parity_rows(tok, ref, u, TOP_K, TOP_P, keep)[0]:
            break
    else:
        pytest.fail("near ties in three seeds in a row")
    np.testing.assert_allclose(logprob, ref.logprob_B.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(rt.decode(f_hat), ref.img_B3HW.numpy(), atol=IMG_TOL, rtol=0)
    for si in range(len(pns)):  # kept cells really are the known tokens
        np.testing.assert_array_equal(tok[si][keep[si]], tokens_in[si][keep[si]])


def test_closed_loop_edit_parity(rt, golden_models, image):
    pns = rt.patch_nums
    f, _ = rt.tokenize(image)
    h = pns[-1]
    known_latent = np.ones((2, h, h), dtype=np.float32)
    known_latent[0, 3 * h // 8:7 * h // 8, 3 * h // 8:7 * h // 8] = 0  # [3:7, 3:7] on an 8x8 grid
    known_latent[1, :, 5 * h // 8:] = 0  # an outpainting-like strip
    keep = coverage_keep_maps(known_latent, pns, threshold=1.0, keep_first=2)
    pw = pool_weights(known_latent, pns, keep_first=2)
    u = portable_uniforms(5, 2, pns)
    labels = [_cls(6, rt.num_classes), _cls(8, rt.num_classes)]
    tok, f_hat, _ = rt.sample(labels, keep, None, u, f_known=f, pool_w=pw, cfg=CFG, top_k=TOP_K, top_p=TOP_P)
    known = Known([torch.from_numpy(k) for k in keep], f_BChw=torch.from_numpy(f),
                  pool_w_per_scale=[None if w is None else torch.from_numpy(w) for w in pw])
    ref = _torch_sample(golden_models, labels, u, known)
    ok = _parity_rows(tok, ref, u, TOP_K, TOP_P, keep)
    assert ok.any()
    np.testing.assert_allclose(f_hat[ok], ref.fhat_per_scale[-1].numpy()[ok], atol=FHAT_TOL, rtol=0)


def test_closed_loop_all_kept_reproduces_tokenizer(rt, image):
    f, tokens = rt.tokenize(image)
    keep = [np.ones((1, p * p), dtype=bool) for p in rt.patch_nums]  # batch-1 maps broadcast to N
    out = rt.sample([0, 0], keep, f_known=f, seed=0)
    for a, b in zip(out.tokens, tokens):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(out.logprob, 0)  # nothing was sampled


# --------------------------------------------------------------------------------------------------
# fp16
# --------------------------------------------------------------------------------------------------
def test_fp16_export_drift(tmp_path_factory, golden_models):
    var, vae = golden_models
    d = tmp_path_factory.mktemp("onnx_fp16")
    m = export_onnx(var, vae, d, batch=1, fp16=True)  # raises if the drift is out of bounds
    v = m["validation"]
    assert m["precision"] == "fp16" and v["passed"]
    assert v["logits_max_rel"] <= FP16_TOL["logits_rel"]
    assert v["decoder"]["image_max_abs"] <= FP16_TOL["image"]
    assert v["tokenizer"]["f_max_abs"] <= FP16_TOL["f"]
    assert v["tokenizer"]["token_agreement"] >= 0.95
    # kept cells re-quantised in fp32: the closed loop is unaffected by the half-precision transformer
    assert v["sampler"]["edit_closed_loop"]["token_agreement"] >= 0.95
    # graph I/O stays fp32 / int64 / bool
    sess = ort.InferenceSession(str(d / "sampler.onnx"), providers=["CPUExecutionProvider"])
    assert {i.type for i in sess.get_inputs()} <= {"tensor(float)", "tensor(int64)", "tensor(bool)"}
    img = OnnxVAR.from_dir(d, providers="cpu").generate([_cls(2, var.num_classes)], seed=0)
    assert img.shape == (1, 3, vae.image_size, vae.image_size) and np.isfinite(img).all()


# --------------------------------------------------------------------------------------------------
# torch-free runtime
# --------------------------------------------------------------------------------------------------
def test_runtime_runs_without_torch(fp32_dir, rt, tmp_path):
    out = tmp_path / "img.npy"
    script = textwrap.dedent(f"""
        import sys

        class _NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
                return None

        sys.meta_path.insert(0, _NoTorch())
        import numpy as np
        import varedit.processing, varedit.editing.masks  # the torch-free helpers the runtime may use
        from varedit_onnx.runtime import OnnxVAR
        m = OnnxVAR.from_dir({str(fp32_dir)!r}, providers="cpu", threads=1)
        img = m.generate([{_cls(3, rt.num_classes)}], seed=7, cfg={CFG}, top_k={TOP_K}, top_p={TOP_P})
        # the image-level tasks too (shared torch-free pre/post-processing)
        photo = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
        res = m.editor().inpaint(photo, box=(20, 20, 70, 60), seed=1)
        assert res.image.size == (120, 90)
        assert "torch" not in sys.modules, "torch was imported"
        np.save({str(out)!r}, img)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    img = np.load(out)
    np.testing.assert_array_equal(img, rt.generate([_cls(3, rt.num_classes)], seed=7, cfg=CFG, top_k=TOP_K,
                                                   top_p=TOP_P))


# --------------------------------------------------------------------------------------------------
# bad input: one clear error each
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def copy_dir(fp32_dir, tmp_path) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(fp32_dir, d)
    return d


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_corrupt_file(copy_dir):
    p = copy_dir / "decoder.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    p.write_bytes(bytes(data))
    with pytest.raises(OnnxRuntimeError, match="sha256") as e:
        OnnxVAR.from_dir(copy_dir, providers="cpu")
    assert "decoder.onnx" in _one_line(e) and "again" in str(e.value)


def test_missing_file(copy_dir):
    (copy_dir / "sampler.onnx").unlink()
    with pytest.raises(OnnxRuntimeError, match="sampler.onnx is missing") as e:
        OnnxVAR.from_dir(copy_dir, providers="cpu")
    _one_line(e)
    (copy_dir / MANIFEST).unlink()
    with pytest.raises(OnnxRuntimeError, match="no manifest.json"):
        OnnxVAR.from_dir(copy_dir, providers="cpu")


def test_manifest_of_another_version(copy_dir):
    p = copy_dir / MANIFEST
    m = json.loads(p.read_text())
    m["format_version"] = FORMAT_VERSION + 1
    p.write_text(json.dumps(m))
    with pytest.raises(OnnxRuntimeError, match="upgrade varedit") as e:
        OnnxVAR.from_dir(copy_dir, providers="cpu")
    _one_line(e)
    m["format_version"] = 0
    p.write_text(json.dumps(m))
    with pytest.raises(OnnxRuntimeError, match="export the model again"):
        OnnxVAR.from_dir(copy_dir, providers="cpu")


def test_wrong_batch(copy_dir, rt):
    p = copy_dir / MANIFEST
    m = json.loads(p.read_text())
    m["batch"] = BATCH + 1  # a manifest that does not describe its graphs
    p.write_text(json.dumps(m))
    bad = OnnxVAR.from_dir(copy_dir, providers="cpu")
    with pytest.raises(OnnxRuntimeError, match=f"exported for batch {BATCH}") as e:
        bad.generate([1], seed=0)
    _one_line(e)
    # per-image inputs whose batch does not match the labels
    keep = [np.zeros((3, p * p), dtype=bool) for p in rt.patch_nums]
    known = [np.zeros((3, p * p), dtype=np.int64) for p in rt.patch_nums]
    with pytest.raises(OnnxRuntimeError, match=r"keep_maps\[0\] has shape \[3, 1\]"):
        rt.sample([1, 2], keep, known, seed=0)
    with pytest.raises(OnnxRuntimeError, match=r"uniforms\[0\] has shape \[3, 1\]: give one row per image"):
        rt.sample([1, 2], uniforms=portable_uniforms(0, 3, rt.patch_nums))


def test_wrong_input_size(rt):
    S, h = rt.image_size, rt.latent_size
    with pytest.raises(OnnxRuntimeError, match=rf"takes \(N, 3, {S}, {S}\)") as e:
        rt.tokenize(np.zeros((1, 3, S // 2, S // 2), np.float32))
    _one_line(e)
    with pytest.raises(OnnxRuntimeError, match=r"\[0, 1\]"):
        rt.tokenize(np.full((1, 3, S, S), 2.0, np.float32))
    bad_keep = [np.zeros((1, p * p + 1), dtype=bool) for p in rt.patch_nums]
    with pytest.raises(OnnxRuntimeError, match=r"keep_maps\[0\]"):
        rt.sample([1], bad_keep, [np.zeros((1, p * p), np.int64) for p in rt.patch_nums], seed=0)
    with pytest.raises(OnnxRuntimeError, match="scales given"):
        rt.sample([1], uniforms=portable_uniforms(0, 1, rt.patch_nums)[:-1])
    with pytest.raises(OnnxRuntimeError, match="out of range"):
        rt.generate([rt.num_classes + 1], seed=0)
    with pytest.raises(OnnxRuntimeError, match="f_known has shape"):
        rt.sample([1], [np.ones((1, p * p), bool) for p in rt.patch_nums],
                  f_known=np.zeros((1, rt.Cvae + 1, h, h)), seed=0)
    with pytest.raises(OnnxRuntimeError, match="exactly one of"):
        rt.sample([1], [np.ones((1, p * p), bool) for p in rt.patch_nums], seed=0)
    with pytest.raises(OnnxRuntimeError, match="f_hat has shape"):
        rt.decode(np.zeros((1, rt.Cvae, 2 * h, 2 * h), np.float32))


# --------------------------------------------------------------------------------------------------
# execution providers
# --------------------------------------------------------------------------------------------------
def test_cuda_provider_fails_loudly_without_cuda(fp32_dir):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    with pytest.raises(OnnxRuntimeError, match="providers='cuda' asked") as e:
        OnnxVAR.from_dir(fp32_dir, providers="cuda")
    assert "onnxruntime-gpu" in _one_line(e)
    from varedit_onnx.session import OrtSession
    with pytest.raises(OnnxRuntimeError, match="no CUDA provider"):
        OrtSession(fp32_dir / "decoder.onnx", providers="cuda")
    with pytest.raises(OnnxRuntimeError, match="providers must be one of"):
        OnnxVAR.from_dir(fp32_dir, providers="gpu", verify=False)


def test_auto_provider_uses_cpu_here(fp32_dir):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    m = OnnxVAR.from_dir(fp32_dir, providers="auto", threads=1, verify=False).load(["decoder"])
    assert m.provider == "CPUExecutionProvider"


@pytest.mark.gpu
def test_cuda_provider_runs_on_gpu(fp32_dir, rt):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without a CUDA provider (install onnxruntime-gpu)")
    m = OnnxVAR.from_dir(fp32_dir, providers="cuda", verify=False)
    labels = [_cls(k, rt.num_classes) for k in (3, 5, 1)]
    img = m.generate(labels, seed=1, cfg=CFG, top_k=TOP_K, top_p=TOP_P)
    assert m.provider == "CUDAExecutionProvider"
    img2 = m.generate(labels, seed=1, cfg=CFG, top_k=TOP_K, top_p=TOP_P)  # CUDA graph replay
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_allclose(img, rt.generate(labels, seed=1, cfg=CFG, top_k=TOP_K, top_p=TOP_P), atol=1e-3)


# ---------------------------------------------------------------------------------------------------
# the image-level tasks on onnxruntime: same pre/post-processing, same tokens as torch's portable sampler
# ---------------------------------------------------------------------------------------------------
def _photo() -> np.ndarray:
    from PIL import Image
    rng = np.random.default_rng(0)
    small = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((180, 130), Image.BICUBIC))


def test_tasks_match_the_torch_backend(rt, golden_models):
    from varedit.editing.backend import TorchBackend
    from varedit.options import SamplingOptions
    from varedit.tasks import Editor
    var, vae = golden_models
    opts = dict(cfg=2.0, top_k=50, top_p=0.9)
    ref = Editor(TorchBackend(var, vae, torch.device("cpu"), sampler="portable"), defaults=SamplingOptions(**opts))
    ed = rt.editor()
    photo = _photo()
    c2, c3, c7 = (_cls(k, var.num_classes) for k in (2, 3, 7))
    for task in ("inpaint", "official", "outpaint", "generate"):
        if task == "inpaint":
            a, b = (e.inpaint(photo, box=(40, 30, 120, 100), seed=4, n=2, label=c2, **opts) for e in (ref, ed))
        elif task == "official":
            a, b = (e.inpaint(photo, box=(40, 30, 120, 100), seed=4, mode="official", label=None, **opts)
                    for e in (ref, ed))
        elif task == "outpaint":
            a, b = (e.outpaint(photo, right=60, seed=5, label=c7, **opts) for e in (ref, ed))
        else:
            a, b = (e.generate(c3, n=2, seed=6, **opts) for e in (ref, ed))
        for x, y in zip(a.images, b.images):
            x, y = np.asarray(x).astype(int), np.asarray(y).astype(int)
            assert x.shape == y.shape
            assert np.abs(x - y).max() <= 1, task  # same tokens; decoder float noise may move a level
        if a.scores:
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    # label auto: both backends infer the same class and fill alike
    a, b = (e.inpaint(photo, box=(40, 30, 120, 100), seed=4, **opts) for e in (ref, ed))
    assert b.settings["label_source"] == "inferred" and a.settings["label"] == b.settings["label"]
    np.testing.assert_allclose([p for _, p in a.settings["label_posterior"]],
                               [p for _, p in b.settings["label_posterior"]], atol=1e-3)
    assert np.abs(np.asarray(a.image).astype(int) - np.asarray(b.image).astype(int)).max() <= 1


def test_class_log_likelihood_matches_torch(rt, golden_models, image):
    from varedit.editing.sampler import class_log_likelihood
    var, vae = golden_models
    rng = np.random.default_rng(0)
    keep = [rng.random((image.shape[0], pn * pn)) < 0.6 for pn in rt.patch_nums]
    f, _ = rt.tokenize(image)
    got = rt.class_log_likelihood(f, keep)
    with torch.no_grad():
        idx = vae.img_to_idx(torch.from_numpy(image))
        want = class_log_likelihood(var, vae, idx, [torch.from_numpy(k) for k in keep]).numpy()
    assert got.shape == (image.shape[0], rt.num_classes)
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-5)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_the_scorer_graph_scores_as_the_sampler_does_in_one_run_per_chunk(rt, fp32_dir, golden_models, image):
    """Label inference through the scorer graph (all classes of an image teacher-forced at once) gives the
    sampler path's numbers; auto picks the sampler on a cold start (its session is needed anyway) and the
    scorer once a session is open; an export made before the scorer still scores with the sampler."""
    from varedit.editing.sampler import class_log_likelihood
    var, vae = golden_models
    rng = np.random.default_rng(1)
    keep = [rng.random((image.shape[0], pn * pn)) < 0.6 for pn in rt.patch_nums]
    f, toks = rt.tokenize(image)
    by_scorer = rt.class_log_likelihood(f, keep, tokens=toks, use_scorer=True)
    by_sampler = rt.class_log_likelihood(f, keep, tokens=toks, use_scorer=False)
    np.testing.assert_allclose(by_scorer, by_sampler, atol=1e-4, rtol=0)
    with torch.no_grad():
        want = class_log_likelihood(var, vae, [torch.from_numpy(t) for t in toks],
                                    [torch.from_numpy(k) for k in keep]).numpy()
    np.testing.assert_allclose(by_scorer, want, atol=2e-3, rtol=1e-5)
    from varedit_onnx.exporter import scorer_rows
    assert rt.manifest["graphs"]["scorer"]["rows"] == scorer_rows(BATCH, rt.num_classes) == BATCH * min(rt.num_classes, 16)
    assert scorer_rows(64, 1000) == 64 and scorer_rows(1, 10) == 10  # bounded memory for large models
    cold = OnnxVAR.from_dir(fp32_dir, providers="cpu", spinning=False, verify=False)
    cold.class_log_likelihood(f, keep, tokens=toks)
    assert "sampler" in cold._sessions and "scorer" not in cold._sessions  # one graph opened, not two
    cold.class_log_likelihood(f, keep, tokens=toks)
    assert "scorer" in cold._sessions  # warm: the scorer from now on


def test_a_scorer_with_other_rows_than_its_file_is_refused(copy_dir):
    m = json.loads((copy_dir / "manifest.json").read_text())
    for bad in (0, "4", 1 << 20):
        m["graphs"]["scorer"]["rows"] = bad
        (copy_dir / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(OnnxRuntimeError, match="scorer.rows"):
            OnnxVAR.from_dir(copy_dir, providers="cpu")
    m["graphs"]["scorer"]["rows"] = 3  # a plausible number that is not the file's
    (copy_dir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(OnnxRuntimeError, match="different exports"):
        OnnxVAR.from_dir(copy_dir, providers="cpu").session("scorer")


def test_an_export_without_cell_logprobs_fills_unconditionally(copy_dir):
    m = json.loads((copy_dir / "manifest.json").read_text())
    outs = m["graphs"]["sampler"]["outputs"]
    m["graphs"]["sampler"]["outputs"] = [o for o in outs if not o["name"].startswith("cell_logprob_")]
    del m["graphs"]["scorer"]  # nor the scorer graph: what an export made before label inference says
    m["files"] = {k: v for k, v in m["files"].items() if v.get("graph") != "scorer"}
    (copy_dir / "manifest.json").write_text(json.dumps(m))  # what an older export's manifest says
    old = OnnxVAR.from_dir(copy_dir, providers="cpu", spinning=False)
    ed = old.editor()
    r = ed.inpaint(_photo(), box=(40, 30, 120, 100), seed=4)
    assert r.settings["label"] == old.num_classes and "cannot infer" in r.settings["label_source"]
    with pytest.raises(ValueError, match="cannot score"):
        ed.inpaint(_photo(), box=(40, 30, 120, 100), seed=4, label="infer")
    with pytest.raises(OnnxRuntimeError, match="export the model again"):
        old.class_log_likelihood(np.zeros((1, old.Cvae, old.latent_size, old.latent_size), np.float32),
                                 [np.ones((1, pn * pn), bool) for pn in old.patch_nums])


def test_smoothing_is_refused_by_the_onnx_backend(rt):
    from varedit_onnx.session import OnnxRuntimeError
    with pytest.raises(OnnxRuntimeError, match="smoothing"):
        rt.editor().generate(1, seed=0, more_smooth=True)


def test_cli_export_and_onnx_backend(cli_model, golden_config, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from varedit.cli import main
    runner = CliRunner()
    out = tmp_path / "onnx"
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = runner.invoke(main, ["export", "onnx", "-m", str(cli_model), "--out", str(out),
                                   "--batch", "2", "--no-check"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "manifest.json").read_text())["batch"] == 2
    # a summary, not the manifest; and none of the exporter's noise (torchvision, pytree FutureWarnings)
    assert len(res.stdout.strip().splitlines()) <= 3 and "exported" in res.stdout
    # progress by stage goes to stderr: each graph's export and checker, then the total
    assert "graph 1/" in res.stderr and "exporting sampler.onnx" in res.stderr and "done in" in res.stderr
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    Image.fromarray(_photo()).save(tmp_path / "p.png")
    res = runner.invoke(main, ["inpaint", str(tmp_path / "p.png"), "--box", "20,20,90,90", "-o",
                               str(tmp_path / "o.png"), "--backend", "onnx", "--onnx-dir", str(out), "--seed", "1",
                               "--device", "cpu"])
    assert res.exit_code == 0, res.output
    side = json.loads((tmp_path / "o.json").read_text())
    assert side["backend"] == "onnx" and Image.open(tmp_path / "o.png").size == (180, 130)
    c2 = str(_cls(2, golden_config["var_ctor"]["num_classes"]))
    res = runner.invoke(main, ["generate", "--class", c2, "-n", "2", "--seed", "3", "-o", str(tmp_path / "g"),
                               "--backend", "onnx", "--onnx-dir", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "g").glob("*.png"))) == 2
    res = runner.invoke(main, ["inpaint", str(tmp_path / "p.png"), "--box", "20,20,90,90", "-o",
                               str(tmp_path / "o2.png"), "--backend", "onnx", "--onnx-dir", str(tmp_path / "nope")])
    assert res.exit_code != 0 and "Traceback" not in res.output and "not found" in res.output


# ---------------------------------------------------------------------------------------------------
# embedding: a Node.js program inpaints with the exported files (onnxruntime-node, no Python)
# ---------------------------------------------------------------------------------------------------
NODE_EXAMPLE = REPO / "export" / "examples" / "node"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_example_inpaints_like_python(fp32_dir, rt, tmp_path):
    if not (NODE_EXAMPLE / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip("run `npm install` in export/examples/node (the CI script does)")
    from PIL import Image

    from varedit.editing.plan import make_plan
    S, pns, B = rt.image_size, rt.patch_nums, rt.batch
    rng = np.random.default_rng(0)
    small = (rng.random((5, 5, 3)) * 255).astype(np.uint8)
    photo = np.asarray(Image.fromarray(small).resize((S, S), Image.BICUBIC))
    Image.fromarray(photo).save(tmp_path / "in.png")
    box = (30, 40, 90, 100)
    noise = [rng.random((B, p * p), dtype=np.float32) for p in pns]
    np.concatenate([u.ravel() for u in noise]).astype(np.float32).tofile(tmp_path / "noise.bin")
    r = subprocess.run(["node", str(NODE_EXAMPLE / "inpaint.mjs"), str(fp32_dir), str(tmp_path / "in.png"),
                        ",".join(map(str, box)), str(tmp_path / "out.png"), "--noise", str(tmp_path / "noise.bin"),
                        "--tokens", str(tmp_path / "tokens.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    hole = np.zeros((S, S), bool)
    hole[box[1]:box[3], box[0]:box[2]] = True
    assert np.array_equal(out[~hole], photo[~hole]) and not np.array_equal(out[hole], photo[hole])
    # the same plan in Python (grey prefill, coverage keep maps, coarse scales whole, closed loop) gives the same tokens
    plan = make_plan(photo.astype(np.float32) / 255, hole, pns, S // pns[-1], prefill="gray", closed_loop=True)
    f, _ = rt.tokenize(np.repeat(plan.encode_rgb.transpose(2, 0, 1)[None] * 2 - 1, B, 0).astype(np.float32))
    d = rt.manifest.get("defaults") or {}
    ref = rt.sample([rt.num_classes] * B, [np.repeat(k, B, 0) for k in plan.keep_maps], uniforms=noise, f_known=f,
                    pool_w=plan.pool_w, cfg=d.get("cfg", 4.0), top_k=d.get("top_k", 900), top_p=d.get("top_p", 0.95))
    js = json.loads((tmp_path / "tokens.json").read_text())
    for s in range(len(pns)):
        assert js[s] == ref.tokens[s][0].tolist(), f"scale {s}"
    # bad input: one line, non-zero exit
    r = subprocess.run(["node", str(NODE_EXAMPLE / "inpaint.mjs"), str(tmp_path), str(tmp_path / "in.png"),
                        "1,1,5,5", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("Error:") and "manifest.json" in r.stderr


# ---- sampling options: one validation for both backends ----------------------------------------------------
_BAD_SAMPLING = [
    ({"cfg": float("nan")}, ValueError, "cfg must be a finite number"),
    ({"cfg": float("inf")}, ValueError, "cfg must be a finite number"),
    ({"cfg": -0.5}, ValueError, "cfg must be at least 0"),
    ({"top_p": float("nan")}, ValueError, "top_p must be a finite number"),
    ({"top_p": float("-inf")}, ValueError, "top_p must be a finite number"),
    ({"top_p": -0.1}, ValueError, "top_p must be at least 0"),
    ({"top_p": 1.5}, ValueError, "top_p must be at most 1"),
    ({"top_k": -1}, ValueError, "top_k must be at least 0"),
    ({"top_k": 2.5}, TypeError, "top_k must be an integer"),
    ({"top_k": float("nan")}, TypeError, "top_k must be an integer"),
    ({"cfg": "4"}, TypeError, "cfg must be a number"),
    ({"guidance": "cosine"}, ValueError, "guidance must be linear or constant"),
    ({"seed": -1}, ValueError, "seed must be in"),
]


@pytest.mark.parametrize("kw,err,text", _BAD_SAMPLING, ids=[repr(k) for k, _, _ in _BAD_SAMPLING])
def test_bad_sampling_options_fail_alike_on_both_backends(rt, tiny_pipeline, kw, err, text):
    """The onnxruntime runtime refuses what the torch path refuses, with the torch path's message, before any
    session runs: its own generate/sample, and both backends' Editor tasks."""
    call = {"seed": 0, **kw}
    with pytest.raises(err) as onnx_direct:
        rt.generate([1], **call)
    with pytest.raises(err) as onnx_sample:
        rt.sample([1], **call)
    with pytest.raises(err) as onnx_editor:
        rt.editor().generate(1, **call)
    with pytest.raises(err) as torch_editor:
        tiny_pipeline.editor.generate(1, **call)
    msgs = {str(e.value) for e in (onnx_direct, onnx_sample, onnx_editor, torch_editor)}
    assert len(msgs) == 1 and text in msgs.pop()


def test_onnx_guidance_weights_must_be_finite(rt):
    SN = len(rt.patch_nums)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"guidance\[2\] must be a finite number"):
            rt.sample([1], seed=0, guidance=[0.0, 1.0, bad] + [1.0] * (SN - 3))
    assert rt.sample([1], seed=0, guidance=np.linspace(0, 2, SN)).tokens[0].shape == (1, 1)  # a valid list runs
