"""Where results go: output names planned and checked before any work, and written as image + sidecar pairs.

Rules (README, "Outputs"):

* ``-o FILE`` (a name with an image suffix) is the output of a single input; with ``--n`` > 1 the
  candidates are ``FILE_0.png``, ``FILE_1.png``, ...  Otherwise ``-o`` is a folder and each output is
  named after its input's file stem.
* Nothing is ever written over an input image or mask (compared by resolved path and by inode).
* Two inputs that would write the same output (``pic.png`` and ``pic.jpg``, or ``a/x.png`` and
  ``b/x.png`` into one folder) are refused before any work, naming both.
* An output that exists already is refused before any work unless ``--overwrite`` (it is replaced, and
  said so) or ``--skip-existing`` (inputs whose outputs all exist are skipped).
* Each image is written with its JSON sidecar as one atomic pair: a full disk leaves neither.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import click

log = logging.getLogger("varedit")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES


def sidecar(p: Path) -> Path:
    return p.with_suffix(".json")


def candidate_names(base: Path, n: int) -> list[Path]:
    """``base`` for one output, else ``base_0``, ``base_1``, ... (same suffix)."""
    if n == 1:
        return [base]
    return [base.with_name(f"{base.stem}_{i}{base.suffix}") for i in range(n)]


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


@dataclass
class OutputPlan:
    """The outputs of every job, checked: ``targets[key]`` are the image paths of job ``key``."""

    targets: dict[Any, list[Path]]
    skip: set[Any] = field(default_factory=set)
    replacing: list[Path] = field(default_factory=list)

    def paths(self, key: Any) -> list[Path]:
        return self.targets[key]


def check_outputs(targets: dict[Any, list[Path]], protected: Iterable[Path], *, overwrite: bool,
                  skip_existing: bool, label: dict[Any, str] | None = None, own: set[Any] | None = None
                  ) -> OutputPlan:
    """Apply the rules above to planned ``targets`` (job key -> image paths); ``protected`` are the inputs
    and masks.  Raises ``click.ClickException`` (one line) for a collision, or for existing outputs
    without ``--overwrite`` / ``--skip-existing``.  ``own``: the jobs this process runs (a torchrun rank's
    share): collisions are checked over all jobs, existing outputs over its own only (the other ranks
    may be writing theirs)."""
    label = label or {}
    protected = [Path(p) for p in protected]
    seen: dict[Path, Any] = {}
    for key, paths in targets.items():
        for t in paths:
            for f in (t, sidecar(t)):
                for src in protected:
                    if _same(f, src):
                        raise click.ClickException(f"the output {f} would overwrite the input {src}: choose another "
                                                   f"-o (inputs are never overwritten)")
                r = f.resolve()
                if r in seen and seen[r] != key:
                    raise click.ClickException(
                        f"{label.get(seen[r], seen[r])} and {label.get(key, key)} would both write {f}: rename one of "
                        f"them, or run them into separate folders")
                seen[r] = key
    plan = OutputPlan(targets)
    existing: list[Path] = []
    for key, paths in targets.items():
        if own is not None and key not in own:
            continue
        here = [f for t in paths for f in (t, sidecar(t)) if f.exists()]
        if skip_existing and here and all(t.exists() for t in paths):
            plan.skip.add(key)
            continue
        existing.extend(here)
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        them = "them" if existing[1:] else "it"
        hint = f"add --overwrite to replace {them}" + ("" if skip_existing else ", or --skip-existing to skip "
                                                                                 "inputs done before")
        raise click.ClickException(f"{existing[0]} exists{more}: {hint}")
    plan.replacing = existing
    for p in existing:
        click.echo(f"replacing {p}", err=True)
    return plan


def check_not_stdout(out: str | Path) -> None:
    """``-o -`` reads as standard output in most tools; here every image comes with a JSON sidecar, so it
    is refused in one line rather than becoming a folder named ``-``."""
    if str(out) == "-":
        raise click.ClickException("-o - (standard output) is not supported: every image is written with a JSON "
                                   "sidecar; give an image file name or a folder")


def check_file_output(out: Path, inputs: Iterable[Path | str | None], *, overwrite: bool, what: str = "-o") -> None:
    """One output file (a model, a report): never one of ``inputs`` (not even with ``--overwrite``), and
    an existing file only with ``--overwrite``.  Raises ``click.ClickException`` (one line)."""
    for src in inputs:
        if src is not None and _same(Path(out), Path(src)):
            raise click.ClickException(f"{what} {out} would overwrite the input {src}: choose another {what} "
                                       f"(inputs are never overwritten)")
    if Path(out).exists() and not overwrite:
        raise click.ClickException(f"{out} exists: add --overwrite to replace it")


def write_result(image_bytes: bytes, path: Path, settings: dict[str, Any]) -> None:
    """The image and its JSON sidecar as one atomic pair (the image appears last)."""
    from ..io import atomic_write_many
    data = (json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n").encode()
    atomic_write_many([(path, image_bytes), (sidecar(path), data)])


def report_failures(failures: Sequence[str], total: int) -> None:
    """Print every failure, then fail the command (exit status 1) with a one-line summary."""
    if not failures:
        return
    for f in failures:
        click.echo(f"failed: {f}", err=True)
    raise click.ClickException(f"{len(failures)} of {total} inputs failed")


def plan_outputs(out: str, jobs: Sequence[Any], n: int, inputs: list[Path], *, overwrite: bool,
                 skip_existing: bool, own: Sequence[Any] | None = None) -> OutputPlan:
    """Every job's output names (``n`` candidates each) checked before any work: see the module's rules.
    ``jobs``: each with its input ``src`` and ``mask`` (:class:`varedit.commands.batch.Job`); ``own``: the
    jobs this process writes (under ``torchrun``, its share)."""
    from .. import processing as P
    check_not_stdout(out)
    o = Path(out)
    single_file = is_image_name(o)
    if single_file and len(inputs) > 1:
        raise click.ClickException(f"{len(inputs)} inputs need an output folder, not the file {o}")
    if single_file:
        P.output_format(o)  # a suffix nothing can write is an error now, not after the work
    elif o.exists() and not o.is_dir():
        raise click.ClickException(f"-o {o} is a file; give a folder for the outputs, or a name with an image "
                                   f"suffix ({', '.join(IMAGE_SUFFIXES)}) for one input")
    targets = {j.src: candidate_names(o if single_file else o / f"{j.src.stem}.png", n) for j in jobs}
    protected = [*inputs, *{j.mask for j in jobs if j.mask is not None}]
    return check_outputs(targets, protected, overwrite=overwrite, skip_existing=skip_existing,
                         label={j.src: str(j.src) for j in jobs}, own=None if own is None else {j.src for j in own})
