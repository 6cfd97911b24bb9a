"""The model the nodes pass around (``VAREDIT_MODEL``) and the cache that keeps it between runs.

The loaded models live in one explicit :class:`ModelCache` object (``MODEL_CACHE``), not in node
classes: ComfyUI may instantiate node classes afresh, and its own output cache is dropped when a
workflow changes. The cache is

* keyed by what identifies the weights: backend, the model string (a preset name lower-cased, or
  the resolved path of the file or ONNX folder together with its size and modification time, so a
  replaced file is loaded again), the VQVAE file likewise, the weights folder, device and threads;
* bounded: at most ``max_entries`` models (default 2), least recently used evicted first, since
  ComfyUI's memory management does not know about them;
* locked, so two prompts never load the same model twice at once.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

BACKENDS = ("torch", "onnx")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_MAX_MODELS = 2


@dataclass(frozen=True)
class VarEditModel:
    """What the loader node outputs: a :class:`varedit.tasks.Editor` and facts about its model."""

    editor: Any
    name: str
    backend: str
    device: str
    image_size: int
    class_names: tuple[str, ...]   # the first name of each class (empty when the model has none)
    key: tuple[Hashable, ...]

    @property
    def num_classes(self) -> int:
        return int(self.editor.backend.num_classes)

    def __repr__(self) -> str:  # shown by ComfyUI's debugging nodes
        return f"VarEditModel({self.name!r}, {self.backend}, {self.device}, {self.image_size}px)"


def _stamp(spec: str) -> tuple[Hashable, ...]:
    """How a model string is keyed: a path that exists by its resolved path, size and mtime (a
    folder by its manifest.json when it has one), anything else (a preset name) by its lower case."""
    if not spec:
        return ("",)
    p = Path(spec).expanduser()
    if p.exists():
        target = p / "manifest.json" if p.is_dir() and (p / "manifest.json").is_file() else p
        st = target.stat()
        return (str(p.resolve()), st.st_size, st.st_mtime_ns)
    return (spec.strip().lower().replace("_", "-"),)


def model_key(backend: str, model: str, vae: str = "", weights_dir: str = "", device: str = "auto",
              threads: int = 0) -> tuple[Hashable, ...]:
    return (backend, _stamp(model), _stamp(vae), os.path.abspath(weights_dir) if weights_dir else "", device,
            int(threads))


class ModelCache:
    """A small least-recently-used cache of loaded models (see the module docstring)."""

    def __init__(self, max_entries: int = DEFAULT_MAX_MODELS):
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[Hashable, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_load(self, key: tuple[Hashable, ...], load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = load()
            self._items[key] = value
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
            return value

    def keys(self) -> list[tuple[Hashable, ...]]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items


#: the pack's one cache (the only module-level state of the pack)
MODEL_CACHE = ModelCache()


def _first_names(names: Sequence[Sequence[str]] | None) -> tuple[str, ...]:
    return tuple(str(n[0]) for n in names) if names else ()


def load_model(model: str = "demo", *, backend: str = "torch", vae: str = "", weights_dir: str = "",
               device: str = "auto", threads: int = 0, cache: ModelCache | None = None) -> VarEditModel:
    """Load (or take from ``cache``, default :data:`MODEL_CACHE`) a model for the nodes.

    ``backend="torch"``: ``model`` is a preset name (``demo``, ``var-d16`` ...), a varedit file or an
    official VAR ``.pth`` (its VQVAE from ``vae`` or ``vae_ch160v4096z32.pth`` beside it).
    ``backend="onnx"``: ``model`` is a folder made by ``varedit export onnx``. ``threads`` > 0 sets
    onnxruntime's threads (0: its default). Errors are one-line ``ValueError``/``RuntimeError``s.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    model = (model or "").strip()
    if not model:
        raise ValueError("no model: give a preset name (demo, var-d16 ...), a model file, or an ONNX export folder")
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    key = model_key(backend, model, vae.strip(), weights_dir.strip(), device, threads)
    return (cache if cache is not None else MODEL_CACHE).get_or_load(
        key, lambda: _load(model, backend, vae.strip(), weights_dir.strip(), device, threads, key))


def _load(model: str, backend: str, vae: str, weights_dir: str, device: str, threads: int,
          key: tuple[Hashable, ...]) -> VarEditModel:
    if backend == "onnx":
        from varedit_onnx.runtime import OnnxVAR
        if not Path(model).is_dir():
            raise ValueError(f"the onnx backend needs an export folder (made by `varedit export onnx`), "
                             f"not {model!r}")
        rt = OnnxVAR.from_dir(model, providers=device, threads=threads or None)
        editor = rt.editor()
        return VarEditModel(editor, rt.name, "onnx", rt.provider or device, rt.image_size,
                            _first_names(rt.class_names), key)
    from varedit import VarEditPipeline
    pipe = VarEditPipeline.from_pretrained(model, device=device, vae_path=vae or None,
                                           weights_dir=weights_dir or None)
    return VarEditModel(pipe.editor, pipe.name, "torch", str(pipe.device), pipe.image_size,
                        _first_names(pipe.class_names), key)
