"""Pieces shared by the CLI commands: grouped help, the model / sampling options, and loading.

Nothing here imports torch at module level: a command validates its arguments first (torch-free, in
milliseconds) and loads a model only when every input is known to be usable.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from .. import requests as R
from ..presets import DEFAULT_MODEL, MODEL_ENV

log = logging.getLogger("varedit")

# help sections, in this order (a command's own options first, the model's last)
HELP_GROUPS = ("Task", "Input", "Editing", "Sampling", "Output", "Model")


class GroupedOption(click.Option):
    """An option listed under a section of the command's help (``help_group``)."""

    def __init__(self, *args: Any, help_group: str = "Other", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.help_group = help_group


class GroupedCommand(click.Command):
    """Help with the options in sections (task, input, editing, sampling, output, model), so a task's
    own options are not buried under the model options."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        for p in self.get_params(ctx):
            rec = p.get_help_record(ctx) if isinstance(p, click.Option) else None
            if rec is not None:
                groups.setdefault(getattr(p, "help_group", "Other"), []).append(rec)
        order = [g for g in HELP_GROUPS if g in groups] + [g for g in groups if g not in HELP_GROUPS]
        for g in order:
            with formatter.section(f"{g} options"):
                formatter.write_dl(groups[g])


def opt(*decls: str, group: str, **kwargs: Any) -> Callable[[Any], Any]:
    """``click.option`` listed under ``group`` in the help."""
    return click.option(*decls, cls=GroupedOption, help_group=group, **kwargs)


def request_opt(*decls: str, request: type, name: str, group: str, **kwargs: Any) -> Callable[[Any], Any]:
    """An option that is the field ``name`` of ``request`` (a request type or :class:`varedit.requests.Sampling`,
    :func:`varedit.requests.option_info`): its help text, default and choices are the field's, its type a
    click range of the field's limits (those that depend on the model are checked by the request). Keywords
    override (a ``type`` that checks with the request's own message, a command's default shown)."""
    info = R.option_info(request, name)
    kw: dict[str, Any] = dict(help=info.doc)
    if info.required:
        kw["required"] = True
    else:
        kw.update(default=info.default, show_default=info.default is not None)
    if info.choices is not None:
        kw["type"] = click.Choice(info.choices)
    elif info.kind == "int":
        kw["type"] = click.IntRange(min=info.lo, max=info.max)
    elif info.kind == "number":
        kw["type"] = click.FloatRange(min=info.lo, max=info.max, min_open=info.lo_open)
    return opt(*decls, group=group, **{**kw, **kwargs})


def model_options(f: Any = None, *, env: bool = True) -> Any:
    """--model, --vae, --weights-dir, --num-heads, --device (kwargs model, vae_path, weights_dir, num_heads,
    device).  ``@model_options``: --model defaults to ``$VAREDIT_MODEL``, else the demo
    (:func:`varedit.presets.default_model`); ``@model_options(env=False)``: to the demo (commands that
    measure the demo's own synthetic domain)."""
    from ..presets import default_model
    if f is None:
        return lambda g: model_options(g, env=env)
    what = "Preset name (demo, var-d16 ... var-d36), a varedit file, or an official VAR .pth"
    if env:
        model_opt = opt("--model", "-m", group="Model", default=default_model, show_default=False,
                        help=f"{what}. [default: ${MODEL_ENV} when set, else {DEFAULT_MODEL}]")
    else:
        model_opt = opt("--model", "-m", group="Model", default=DEFAULT_MODEL, show_default=True, help=f"{what}.")
    for o in reversed([
        model_opt,
        opt("--vae", "vae_path", group="Model", type=click.Path(dir_okay=False), default=None,
            help="Official VQVAE .pth (default: vae_ch160v4096z32.pth beside --model)."),
        opt("--weights-dir", group="Model", type=click.Path(file_okay=False), default=None, envvar="VAREDIT_WEIGHTS",
            help="Folder holding official weight files (env VAREDIT_WEIGHTS)."),
        opt("--num-heads", group="Model", type=click.IntRange(min=1), default=None,
            help="Override the inferred head count."),
        opt("--device", group="Model", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
    ]):
        f = o(f)
    return f


def backend_options(f: Any) -> Any:
    """--backend, --onnx-dir, --threads (kwargs backend, onnx_dir, threads)."""
    for o in reversed([
        opt("--backend", group="Model", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True),
        opt("--onnx-dir", group="Model", type=click.Path(file_okay=False), default=None,
            help="Exported ONNX folder (with --backend onnx)."),
        opt("--threads", group="Model", type=click.IntRange(min=1), default=None, help="CPU threads (onnx backend)."),
        opt("--precision", group="Model", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
            show_default=True, help="Transformer precision (torch backend): auto = bf16 autocast on CPUs with AVX-512 "
                                    "BF16 or AMX and on GPUs that support it, else fp32 (exact); fp16 for GPUs."),
    ]):
        f = o(f)
    return f


def sampling_options(f: Any) -> Any:
    """--seed, --cfg, --top-k, --top-p, --smooth, --guidance: the request's seed and sampling options."""
    from ..validation import MAX_SEED
    sampling = R.InpaintRequest  # every request type with a seed and sampling options holds the same ones
    for o in reversed([
        request_opt("--seed", request=sampling, name="seed", group="Sampling", type=click.IntRange(0, MAX_SEED)),
        # a number, checked with the message of every front-end (pop_sampling)
        request_opt("--cfg", request=sampling, name="cfg", group="Sampling", type=float),
        request_opt("--top-k", request=sampling, name="top_k", group="Sampling"),
        request_opt("--top-p", request=sampling, name="top_p", group="Sampling"),
        request_opt("--smooth/--no-smooth", "more_smooth", request=sampling, name="more_smooth", group="Sampling"),
        request_opt("--guidance", request=sampling, name="guidance", group="Sampling"),
    ]):
        f = o(f)
    return f


SAMPLING_KEYS = R.SAMPLING_NAMES


def pop_sampling(kw: dict[str, Any]) -> dict[str, Any]:
    """The sampling options, validated now (before any model is loaded) by the same rules every backend
    applies (:class:`varedit.options.SamplingOptions`)."""
    from ..options import SamplingOptions
    s = {k: kw.pop(k) for k in SAMPLING_KEYS}
    try:
        SamplingOptions().replace(**s)
    except (TypeError, ValueError) as e:
        raise click.BadParameter(str(e)) from None
    return s


@dataclass
class ModelSpec:
    """What the model options name; :meth:`info` is torch-free, :meth:`editor` loads."""

    model: str = DEFAULT_MODEL
    vae_path: str | None = None
    weights_dir: str | None = None
    num_heads: int | None = None
    device: str = "auto"
    backend: str = "torch"
    onnx_dir: str | None = None
    threads: int | None = None
    precision: str = "fp32"

    @classmethod
    def pop(cls, kw: dict[str, Any]) -> "ModelSpec":
        keys = ("model", "vae_path", "weights_dir", "num_heads", "device", "backend", "onnx_dir", "threads", "precision")
        return cls(**{k: kw.pop(k) for k in keys if k in kw})

    def info(self) -> Any:
        """Facts about the model (classes, scales, files), checked without torch or network."""
        from ..modelinfo import model_info
        if self.backend == "onnx":
            if not self.onnx_dir:
                raise click.UsageError("--backend onnx needs --onnx-dir DIR (made by `varedit export onnx`)")
            if self.precision not in ("auto", "fp32"):
                raise click.UsageError(f"--precision {self.precision} is for the torch backend: an export's precision "
                                       f"is chosen when exporting (`varedit export onnx --fp16` or `--quantize int8`)")
            from .._optional import require
            require("onnxruntime", "--backend onnx")
            return model_info(self.model, onnx_dir=self.onnx_dir)
        if self.onnx_dir:
            raise click.UsageError("--onnx-dir is for --backend onnx")
        try:
            info = model_info(self.model, vae_path=self.vae_path, weights_dir=self.weights_dir)
        except ValueError as e:
            if not self._from_env():
                raise
            raise click.ClickException(f"{e} (the model comes from ${MODEL_ENV}={self.model})") from None
        if info.missing and info.kind == "preset":  # offline, or the Hub unreachable: say so now, not at load
            from ..hub import missing_files_error, why_no_download
            from ..presets import get_preset
            why = why_no_download()
            if why is not None:
                raise missing_files_error(get_preset(self.model), info.missing, why, self.weights_dir)
        elif info.missing:
            raise click.ClickException(f"{info.name} needs its VQVAE: pass --vae PATH (looked for "
                                       f"{Path(self.model).parent / 'vae_ch160v4096z32.pth'})")
        return info

    def pipeline(self) -> Any:
        from ..pipeline import VarEditPipeline
        return VarEditPipeline.from_pretrained(self.model, vae_path=self.vae_path, weights_dir=self.weights_dir,
                                               num_heads=self.num_heads, device=self._device(),
                                               precision=self.precision)

    def _device(self) -> str:
        """Under torchrun each process takes the GPU of its LOCAL_RANK (when CUDA is asked for or auto)."""
        local = os.environ.get("LOCAL_RANK")
        if local is None or self.device == "cpu":
            return self.device
        import torch
        return f"cuda:{int(local)}" if torch.cuda.is_available() else self.device

    def editor(self, announce: bool = True) -> Any:
        """The image-level tasks (:class:`varedit.tasks.Editor`) on the chosen backend.  Loading the bundled
        demo model to edit images says once, on stderr, what it is and how to get a model for photographs
        (``-q`` or ``announce=False``: not; generating the shapes it was trained on needs no such note)."""
        if announce and self.is_demo():
            announce_demo()
        from ..loading import EditorSpec, load_editor
        device = self.device if self.backend == "onnx" else self._device()
        return load_editor(EditorSpec(self.model, self.backend, self.onnx_dir, self.vae_path, self.weights_dir,
                                      self.num_heads, device, self.threads, self.precision))

    def is_demo(self) -> bool:
        """Whether the model is the bundled demo (an ONNX export of it: by its manifest's name)."""
        if self.backend == "onnx":
            if not self.onnx_dir:
                return False
            try:
                from varedit_onnx.manifest import read_manifest
                return bool(read_manifest(self.onnx_dir)["model"]["name"] == DEFAULT_MODEL)
            except (ImportError, ValueError, OSError, KeyError, TypeError):
                return False
        from ..presets import is_preset, preset_key
        return is_preset(self.model) and preset_key(self.model) == DEFAULT_MODEL and not Path(self.model).exists()

    def _from_env(self) -> bool:
        ctx = click.get_current_context(silent=True)
        src = ctx.get_parameter_source("model") if ctx is not None and "model" in ctx.params else None
        return src == click.core.ParameterSource.DEFAULT and bool(os.environ.get(MODEL_ENV, "").strip())


def quiet() -> bool:
    """Whether ``varedit -q`` was given (notes and progress are then not shown)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and (ctx.find_root().obj or {}).get("quiet"))


def announce_demo() -> None:
    """The demo's one-line note on stderr, unless ``-q``."""
    if not quiet():
        from ..presets import demo_notice
        click.echo(demo_notice(), err=True)


def load_pipeline(model: str, vae_path: str | None, weights_dir: str | None, num_heads: int | None,
                  device: str) -> Any:
    """A :class:`varedit.VarEditPipeline` from the model options (torch backend)."""
    return ModelSpec(model, vae_path, weights_dir, num_heads, device).pipeline()


def check_class(spec: str, info: Any, keywords: tuple[str, ...] = ()) -> int | str:
    """A class option checked against the model's classes before it is loaded: the keyword, or the index."""
    from ..classes import resolve_class
    key = spec.strip().lower()
    if key in keywords:
        return key
    return resolve_class(spec, info.class_names, info.num_classes)
