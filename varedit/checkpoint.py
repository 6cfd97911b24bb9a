"""Torch-free reading of a weights file's structure, before any tensor is materialised.

A ``torch.save`` file is a zip archive: ``<root>/data.pkl`` (a pickle of the nested dicts, lists and
scalars, with tensors as references to storage records) and one record ``<root>/data/<key>`` per
storage.  :func:`peek` reads the archive's directory and unpickles ``data.pkl`` with an allow-list of
exactly the globals a weights file needs (no code can run: anything else is refused), giving the
whole structure with a :class:`TensorInfo` (shape, dtype, bytes) in place of every tensor.  That
serves three purposes:

* **bounded memory**: every record's size is checked against the storage it must hold, and records
  must be stored uncompressed (as ``torch.save`` writes them), so a 4 MB file cannot declare 4 GiB
  and materialising the tensors afterwards needs at most the file's size;
* **validation before loading**: configuration, class names and defaults are checked while nothing
  but the pickle has been read;
* **fast facts without torch**: class names and sizes for argument checks and ``varedit models info``
  in a few milliseconds, without importing torch.

The actual load still goes through ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = ["WeightsError", "TensorInfo", "peek", "tensor_dims", "unwrap_state_dict", "STATE_DICT_WRAPPERS",
           "MAX_PICKLE_BYTES"]

#: the structure pickle is read into memory whole; real ones are kilobytes (a few MB with long metadata)
MAX_PICKLE_BYTES = 64 << 20

# torch's typed storage classes (how torch.save names a storage's dtype) -> (dtype name, bytes per element)
_STORAGES: dict[str, tuple[str, int]] = {
    "DoubleStorage": ("float64", 8), "FloatStorage": ("float32", 4), "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2), "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1), "ComplexFloatStorage": ("complex64", 8), "ComplexDoubleStorage": ("complex128", 16),
}
_FLOATING = ("float64", "float32", "float16", "bfloat16")


class WeightsError(ValueError):
    """A weights file is missing, corrupt, unsafe, or not the model that was asked for."""


@dataclass(frozen=True)
class TensorInfo:
    """What a tensor in the file will be once loaded (nothing of its data has been read)."""

    shape: tuple[int, ...]
    dtype: str
    storage: str              # the storage record's key
    storage_numel: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * _itemsize(self.dtype)

    def is_floating_point(self) -> bool:
        return self.dtype in _FLOATING


def tensor_dims(sd: Mapping[str, Any], key: str, layout: str, name: str) -> tuple[int, ...]:
    """The shape of ``sd[key]`` (a tensor or a :class:`TensorInfo`), checked before the
    configuration is read from it: as many dimensions as ``layout`` (e.g. ``"[classes + 1, width]"``) names,
    none of them empty.  A missing key, another rank or an empty dimension is one :class:`WeightsError`."""
    if key not in sd:
        raise WeightsError(f"{name} lacks {key}, a tensor {layout}")
    rank = layout.count(",") + 1
    shape = tuple(int(d) for d in sd[key].shape)
    if len(shape) != rank or not all(shape):
        what = f"a rank-{rank} tensor {layout}" if len(shape) != rank else f"{layout} with no empty dimension"
        raise WeightsError(f"{name}: {key} has shape {list(shape)}, expected {what}")
    return shape


#: keys that wrap a state dict in released checkpoints (e.g. the official trainer's)
STATE_DICT_WRAPPERS = ("state_dict", "model", "trainer")


def unwrap_state_dict(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state dict inside the common wrappers (:data:`STATE_DICT_WRAPPERS`), on a loaded file (tensors)
    or on its structure (:class:`TensorInfo`): one rule for the argument checks, the info and the load."""
    for wrapper in STATE_DICT_WRAPPERS:
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping) and not hasattr(next(iter(obj.values())), "shape"):
            obj = inner
    return obj


def _itemsize(dtype: str) -> int:
    return next(size for name, size in _STORAGES.values() if name == dtype)


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _Storage:
    dtype: str
    key: str
    numel: int


class _Dict(dict):  # type: ignore[type-arg]
    """Stands in for OrderedDict: state dicts carry a ``_metadata`` attribute (BUILD needs a __dict__)."""


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *rest: Any) -> TensorInfo:
    if not isinstance(storage, _Storage):
        raise WeightsError("a tensor refers to something that is not a storage")
    if not (isinstance(offset, int) and all(isinstance(s, int) and s >= 0 for s in (*size, *stride))):
        raise WeightsError("a tensor has a malformed shape or stride")
    extent = offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1 if all(size) else 0
    if offset < 0 or extent > storage.numel:
        raise WeightsError(f"a tensor of shape {tuple(size)} reaches past its storage ({storage.numel} elements)")
    return TensorInfo(tuple(size), storage.dtype, storage.key, storage.numel)


def _rebuild_parameter(data: TensorInfo, requires_grad: bool, backward_hooks: Any, *state: Any) -> TensorInfo:
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _Dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, (dtype, _) in _STORAGES.items()},
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise WeightsError(f"it is a pickle with objects other than weights ({module}.{name}; it could run "
                               f"code); only plain state dicts are loaded") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise WeightsError("a storage reference is malformed")
        return _Storage(pid[1].dtype, pid[2], pid[4])


def _walk(obj: Any) -> Any:
    """Every TensorInfo in a nested structure."""
    if isinstance(obj, TensorInfo):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk(v)


def peek(path: str | os.PathLike[str]) -> Any:
    """The structure of a ``torch.save`` file with :class:`TensorInfo` leaves, checked for safety.

    Raises :class:`WeightsError` (one line, naming the file) when the file is missing, not a regular
    file, not a torch zip archive (the pre-1.6 format is refused: re-save it with a current torch),
    truncated, holds objects other than tensors and plain containers, or when any storage record is
    compressed or of another size than its storage needs.
    """
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"weights file not found: {p}")
    if not p.is_file():
        raise WeightsError(f"{p} is not a regular file")
    size = p.stat().st_size
    try:
        zf = zipfile.ZipFile(p)
    except zipfile.BadZipFile:
        with open(p, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80":  # a bare pickle: torch's legacy (pre-1.6) format, or not torch at all
            raise WeightsError(f"{p.name} is in torch's legacy (pre-1.6) format, whose tensor sizes cannot be "
                               f"checked before loading: re-save it with torch.save from a current torch") from None
        if head == b"PK":
            raise WeightsError(f"{p.name} is truncated or corrupt ({size} bytes); download it again") from None
        raise WeightsError(f"{p.name} is not a torch weights file ({size} bytes)") from None
    except OSError as e:
        raise WeightsError(f"cannot read {p.name}: {e.strerror or e}") from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        pkl = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise WeightsError(f"{p.name} is a zip archive but not a torch weights file (no data.pkl)")
        root = pkl[0][: -len("data.pkl")]
        for i in infos.values():
            if i.compress_type != zipfile.ZIP_STORED:
                raise WeightsError(f"{p.name}: record {i.filename} is compressed ({i.compress_size} bytes holding "
                                   f"{i.file_size}); torch.save never compresses, so the file was crafted or "
                                   f"rewritten: refused")
        if infos[pkl[0]].file_size > MAX_PICKLE_BYTES:
            raise WeightsError(f"{p.name}: its structure record is {infos[pkl[0]].file_size} bytes; refused "
                               f"(at most {MAX_PICKLE_BYTES})")
        try:
            data = zf.read(pkl[0])
            obj = _Unpickler(io.BytesIO(data)).load()
        except WeightsError as e:
            raise WeightsError(f"refused {p.name}: {e}") from None
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise WeightsError(f"{p.name} is truncated or corrupt ({size} bytes; {e}); download it again") from None
        except Exception as e:  # noqa: BLE001 - malformed pickle opcodes raise many types
            raise WeightsError(f"{p.name} has a malformed structure record ({type(e).__name__}: {e})") from None
        seen: dict[str, int] = {}
        for t in _walk(obj):
            need = t.storage_numel * _itemsize(t.dtype)
            if seen.get(t.storage, need) != need:
                raise WeightsError(f"{p.name}: storage {t.storage} is referenced with two sizes")
            seen[t.storage] = need
        for key, need in seen.items():
            rec = infos.get(f"{root}data/{key}")
            if rec is None:
                raise WeightsError(f"{p.name} is truncated or corrupt: storage record {key} is missing")
            if rec.file_size != need:
                raise WeightsError(f"{p.name}: storage record {key} holds {rec.file_size} bytes where its tensors "
                                   f"need {need}: refused")
    return obj
