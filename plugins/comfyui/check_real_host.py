"""Run the node pack inside a real ComfyUI, end to end, through ComfyUI's HTTP API.

    python -m varedit_plugins.comfyui.check_real_host --comfyui PATH [--python PYTHON]

``PATH`` is a ComfyUI checkout (default ``$VAREDIT_COMFYUI``; with neither, the check is skipped and
exits 0). ``PYTHON`` is the interpreter ComfyUI runs with (default ``$VAREDIT_COMFYUI_PYTHON``, else this
one); varedit must be installed in it (``pip install -e ".[cpu]"``), as for any use of the pack.

For each registration (``--api classic``: ``NODE_CLASS_MAPPINGS``; ``--api v3``: a shim exposing only
``comfy_entrypoint``; default both) the check

1. installs the pack the way the docs say (a ``custom_nodes/<name>/__init__.py`` importing
   ``varedit_plugins.comfyui``) into a temporary ComfyUI base directory (``--base-directory``: the
   checkout is not written to; a ComfyUI without that option gets the shim in its own ``custom_nodes``,
   removed afterwards),
2. starts ``python main.py --cpu --listen 127.0.0.1 --port P`` in the checkout,
3. checks that ``/object_info`` lists every node, uploads two pictures (``/upload/image``): one with an
   alpha hole, whose mask LoadImage derives, and one without alpha,
4. submits every node in a small API-format graph and the shipped workflow (``workflows/varedit_api.json``)
   through ``/prompt``, polls ``/history`` and checks that each output exists with the expected size
   (images fetched through ``/view``),
5. submits an inpaint of the picture without alpha (LoadImage's 64x64 placeholder mask) and checks that it
   fails with "the mask is empty",
6. posts ``/free`` (``unload_models`` and ``free_memory``), checks in ComfyUI's log that the varedit model
   was unloaded from its cache, runs the inpaint graph again and checks it gives the same pixels,
7. stops the server.

With both registrations the images of the two runs must be identical. Exit status 0 when every check
passes (or the check was skipped), 1 when one fails (ComfyUI's log is kept and named), 2 on bad usage.
``--json FILE`` writes the results (ComfyUI's version, each graph's time and outputs).
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("varedit.comfyui.check")

WORKFLOW = Path(__file__).parent / "workflows" / "varedit_api.json"
NODES = ("VarEditModelLoader", "VarEditInpaint", "VarEditOutpaint", "VarEditClassEdit", "VarEditUpscale",
         "VarEditGenerate", "VarEditInferLabel")
SHIMS = {"classic": "from varedit_plugins.comfyui import *  # noqa: F401,F403\n",
         "v3": "from varedit_plugins.comfyui import comfy_entrypoint  # noqa: F401\n"}
FREED_LOG_LINE = "dropped from varedit's model cache"
EMPTY_MASK_ERROR = "the mask is empty"
SIZE = 128  # the demo model's size


class CheckFailed(Exception):
    """One check did not hold; the message says which and what was seen."""


# ---- the pictures -------------------------------------------------------------------------------------
def _png(rgb: np.ndarray, alpha: np.ndarray | None = None) -> bytes:
    from PIL import Image
    arr = rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB" if alpha is None else "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def pictures() -> dict[str, bytes]:
    """A synthetic picture (the demo model's kind) with an alpha hole, and the same picture without alpha."""
    from varedit.data.synthetic import render
    rgb = np.ascontiguousarray(render(3, 7, SIZE)[..., :3])
    alpha = np.full((SIZE, SIZE), 255, np.uint8)
    alpha[40:90, 30:100] = 0  # LoadImage's mask is 1 - alpha: the hole is the region to regenerate
    return {"varedit_check_hole.png": _png(rgb, alpha), "varedit_check_plain.png": _png(rgb)}


# ---- the graphs -----------------------------------------------------------------------------------------
SAMPLING = {"seed": 0, "cfg": -1.0, "top_k": -1, "top_p": -1.0}
EDITING = {"candidates": 1, "keep_scales": 0, "mode": "default", "feather": -1.0}


@dataclass
class Graph:
    name: str
    prompt: dict[str, Any]
    images: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # node id -> (width, height) each
    texts: tuple[str, ...] = ()         # node ids whose ui shows text (PreviewAny)
    error: str = ""                     # the run must fail with an error containing this


def _node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def graphs(hole: str, plain: str) -> list[Graph]:
    """Every node in a small graph, the shipped workflow, and the empty-mask case."""
    base = {"1": _node("VarEditModelLoader", model="demo", backend="torch", device="auto"),
            "2": _node("LoadImage", image=hole)}
    model, image, mask = ["1", 0], ["2", 0], ["2", 1]
    save = lambda src, prefix: _node("SaveImage", images=src, filename_prefix=f"varedit_check/{prefix}")  # noqa: E731
    s = SIZE
    out = [
        Graph("inpaint", {**base, "3": _node("VarEditInpaint", model=model, image=image, mask=mask, label="auto",
                                             **SAMPLING, **EDITING),
                          "4": save(["3", 0], "inpaint"), "5": _node("PreviewAny", source=["3", 3])},
              images={"4": [(s, s)]}, texts=("5",)),
        Graph("outpaint", {**base, "3": _node("VarEditOutpaint", model=model, image=image, left=0, right=64, top=0,
                                              bottom=32, fill="blur", label="auto", **SAMPLING, **EDITING),
                           "4": save(["3", 0], "outpaint")},
              images={"4": [(s + 64, s + 32)]}),
        Graph("class_edit", {**base, "3": _node("VarEditClassEdit", model=model, image=image, class_name="heart",
                                                x=32, y=32, width=64, height=64, **SAMPLING, **EDITING),
                             "4": save(["3", 0], "class_edit")},
              images={"4": [(s, s)]}),
        Graph("upscale", {**base, "3": _node("VarEditUpscale", model=model, image=image, scale=2.0, keep_scales=-1,
                                             back_project=True, **SAMPLING),
                          "4": save(["3", 0], "upscale")},
              images={"4": [(2 * s, 2 * s)]}),
        Graph("generate", {"1": base["1"], "3": _node("VarEditGenerate", model=model, class_name="star", batch_size=2,
                                                      **SAMPLING),
                           "4": save(["3", 0], "generate")},
              images={"4": [(s, s), (s, s)]}),
        Graph("infer_class", {**base, "3": _node("VarEditInferLabel", model=model, image=image, mask=mask),
                              "4": _node("PreviewAny", source=["3", 3])},
              texts=("4",)),
    ]
    wf = json.loads(WORKFLOW.read_text())
    for n in wf.values():
        if n["class_type"] == "LoadImage":
            n["inputs"]["image"] = hole
    out.append(Graph("shipped_workflow", wf,
                     images={k: [] for k, n in wf.items() if n["class_type"] in ("SaveImage", "PreviewImage")},
                     texts=tuple(k for k, n in wf.items() if n["class_type"] == "PreviewAny")))
    out.append(Graph("empty_mask", {**base, "2": _node("LoadImage", image=plain),
                                    "3": _node("VarEditInpaint", model=model, image=image, mask=mask, label="auto",
                                               **SAMPLING, **EDITING),
                                    "4": save(["3", 0], "empty")},
                     error=EMPTY_MASK_ERROR))
    return out


# ---- talking to ComfyUI ---------------------------------------------------------------------------------
class Client:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.client_id = uuid.uuid4().hex

    def _open(self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None,
              timeout: float = 30) -> bytes:
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {},
                                     method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            raise CheckFailed(f"{path}: HTTP {e.code} {e.read()[:500].decode(errors='replace')}") from None

    def get_json(self, path: str) -> Any:
        return json.loads(self._open(path))

    def post_json(self, path: str, body: Any) -> bytes:
        return self._open(path, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def upload(self, name: str, data: bytes) -> str:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                 f'Content-Type: image/png\r\n\r\n'.encode() + data + b"\r\n",
                 f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
                 f"--{boundary}--\r\n".encode()]
        res = json.loads(self._open("/upload/image", b"".join(parts),
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return str(res["name"]) if not res.get("subfolder") else f"{res['subfolder']}/{res['name']}"

    def run(self, prompt: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Submit a prompt and wait for its history entry."""
        res = json.loads(self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id}))
        if res.get("node_errors"):
            raise CheckFailed(f"/prompt refused the graph: {json.dumps(res['node_errors'])[:800]}")
        pid = res["prompt_id"]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            hist = self.get_json(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None \
                    and (hist[pid]["status"].get("status_str") in ("success", "error")):
                return hist[pid]
            time.sleep(0.5)
        raise CheckFailed(f"prompt {pid} did not finish within {timeout:.0f} s")

    def view(self, ref: dict[str, str]) -> np.ndarray:
        from PIL import Image
        q = urllib.parse.urlencode({"filename": ref["filename"], "subfolder": ref.get("subfolder", ""),
                                    "type": ref.get("type", "output")})
        return np.asarray(Image.open(io.BytesIO(self._open(f"/view?{q}"))).convert("RGB"))


def _error_message(entry: dict[str, Any]) -> str:
    for kind, body in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return str(body.get("exception_message", "")).strip()
    return ""


# ---- one server ----------------------------------------------------------------------------------------
@dataclass
class Server:
    comfyui: Path
    python: str
    api: str
    work: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    shim: Path | None = None            # a shim written into the checkout (ComfyUI without --base-directory)

    @property
    def log_path(self) -> Path:
        return self.work / f"comfyui-{self.api}.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def start(self, timeout: float) -> Client:
        cli_args = (self.comfyui / "comfy" / "cli_args.py").read_text(errors="replace")
        name = f"varedit_check_{self.api}"
        args = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port)]
        if "--base-directory" in cli_args:
            base = self.work / f"base-{self.api}"
            (base / "custom_nodes" / name).mkdir(parents=True, exist_ok=True)
            (base / "custom_nodes" / name / "__init__.py").write_text(SHIMS[self.api])
            args += ["--base-directory", str(base)]
        else:
            self.shim = self.comfyui / "custom_nodes" / f"{name}_{os.getpid()}"
            self.shim.mkdir(parents=True)
            (self.shim / "__init__.py").write_text(SHIMS[self.api])
        if "--database-url" in cli_args:
            args += ["--database-url", "sqlite:///:memory:"]
        log.info("[%s] starting: %s (in %s)", self.api, " ".join(args), self.comfyui)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(args, cwd=self.comfyui, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        client = Client(self.port)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise CheckFailed(f"ComfyUI exited with status {self.proc.returncode} while starting")
            try:
                client.get_json("/system_stats")
                return client
            except (OSError, CheckFailed):
                time.sleep(1)
        raise CheckFailed(f"ComfyUI did not answer on port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # our own child, by its id
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)
        if self.shim is not None:
            shutil.rmtree(self.shim, ignore_errors=True)
            self.shim = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_graph(client: Client, g: Graph, entry: dict[str, Any]) -> dict[str, list[np.ndarray]]:
    status = entry.get("status", {}).get("status_str")
    if g.error:
        msg = _error_message(entry)
        if status != "error" or g.error not in msg:
            raise CheckFailed(f"{g.name}: expected an error containing {g.error!r}, got {status} {msg!r}")
        if "\n" in msg:
            raise CheckFailed(f"{g.name}: the error is not one line: {msg!r}")
        return {}
    if status != "success":
        raise CheckFailed(f"{g.name}: {status}: {_error_message(entry)[:500]}")
    outputs = entry.get("outputs", {})
    got: dict[str, list[np.ndarray]] = {}
    for node, sizes in g.images.items():
        refs = outputs.get(node, {}).get("images", [])
        if not refs or (sizes and len(refs) != len(sizes)):
            raise CheckFailed(f"{g.name}: node {node} gave {len(refs)} images, expected {len(sizes) or 'some'}")
        got[node] = [client.view(r) for r in refs]
        for i, (arr, want) in enumerate(zip(got[node], sizes)):
            if (arr.shape[1], arr.shape[0]) != want:
                raise CheckFailed(f"{g.name}: node {node} image {i} is {arr.shape[1]}x{arr.shape[0]}, expected "
                                  f"{want[0]}x{want[1]}")
    for node in g.texts:
        if not outputs.get(node, {}).get("text"):
            raise CheckFailed(f"{g.name}: node {node} shows no text")
    return got


def run_api(comfyui: Path, python: str, api: str, work: Path, port: int, start_timeout: float,
            prompt_timeout: float) -> dict[str, Any]:
    """One server with one registration: every check of the module docstring. Returns the results."""
    server = Server(comfyui, python, api, work, port or _free_port())
    result: dict[str, Any] = {"api": api, "graphs": {}, "log": str(server.log_path)}
    try:
        client = server.start(start_timeout)
        stats = client.get_json("/system_stats").get("system", {})
        result["comfyui_version"] = stats.get("comfyui_version")
        result["python_version"] = stats.get("python_version", "").split()[0]
        result["pytorch_version"] = stats.get("pytorch_version")
        info = client.get_json("/object_info")
        missing = [n for n in NODES if n not in info]
        if missing:
            raise CheckFailed(f"ComfyUI did not load the nodes {missing} (is varedit installed for {python}?)")
        names = {k: client.upload(k, v) for k, v in pictures().items()}
        images: dict[str, dict[str, list[np.ndarray]]] = {}
        for g in graphs(names["varedit_check_hole.png"], names["varedit_check_plain.png"]):
            t0 = time.monotonic()
            entry = client.run(g.prompt, prompt_timeout)
            images[g.name] = _check_graph(client, g, entry)
            result["graphs"][g.name] = {"seconds": round(time.monotonic() - t0, 1),
                                        "error": _error_message(entry) if g.error else None,
                                        "images": {k: [list(a.shape) for a in v] for k, v in images[g.name].items()}}
            log.info("[%s] %s: ok (%.1f s)", api, g.name, time.monotonic() - t0)
        # "free models" unloads the varedit model; it comes back for the next prompt, same pixels
        before = server.log_text().count(FREED_LOG_LINE)
        client.post_json("/free", {"unload_models": True, "free_memory": True})
        end = time.monotonic() + 30
        while server.log_text().count(FREED_LOG_LINE) == before and time.monotonic() < end:
            time.sleep(0.5)
        if server.log_text().count(FREED_LOG_LINE) == before:
            raise CheckFailed("/free did not unload the varedit model (no log line "
                              f"{FREED_LOG_LINE!r} within 30 s)")
        g = graphs(names["varedit_check_hole.png"], names["varedit_check_plain.png"])[0]
        again = _check_graph(client, g, client.run(g.prompt, prompt_timeout))
        if any(not np.array_equal(a, b) for k in again for a, b in zip(again[k], images[g.name][k])):
            raise CheckFailed("after /free the inpaint graph gave other pixels")
        result["free"] = "unloaded and reloaded, same pixels"
        log.info("[%s] /free: the model was unloaded and came back with the same pixels", api)
        result["images"] = images
        result["ok"] = True
    except CheckFailed as e:
        result["ok"] = False
        result["error"] = str(e)
        tail = "\n".join(server.log_text().splitlines()[-25:])
        log.error("[%s] FAILED: %s\n--- the end of ComfyUI's log (%s) ---\n%s", api, e, server.log_path, tail)
    finally:
        server.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m varedit_plugins.comfyui.check_real_host",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", default=os.environ.get("VAREDIT_COMFYUI", ""),
                    help="a ComfyUI checkout (default $VAREDIT_COMFYUI; none: skipped)")
    ap.add_argument("--python", default=os.environ.get("VAREDIT_COMFYUI_PYTHON", "") or sys.executable,
                    help="the interpreter ComfyUI runs with; varedit installed in it (default "
                         "$VAREDIT_COMFYUI_PYTHON, else this one)")
    ap.add_argument("--api", choices=("classic", "v3", "both"), default="both",
                    help="the registration: NODE_CLASS_MAPPINGS, comfy_entrypoint, or both (default)")
    ap.add_argument("--port", type=int, default=0, help="the port (default: a free one)")
    ap.add_argument("--start-timeout", type=float, default=300.0, help="seconds ComfyUI may take to start")
    ap.add_argument("--prompt-timeout", type=float, default=600.0, help="seconds one graph may take")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (ComfyUI's logs and outputs)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not a.comfyui:
        log.info("skipped: no ComfyUI checkout given (--comfyui PATH or VAREDIT_COMFYUI)")
        return 0
    comfyui = Path(a.comfyui).expanduser().resolve()
    if not (comfyui / "main.py").is_file() or not (comfyui / "comfy" / "cli_args.py").is_file():
        log.error("error: %s is not a ComfyUI checkout (no main.py, comfy/cli_args.py)", comfyui)
        return 2
    probe = subprocess.run([a.python, "-c", "import varedit_plugins.comfyui"], capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        log.error("error: %s cannot import the pack (%s): install varedit into ComfyUI's environment "
                  "(%s -m pip install -e \".[cpu]\")", a.python, last, a.python)
        return 2
    work = Path(tempfile.mkdtemp(prefix="varedit-comfyui-check-"))
    apis = ("classic", "v3") if a.api == "both" else (a.api,)
    results = [run_api(comfyui, a.python, api, work, a.port, a.start_timeout, a.prompt_timeout) for api in apis]
    ok = all(r["ok"] for r in results)
    if ok and len(results) == 2:
        x, y = (r["images"] for r in results)
        same = all(np.array_equal(p, q) for g in x for k in x[g] for p, q in zip(x[g][k], y[g][k]))
        results[1]["same_images_as_classic"] = same
        if not same:
            ok = False
            log.error("the classic and the v3 registration gave different images")
    summary = {"ok": ok, "comfyui": str(comfyui), "python": a.python,
               "results": [{k: v for k, v in r.items() if k != "images"} for r in results]}
    if a.json:
        a.json.write_text(json.dumps(summary, indent=2))
    log.info("%s: %s", "all checks passed" if ok else "FAILED",
             "; ".join(f"{r['api']}: {'ok' if r['ok'] else r.get('error')}" for r in results))
    if ok and not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log.info("work folder kept: %s", work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
