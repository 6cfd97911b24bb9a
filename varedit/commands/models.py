"""``varedit models list|info|classes|pull|pack``: what the models are and where their files are.

Everything except ``pull`` (``download``: its earlier name) is torch-free and offline: it reads the
preset table, the files' structure (no tensor is loaded, so it is fast on multi-gigabyte files) and the
local caches.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _where(p: Path | None) -> str:
    return str(p) if p is not None else "missing"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def list_presets(weights_dir: str | None = None) -> list[dict[str, Any]]:
    """Every preset's facts and the local state of its files (torch-free, offline)."""
    from ..hub import locate
    from ..presets import PRESETS, bundled_facts
    rows: list[dict[str, Any]] = []
    for p in PRESETS.values():
        row: dict[str, Any] = {
            "name": p.name, "description": p.description, "image_size": p.image_size, "license": p.license,
            "parameters": None, "download_bytes": p.download_bytes,
            "memory_bytes": {"fp32": None, "bf16": None}, "files": []}
        if p.bundled is not None:
            present = p.bundled.is_file()
            if present:
                row["parameters"] = p.parameters
                row["memory_bytes"] = {"fp32": p.memory_bytes("fp32"), "bf16": p.memory_bytes("bf16")}
            row["files"].append({"file": p.bundled.name, "bytes": bundled_facts(p.bundled)["file_bytes"] if present
                                 else None, "cached": present, "where": "bundled", "path": str(p.bundled)})
            row["status"] = "bundled" if present else "missing from the installation"
            rows.append(row)
            continue
        row["parameters"] = p.parameters
        row["memory_bytes"] = {"fp32": p.memory_bytes("fp32"), "bf16": p.memory_bytes("bf16")}
        found = locate(p, weights_dir)
        for f in p.files:
            path, where = found.get(f, (None, None))
            row["files"].append({"file": f, "bytes": p.file_bytes(f), "cached": path is not None, "where": where,
                                 "path": str(path) if path is not None else None})
        n = sum(1 for x in row["files"] if x["cached"])
        row["status"] = "cached" if n == len(p.files) else "partly cached" if n else "not cached"
        row["to_download_bytes"] = sum(x["bytes"] for x in row["files"] if not x["cached"])
        rows.append(row)
    return rows


def format_list(rows: list[dict[str, Any]]) -> list[str]:
    """``varedit models list`` as text: one table, then each preset's files, then what the numbers mean."""
    from ..hub import hf_cache_dir
    from ..presets import MODEL_ENV, VAE_FILE, default_model, human_bytes
    hb = lambda n: human_bytes(n) if n is not None else "?"  # noqa: E731
    table = [("MODEL", "PARAMETERS", "DOWNLOAD", "MEMORY fp32 / bf16", "IMAGE", "LICENCE", "FILES")]
    for r in rows:
        mem = f"{hb(r['memory_bytes']['fp32'])} / {hb(r['memory_bytes']['bf16'])}"
        dl = "bundled" if r["status"].startswith(("bundled", "missing")) else human_bytes(r["download_bytes"])
        table.append((r["name"], _count(r["parameters"]) if r["parameters"] else "?", dl, mem,
                      f"{r['image_size']} px", r["license"], r["status"]))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    right = {1, 2, 3}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in table]
    lines.append("")
    for r in rows:
        lines.append(f"{r['name']}: {r['description']}")
        for f in r["files"]:
            if f["where"] == "bundled":
                size = f" ({human_bytes(f['bytes'])})" if f["bytes"] else ""
                lines.append(f"  bundled: {f['path']}{size}" + ("" if f["cached"] else " (MISSING)"))
            else:
                state = f"{f['where']}: {f['path']}" if f["cached"] else "missing"
                lines.append(f"  {f['file']:<22} {human_bytes(f['bytes']):>8}  {state}")
    vae = next((f["bytes"] for r in rows for f in r["files"] if f["file"] == VAE_FILE), None)
    lines += [
        "",
        "download: the weights in the released files (FoundationVision/var on Hugging Face), to the byte; each file "
        "adds a few kB of structure. The " + (f"VQVAE file ({human_bytes(vae)}) " if vae else "VQVAE file ")
        + "serves every official model and is downloaded once.",
        "memory: the weights alone, 4 bytes per parameter in fp32, 2 in bf16/fp16 (e.g. an `export onnx --fp16`); "
        "activations and the attention cache come on top.",
        "licence: official weights: MIT (FoundationVision/VAR); demo: MIT, trained by varedit.",
        f"files are looked up in --weights-dir / $VAREDIT_WEIGHTS, then the Hugging Face cache ({hf_cache_dir()}); "
        "`varedit models pull NAME` downloads them.",
        f"default model: {default_model()}" + (f" (from ${MODEL_ENV})" if default_model() != "demo" else
                                               f" (set ${MODEL_ENV} to choose another)"),
    ]
    return lines


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
    @click.option("--json", "as_json", is_flag=True, help="The same facts as JSON.")
    def models_list(weights_dir: str | None, as_json: bool) -> None:
        """The presets: parameters, download size, memory, image size, licence, and which files are cached
        where (offline: nothing is downloaded)."""
        rows = list_presets(weights_dir)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        for line in format_list(rows):
            click.echo(line)

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
            from ..fileformat import file_info  # structure only: no tensor is loaded
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
        from ..fileformat import pack_models
        from .outputs import check_file_output
        check_file_output(Path(out), [var_file, vae_file], overwrite=overwrite, what="--out")
        r = pack_models(var_file, vae_file, out, half=half, description=description,
                        allow_new_tokens=allow_new_tokens)
        click.echo(f"{r['file']}: {r['bytes'] / 1e6:.1f} MB, tokens "
                   + ("unchanged" if r["tokens_unchanged"] else "CHANGED (--allow-new-tokens)"))

    @models.command("pull")
    @click.argument("name")
    @click.option("--weights-dir", type=click.Path(file_okay=False), default=None, envvar="VAREDIT_WEIGHTS",
                  help="Download into this folder (env VAREDIT_WEIGHTS) instead of the Hugging Face cache.")
    @click.pass_context
    def models_pull(ctx: click.Context, name: str, weights_dir: str | None) -> None:
        """Download a preset's official files (its size is said first), with progress, and verify them.

        Files already in --weights-dir or the Hugging Face cache are verified, not downloaded again."""
        from ..hub import pull
        from ..presets import MODEL_ENV, get_preset
        preset = get_preset(name)
        if preset.bundled:
            click.echo(f"{preset.name} is bundled with varedit: nothing to download")
            return
        quiet = bool((ctx.find_root().obj or {}).get("quiet"))
        say = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))  # noqa: E731
        files = pull(preset, weights_dir=weights_dir, say=say, progress=not quiet)
        for f, path in files.items():
            click.echo(f"{f}: {path}")
        say(f"{preset.name} is ready: --model {preset.name} (or {MODEL_ENV}={preset.name})")

    # the command's earlier name
    main_download = click.Command("download", callback=models_pull.callback, params=models_pull.params,
                                  help="Same as `varedit models pull`.", hidden=True)
    models.add_command(main_download)
