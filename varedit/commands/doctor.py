"""``varedit doctor``: one screen that says what works on this machine and what to install for the rest.

It never fails (exit status 0): every check that cannot run says so on its line.  It imports nothing
heavy at module level; torch, onnxruntime and the node pack are imported inside their checks, so the
screen also comes up on an install where one of them is missing or broken.
"""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable

import click

#: the CPU features that decide how fast torch and onnxruntime run here
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
W = 12  # label column


def _line(label: str, text: str) -> str:
    return f"{label:<{W}} {text}"


def _safe(label: str, check: Callable[[], list[str]]) -> list[str]:
    """A check's lines, or one line saying why it could not run (never an exception)."""
    try:
        return check()
    except Exception as e:  # noqa: BLE001 - the doctor reports, it does not fail
        return [_line(label, f"could not be checked ({type(e).__name__}: {' '.join(str(e).split())[:200]})")]


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU's model name, logical cores and which of :data:`CPU_FLAGS` it has (None: unknown here),
    as :func:`varedit.cpu.cpu_features` reads them."""
    from ..cpu import cpu_features
    f = cpu_features(cpuinfo)
    known = Path(cpuinfo).is_file()
    return {"model": f.model_name, "cores": os.cpu_count(),
            "flags": {flag: (flag in f.flags) for flag in CPU_FLAGS} if known else None}


def _varedit() -> list[str]:
    import importlib.metadata

    from .. import __version__
    where = Path(__file__).resolve().parents[1]
    kind = ""
    try:
        direct = importlib.metadata.distribution("varedit").read_text("direct_url.json")
        if direct and json.loads(direct).get("dir_info", {}).get("editable"):
            kind = ", editable install"
    except (importlib.metadata.PackageNotFoundError, ValueError):
        kind = ", not installed (run from the source tree)"
    return [_line("varedit", f"{__version__} ({where}{kind})"),
            _line("Python", f"{platform.python_version()} ({sys.executable})"),
            _line("platform", platform.platform())]


def _cpu() -> list[str]:
    c = cpu_info()
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in c["flags"].items()) if c["flags"] is not None \
        else "flags unknown (no /proc/cpuinfo)"
    return [_line("CPU", f"{c['model']}, {c['cores']} logical cores"), _line("", flags)]


def _torch() -> list[str]:
    try:
        import torch
    except ImportError:
        return [_line("torch", "not installed: pip install torch (the CPU build: --index-url "
                               "https://download.pytorch.org/whl/cpu; a CUDA build: see pytorch.org)")]
    cuda = getattr(torch.version, "cuda", None)
    hip = getattr(torch.version, "hip", None)
    build = f"CUDA {cuda} build" if cuda else f"ROCm {hip} build" if hip else "CPU build"
    lines = [_line("torch", f"{torch.__version__} ({build}), threads: {torch.get_num_threads()}")]
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i in range(n):
        p = torch.cuda.get_device_properties(i)
        bf16 = "bf16 yes" if torch.cuda.is_bf16_supported() else "bf16 no"
        lines.append(_line("", f"cuda:{i} {p.name}, {p.total_memory / 2 ** 30:.1f} GiB, compute capability "
                               f"{p.major}.{p.minor}, {bf16} (--device cuda --precision bf16)"))
    if n == 0:
        why = "no CUDA device found" if cuda or hip else \
            "none (a CPU build of torch; for an NVIDIA GPU install a CUDA build, see pytorch.org)"
        lines.append(_line("", f"GPU: {why}; editing runs on the CPU"))
    flags = cpu_info()["flags"] or {}
    native = [f for f in ("avx512_bf16", "amx_bf16") if flags.get(f)]
    lines.append(_line("", "bf16 on the CPU: " + (f"native ({', '.join(native)})" if native else
                                                 "no native support (no avx512_bf16 / amx_bf16)")))
    return lines


def _onnx() -> list[str]:
    from .._optional import install_command, installed_version, missing
    lines = []
    try:
        import onnxruntime as ort
    except ImportError:
        lines.append(_line("onnxruntime", f"not installed: {install_command(['cpu'])}"))
    else:
        dist = "onnxruntime-gpu" if installed_version("onnxruntime-gpu") else "onnxruntime"
        lines.append(_line("onnxruntime", f"{ort.__version__} ({dist}): {', '.join(ort.get_available_providers())}"))
    for mod, dist in (("onnxscript", "onnxscript"), ("onnx", "onnx")):
        v = installed_version(dist) if not missing([mod]) else None
        lines.append(_line(mod, v if v else f"not installed: {install_command(['export'])} (for `varedit export onnx`)"))
    return lines


def _extras() -> list[str]:
    from .._optional import EXTRAS, install_command, installed_version, missing
    lines = [_line("extras", "")]
    for e in EXTRAS.values():
        versions = [(p, installed_version(p)) for p in e.packages]
        if e.name == "cpu":  # onnxruntime-gpu provides the same module: [gpu] then stands in for [cpu]
            ok = bool(versions[0][1])
        else:
            ok = all(v for _, v in versions) and not missing(e.modules)
        if ok:
            state, detail = "installed", ", ".join(f"{p} {v}" for p, v in versions)
        else:
            absent = ", ".join(p for p, v in versions if not v) or "a module fails to import"
            state, detail = "missing", f"{install_command([e.name])}  ({absent})"
        lines.append(f"  {e.name:<8} {state:<10} {detail}")
        lines.append(f"  {'':<8} {'':<10} {e.purpose}")
    return lines


def _models() -> list[str]:
    from ..hub import hf_cache_dir, locate
    from ..presets import MODEL_ENV, PRESETS, bundled_facts, default_model, human_bytes
    wd = os.environ.get("VAREDIT_WEIGHTS")
    lines = [_line("models", f"weights dir: {wd or 'none ($VAREDIT_WEIGHTS not set)'}; "
                             f"Hugging Face cache: {hf_cache_dir()}")]
    for p in PRESETS.values():
        if p.bundled is not None:
            ok = p.bundled.is_file()
            size = human_bytes(bundled_facts(p.bundled)["file_bytes"]) if ok else "MISSING"
            lines.append(f"  {p.name:<8} bundled, {size}: {p.bundled}")
            continue
        found = locate(p, wd)
        have = sum(f.stat().st_size for f, _ in found.values())
        if len(found) == len(p.files):
            where = sorted({w for _, w in found.values()})
            lines.append(f"  {p.name:<8} cached, {human_bytes(have)} ({', '.join(where)})")
        else:
            rest = sum(p.file_bytes(f) for f in p.files if f not in found)
            part = f"{', '.join(found)} cached; " if found else ""
            lines.append(f"  {p.name:<8} not cached ({part}{human_bytes(rest)} to download: "
                         f"varedit models pull {p.name})")
    src = f"from ${MODEL_ENV}" if os.environ.get(MODEL_ENV, "").strip() else f"${MODEL_ENV} not set"
    lines.append(_line("default", f"--model {default_model()} ({src})"))
    return lines


def _server() -> list[str]:
    from .._optional import EXTRAS, install_command, installed_version, missing
    absent = missing(["fastapi", "uvicorn"]) + (["python_multipart"] if len(missing(["python_multipart", "multipart"]))
                                                == 2 else [])
    if absent:
        return [_line("server", f"cannot start: {install_command(['server'])}")]
    v = ", ".join(f"{p} {installed_version(p)}" for p in EXTRAS["server"].packages if installed_version(p))
    return [_line("server", f"ready: `varedit serve` ({v})")]


def _comfyui() -> list[str]:
    import importlib
    lines = []
    try:
        importlib.import_module("varedit_plugins.comfyui")
        lines.append(_line("ComfyUI", "node pack importable (varedit_plugins.comfyui)"))
    except Exception as e:  # noqa: BLE001 - any failure to import is the answer
        lines.append(_line("ComfyUI", f"node pack not importable ({type(e).__name__}: {' '.join(str(e).split())[:150]})"))
    root = os.environ.get("COMFYUI_PATH", "").strip()
    if not root:
        lines.append(_line("", "no ComfyUI located: set COMFYUI_PATH to its folder to check it"))
        return lines
    r = Path(root).expanduser()
    if not (r / "custom_nodes").is_dir():
        lines.append(_line("", f"COMFYUI_PATH={r}: no custom_nodes folder there (not a ComfyUI)"))
        return lines
    packs = [d.name for d in sorted((r / "custom_nodes").iterdir())
             if (d / "__init__.py").is_file() and "varedit_plugins.comfyui" in (d / "__init__.py").read_text(errors="replace")]
    lines.append(_line("", f"ComfyUI at {r}: " + (f"varedit nodes installed (custom_nodes/{', '.join(packs)})" if packs
                                                 else "varedit nodes not installed (see the ComfyUI docs)")))
    return lines


def doctor_lines() -> list[str]:
    lines: list[str] = []
    for label, check in (("varedit", _varedit), ("CPU", _cpu), ("torch", _torch), ("onnxruntime", _onnx),
                         ("extras", _extras), ("models", _models), ("server", _server), ("ComfyUI", _comfyui)):
        lines += _safe(label, check)
    return lines


def register(main: click.Group) -> None:
    @main.command()
    def doctor() -> None:
        """What works here: varedit, Python, CPU, torch and GPUs, onnxruntime, the extras (with the command
        that installs each), cached models, the server and ComfyUI.  Always exits 0."""
        for line in doctor_lines():
            click.echo(line.rstrip())
