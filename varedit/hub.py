"""Finding weight files: a local folder, or the Hugging Face cache (downloading when online).

Lookup order for a preset's files: an explicit ``weights_dir`` (or ``$VAREDIT_WEIGHTS``), then the
Hugging Face cache (``$HF_HOME``/``$HF_HUB_CACHE``), downloading from ``FoundationVision/var`` unless
offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .registry import HF_REPO, Preset, WeightsError

log = logging.getLogger(__name__)


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    from huggingface_hub import constants
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(constants.HF_HUB_CACHE)


def resolve_files(preset: Preset, *, weights_dir: str | os.PathLike | None = None,
                  local_files_only: bool | None = None, repo_id: str = HF_REPO) -> dict[str, Path]:
    """Paths of the preset's files, downloading into the Hugging Face cache when allowed."""
    weights_dir = weights_dir or os.environ.get("VAREDIT_WEIGHTS") or None
    if weights_dir is not None:
        d = Path(weights_dir)
        found = {f: d / f for f in preset.files if (d / f).is_file()}
        if len(found) == len(preset.files):
            return found
        if not d.is_dir():
            raise WeightsError(f"weights folder not found: {d}")
    offline = _offline_env() if local_files_only is None else local_files_only
    from huggingface_hub import hf_hub_download
    out: dict[str, Path] = {}
    missing: list[str] = []
    for f in preset.files:
        try:
            out[f] = Path(hf_hub_download(repo_id=repo_id, filename=f, cache_dir=str(hf_cache_dir()),
                                          local_files_only=offline))
            log.info("%s: %s", f, out[f])
        except Exception as e:  # noqa: BLE001 - offline misses, network errors: one message below
            log.debug("hf_hub_download(%s) failed: %s", f, e)
            missing.append(f)
    if missing:
        why = "offline (HF_HUB_OFFLINE or local_files_only)" if offline else "the download failed"
        where = f"{weights_dir} or " if weights_dir else ""
        raise WeightsError(
            f"{preset.name} needs {', '.join(missing)}: {why}. Put the file(s) in {where}a folder given with "
            f"--weights-dir / $VAREDIT_WEIGHTS, or in the Hugging Face cache ({hf_cache_dir()}, repo {repo_id}), "
            f"or run `varedit models download {preset.name}` where the Hub is reachable")
    return out


def download(preset: Preset, *, repo_id: str = HF_REPO) -> dict[str, Path]:
    return resolve_files(preset, local_files_only=False, repo_id=repo_id)
