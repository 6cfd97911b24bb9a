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
from typing import Callable, Mapping
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


WEIGHTS_DIR = "weights dir"
HF_CACHE = "Hugging Face cache"


def locate(preset: Preset, weights_dir: str | os.PathLike | None = None, repo_id: str = HF_REPO
           ) -> dict[str, tuple[Path, str]]:
    """The preset's files found without the network, each with where it was found (:data:`WEIGHTS_DIR`:
    ``weights_dir`` / ``$VAREDIT_WEIGHTS``, or :data:`HF_CACHE`)."""
    from huggingface_hub import try_to_load_from_cache
    weights_dir = weights_dir or os.environ.get("VAREDIT_WEIGHTS") or None
    found: dict[str, tuple[Path, str]] = {}
    for f in preset.files:
        if weights_dir is not None and (Path(weights_dir) / f).is_file():
            found[f] = (Path(weights_dir) / f, WEIGHTS_DIR)
            continue
        cached = try_to_load_from_cache(repo_id, f, cache_dir=str(hf_cache_dir()))
        if isinstance(cached, str) and Path(cached).is_file():
            found[f] = (Path(cached), HF_CACHE)
    return found


def local_files(preset: Preset, weights_dir: str | os.PathLike | None = None, repo_id: str = HF_REPO
                ) -> dict[str, Path]:
    """The preset's files found without the network: in ``weights_dir`` / ``$VAREDIT_WEIGHTS``, else in the
    Hugging Face cache."""
    return {f: p for f, (p, _) in locate(preset, weights_dir, repo_id).items()}


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
        f"or run `varedit models pull {preset.name}` where the Hub is reachable")


def download(preset: Preset, *, repo_id: str = HF_REPO) -> dict[str, Path]:
    return resolve_files(preset, local_files_only=False, repo_id=repo_id)


# --------------------------------------------------------------------------------------------------
# pulling a preset: sizes first, progress, verification
# --------------------------------------------------------------------------------------------------
def check_size(preset: Preset, filename: str, path: Path) -> None:
    """The file's size against the released file's (its tensors' exact bytes, give or take
    :data:`~varedit.presets.SIZE_TOLERANCE` for the zip structure)."""
    from .presets import SIZE_TOLERANCE, human_bytes
    want, got = preset.file_bytes(filename), path.stat().st_size
    if abs(got - want) > want * SIZE_TOLERANCE:
        raise WeightsError(f"{path} is {got:,} bytes where the released {filename} is about {want:,} "
                           f"({human_bytes(want)}): {'truncated' if got < want else 'another file'}; delete it and "
                           f"run `varedit models pull {preset.name}` again")


def check_structure(preset: Preset, filename: str, path: Path) -> None:
    """Every tensor of the file has the key and shape the preset's model has (read from the file's
    structure: no tensor is loaded, so its time does not grow with the file's size).  Raises WeightsError."""
    from .checkpoint import TensorInfo, peek, unwrap_state_dict
    from .official import check_release
    obj = peek(path)
    sd = unwrap_state_dict(obj) if isinstance(obj, Mapping) and obj else obj
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, TensorInfo) for v in sd.values()):
        raise WeightsError(f"{path.name} is not a state dict of tensors")
    check_release(sd, preset, filename, path.name)


def verify_file(preset: Preset, filename: str, path: Path) -> None:
    """A downloaded (or found) official file is the released one: its size, then its structure."""
    check_size(preset, filename, path)
    try:
        check_structure(preset, filename, path)
    except WeightsError as e:
        msg = str(e) if path.name in str(e) else f"{path}: {e}"
        raise WeightsError(f"{msg}; delete it and run `varedit models pull {preset.name}` again") from None


def _download_one(repo_id: str, filename: str, weights_dir: str | os.PathLike | None) -> Path:
    from huggingface_hub import hf_hub_download
    if weights_dir is not None:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_dir=str(weights_dir)))
    return Path(hf_hub_download(repo_id=repo_id, filename=filename, cache_dir=str(hf_cache_dir())))


def pull(preset: Preset, *, weights_dir: str | os.PathLike | None = None, repo_id: str = HF_REPO,
         say: Callable[[str], None] = log.info, progress: bool = True) -> dict[str, Path]:
    """Download what the preset lacks (into ``weights_dir`` when given, else the Hugging Face cache) and
    verify every file; ``say`` hears the sizes before anything starts, then each file's result.

    Offline or with the Hub out of reach this fails at once with one line (no retries)."""
    from .presets import human_bytes
    if preset.bundled is not None:
        raise WeightsError(f"{preset.name} is bundled with varedit: nothing to download")
    weights_dir = weights_dir or os.environ.get("VAREDIT_WEIGHTS") or None
    if weights_dir is not None and Path(weights_dir).exists() and not Path(weights_dir).is_dir():
        raise WeightsError(f"--weights-dir {weights_dir} is not a folder")
    found = locate(preset, weights_dir, repo_id)
    todo = [f for f in preset.files if f not in found]
    total = sum(preset.file_bytes(f) for f in todo)
    have = "; ".join(f"{f} already in {where} ({p})" for f, (p, where) in found.items())
    if todo:
        dest = weights_dir if weights_dir is not None else f"the Hugging Face cache ({hf_cache_dir()})"
        say(f"{preset.name}: {len(todo)} file{'s' if len(todo) > 1 else ''} to download, "
            f"{human_bytes(total)} ({', '.join(f'{f} {human_bytes(preset.file_bytes(f))}' for f in todo)}) "
            f"into {dest}" + (f"; {have}" if have else ""))
        why = "offline (HF_HUB_OFFLINE is set)" if _offline_env() else hub_unreachable()
        if why is not None:
            raise WeightsError(f"cannot download {preset.name} ({human_bytes(total)}): {why}; run it where the Hub "
                               f"can be reached, or put the files ({', '.join(todo)}) in a folder given with "
                               f"--weights-dir")
    else:
        say(f"{preset.name}: every file is here ({have}); verifying")
    out = {f: p for f, (p, _) in found.items()}
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        for f in todo:
            try:
                out[f] = _download_one(repo_id, f, weights_dir)
            except Exception as e:  # noqa: BLE001 - network and Hub errors: one line
                first = " ".join(str(e).split())[:200] or type(e).__name__
                raise WeightsError(f"downloading {f} failed ({type(e).__name__}: {first}); run the same command "
                                   f"again to resume") from None
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()
    for f in preset.files:
        verify_file(preset, f, out[f])
        say(f"{f}: {human_bytes(out[f].stat().st_size)}, verified ({out[f]})")
    return out
