"""Class names: ImageNet's 1000 (shipped with the package) or a model's own list."""
from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, ...], ...]:
    """The 1000 ImageNet classes in the official label order, each as its tuple of synonyms."""
    data = json.loads(resources.files("varedit").joinpath("assets/imagenet_classes.json").read_text())
    return tuple(tuple(c["names"]) for c in sorted(data, key=lambda c: c["index"]))


class ClassError(ValueError):
    pass


LIST_CLASSES_UP_TO = 30  # an unknown class lists every class of models with at most this many


def _norm(s: str) -> str:
    return " ".join(s.lower().replace("_", " ").replace("-", " ").split())


def _suggestion(name: str, synonyms: tuple[str, ...]) -> str:
    return repr(name) if _norm(synonyms[0]) == name else f"{name!r} ({synonyms[0]})"


def _with_aliases(synonyms: tuple[str, ...]) -> str:
    return synonyms[0] + (f" ({', '.join(synonyms[1:])})" if len(synonyms) > 1 else "")


def resolve_class(spec: int | str, names: tuple[tuple[str, ...], ...] | None, num_classes: int) -> int:
    """A class index from an index or a name (any synonym, case-insensitive; a unique prefix is fine)."""
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise TypeError(f"a class is an index or a name, not {type(spec).__name__} {spec!r}")
    if isinstance(spec, int) or re.fullmatch(r"\s*-?[0-9]+\s*", spec):  # ASCII digits only ('²' is a name)
        i = int(spec)
        if not 0 <= i < num_classes:
            raise ClassError(f"class index {i} is out of range 0..{num_classes - 1}")
        return i
    if not names:
        raise ClassError(f"this model has no class names: give a class index 0..{num_classes - 1}")
    q = _norm(str(spec))
    table = {_norm(n): i for i, syn in enumerate(names) for n in syn}
    if q in table:
        return table[q]
    pref = sorted({i for n, i in table.items() if n.startswith(q)})
    if len(pref) == 1:
        return pref[0]
    close = difflib.get_close_matches(q, list(table), n=3, cutoff=0.5)
    # a suggestion that is another name of a class says which class (the listing names classes by their first name)
    hint = f"; did you mean {', '.join(_suggestion(c, names[table[c]]) for c in close)}?" if close else ""
    if len(pref) > 1:
        hint = f"; it matches {len(pref)} classes, e.g. {names[pref[0]][0]!r}, {names[pref[1]][0]!r}"
    if len(names) <= LIST_CLASSES_UP_TO:  # every class with all its names: each suggestion is in the list
        listing = f" (classes: {', '.join(_with_aliases(n) for n in names)})"
    else:
        listing = f" ({len(names)} classes: `varedit models classes MODEL` lists them)"
    raise ClassError(f"unknown class {spec!r}{hint}{listing}")
