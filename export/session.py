"""onnxruntime sessions with an explicit, verified execution provider (numpy + onnxruntime only).

onnxruntime quietly runs on the CPU when the CUDA provider is asked for but cannot load (missing or
mismatched CUDA / cuDNN libraries): one log line, no exception.  That is the most reported problem of
tools built on it (rembg's users see "slow" rather than an error).  Here:

* ``providers="cuda"`` fails at once with a one-line :class:`OnnxRuntimeError` saying what to do: the
  session option ``session.disable_cpu_ep_fallback = 1`` makes onnxruntime refuse to fall back, and
  ``get_providers()[0]`` is checked as well;
* ``providers="auto"`` tries CUDA the same strict way and, if it cannot run, says so in a warning
  before using the CPU;
* ``providers="cpu"`` is the CPU provider.

On CUDA the inputs and outputs go through IOBinding, and by default the whole run is captured as one
CUDA graph (``enable_cuda_graph``): the exported graphs have fixed shapes for exactly this reason.
Sessions are created once and reused (:class:`GraphSessions`: an export's, one per graph, each checked
against the manifest as it opens); a session with a CUDA graph replays it with its bound buffers, so
runs on one session are serialised by a lock.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from .errors import OnnxRuntimeError
from .manifest import check_interface, graph_path

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PROVIDER_CHOICES = ("auto", "cuda", "cpu")

_NP_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(double)": np.float64}


def _first_line(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return s[:300] if s else type(e).__name__


class OrtSession:
    """One onnxruntime session on a verified execution provider.

    Args:
        path: the ``.onnx`` file.
        providers: ``"auto"`` (CUDA when it can actually run, else CPU with a warning), ``"cuda"`` (CUDA or
            an error, never a silent CPU run) or ``"cpu"``.
        threads: intra-op threads (None: onnxruntime's default, one per physical core).
        inter_op_threads: inter-op threads; above 1 the session runs independent nodes in parallel.
        cuda_graph: capture the run as a CUDA graph (default: on, with CUDA).
        device_id: the CUDA device.
        spinning: let idle worker threads busy-wait for the next op (onnxruntime's default: lowest
            latency); False when the process also computes with torch or other thread pools.
    """

    def __init__(self, path: str | Path, *, providers: str = "auto", threads: int | None = None,
                 inter_op_threads: int | None = None, cuda_graph: bool | None = None, device_id: int = 0,
                 spinning: bool | None = None):
        self.path = Path(path)
        self._spinning = spinning
        self.name = self.path.name
        check_provider_choice(providers)
        self.device_id = int(device_id)
        self._threads, self._inter = threads, inter_op_threads
        self._lock = threading.Lock()
        self._bound: tuple[Any, dict[str, Any], dict[str, Any]] | None = None
        self.cuda_graph = False
        if providers == "cpu":
            self.sess = self._open_cpu()
        elif providers == "cuda":
            self.sess = self._open_cuda(cuda_graph)
        else:
            self.sess = self._open_auto(cuda_graph)
        self.provider: str = self.sess.get_providers()[0]
        self.inputs = {i.name: i for i in self.sess.get_inputs()}
        self.output_names = [o.name for o in self.sess.get_outputs()]
        log.info("%s: running on %s%s", self.name, self.provider, " with a CUDA graph" if self.cuda_graph else "")

    # -- opening -------------------------------------------------------------------------------
    def _options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # provider problems are reported by this class, as exceptions or warnings
        if self._threads:
            so.intra_op_num_threads = int(self._threads)
        if self._spinning is not None:
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self._spinning else "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "1" if self._spinning else "0")
        if self._inter:
            so.inter_op_num_threads = int(self._inter)
            if self._inter > 1:
                so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        return so

    def _open_cpu(self) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(str(self.path), self._options(), providers=[CPU])
        except Exception as e:  # noqa: BLE001 - one clear error for a file onnxruntime cannot load
            raise OnnxRuntimeError(f"onnxruntime cannot load {self.name}: {_first_line(e)}; re-export the model "
                                   f"(onnxruntime {ort.__version__})") from e

    def _open_cuda(self, cuda_graph: bool | None) -> ort.InferenceSession:
        check_provider_choice("cuda")
        so = self._options()
        # refuse the silent CPU fallback: session creation fails if CUDA cannot take the graph
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        use_graph = True if cuda_graph is None else bool(cuda_graph)
        opts = {"device_id": str(self.device_id)}
        if use_graph:
            opts["enable_cuda_graph"] = "1"
        try:
            sess = ort.InferenceSession(str(self.path), so, providers=[(CUDA, opts)])
        except Exception as e:  # noqa: BLE001
            raise OnnxRuntimeError(
                f"the CUDA provider cannot run {self.name}: {_first_line(e)}; check that the CUDA and cuDNN "
                f"libraries match onnxruntime-gpu {ort.__version__} (pip install 'onnxruntime-gpu[cuda,cudnn]'), "
                f"or use providers='cpu'") from e
        active = sess.get_providers()
        if not active or active[0] != CUDA:
            raise OnnxRuntimeError(f"the CUDA provider did not take {self.name} (active: {active}); "
                                   f"use providers='cpu' or fix the CUDA installation")
        self.cuda_graph = use_graph
        return sess

    def _open_auto(self, cuda_graph: bool | None) -> ort.InferenceSession:
        if CUDA in ort.get_available_providers():
            try:
                return self._open_cuda(cuda_graph)
            except OnnxRuntimeError as e:
                log.warning("%s; running %s on the CPU instead", e, self.name)
        return self._open_cpu()

    # -- running -------------------------------------------------------------------------------
    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Every input present, with the graph's shape and dtype (a safety net below OnnxVAR's checks)."""
        missing = [n for n in self.inputs if n not in feeds]
        extra = [n for n in feeds if n not in self.inputs]
        if missing or extra:
            raise OnnxRuntimeError(f"{self.name}: inputs missing {missing} / unknown {extra}")
        for n, a in feeds.items():
            spec = self.inputs[n]
            want = _NP_DTYPES.get(spec.type)
            if want is not None and a.dtype != want:
                raise OnnxRuntimeError(f"{self.name}: input {n} is {a.dtype}, the graph takes {np.dtype(want)}")
            if list(a.shape) != list(spec.shape):
                raise OnnxRuntimeError(f"{self.name}: input {n} has shape {list(a.shape)}, the graph takes "
                                       f"{list(spec.shape)}")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # np.require keeps 0-d scalars 0-d (np.ascontiguousarray would make them 1-d)
        feeds = {n: np.require(a, requirements="C") for n, a in feeds.items()}
        self.check_feeds(feeds)
        try:
            if self.provider != CUDA:
                return dict(zip(self.output_names, self.sess.run(self.output_names, feeds)))
            if not self.cuda_graph:
                io = self.sess.io_binding()
                for n, a in feeds.items():
                    io.bind_cpu_input(n, a)
                for n in self.output_names:
                    io.bind_output(n, "cuda", self.device_id)
                self.sess.run_with_iobinding(io)
                return dict(zip(self.output_names, io.copy_outputs_to_cpu()))
            with self._lock:
                return self._run_graph(feeds)
        except OnnxRuntimeError:
            raise
        except Exception as e:  # noqa: BLE001
            hint = " (try cuda_graph=False)" if self.cuda_graph else ""
            raise OnnxRuntimeError(f"{self.name} failed on {self.provider}: {_first_line(e)}{hint}") from e

    def _run_graph(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """CUDA graph replay: inputs and outputs live at fixed device addresses, bound once."""
        if self._bound is None:
            io = self.sess.io_binding()
            ins = {n: ort.OrtValue.ortvalue_from_numpy(a, "cuda", self.device_id) for n, a in feeds.items()}
            outs = {}
            for o in self.sess.get_outputs():
                outs[o.name] = ort.OrtValue.ortvalue_from_shape_and_type(
                    [int(d) for d in o.shape], _NP_DTYPES[o.type], "cuda", self.device_id)
            for n, v in ins.items():
                io.bind_ortvalue_input(n, v)
            for n, v in outs.items():
                io.bind_ortvalue_output(n, v)
            self._bound = (io, ins, outs)
        else:
            io, ins, outs = self._bound
            for n, a in feeds.items():
                ins[n].update_inplace(a)
        self.sess.run_with_iobinding(io)
        return {n: outs[n].numpy() for n in self.output_names}


class GraphSessions:
    """An export's sessions, one per graph, opened on first use (a generation never loads the tokenizer)
    with the same options, each checked against the manifest's interface when it opens, then reused.

    ``graph in sessions`` says whether a graph's session is open (without opening it)."""

    def __init__(self, model_dir: str | Path, manifest: dict[str, Any], *, providers: str = "auto",
                 threads: int | None = None, inter_op_threads: int | None = None, cuda_graph: bool | None = None,
                 device_id: int = 0, spinning: bool | None = None):
        self.dir = Path(model_dir)
        self.manifest = manifest
        self._opts: dict[str, Any] = dict(providers=providers, threads=threads, inter_op_threads=inter_op_threads,
                                          cuda_graph=cuda_graph, device_id=device_id, spinning=spinning)
        self._open: dict[str, OrtSession] = {}

    def get(self, graph: str) -> OrtSession:
        """The session of ``graph`` (opened and checked now if it is not open yet)."""
        if graph not in self._open:
            s = OrtSession(graph_path(self.dir, self.manifest, graph), **self._opts)
            check_interface(self.manifest, graph, {n: i.shape for n, i in s.inputs.items()})
            self._open[graph] = s
        return self._open[graph]

    def __contains__(self, graph: object) -> bool:
        return graph in self._open

    def __iter__(self) -> Iterator[str]:
        return iter(self._open)

    def __len__(self) -> int:
        return len(self._open)

    @property
    def provider(self) -> str | None:
        """The active provider of the open sessions (None before the first one is opened)."""
        return next(iter(self._open.values())).provider if self._open else None


def check_provider_choice(providers: str) -> None:
    """Fail early (before any session is opened) on an unknown choice or on 'cuda' without a CUDA provider."""
    if providers not in PROVIDER_CHOICES:
        raise OnnxRuntimeError(f"providers must be one of {', '.join(PROVIDER_CHOICES)}, not {providers!r}")
    avail = ort.get_available_providers()
    if providers == "cuda" and CUDA not in avail:
        raise OnnxRuntimeError(
            f"providers='cuda' asked, but this onnxruntime {ort.__version__} has no CUDA provider "
            f"(available: {', '.join(avail)}): install onnxruntime-gpu in place of onnxruntime "
            f"(pip install 'varedit[gpu]'), or use providers='cpu'")


def available_providers() -> Sequence[str]:
    return ort.get_available_providers()


__all__ = ["OrtSession", "GraphSessions", "OnnxRuntimeError", "PROVIDER_CHOICES", "available_providers",
           "check_provider_choice", "CUDA", "CPU"]
