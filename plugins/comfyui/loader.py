"""The model the nodes pass around (``VAREDIT_MODEL``) and the cache that keeps it between runs.

The loaded models live in one explicit :class:`ModelCache` object (``MODEL_CACHE``), not in node
classes: ComfyUI may instantiate node classes afresh, and its own output cache is dropped when a
workflow changes. The cache is

* keyed by what identifies the weights: backend, the model string (a preset name lower-cased, or
  the resolved path of the file or ONNX folder together with its size and modification time, so a
  replaced file is loaded again), the VQVAE file likewise, the weights folder, device and threads;
* bounded: at most ``max_entries`` models (default 2), least recently used evicted first;
* locked, so two prompts never load the same model twice at once.

Inside ComfyUI (``comfy.model_management`` imported, as it is before any pack loads) every loaded model
is also registered with ComfyUI's model management, the way ComfyUI registers its own CLIP-vision and
upscale models: its weights are wrapped in a ``comfy.model_patcher.ModelPatcher`` and each node has
ComfyUI load them (``load_models_gpu``) before it runs. So ComfyUI counts them when it makes room for
other models, "free models" (``unload_all_models``, ``free_memory``, the ``/free`` endpoint) unloads
them like its own (on a GPU the weights go back to the CPU), and a model ComfyUI unloads is dropped from
this cache (a ``ModelPatcher`` detach callback), so it lives on only as long as ComfyUI's own node cache
holds it. The device ``auto`` means ComfyUI's device there (``--cpu`` is respected). Outside ComfyUI
nothing of this happens: the small cache alone keeps the models.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

log = logging.getLogger(__name__)

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
    #: inside ComfyUI: the ``ModelPatcher`` that registers the weights with its model management
    patcher: Any = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return int(self.editor.backend.num_classes)

    def ready(self) -> None:
        """Before a node uses the model: inside ComfyUI, have its model management load the weights onto
        their device (again, after it unloaded them to free memory), making room for them as it does for
        its own models. Outside ComfyUI (no patcher) nothing to do."""
        if self.patcher is None:
            return
        mm = comfy_model_management()
        if mm is None:
            return
        mm.load_models_gpu([self.patcher], force_full_load=True)
        holder = self.patcher.model
        want = getattr(holder, "varedit_device", None)
        if want is not None and any(t.device != want for t in holder.parameters()):
            # a partial load (ComfyUI's --novram) would leave layers where the sampler cannot use them
            log.warning("ComfyUI left part of %s off %s; moving all of it there", self.name, want)
            holder.to(want)

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
        # reentrant: a load inside ComfyUI may make it unload another model, whose callback drops it here
        self._lock = threading.RLock()

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

    def drop(self, key: tuple[Hashable, ...], only: Callable[[Any], bool] | None = None) -> bool:
        """Forget ``key`` (when ``only`` is given: only if ``only(value)``); whether it was dropped."""
        with self._lock:
            if key in self._items and (only is None or only(self._items[key])):
                del self._items[key]
                return True
            return False

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


def comfy_model_management() -> Any | None:
    """ComfyUI's ``comfy.model_management`` when running inside ComfyUI (which imports it before it loads
    any pack), else None. Never imported from here: outside ComfyUI nothing of it runs."""
    return sys.modules.get("comfy.model_management")


def _comfy_device(device: str, backend: str) -> str:
    """Inside ComfyUI, ``auto`` is ComfyUI's device (so ``--cpu`` is respected; a device varedit does not run
    on, such as MPS, gives the CPU) and a CUDA device carries its index, as ComfyUI compares devices exactly."""
    mm = comfy_model_management()
    if mm is None or device == "cpu":
        return device
    import torch
    if device == "auto":
        d = torch.device(mm.get_torch_device())
        if d.type != "cuda":
            return "cpu"
        if backend == "onnx":
            return "cuda"
        return str(d) if d.index is not None else f"cuda:{torch.cuda.current_device()}"
    if backend == "torch" and torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    return device


def _register_with_comfy(vm: VarEditModel, cache: ModelCache, model_dir: str = "") -> VarEditModel:
    """Inside ComfyUI: ``vm`` with a ``ModelPatcher`` over its weights, registered with ComfyUI's model
    management, and dropped from ``cache`` when ComfyUI unloads it. Outside ComfyUI: ``vm`` as it is."""
    mm = comfy_model_management()
    if mm is None:
        return vm
    import torch
    mp = importlib.import_module("comfy.model_patcher")
    holder = type("VarEditWeights", (torch.nn.Module,), {})()  # the name ComfyUI logs ("Requested to load ...")
    size = 0
    if vm.backend == "torch":
        holder.var, holder.vae = vm.editor.backend.var, vm.editor.backend.vae   # the modules the sampler runs
        load_device = torch.device(vm.editor.backend.device)
        holder.varedit_device = load_device
    else:  # onnxruntime owns its memory: ComfyUI accounts for the export's size and can drop it
        load_device = torch.device("cuda" if "cuda" in vm.device.lower() else "cpu")
        if load_device.type == "cuda":
            load_device = torch.device("cuda", torch.cuda.current_device())
        size = sum(f.stat().st_size for f in Path(model_dir).iterdir() if f.is_file()) or 1
    holder.device = load_device
    patcher = mp.ModelPatcher(holder, load_device=load_device, offload_device=torch.device("cpu"), size=size)
    key, name = vm.key, vm.name

    def on_detach(p: Any, unpatch_all: bool = True) -> None:
        # ComfyUI unloaded the model (free_memory / unload_all_models / /free); a detach without unpatching is
        # its bookkeeping around a load
        if unpatch_all and cache.drop(key, only=lambda v: getattr(v, "patcher", None) is p):
            log.info("varedit: ComfyUI unloaded %s; dropped from varedit's model cache", name)

    if hasattr(patcher, "add_callback"):
        from comfy.patcher_extension import CallbacksMP
        patcher.add_callback(CallbacksMP.ON_DETACH, on_detach)
    return dataclasses.replace(vm, patcher=patcher)


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
    c = cache if cache is not None else MODEL_CACHE
    vm = c.get_or_load(key, lambda: _register_with_comfy(
        _load(model, backend, vae.strip(), weights_dir.strip(), _comfy_device(device, backend), threads, key), c,
        model))
    vm.ready()  # inside ComfyUI: its model management loads (and from now on tracks) the weights
    return vm


def _load(model: str, backend: str, vae: str, weights_dir: str, device: str, threads: int,
          key: tuple[Hashable, ...]) -> VarEditModel:
    from varedit.loading import EditorSpec, load_editor  # the loading path of every front-end
    editor = load_editor(EditorSpec(model, backend, vae_path=vae or None, weights_dir=weights_dir or None,
                                    device=device, threads=threads or None))
    if backend == "onnx":
        where = editor.backend.model.provider or device
    else:
        where = str(editor.backend.device)
    return VarEditModel(editor, editor.model_name, backend, where, editor.image_size,
                        _first_names(editor.class_names), key)
