"""Finding weight files: a local folder, or the Hugging Face cache (downloading when online).

Lookup order for a preset's files: an explicit ``weights_dir`` (or ``$VAREDIT_WEIGHTS``), then the
Hugging Face cache (``$HF_HOME``/``$HF_HUB_CACHE``), then a download from ``FoundationVision/var``
unless offline.  Offline is ``HF_HUB_OFFLINE=1``, ``local_files_only=True``, or a Hub that cannot be
reached: that is found out once, in at most a few seconds, before any download is tried (rather than
after huggingface_hub's retries with back-off, about a minute).  Everything here is torch-free.
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .checkpoint import WeightsError
from .presets import HF_REPO, Preset

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    from huggingface_hub import constants
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the Hub's host accepts a TCP connection, else why not (one line)."""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    u = urlparse(endpoint)
    host, port = u.hostname or "huggingface.co", u.port or (80 if u.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{host} cannot be reached ({e.strerror or type(e).__name__})"


def local_files(preset: Preset, weights_dir: str | os.PathLike | None = None, repo_id: str = HF_REPO
                ) -> dict[str, Path]:
    """The preset's files found without the network: in ``weights_dir`` / ``$VAREDIT_WEIGHTS``, else in the
    Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache
    weights_dir = weights_dir or os.environ.get("VAREDIT_WEIGHTS") or None
    found: dict[str, Path] = {}
    for f in preset.files:
        if weights_dir is not None and (Path(weights_dir) / f).is_file():
            found[f] = Path(weights_dir) / f
            continue
        cached = try_to_load_from_cache(repo_id, f, cache_dir=str(hf_cache_dir()))
        if isinstance(cached, str) and Path(cached).is_file():
            found[f] = Path(cached)
    return found


def resolve_files(preset: Preset, *, weights_dir: str | os.PathLike | None = None,
                  local_files_only: bool | None = None, repo_id: str = HF_REPO) -> dict[str, Path]:
    """Paths of the preset's files, downloading into the Hugging Face cache when allowed."""
    weights_dir = weights_dir or os.environ.get("VAREDIT_WEIGHTS") or None
    if weights_dir is not None and not Path(weights_dir).is_dir():
        raise WeightsError(f"weights folder not found: {weights_dir}")
    out = local_files(preset, weights_dir, repo_id)
    missing = [f for f in preset.files if f not in out]
    if not missing:
        return out
    why = why_no_download(local_files_only)
    if why is None:
        from huggingface_hub import hf_hub_download
        failed = []
        for f in missing:
            try:
                out[f] = Path(hf_hub_download(repo_id=repo_id, filename=f, cache_dir=str(hf_cache_dir())))
                log.info("%s: %s", f, out[f])
            except Exception as e:  # noqa: BLE001 - network and Hub errors: one message below
                log.debug("hf_hub_download(%s) failed: %s", f, e)
                failed.append(f)
        if not failed:
            return out
        missing, why = failed, "the download failed"
    raise missing_files_error(preset, missing, why, weights_dir, repo_id)


def why_no_download(local_files_only: bool | None = None) -> str | None:
    """None when a download can be tried, else why not (offline, or the Hub cannot be reached)."""
    offline = _offline_env() if local_files_only is None else local_files_only
    return "offline (HF_HUB_OFFLINE or local_files_only)" if offline else hub_unreachable()


def missing_files_error(preset: Preset, missing: list[str], why: str, weights_dir: str | os.PathLike | None = None,
                        repo_id: str = HF_REPO) -> WeightsError:
    where = f"{weights_dir} or " if weights_dir else ""
    return WeightsError(
        f"{preset.name} needs {', '.join(missing)}: {why}. Put the file(s) in {where}a folder given with "
        f"--weights-dir / $VAREDIT_WEIGHTS, or in the Hugging Face cache ({hf_cache_dir()}, repo {repo_id}), "
        f"or run `varedit models download {preset.name}` where the Hub is reachable")


def download(preset: Preset, *, repo_id: str = HF_REPO) -> dict[str, Path]:
    return resolve_files(preset, local_files_only=False, repo_id=repo_id)
