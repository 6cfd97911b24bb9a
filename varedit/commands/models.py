"""``varedit models list|info|classes|download|pack``: what the models are and where their files are.

Everything except ``download`` is torch-free and offline: it reads the preset table, the files'
structure (no tensor is loaded, so it is fast on multi-gigabyte files) and the local caches.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _where(p: Path | None) -> str:
    return str(p) if p is not None else "missing"


def _summary(info: Any, extra: dict[str, Any]) -> list[str]:
    lines = [f"{info.name} ({info.kind})"]
    if info.description:
        lines.append(f"  {info.description}")
    if info.image_size:
        lines.append(f"  image size    {info.image_size} px")
    if info.num_scales:
        lines.append(f"  scales        {info.num_scales}")
    names = info.class_names
    shown = ", ".join(c[0] for c in names[:10]) + (", ..." if len(names) > 10 else "") if names else "(no names)"
    lines.append(f"  classes       {info.num_classes}: {shown}")
    if info.defaults is not None:
        d = info.defaults
        lines.append(f"  defaults      cfg {d.cfg:g}, top-k {d.top_k}, top-p {d.top_p:g}, guidance {d.guidance}")
    for k, v in extra.items():
        lines.append(f"  {k:<13} {v}")
    for role, p in info.files.items():
        lines.append(f"  {role:<13} {_where(p)}")
    return lines


def register(main: click.Group) -> None:
    @main.group()
    def models() -> None:
        """List, inspect and download models."""

    @models.command("list")
    @click.option("--weights-dir", type=click.Path(file_okay=False), default=None, envvar="VAREDIT_WEIGHTS",
                  help="Folder holding official weight files (env VAREDIT_WEIGHTS).")
    def models_list(weights_dir: str | None) -> None:
        """The presets, and where each one's files are (bundled, found, or missing)."""
        from ..hub import hf_cache_dir, local_files
        from ..presets import PRESETS
        for p in PRESETS.values():
            click.echo(f"{p.name:9s} {p.image_size:4d}px  {p.description}")
            if p.bundled is not None:
                click.echo(f"          bundled: {p.bundled}" + ("" if p.bundled.is_file() else " (MISSING)"))
                continue
            found = local_files(p, weights_dir)
            for f in p.files:
                click.echo(f"          {f}: {_where(found.get(f))}")
        click.echo(f"official files are looked up in --weights-dir / $VAREDIT_WEIGHTS, then the Hugging Face cache "
                   f"({hf_cache_dir()}); `varedit models download NAME` fetches them")

    @models.command("info")
    @click.argument("model")
    @click.option("--vae", "vae_path", type=click.Path(dir_okay=False), default=None, help="Official VQVAE .pth.")
    @click.option("--weights-dir", type=click.Path(file_okay=False), default=None, envvar="VAREDIT_WEIGHTS")
    @click.option("--json", "as_json", is_flag=True, help="Everything the file says, as JSON.")
    def models_info(model: str, vae_path: str | None, weights_dir: str | None, as_json: bool) -> None:
        """What a model is: a preset name, a varedit file or an official .pth (read without loading it)."""
        from ..modelinfo import model_info
        from ..presets import is_preset
        info = model_info(model, vae_path=vae_path, weights_dir=weights_dir)
        detail: dict[str, Any] = {}
        path = next((p for p in info.files.values() if p is not None), None)
        if path is not None and (not is_preset(model) or info.kind == "bundled"):
            from ..registry import file_info  # structure only: no tensor is loaded
            detail = file_info(info.files.get("var") or path)
        if as_json:
            out = {"name": info.name, "kind": info.kind, "num_classes": info.num_classes,
                   "num_scales": info.num_scales, "image_size": info.image_size,
                   "class_names": [list(c) for c in info.class_names] if info.class_names else None,
                   "defaults": info.defaults.as_dict() if info.defaults else None,
                   "files": {k: _where(v) for k, v in info.files.items()}, "file": detail}
            click.echo(json.dumps(out, indent=2, default=str))
            return
        extra: dict[str, Any] = {}
        if detail:
            extra["format"] = detail.get("format")
            params = detail.get("parameters") or sum(detail.get(k, {}).get("parameters", 0) for k in ("var", "vqvae")
                                                     if isinstance(detail.get(k), dict))
            if params:
                extra["parameters"] = f"{params / 1e6:.1f} M"
            var_cfg = detail.get("var", {})
            var_cfg = var_cfg.get("config", var_cfg) if isinstance(var_cfg, dict) else {}
            if var_cfg:
                extra["VAR"] = (f"depth {var_cfg.get('depth')}, width {var_cfg.get('embed_dim')}, "
                                f"{var_cfg.get('num_heads')} heads, vocabulary {var_cfg.get('vocab_size')}")
        for line in _summary(info, extra):
            click.echo(line)

    @models.command("classes")
    @click.argument("model")
    @click.option("--search", "-s", default=None, help="Only classes whose names contain this text.")
    def models_classes(model: str, search: str | None) -> None:
        """The classes of a model: index and names (all synonyms)."""
        from ..modelinfo import model_info
        info = model_info(model)
        if not info.class_names:
            click.echo(f"{info.name} has {info.num_classes} classes without names: give an index 0..{info.num_classes - 1}")
            return
        q = search.lower() if search else None
        for i, names in enumerate(info.class_names):
            if q is None or any(q in n.lower() for n in names):
                click.echo(f"{i:4d}  {', '.join(names)}")

    @models.command("pack")
    @click.option("--var", "var_file", type=click.Path(dir_okay=False, exists=True), required=True,
                  help="A varedit file with the VAR (train var's model.pt): its VAR, class names and sampling defaults.")
    @click.option("--vae", "vae_file", type=click.Path(dir_okay=False, exists=True), required=True,
                  help="The VQVAE to pair it with (e.g. train vqvae --decoder-only's vqvae.pt).")
    @click.option("--out", "-o", type=click.Path(dir_okay=False), required=True)
    @click.option("--half", is_flag=True, help="Store fp16 weights (half the size).")
    @click.option("--description", default=None, help="The file's description (default: the VAR file's).")
    @click.option("--allow-new-tokens", is_flag=True,
                  help="Pack even if the VQVAE tokenises differently from the one the VAR was trained on.")
    @click.option("--overwrite", is_flag=True, help="Replace an existing --out file (never an input).")
    def models_pack(var_file: str, vae_file: str, out: str, half: bool, description: str | None,
                    allow_new_tokens: bool, overwrite: bool) -> None:
        """One model file from a VAR and a VQVAE whose tokens it was trained on (only the decoder may differ)."""
        from ..registry import pack_models
        from .outputs import check_file_output
        check_file_output(Path(out), [var_file, vae_file], overwrite=overwrite, what="--out")
        r = pack_models(var_file, vae_file, out, half=half, description=description,
                        allow_new_tokens=allow_new_tokens)
        click.echo(f"{r['file']}: {r['bytes'] / 1e6:.1f} MB, tokens "
                   + ("unchanged" if r["tokens_unchanged"] else "CHANGED (--allow-new-tokens)"))

    @models.command("download")
    @click.argument("name")
    def models_download(name: str) -> None:
        """Download a preset's files into the Hugging Face cache."""
        from ..hub import download
        from ..presets import get_preset
        preset = get_preset(name)
        if preset.bundled:
            click.echo(f"{preset.name} is bundled with varedit: nothing to download")
            return
        for f, path in download(preset).items():
            click.echo(f"{f}: {path}")
