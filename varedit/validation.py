"""One validation layer for what comes from files and from callers (torch-free).

Model files and ONNX exports are input like any image: people download them.  Everything read from
them (configurations, class names, sampling defaults, manifests and the paths they list) passes
through these checks before it is used, and so does every sampling option of every backend.  Each
failure is a ``ValueError`` subclass of the caller's choice with a one-line message that names the
file and the field.

* :func:`check_config`: a configuration dict against its dataclass (known fields, types, ranges);
* :func:`check_class_names`: names as a list of synonym lists, one per class, printable text;
* :func:`check_sampling`: sampling defaults stored in a file (known keys, types, ranges);
* :func:`confined_path`: a file listed by a manifest stays inside its folder (symlinks resolved);
* :func:`safe_filename`: a name (e.g. a class name) made safe to use in an output file name;
* :func:`check_seed`, :func:`check_int`, :func:`check_number`: call arguments.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Mapping, Sequence

__all__ = ["check_config", "check_class_names", "check_sampling", "confined_path", "safe_filename", "check_seed",
           "check_int", "check_number", "MAX_SEED", "MAX_CLASS_NAME", "MAX_SYNONYMS"]

MAX_SEED = 2 ** 63 - 1         # torch.Generator.manual_seed and numpy's PCG64 both take it
MAX_CLASS_NAME = 200           # characters
MAX_SYNONYMS = 64
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def _fail(err: type[ValueError], where: str, msg: str) -> ValueError:
    return err(f"{where}: {msg}" if where else msg)


def _typename(v: Any) -> str:
    return type(v).__name__


# --------------------------------------------------------------------------------------------------
# call arguments
# --------------------------------------------------------------------------------------------------
def check_int(value: Any, name: str, *, lo: int | None = None, hi: int | None = None,
              err: type[ValueError] = ValueError) -> int:
    """An int (not a bool, not a float) within [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int) and not _is_numpy_int(value):
        raise TypeError(f"{name} must be an integer, not {_typename(value)} {value!r}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"at least {lo}" if hi is None else f"at most {hi}" if lo is None else f"in {lo}..{hi}"
        raise err(f"{name} must be {rng}, got {v}")
    return v


def check_number(value: Any, name: str, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, err: type[ValueError] = ValueError) -> float:
    """A finite real number (int or float, not a bool) within [lo, hi] (``lo_open``: (lo, hi])."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_numpy_number(value):
        raise TypeError(f"{name} must be a number, not {_typename(value)} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise err(f"{name} must be a finite number, got {v}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise err(f"{name} must be {'above' if lo_open else 'at least'} {lo:g}, got {v:g}")
    if hi is not None and v > hi:
        raise err(f"{name} must be at most {hi:g}, got {v:g}")
    return v


def check_seed(seed: Any) -> int | None:
    """None (draw one) or an integer in [0, 2**63 - 1]."""
    if seed is None:
        return None
    return check_int(seed, "seed", lo=0, hi=MAX_SEED)


def _is_numpy_int(v: Any) -> bool:
    return type(v).__module__ == "numpy" and hasattr(v, "dtype") and v.dtype.kind in "iu" and v.ndim == 0


def _is_numpy_number(v: Any) -> bool:
    return type(v).__module__ == "numpy" and hasattr(v, "dtype") and v.dtype.kind in "iuf" and v.ndim == 0


# --------------------------------------------------------------------------------------------------
# what files say
# --------------------------------------------------------------------------------------------------
def check_config(cls: type, d: Any, where: str, err: type[ValueError] = ValueError) -> dict[str, Any]:
    """A configuration dict for dataclass ``cls``: no unknown fields, every value of its field's type
    (int, float, bool, str, or a tuple of ints given as a list), numbers finite.  Lists become tuples.
    Ranges specific to a model are its dataclass's own ``__post_init__`` checks."""
    if not isinstance(d, Mapping):
        raise _fail(err, where, f"the configuration is a {_typename(d)}, not a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in d if k not in names)
    if unknown:
        raise _fail(err, where, f"unknown {cls.__name__} fields {unknown}: a file from a newer varedit, or not "
                                f"a varedit file")
    out: dict[str, Any] = {}
    for k, v in d.items():
        t = hints[k]
        what = f"{cls.__name__}.{k}"
        if t is bool:
            ok = isinstance(v, bool)
        elif t is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif t is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            v = float(v) if ok else v
        elif t is str:
            ok = isinstance(v, str)
        elif typing.get_origin(t) is tuple:
            ok = isinstance(v, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            v = tuple(v) if ok else v
        else:  # pragma: no cover - a config field of a type this checker does not know
            raise TypeError(f"check_config cannot check {what} of type {t}")
        if not ok:
            raise _fail(err, where, f"{what} is {_typename(v)} {_short(v)}, expected {getattr(t, '__name__', t)}")
        out[k] = v
    return out


def check_class_names(names: Any, num_classes: int, where: str, err: type[ValueError] = ValueError
                      ) -> tuple[tuple[str, ...], ...] | None:
    """Class names as stored: None, or one entry per class, each a name or a list of synonyms (first =
    display name); every name non-empty printable text of at most ``MAX_CLASS_NAME`` characters."""
    if names is None:
        return None
    if not isinstance(names, (list, tuple)):
        raise _fail(err, where, f"class_names is {_typename(names)} {_short(names)}, expected a list")
    if len(names) != num_classes:
        raise _fail(err, where, f"class_names lists {len(names)} classes; the model has {num_classes}")
    out = []
    for i, entry in enumerate(names):
        syn = [entry] if isinstance(entry, str) else entry
        if not isinstance(syn, (list, tuple)) or not syn or len(syn) > MAX_SYNONYMS:
            raise _fail(err, where, f"class_names[{i}] is {_short(entry)}: expected a name or 1..{MAX_SYNONYMS} names")
        for n in syn:
            if not isinstance(n, str) or not n.strip() or len(n) > MAX_CLASS_NAME or not n.isprintable():
                raise _fail(err, where, f"class_names[{i}] has a bad name {_short(n)} (non-empty printable text of "
                                        f"at most {MAX_CLASS_NAME} characters)")
        out.append(tuple(syn))
    return tuple(out)


_SAMPLING_TYPES: dict[str, tuple[type, ...]] = {"cfg": (int, float), "top_k": (int,), "top_p": (int, float),
                                                "more_smooth": (bool,), "guidance": (str,)}


def check_sampling(d: Any, where: str, err: type[ValueError] = ValueError,
                   keys: Sequence[str] = tuple(_SAMPLING_TYPES)) -> dict[str, Any]:
    """Sampling defaults stored in a file: a mapping of known keys with values of the right type; the
    ranges are :class:`varedit.options.SamplingOptions`' own checks (applied by the caller)."""
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise _fail(err, where, f"the sampling defaults are {_typename(d)} {_short(d)}, not a mapping")
    out = {}
    for k, v in d.items():
        if k not in keys:
            raise _fail(err, where, f"unknown sampling setting {_short(k)} (known: {', '.join(keys)})")
        types = _SAMPLING_TYPES[k]
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise _fail(err, where, f"sampling setting {k} is {_typename(v)} {_short(v)}")
        out[k] = v
    return out


def confined_path(root: str | Path, rel: Any, where: str, err: type[ValueError] = ValueError) -> Path:
    """``root / rel`` for a relative file name that stays inside ``root``: absolute paths, drive letters,
    ``..`` and symlinks leading out are refused."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise _fail(err, where, f"file name {_short(rel)} is not a non-empty string")
    if (PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute() or PureWindowsPath(rel).drive
            or ".." in PurePosixPath(rel.replace("\\", "/")).parts):
        raise _fail(err, where, f"file {rel!r} lies outside its folder: refused")
    base = Path(root).resolve()
    p = (base / rel).resolve()
    if p != base and base not in p.parents:
        raise _fail(err, where, f"file {rel!r} leads outside its folder (a link?): refused")
    return base / rel


def safe_filename(name: str, fallback: str = "item", max_len: int = 64) -> str:
    """``name`` as one file-name component on every common file system: path separators, control and
    reserved characters become ``_``, leading dots and underscores and trailing dots/spaces go, Windows device names get
    a ``_`` prefix, and the result is at most ``max_len`` characters (``fallback`` when nothing is left).
    Letters of any script are kept."""
    s = unicodedata.normalize("NFKC", str(name))
    s = "".join(c if c.isprintable() and c not in '<>:"/\\|?*' else "_" for c in s)
    s = re.sub(r"\s+", "_", s.strip())
    s = re.sub(r"_+", "_", s).lstrip("._").rstrip(". ")[:max_len].rstrip(". ")
    if not s or set(s) <= {"_", "."}:
        return fallback
    if s.split(".")[0].lower() in _WINDOWS_RESERVED:
        s = "_" + s
    return s


MAX_ECHO = 200  # characters of an input an error message may repeat


def clip(value: Any, limit: int = MAX_ECHO) -> str:
    """``value`` as text of at most about ``limit`` characters, for an error message to repeat."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def parse_number(text: str) -> int | float:
    """A number typed as text (a box coordinate): an int is pixels, a number with a point or an exponent
    a float (a fraction), as every front-end reads boxes. A ValueError when it is no number."""
    text = text.strip()
    return float(text) if any(c in text for c in ".eE") else int(text)


def _short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."
