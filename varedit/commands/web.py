"""``varedit export web``: the editor as a static folder that runs the exported graphs in the browser
(onnxruntime-web, WebAssembly): no server, no Python, no image leaves the machine."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import click

from .common import model_options, quiet

# the onnxruntime-web release the page is written and tested against (export/web/package.json pins it)
ORT_WEB_VERSION = "1.30.0"
# what the page loads from onnxruntime-web's dist folder: the WebAssembly-only ES module with its
# JavaScript glue inside, and the one .wasm binary it loads (SIMD + threads; runs single-threaded
# where the page is not cross-origin isolated). The WebGPU (jsep) build is twice the size and unused.
ORT_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")
ORT_ENV = "VAREDIT_ORT_WEB"
BACKEND_META = '<meta name="varedit-backend" content="http">'
MIT_NOTICE = """onnxruntime-web {version} (https://github.com/microsoft/onnxruntime), from its npm package.

MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
USE OR OTHER DEALINGS IN THE SOFTWARE.
"""
README = """varedit editor (runs in the browser with onnxruntime-web; nothing is sent anywhere)

Serve this folder with any static file server and open it, for example:

    python -m http.server 8000 --bind 127.0.0.1     # then open http://127.0.0.1:8000/

Opening index.html from the disk (file://) does not work: browsers do not load modules and models
from file URLs. The page's JavaScript API (window.varedit) and the ES module js/varedit-web.js are
described in varedit's docs/onnx.md, "In the browser".

model/   the exported graphs and manifest.json ({name}, {precision})
ort/     onnxruntime-web {version} (MIT, see ort/NOTICE.txt)
"""


def static_dir() -> Path:
    """The editor's page, style sheet and scripts (shared with ``varedit serve``)."""
    return Path(__file__).resolve().parents[1] / "server" / "static"


def ort_candidates() -> list[Path]:
    """Where onnxruntime-web's dist folder is looked for: $VAREDIT_ORT_WEB, the checkout's export/web
    (after `npm install` there), ./node_modules."""
    out = []
    env = os.environ.get(ORT_ENV)
    if env:
        out.append(Path(env))
    try:
        import varedit_onnx
        out.append(Path(varedit_onnx.__file__).resolve().parent / "web" / "node_modules" / "onnxruntime-web" / "dist")
    except ImportError:
        pass
    out.append(Path.cwd() / "node_modules" / "onnxruntime-web" / "dist")
    return out


def _dist(p: Path) -> Path | None:
    """The dist folder of onnxruntime-web given as itself, its package, or a node_modules / project folder."""
    for d in (p, p / "dist", p / "onnxruntime-web" / "dist", p / "node_modules" / "onnxruntime-web" / "dist"):
        if all((d / f).is_file() for f in ORT_FILES):
            return d
    return None


def find_ort(given: str | None) -> tuple[Path, str | None]:
    """onnxruntime-web's dist folder (with every file the page needs) and its version; a one-line
    error saying how to get it otherwise."""
    places = [Path(given)] if given else ort_candidates()
    for p in places:
        d = _dist(p)
        if d is not None:
            version = None
            try:
                version = json.loads((d.parent / "package.json").read_text()).get("version")
            except (OSError, ValueError, AttributeError):
                pass
            return d, version
    where = given or ", ".join(str(p) for p in places)
    raise click.ClickException(
        f"onnxruntime-web's files ({', '.join(ORT_FILES)}) are not in {where}: run `npm install` in export/web of "
        f"a varedit checkout (or `npm install onnxruntime-web@{ORT_WEB_VERSION}` in any folder and pass "
        f"--ort-dir node_modules/onnxruntime-web/dist, or set ${ORT_ENV})")


def copy_export(src: Path, dst: Path, scorer: bool) -> dict:
    """Copy an `export onnx` folder's manifest and checksummed files (checked first) into ``dst``."""
    from varedit_onnx.manifest import MANIFEST, read_manifest, verify_files
    m = read_manifest(src)
    verify_files(src, m, checksums=True)
    if not scorer and "scorer" in m["graphs"]:
        gone = m["graphs"].pop("scorer")["file"]
        m["files"].pop(gone, None)
    dst.mkdir(parents=True)
    for fn in m["files"]:
        shutil.copyfile(src / fn, dst / fn)
    (dst / MANIFEST).write_text(json.dumps(m, indent=1))
    return m


def page_html(src: Path) -> str:
    html = src.read_text(encoding="utf-8")
    if BACKEND_META not in html:
        raise click.ClickException(f"{src} has no {BACKEND_META} line: the package's editor page is not the one this "
                                   f"command was written for")
    return html.replace(BACKEND_META, BACKEND_META.replace('"http"', '"runtime"'))


def build_site(out: Path, model_src: Path | None, ort_dir: Path, ort_version: str | None, scorer: bool,
               make_model=None) -> dict:
    """Write the static folder atomically: everything goes to a temporary folder beside ``out``, which is
    renamed to ``out`` at the end (``out`` must not exist, or be empty)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise click.ClickException(f"{out} already exists and is not empty: give a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)  # a web folder: readable by the server (mkdtemp makes it private)
        static = static_dir()
        (tmp / "index.html").write_text(page_html(static / "index.html"), encoding="utf-8")
        shutil.copyfile(static / "style.css", tmp / "style.css")
        (tmp / "js").mkdir()
        for f in sorted((static / "js").glob("*.js")):
            shutil.copyfile(f, tmp / "js" / f.name)
        (tmp / "ort").mkdir()
        for f in ORT_FILES:
            shutil.copyfile(ort_dir / f, tmp / "ort" / f)
        (tmp / "ort" / "NOTICE.txt").write_text(MIT_NOTICE.format(version=ort_version or "(unknown version)"))
        if model_src is not None:
            m = copy_export(model_src, tmp / "model", scorer)
        else:
            m = make_model(tmp / "model")
        (tmp / "README.txt").write_text(README.format(name=m["model"]["name"], precision=m["precision"],
                                                      version=ort_version or "?"))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return m


def folder_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def register(main: click.Group) -> None:
    export = main.commands.get("export")
    if not isinstance(export, click.Group):  # the export group lives in commands/export.py
        return

    @export.command("web")
    @model_options
    @click.option("--out", "-o", type=click.Path(file_okay=False), required=True,
                  help="Output folder (new or empty): serve it with any static file server.")
    @click.option("--from", "from_dir", type=click.Path(exists=True, file_okay=False),
                  help="An `export onnx` folder to copy the graphs from (checked), instead of exporting.")
    @click.option("--fp16", is_flag=True,
                  help="Export half-precision graphs (not with --from, whose graphs keep their precision).")
    @click.option("--no-scorer", is_flag=True,
                  help="Leave out the scorer graph (as large as the sampler): label inference then runs the "
                       "sampler once per class.")
    @click.option("--ort-dir", type=click.Path(file_okay=False),
                  help=f"onnxruntime-web's dist folder (default: ${ORT_ENV}, export/web/node_modules after "
                       f"`npm install` there, ./node_modules).")
    def export_web_cmd(model: str, vae_path: str | None, weights_dir: str | None, num_heads: int | None,
                       device: str, out: str, from_dir: str | None, fp16: bool, no_scorer: bool,
                       ort_dir: str | None) -> None:
        """The editor as a static web page that runs the model in the browser (onnxruntime-web,
        WebAssembly): index.html, its scripts, onnxruntime-web's files and the graphs, in one folder that
        works offline from any static file server (`python -m http.server` in it).  Exports the model
        (needs `pip install 'varedit[export,cpu]'`), or copies an `export onnx` folder with --from."""
        ort_path, ort_version = find_ort(ort_dir)  # before any slow work
        if ort_version and ort_version != ORT_WEB_VERSION and not quiet():
            click.echo(f"note: onnxruntime-web {ort_version} found; the page is tested with {ORT_WEB_VERSION}", err=True)
        dst = Path(out)
        if from_dir:
            if fp16:
                raise click.UsageError("--fp16 is for exporting: with --from the folder's own precision is used")
            m = build_site(dst, Path(from_dir), ort_path, ort_version, scorer=not no_scorer)
        else:
            from .._optional import require
            require(["onnx", "onnxscript", "onnxruntime"], "varedit export web")
            from .common import load_pipeline

            def make_model(d: Path) -> dict:
                from varedit_onnx.exporter import export_onnx
                if not quiet():
                    click.echo(f"exporting {model} to ONNX (minutes on a CPU)", err=True)
                pipe = load_pipeline(model, vae_path, weights_dir, num_heads, "cpu")
                return export_onnx(pipe.var, pipe.vae, d, batch=1, fp16=fp16, name=pipe.name, scorer=not no_scorer,
                                   class_names=pipe.class_names, defaults=pipe.defaults.as_dict())

            m = build_site(dst, None, ort_path, ort_version, scorer=not no_scorer, make_model=make_model)
        size = folder_bytes(dst)
        click.echo(f"wrote the {m['model']['name']} editor ({m['precision']}, {size / 1e6:.1f} MB) to {dst}: serve it "
                   f"with `python -m http.server --directory {dst} 8000` and open http://127.0.0.1:8000/")
