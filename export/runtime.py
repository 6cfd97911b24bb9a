"""Run an exported VAR (``export_onnx``'s folder) with numpy + onnxruntime only: no torch.

    from varedit_onnx.runtime import OnnxVAR
    m = OnnxVAR.from_dir("var_onnx", providers="auto", threads=4)
    images = m.generate([3, 5], seed=0, cfg=4.0, top_k=900, top_p=0.95)   # (2, 3, H, W) in [0, 1]

Tensor-level methods (arrays are numpy, batch first, any number N of images):

* ``tokenize(img)``: image (N,3,H,W) in [-1,1] -> latent f (N,Cvae,h,w), tokens per scale (N,pn^2);
* ``sample(labels, keep_maps, known_tokens, uniforms, f_known=, pool_w=, cfg=, guidance=, top_k=, top_p=)``:
  masked next-scale prediction -> SampleOutput(tokens per scale, f_hat (N,Cvae,h,w), logprob (N,));
* ``decode(f_hat)``: -> image (N,3,H,W) in [0,1];
* ``class_log_likelihood(f, keep_maps)``: log p(kept tokens | class) for every class (N, num_classes),
  the label inference behind ``inpaint(label="auto")``;
* ``generate(labels, seed, ...)``: sample with ``portable_uniforms(seed, N, patch_nums)`` and decode.

An export has a fixed batch B: fewer than B inputs are padded (with copies of the last one), more
are split into chunks of B.  The noise for N images is drawn for all N at once, so the images do not
depend on B, and equal torch's ``masked_sample(..., uniforms=portable_uniforms(seed, N, patch_nums))``.

``OnnxVAR`` is the facade; each concern lives in its own module, whose public names this one re-exports:
``manifest`` (the format, reading and checking ``manifest.json``, verifying the files, the graphs'
interfaces), ``session`` (onnxruntime sessions on a verified provider, opened per graph on first use),
``feeds`` (each call's inputs checked and fitted to the export's batch; guidance and top-p as inputs),
``scoring`` (label inference by the scorer graph or the sampler) and ``backend`` (the image-level tasks).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from varedit.editing.noise import portable_uniforms

from .backend import onnx_editor
from .errors import OnnxRuntimeError
from .feeds import Feeds, SamplerFeeds, guidance_t, guidance_weights, run_in_batches, top_p_threshold
from .manifest import (FORMAT, FORMAT_VERSION, GRAPHS, MANIFEST, OPTIONAL_GRAPHS, ExportInfo, check_manifest,
                       has_cell_logprob, has_scorer, read_manifest, sha256_file, verify_files)
from .scoring import prefer_scorer, score_with_sampler, score_with_scorer
from .session import GraphSessions, OrtSession, check_provider_choice

log = logging.getLogger(__name__)


class SampleOutput(NamedTuple):
    tokens: list[np.ndarray]   # per scale (N, pn^2) int64, forced cells included
    f_hat: np.ndarray          # (N, Cvae, h, w) float32: decode it for the image
    logprob: np.ndarray        # (N,) mean log-likelihood of the sampled (not forced) tokens


class OnnxVAR:
    """An exported VAR + VQVAE on onnxruntime.  Build it with :meth:`from_dir`.

    Sessions are opened on first use (a generation never loads the tokenizer) and reused.
    """

    def __init__(self, model_dir: str | Path, manifest: dict[str, Any] | None = None, *, providers: str = "auto",
                 threads: int | None = None, inter_op_threads: int | None = None, verify: bool = True,
                 cuda_graph: bool | None = None, device_id: int = 0, spinning: bool | None = None):
        check_provider_choice(providers)  # 'cuda' without CUDA fails here, not at the first generation
        self.dir = Path(model_dir)
        self.manifest = manifest if manifest is not None else read_manifest(self.dir)
        if verify:
            verify_files(self.dir, self.manifest, checksums=True)
        info = ExportInfo.from_manifest(self.manifest)
        self.info = info
        self.name: str = info.name
        self.image_size: int = info.image_size
        self.patch_nums: tuple[int, ...] = info.patch_nums
        self.latent_size: int = info.latent_size
        self.vocab_size: int = info.vocab_size
        self.Cvae: int = info.Cvae
        self.num_classes: int = info.num_classes
        self.class_names: list[list[str]] | None = info.class_names
        self.batch: int = info.batch
        self.precision: str = info.precision
        self._feeds = Feeds(info)
        self._sessions = GraphSessions(self.dir, self.manifest, providers=providers, threads=threads,
                                       inter_op_threads=inter_op_threads, cuda_graph=cuda_graph,
                                       device_id=device_id, spinning=spinning)

    @classmethod
    def from_dir(cls, model_dir: str | Path, *, providers: str = "auto", threads: int | None = None,
                 inter_op_threads: int | None = None, verify: bool = True, cuda_graph: bool | None = None,
                 device_id: int = 0, spinning: bool | None = None) -> "OnnxVAR":
        """Open an export folder.

        Args:
            providers: "auto" (CUDA when it can run, else CPU with a warning), "cuda" (or an error), "cpu".
            threads, inter_op_threads: onnxruntime intra- / inter-op threads.
            verify: check every file's sha256 against the manifest (reads the files once).
            cuda_graph: capture runs as CUDA graphs on CUDA (default on).
            device_id: the CUDA device.
            spinning: onnxruntime's busy-waiting worker threads (None: its default, on); turn it off when
                the process also computes with torch.
        """
        return cls(model_dir, providers=providers, threads=threads, inter_op_threads=inter_op_threads,
                   verify=verify, cuda_graph=cuda_graph, device_id=device_id, spinning=spinning)

    # -- sessions ------------------------------------------------------------------------------
    def session(self, graph: str) -> OrtSession:
        """The session of ``graph`` (opened, and checked against the manifest, on first use)."""
        return self._sessions.get(graph)

    def load(self, graphs: Sequence[str] = GRAPHS) -> "OnnxVAR":
        """Open the sessions now rather than on first use."""
        for g in graphs:
            self.session(g)
        return self

    @property
    def provider(self) -> str | None:
        """The active provider of the open sessions (None before the first one is opened)."""
        return self._sessions.provider

    @property
    def has_cell_logprob(self) -> bool:
        """Whether the sampler graph returns per-cell log-probabilities (exports made before label
        inference do not, and cannot infer labels)."""
        return has_cell_logprob(self.manifest)

    @property
    def has_scorer(self) -> bool:
        """Whether the export has the scorer graph (label inference in one teacher-forced pass per chunk of
        classes; exports made before it score with the sampler, one run per class)."""
        return has_scorer(self.manifest)

    # -- tensor-level API ----------------------------------------------------------------------
    def tokenize(self, img: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Image (N,3,H,W) float in [-1,1] -> (latent f (N,Cvae,h,w) float32, tokens per scale (N,pn^2) int64)."""
        a = self._feeds.image(img)
        o = run_in_batches(self.session("tokenizer"), {"image": a}, self.batch)
        return o["f"], [o[f"tokens_{k}"] for k in range(len(self.patch_nums))]

    def sample(self, labels: int | Sequence[int] | np.ndarray, keep_maps: Sequence[Any] | None = None,
               known_tokens: Sequence[Any] | None = None, uniforms: Sequence[Any] | None = None, *,
               f_known: np.ndarray | None = None, pool_w: Sequence[Any | None] | None = None, cfg: float = 4.0,
               guidance: str | Sequence[float] = "linear", top_k: int = 900, top_p: float = 0.95,
               seed: int | None = None) -> SampleOutput:
        """Masked next-scale prediction, as torch's ``masked_sample(..., uniforms=...)``.

        Args:
            labels: N class indices (``num_classes`` = unconditional).
            keep_maps: None (generate), or per scale bool (N or 1, pn^2): True = forced cell.
            known_tokens: open loop: per scale int (N or 1, pn^2), the tokens of the kept cells.
            uniforms: per scale (N, pn^2) float32 in [0, 1); None: ``portable_uniforms(seed, N, patch_nums)``.
            f_known: closed loop: the real latent (N or 1, Cvae, h, w) (``tokenize``'s f).
            pool_w: closed loop: per scale (SN, or SN - 1 as the last scale never pools) weights
                (N or 1, 1, h, w) of the latent cells to pool (None entries = all cells), e.g.
                ``varedit.editing.masks.pool_weights``.
            cfg, guidance: guidance scale and schedule ("linear", "constant", or SN weights t).
            top_k, top_p: filters (top_k 0 / top_p 0 = off; top_k 1 = greedy).

        Returns :class:`SampleOutput` (tokens per scale (N, pn^2) int64, f_hat (N, Cvae, h, w) float32,
        logprob (N,) float32 as ``masked_sample``'s ``logprob_B``).
        """
        o = self._run_sampler(self._feeds.sampler(labels, keep_maps, known_tokens, uniforms, f_known=f_known,
                                                  pool_w=pool_w, cfg=cfg, guidance=guidance, top_k=top_k,
                                                  top_p=top_p, seed=seed))
        return SampleOutput([o[f"tokens_{k}"] for k in range(len(self.patch_nums))], o["f_hat"], o["logprob"])

    def _run_sampler(self, feeds: SamplerFeeds) -> dict[str, np.ndarray]:
        """The sampler graph's outputs (N rows each) for checked feeds."""
        return run_in_batches(self.session("sampler"), feeds.batched, self.batch, feeds.fixed)

    def class_log_likelihood(self, f: np.ndarray, keep_maps: Sequence[Any],
                             tokens: Sequence[Any] | None = None, use_scorer: bool | None = None) -> np.ndarray:
        """log p(kept tokens | class) for every class, (N, num_classes), as torch's
        ``varedit.editing.sampler.class_log_likelihood`` on the tokenisation of ``f`` (the tokenizer's
        latent), unguided, the cells' log-probabilities summed over ``keep_maps`` (per scale bool (N or
        1, pn^2)).  With the scorer graph and ``tokens`` (the tokenizer's, per scale (N, pn^2)): every
        (image, class) pair teacher-forced in runs of ``rows``; otherwise one sampler run per class with
        every cell forced (closed loop, plain pooling = the tokeniser's tokens). Both give the same numbers.

        ``use_scorer`` None (auto): :func:`varedit_onnx.scoring.prefer_scorer` (the scorer once a session
        is open or when the sampler would need many runs; a cold call with few classes: the sampler)."""
        fk = self._feeds.latent("f", f, np.shape(f)[0] if np.ndim(f) == 4 else 1)
        N, SN = fk.shape[0], len(self.patch_nums)
        keep = self._feeds.per_scale("keep_maps", keep_maps, N, np.bool_)
        if use_scorer is None:
            use_scorer = prefer_scorer(self._sessions, N, self.batch, self.num_classes)
        if tokens is not None and self.has_scorer and use_scorer:
            toks = self._feeds.tokens("tokens", tokens, N)
            return score_with_scorer(self.session("scorer"), int(self.manifest["graphs"]["scorer"]["rows"]), toks,
                                     keep, self.num_classes)
        if not self.has_cell_logprob:
            raise OnnxRuntimeError("this export has no cell_logprob outputs (made before label inference): "
                                   "export the model again, or give a class")
        every = [np.ones_like(k) for k in keep]
        zeros = [np.zeros(k.shape, np.float32) for k in keep]  # no cell is sampled

        def cells(c: int) -> list[np.ndarray]:
            o = self._run_sampler(self._feeds.sampler(np.full(N, c), every, uniforms=zeros, f_known=fk, cfg=0.0,
                                                      top_k=0, top_p=0.0))
            return [o[f"cell_logprob_{k}"] for k in range(SN)]

        return score_with_sampler(cells, keep, self.num_classes)

    def editor(self) -> Any:
        """The image-level tasks (varedit.tasks.Editor) on this model: inpaint, outpaint, edit, upscale."""
        return onnx_editor(self)

    def decode(self, f_hat: np.ndarray) -> np.ndarray:
        """f_hat (N,Cvae,h,w) -> image (N,3,H,W) float32 in [0, 1]."""
        a = self._feeds.latents("f_hat", f_hat)
        return run_in_batches(self.session("decoder"), {"f_hat": a}, self.batch)["image"]

    def generate(self, labels: int | Sequence[int] | np.ndarray, seed: int, *, cfg: float = 4.0,
                 guidance: str | Sequence[float] = "linear", top_k: int = 900, top_p: float = 0.95) -> np.ndarray:
        """Class-conditional generation: images (N,3,H,W) float32 in [0, 1]; the same images as torch's
        ``masked_sample(var, vae, labels, uniforms=portable_uniforms(seed, N, patch_nums), ...)``."""
        out = self.sample(labels, seed=seed, cfg=cfg, guidance=guidance, top_k=top_k, top_p=top_p)
        return self.decode(out.f_hat)


__all__ = ["OnnxVAR", "SampleOutput", "OnnxRuntimeError", "read_manifest", "verify_files", "check_manifest",
           "guidance_weights", "guidance_t", "top_p_threshold", "sha256_file", "portable_uniforms", "FORMAT",
           "FORMAT_VERSION", "MANIFEST", "GRAPHS", "OPTIONAL_GRAPHS"]
