"""The quality report of a model on the synthetic domain (``varedit eval``).

* class-conditional samples: recognition rate by the shape classifier, Fréchet distance to real images;
* inpainting (centre box, random strokes, half-image outpainting): Fréchet distance of filled images to
  real ones in the classifier's features (an FID for this domain), hole PSNR (rewards blur: read it
  beside the distance), class kept, and for varedit's modes the known-region drift (decoded canvas vs
  the VQVAE reconstruction of the input, outside the grown hole, before paste-back);
  baselines: OpenCV Telea and Navier-Stokes, a push-pull fill; anchors: originals, VQVAE reconstruction;
  the official token plan with harmonize, reading the hole and with its content unknown (grey); ablations of the
  default mode (no harmonize, no prefill, Navier-Stokes or push-pull prefill, closed loop, 1x1 token
  not forced, coverage 1, grown hole, no inferred label, generation cfg); every row but the unconditional
  one is guided by the label inferred with the default plan (as the Editor infers it);
* upscaling 2x from half resolution: varedit vs Lanczos (PSNR, distance) and per-scale token agreement
  between an image and its down-up copy (which scales the low-resolution input can be trusted for).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from .. import processing as P
from ..data.synthetic import SyntheticShapes
from ..editing.plan import make_plan
from ..requests import INPAINT_PREFILL, OUTPAINT_PREFILL
from .judge import paired_distance
from .metrics import frechet_distance, kid, psnr, ssim

log = logging.getLogger(__name__)

MASK_KINDS = ("box", "strokes", "outpaint")
# the default mode's prefill per mask kind is the one its task uses (inpaint, inpaint, outpaint)
TASK_PREFILL = {"box": INPAINT_PREFILL, "strokes": INPAINT_PREFILL, "outpaint": OUTPAINT_PREFILL}


def eval_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    if kind == "box":  # centre box, half the side (a quarter of the area), like the 128-in-256 benchmark
        a, b = size // 4, 3 * size // 4
        m[a:b, a:b] = 1
    elif kind == "strokes":  # free-form brush strokes
        for _ in range(rng.integers(3, 6)):
            x, y = rng.integers(0, size, 2)
            for _ in range(rng.integers(2, 5)):
                ang, ln = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.35) * size
                x2 = int(np.clip(x + ln * np.cos(ang), 0, size - 1))
                y2 = int(np.clip(y + ln * np.sin(ang), 0, size - 1))
                cv2.line(m, (int(x), int(y)), (x2, y2), 1, int(rng.integers(size // 16, size // 8)))
                x, y = x2, y2
    elif kind == "outpaint":  # the right half is new
        m[:, size // 2:] = 1
    else:
        raise ValueError(kind)
    return m.astype(bool)


@dataclass
class Variant:
    name: str
    plan_kw: dict[str, Any]
    harmonize: bool = True
    grey_hole: bool = False   # the hole's pixels are replaced by grey before planning (content unknown)
    label: str = "auto"       # auto: the class inferred from the known pixels (the default); none: the null
    #                           class; true: the image's real class (an oracle: a diagnostic, not an option)
    cfg: float | None = None  # guidance; None: the editing default (EDIT_CFG)
    feather: float = 1.0      # paste-back feather, in multiples of the default (Editor.feather_px)
    candidates: int = 1       # samples per image; with rank the most likely one, else the first
    rank: bool = True
    group: str = "ablation"   # "core" rows are always measured; "defaults" re-measure a default; "extra" the rest
    kinds: tuple[str, ...] = ("box", "strokes", "outpaint")  # the mask kinds it is measured on

    def sampling_key(self, kw: dict[str, Any], cfg: float) -> tuple[Any, ...]:
        """What the sampled tokens depend on (``cfg``: the effective guidance): variants that differ only
        after decoding share the samples."""
        return (tuple(sorted(kw.items())), self.grey_hole, self.label, cfg, self.candidates)

    def key(self, kw: dict[str, Any], cfg: float) -> tuple[Any, ...]:
        return (*self.sampling_key(kw, cfg), self.harmonize, self.feather, self.rank if self.candidates > 1 else True)

    def settings(self, prefill: str, edit_cfg: float) -> tuple[dict[str, Any], float]:
        """The plan keywords and the guidance of this row: the default mode fills the hole with ``prefill``
        (its task's) unless the row sets its own; ``edit_cfg`` (the editing default) unless the row sets its own."""
        kw = {"prefill": prefill, **self.plan_kw} if self.plan_kw.get("mode") == "default" else self.plan_kw
        return kw, edit_cfg if self.cfg is None else self.cfg


VARIANTS = [
    # every row is guided by the same inferred label (the default "auto") unless it says otherwise
    Variant("default", dict(mode="default"), group="core"),
    Variant("official", dict(mode="official"), harmonize=False, group="extra"),  # the notebook's tokens + paste-back
    # the official token plan with varedit's post-processing (harmonize), reading the hole (its leak)
    # and with the hole's content unknown (grey): the second isolates what the leak is worth
    Variant("official-harmonized", dict(mode="official"), group="extra"),
    Variant("official-grey-hole", dict(mode="official"), grey_hole=True, group="extra"),
    # each default, switched off or set to its alternatives
    Variant("default-no-harmonize", dict(mode="default"), harmonize=False, group="defaults"),
    Variant("default-ns-prefill", dict(mode="default", prefill="ns"), group="defaults"),  # one of these three
    Variant("default-telea-prefill", dict(mode="default", prefill="telea"), group="defaults"),  # is the default
    Variant("default-pushpull-prefill", dict(mode="default", prefill="pushpull"), group="defaults"),
    Variant("default-closed-loop", dict(mode="default", closed_loop=True), group="defaults"),
    # coverage decides cells cut by the hole: the box's and the outpainted half's edges lie on the latent
    # grid, so it matters for strokes (and the box's coarse scales)
    Variant("default-coverage-0.5", dict(mode="default", coverage=0.5), group="defaults", kinds=("strokes",)),
    Variant("default-coverage-1", dict(mode="default", coverage=1.0), group="defaults", kinds=("box", "strokes")),
    Variant("default-unconditional", dict(mode="default"), label="none", group="defaults"),
    Variant("default-cfg-1.5", dict(mode="default"), cfg=1.5, group="defaults"),
    Variant("default-cfg-5", dict(mode="default"), cfg=5.0, group="defaults"),
    # harmonize makes the decoded canvas equal the input on every known pixel, so the feather changes
    # nothing while it is on: its effect is measured with harmonize off
    Variant("default-feather-0", dict(mode="default"), feather=0.0, group="defaults"),
    Variant("no-harmonize-feather-0", dict(mode="default"), harmonize=False, feather=0.0, group="defaults"),
    Variant("no-harmonize-feather-2x", dict(mode="default"), harmonize=False, feather=2.0, group="defaults"),
    # four candidates cost four fills: measured on the centre box only
    Variant("default-n4-first", dict(mode="default"), candidates=4, rank=False, group="defaults", kinds=("box",)),
    Variant("default-n4-ranked", dict(mode="default"), candidates=4, rank=True, group="defaults", kinds=("box",)),
    # diagnostics: what the fill would gain from the real class (read from the hole's image: an oracle)
    Variant("default-true-class", dict(mode="default"), label="true", group="defaults"),
    # ablations outside the defaults: each no better than the default (docs/quality.md, Why each default)
    Variant("default-no-prefill", dict(mode="default", prefill="none"), group="extra"),
    Variant("default-free-1x1", dict(mode="default", coarse_tokens=0), group="extra"),
    Variant("default-grow-1", dict(mode="default", grow_tokens=1), group="extra"),
]
ABLATIONS = ("none", "defaults", "all")


def select_variants(ablations: str | bool) -> list[Variant]:
    """``none``: the default row; ``defaults``: plus every default re-measured; ``all``: plus the official
    mode and the older ablations."""
    level = ("all" if ablations else "none") if isinstance(ablations, bool) else ablations
    if level not in ABLATIONS:
        raise ValueError(f"ablations must be one of {', '.join(ABLATIONS)}, got {level!r}")
    groups = {"none": {"core"}, "defaults": {"core", "defaults"}, "all": {"core", "defaults", "extra"}}[level]
    return [v for v in VARIANTS if v.group in groups]


def row_plan(variants: Sequence[Variant], kind: str, edit_cfg: float, *, prefill: str | None = None
             ) -> list[tuple[Variant, dict[str, Any], float, str | None]]:
    """The rows of one mask kind (the variants measured on ``kind``), in order: (variant, plan keywords,
    guidance, the earlier row it repeats).  The default mode's prefill is ``prefill`` (default: the one
    ``kind``'s task uses).  A row whose settings an earlier row already has (e.g. the prefill row that is
    this kind's default) repeats that row's fill instead of sampling it again."""
    prefill = TASK_PREFILL[kind] if prefill is None else prefill
    measured: dict[tuple[Any, ...], str] = {}  # a variant's settings -> the row that measured them
    rows = []
    for v in variants:
        if kind not in v.kinds:
            continue
        kw, cfg = v.settings(prefill, edit_cfg)
        key = v.key(kw, cfg)
        rows.append((v, kw, cfg, measured.get(key)))
        measured.setdefault(key, v.name)
    return rows


def _u8(x01: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x01 * 255 + 0.5), 0, 255).astype(np.uint8)


class Scorer:
    """Scores a list of filled images against the originals with both judges (see :func:`run_eval`)."""

    def __init__(self, classifier: Any, judge: Any, probe: Any, imgs: list[np.ndarray], labels: np.ndarray,
                 f_ref: np.ndarray, j_ref: np.ndarray | None, j_orig: Any, kid_groups: int):
        from .classifier import features, predict
        self._features, self._predict = features, predict
        self.classifier, self.judge, self.probe = classifier, judge, probe
        self.imgs, self.labels, self.f_ref, self.j_ref, self.j_orig = imgs, labels, f_ref, j_ref, j_orig
        self.kid_groups = kid_groups

    def own_fd(self, xs: list[np.ndarray]) -> float:
        return frechet_distance(self._features(self.classifier, xs), self.f_ref)

    def judge_distribution(self, xs: list[np.ndarray], maps: bool = False) -> tuple[dict[str, Any], Any]:
        jf = self.judge.features(xs, maps=maps)
        k, se, loo = kid(jf.pooled, self.j_ref, groups=self.kid_groups)
        r: dict[str, Any] = {"kid": k, "kid_se": se, "kid_loo": loo}
        # a Fréchet distance needs more samples than feature dimensions, else its covariance is singular
        r["judge_fd"] = frechet_distance(jf.pooled, self.j_ref) if len(xs) > jf.pooled.shape[1] else None
        return r, jf

    def __call__(self, filled: list[np.ndarray], masks: list[np.ndarray]) -> dict[str, Any]:
        imgs = self.imgs
        own_ok = self._predict(self.classifier, filled) == self.labels
        row: dict[str, Any] = {
            "fd": self.own_fd(filled),
            "hole_psnr": float(np.mean([psnr(f, o, m) for f, o, m in zip(filled, imgs, masks)])),
            "hole_ssim": float(np.mean([ssim(f, o, m) for f, o, m in zip(filled, imgs, masks)])),
            # how far the hole's mean colour is from the original's (0-255 levels, mean over channels)
            "hole_colour": float(np.mean([np.abs(f[m].astype(float).mean(0) - o[m].astype(float).mean(0)).mean()
                                          for f, o, m in zip(filled, imgs, masks)])),
            "class_kept": float(own_ok.mean())}
        if self.judge is not None:
            r, jf = self.judge_distribution(filled, maps=True)
            ok = self.probe.predict(jf.pooled) == self.labels
            pd = paired_distance(jf, self.j_orig)
            row.update(r, judge_class_kept=float(ok.mean()), judge_class_ok=ok.astype(int).tolist(),
                       paired=float(pd.mean()), paired_i=[round(float(x), 5) for x in pd])
        return row


def run_eval(pipe: Any, *, classifier: Any, judge: Any = None, n: int = 200, n_ref: int = 1000,
             n_gen_per_class: int = 20, seed: int = 20_000, batch: int = 20, ablations: str | bool = "all",
             masks: Sequence[str] = MASK_KINDS, generation: bool = True, n_upscale: int = 100,
             upscale_keeps: tuple[int, ...] | None = None, n_probe: int = 1000, n_strategy: int = 0,
             kid_groups: int = 8, progress: Callable[[str], None] | None = None,
             checkpoint: Callable[[dict[str, Any]], None] | None = None, n_edit: int = 0) -> dict[str, Any]:
    """The report.  ``judge``: an independent judge (:class:`varedit.evaluation.judge.EfficientNetJudge`)
    or None (the project's own classifier only).  ``n_upscale=0`` skips upscaling, ``generation=False``
    class-conditional generation; ``n_strategy`` > 0 measures the outpaint size strategies on that many
    images (a 2x extension, see :func:`strategy_eval`).  ``checkpoint(res)`` is called with the report so
    far after every mask kind (a long run keeps what it measured)."""
    from .classifier import features, predict
    t0 = time.time()
    S = pipe.image_size
    backend = pipe.editor.backend
    say = progress or (lambda s: log.info(s))
    for k in masks:
        if k not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {k!r}; choose from {', '.join(MASK_KINDS)}")
    ref = SyntheticShapes(n_ref, seed=seed + 1, size=S)
    test = SyntheticShapes(n, seed=seed, size=S)
    ref_imgs = [ref[i][0] for i in range(n_ref)]
    imgs = [test[i][0] for i in range(n)]
    labels = np.array([test[i][1] for i in range(n)])
    f_ref = features(classifier, ref_imgs)
    res: dict[str, Any] = {"n": n, "n_ref": n_ref, "seed": seed, "model": pipe.name, "image_size": S}
    probe, j_ref, j_orig = None, None, None
    if judge is not None:
        from .judge import describe, train_probe
        pr = SyntheticShapes(n_probe, seed=seed + 2, size=S)  # real shapes, disjoint from test and reference
        probe = train_probe(judge, [pr[i][0] for i in range(n_probe)], [pr[i][1] for i in range(n_probe)],
                            backend.num_classes)
        j_ref = judge.features(ref_imgs).pooled
        j_orig = judge.features(imgs, maps=True)
        res["judge"] = {**describe(), "probe_train_images": n_probe, "kid_groups": kid_groups,
                        "probe_acc_originals": float((probe.predict(j_orig.pooled) == labels).mean())}
        say(f"judge {res['judge']}")
    scorer = Scorer(classifier, judge, probe, imgs, labels, f_ref, j_ref, j_orig, kid_groups)

    # anchors
    recon = []
    for s in range(0, n, batch):
        x = np.stack(imgs[s:s + batch]).astype(np.float32) / 255
        recon.extend(_u8(_reconstruct(backend, x, pipe.defaults)))
    res["anchors"] = {"originals_fd": scorer.own_fd(imgs), "vqvae_recon_fd": scorer.own_fd(recon),
                      "vqvae_recon_psnr": float(np.mean([psnr(a, b) for a, b in zip(recon, imgs)])),
                      "classifier_acc_originals": float((predict(classifier, imgs) == labels).mean())}
    if judge is not None:
        for name, xs in (("originals", imgs), ("vqvae_recon", recon)):
            r, jf = scorer.judge_distribution(xs)
            res["anchors"][f"{name}_kid"], res["anchors"][f"{name}_kid_se"] = r["kid"], r["kid_se"]
            res["anchors"][f"{name}_judge_class_kept"] = float((probe.predict(jf.pooled) == labels).mean())
    say(f"anchors {res['anchors']}")

    # class-conditional generation
    if generation:
        gen, gen_lab = [], []
        for c in range(backend.num_classes):
            r = pipe.generate(c, n=n_gen_per_class, seed=seed + c, batch_size=batch)
            gen.extend(np.asarray(im) for im in r.images)
            gen_lab.extend([c] * n_gen_per_class)
        res["generation"] = {"recognised": float((predict(classifier, gen) == np.array(gen_lab)).mean()),
                             "fd": scorer.own_fd(gen), "per_class": n_gen_per_class, **pipe.defaults.as_dict()}
        say(f"generation {res['generation']}")
    if n_edit > 0:  # class edits: the asked class inside the box, read by the own classifier and the judge
        from ..options import FILL_COVERAGE as COVERAGE
        from .edits import class_edit_eval
        variants: dict[str, dict[str, Any]] = {"default": {}}
        if any(v.group != "core" for v in select_variants(ablations)):  # the default's coverage vs the fills' rule
            variants["fill-coverage"] = {"coverage": COVERAGE}
        res["class_edit"] = class_edit_eval(pipe, classifier, n_edit, seed=seed, data_seed=seed + 4, say=say,
                                            judge=judge, probe=probe, j_ref=j_ref, variants=variants,
                                            kid_groups=kid_groups)

    # inpainting
    res["editing_sampling"] = pipe.editor.edit_defaults.as_dict()
    rng = np.random.default_rng(seed)
    all_masks = {k: [eval_mask(k, S, rng) for _ in range(n)] for k in MASK_KINDS}  # same masks whatever is run
    res["inpainting"] = {}
    feather_px = pipe.editor.feather_px((S, S))
    for kind in masks:
        rows: dict[str, dict[str, Any]] = {}
        ms = all_masks[kind]

        def score(name: str, filled: list[np.ndarray], **extra: float) -> None:
            rows[name] = {**scorer(filled, ms), **extra}
            say(f"{kind} {name} " + ", ".join(f"{k} {v:.4g}" for k, v in rows[name].items()
                                              if isinstance(v, float)))

        for name, flag in (("opencv-telea", cv2.INPAINT_TELEA), ("opencv-ns", cv2.INPAINT_NS)):
            score(name, [cv2.inpaint(im, m.astype(np.uint8) * 255, 5, flag) for im, m in zip(imgs, ms)])
        score("pushpull-fill", [_u8(P.prefill_hole(im.astype(np.float32) / 255, m, "pushpull"))
                                for im, m in zip(imgs, ms)])
        # diagnostics of the tokeniser: the original's own VQVAE reconstruction pasted into the hole (an
        # oracle: the best any token fill can look with this tokeniser), and OpenCV Telea's fill passed
        # through the tokeniser (its layout at the tokeniser's sharpness), both harmonized and feathered
        w_def = [P.feather(m, feather_px) for m in ms]
        score("oracle-recon-in-hole", [P.compose(im, P.harmonize(r.astype(np.float32) / 255,
                                                                 im.astype(np.float32) / 255, m), w)
                                       for im, r, m, w in zip(imgs, recon, ms, w_def)])
        telea = [cv2.inpaint(im, m.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA) for im, m in zip(imgs, ms)]
        tok = []
        for s in range(0, n, batch):
            tok.extend(_reconstruct(backend, np.stack(telea[s:s + batch]).astype(np.float32) / 255, pipe.defaults))
        score("telea-tokenised", [P.compose(im, P.harmonize(t, im.astype(np.float32) / 255, m), w)
                                  for im, t, m, w in zip(imgs, tok, ms, w_def)])
        # label "auto": the class the model finds most likely for the known pixels (never the hole's)
        inferred = np.full(n, backend.num_classes)
        if pipe.editor.can_infer_label():
            for s in range(0, n, batch):
                x = np.stack(imgs[s:s + batch]).astype(np.float32) / 255
                plans = [make_plan(im, m, backend.patch_nums, backend.downsample) for im, m in zip(x, ms[s:s + batch])]
                inferred[s:s + len(plans)] = np.asarray(backend.score_labels(plans)).argmax(axis=1)
        res.setdefault("label_inference", {})[kind] = float((inferred == labels).mean())
        res.setdefault("default_prefill", {})[kind] = TASK_PREFILL[kind]
        say(f"{kind} inferred label accuracy {res['label_inference'][kind]:.3f}")
        sampled: dict[tuple[Any, ...], tuple[list[np.ndarray], np.ndarray, list[float]]] = {}
        for v, kw, cfg, same_as in row_plan(select_variants(ablations), kind, pipe.editor.edit_defaults.cfg):
            if same_as is not None:  # the same fill, same seed
                rows[v.name] = dict(rows[same_as])
                say(f"{kind} {v.name} = {same_as}")
                continue
            skey = v.sampling_key(kw, cfg)
            if skey not in sampled:  # variants that differ only after decoding reuse the same samples
                sampled[skey] = _sample(pipe, v, kw, imgs, ms, labels, inferred, recon, seed, batch)
            outs, lps, drifts = sampled[skey]
            score(v.name, finish_fills(v, outs, lps, imgs, ms, feather_px), known_drift=float(np.mean(drifts)))
        res["inpainting"][kind] = rows
        if checkpoint is not None:
            checkpoint(res)

    if n_strategy > 0:
        res["outpaint_strategy"] = strategy_eval(pipe, scorer_factory=lambda im, lab: Scorer(
            classifier, judge, probe, im, lab, f_ref, j_ref, None, kid_groups), n=n_strategy, seed=seed + 3,
            n_ref=n_ref, say=say)

    # upscaling from half resolution
    if n_upscale > 0:
        res["upscale"] = _upscale_eval(pipe, imgs[: min(n, n_upscale)], scorer.own_fd, seed, upscale_keeps, say)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def finish_fills(v: Variant, outs: list[np.ndarray], lps: Sequence[float], imgs: list[np.ndarray],
                 ms: list[np.ndarray], feather_px: float) -> list[np.ndarray]:
    """A variant's filled images from its samples (``v.candidates`` per image, in image order): the most
    likely candidate when it ranks (else the first), harmonized as the Editor does (the canvas is the
    whole image here), pasted back with the variant's feather."""
    filled, c = [], v.candidates
    for i in range(len(imgs)):
        pick = int(np.argmax(lps[i * c:(i + 1) * c])) if v.rank else 0
        o = outs[i * c + pick]
        if v.harmonize:
            o = P.harmonize(o, imgs[i].astype(np.float32) / 255, ms[i])
        filled.append(P.compose(imgs[i], o, P.feather(ms[i], v.feather * feather_px)))
    return filled


def _reconstruct(backend: Any, x01: np.ndarray, opts: Any) -> np.ndarray:
    """The VQVAE reconstruction through the backend: every cell known, decoded."""
    S = x01.shape[1]
    plans = [make_plan(im, np.zeros((S, S), bool), backend.patch_nums, backend.downsample) for im in x01]
    for p in plans:  # all known: the closed loop reproduces the tokenisation, decode = reconstruction
        p.keep_maps = [np.ones_like(k) for k in p.keep_maps]
    out, _ = backend.run(plans, [backend.num_classes] * len(plans), opts, backend.stream(0))
    return out


def _sample(pipe: Any, v: Variant, kw: dict[str, Any], imgs: list[np.ndarray], ms: list[np.ndarray],
            labels: np.ndarray, inferred: np.ndarray, recon: list[np.ndarray], seed: int, batch: int
            ) -> tuple[list[np.ndarray], np.ndarray, list[float]]:
    """Decoded canvases (before harmonize and paste-back), their log-likelihoods and known-region drifts;
    ``v.candidates`` per image, image-major."""
    backend = pipe.editor.backend
    n, c = len(imgs), v.candidates
    opts = pipe.editor.edit_defaults if v.cfg is None else pipe.editor.edit_defaults.replace(cfg=v.cfg)
    lab_all = {"auto": inferred, "true": labels, "none": np.full(n, backend.num_classes)}[v.label]
    outs: list[np.ndarray] = []
    lps: list[float] = []
    drifts: list[float] = []
    stream = backend.stream(seed)
    step = max(1, batch // c)
    for s in range(0, n, step):
        x = np.stack(imgs[s:s + step]).astype(np.float32) / 255
        if v.grey_hole:
            x = np.where(np.stack(ms[s:s + step])[..., None], np.float32(0.5), x)
        plans = [make_plan(im, m, backend.patch_nums, backend.downsample, **kw) for im, m in zip(x, ms[s:s + step])]
        plans = [p for p in plans for _ in range(c)]
        labs = [int(lab) for lab in lab_all[s:s + step] for _ in range(c)]
        out, lp = backend.run(plans, labs, opts, stream)
        outs.extend(out)
        lps.extend(float(x) for x in lp)
        for j, (o, p) in enumerate(zip(out, plans)):
            i = s + j // c
            known_px = ~np.kron(p.hole_latent, np.ones((backend.downsample,) * 2, bool))
            drifts.append(float(np.abs(_u8(o).astype(float) - recon[i].astype(float))[known_px].mean())
                          if known_px.any() else 0.0)
    return outs, np.asarray(lps), drifts


def strategy_eval(pipe: Any, *, scorer_factory: Callable[[list[np.ndarray], np.ndarray], Scorer], n: int, seed: int,
                  n_ref: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Outpainting past the model's size: the left half of a 2S x 2S synthetic image (2S tall, S wide) is
    extended by S to the right through the Editor (label auto, every default) with each size strategy
    (``crop``: the whole 2S window resized to the model, what ``auto`` picks here; ``original``: native-size
    sliding windows), against OpenCV on the same canvas.  Judged against real 2S images."""
    from .classifier import features
    S = pipe.image_size
    big = SyntheticShapes(n, seed=seed, size=2 * S)
    ref = SyntheticShapes(n_ref, seed=seed + 1, size=2 * S)
    imgs = [big[i][0] for i in range(n)]
    labels = np.array([big[i][1] for i in range(n)])
    ref_imgs = [ref[i][0] for i in range(n_ref)]
    sc = scorer_factory(imgs, labels)
    sc.f_ref = features(sc.classifier, ref_imgs)
    if sc.judge is not None:
        sc.j_ref = sc.judge.features(ref_imgs).pooled
        sc.j_orig = sc.judge.features(imgs, maps=True)
    m = np.zeros((2 * S, 2 * S), bool)
    m[:, S:] = True
    ms = [m] * n
    rows: dict[str, dict[str, Any]] = {}
    for name, flag in (("opencv-telea", cv2.INPAINT_TELEA), ("opencv-ns", cv2.INPAINT_NS)):
        rows[name] = sc([cv2.inpaint(im, m.astype(np.uint8) * 255, 5, flag) for im in imgs], ms)
        say(f"strategy {name} kid {rows[name].get('kid')}")
    for strategy in ("crop", "original"):
        outs = [np.asarray(pipe.editor.outpaint(im[:, :S], right=S, strategy=strategy, seed=seed + i,
                                                output_type="np").image) for i, im in enumerate(imgs)]
        rows[strategy] = sc([o.astype(np.uint8) for o in outs], ms)
        say(f"strategy {strategy} kid {rows[strategy].get('kid')}")
    return {"n": n, "size": [2 * S, 2 * S], "rows": rows}


def _upscale_eval(pipe: Any, gt: list[np.ndarray], fd: Callable[[list[np.ndarray]], float], seed: int,
                  upscale_keeps: tuple[int, ...] | None, say: Callable[[str], None]) -> dict[str, Any]:
    S = pipe.image_size
    backend = pipe.editor.backend
    half = [cv2.resize(im, (S // 2, S // 2), interpolation=cv2.INTER_AREA) for im in gt]
    lanczos = [np.clip(cv2.resize(h, (S, S), interpolation=cv2.INTER_LANCZOS4), 0, 255).astype(np.uint8) for h in half]
    SN = len(backend.patch_nums)
    tok_gt = backend.encode_tokens(np.stack(gt).astype(np.float32) / 255)
    tok_up = backend.encode_tokens(np.stack(lanczos).astype(np.float32) / 255)
    agree = [float((a == b).mean()) for a, b in zip(tok_gt, tok_up)]
    up_rows = {"lanczos": {"psnr": float(np.mean([psnr(a, b) for a, b in zip(lanczos, gt)])), "fd": fd(lanczos)}}
    for k in upscale_keeps or sorted({max(1, SN - 3), max(1, SN - 2), SN - 1}):
        ups = [np.asarray(pipe.upscale(h, scale=2, keep_scales=k, seed=seed + i).image) for i, h in enumerate(half)]
        up_rows[f"varedit-keep{k}"] = {"psnr": float(np.mean([psnr(a, b) for a, b in zip(ups, gt)])), "fd": fd(ups)}
        say(f"upscale keep {k} {up_rows[f'varedit-keep{k}']}")
    return {"token_agreement_per_scale": agree, "rows": up_rows, "n": len(half)}


BASELINE_ROWS = ("opencv-telea", "opencv-ns", "pushpull-fill", "oracle-recon-in-hole", "telea-tokenised")


def _ordered(names: Any) -> list[str]:
    """Rows in a fixed order (baselines, diagnostics, then the variants as listed): a report read back from
    JSON has its keys sorted."""
    order = {n: i for i, n in enumerate([*BASELINE_ROWS, *(v.name for v in VARIANTS), "crop", "original"])}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def _kid(r: dict[str, Any], se: bool = True) -> str:
    if r.get("kid") is None:
        return ""
    return f"{1e3 * r['kid']:.1f}" + (f" ± {1e3 * r['kid_se']:.1f}" if se and r.get("kid_se") is not None else "")


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.0f}%"


def _judge_line(res: dict[str, Any]) -> list[str]:
    j = res.get("judge")
    if not j:
        return ["No independent judge (its packages are missing: pip install \"varedit[eval]\"): "
                "the project's own classifier only.", ""]
    return [f"Independent judge: {j['network']} ({j['weights']}), {j['features']} as features; KID x 1e3 "
            f"(unbiased, cubic polynomial kernel, ± jackknife standard error over {j['kid_groups']} groups of "
            f"images; lower is better), class kept = a linear probe on its features trained on "
            f"{j['probe_train_images']} real shapes (accuracy on the real held-out images "
            f"{_pct(j['probe_acc_originals'])}), paired = perceptual distance between fill and original "
            f"(channel-normalised stage maps; lower is better).", ""]


def to_markdown(res: dict[str, Any]) -> str:
    L = [f"Model `{res['model']}`, {res['n']} held-out images (seed {res['seed']}), reference set {res['n_ref']} "
         f"images; own FD = Fréchet distance in the project's shape classifier's features (lower is better).", ""]
    L += _judge_line(res)
    a = res["anchors"]
    jd = "judge" in res
    L += ["| anchor | KID x1e3 | judge class kept | own FD | PSNR |", "|---|---|---|---|---|",
          f"| originals (held-out vs reference) | {_kid({'kid': a.get('originals_kid'), 'kid_se': a.get('originals_kid_se')})} "
          f"| {_pct(a.get('originals_judge_class_kept'))} | {a['originals_fd']:.2f} | |",
          f"| VQVAE reconstruction | {_kid({'kid': a.get('vqvae_recon_kid'), 'kid_se': a.get('vqvae_recon_kid_se')})} "
          f"| {_pct(a.get('vqvae_recon_judge_class_kept'))} | {a['vqvae_recon_fd']:.2f} | {a['vqvae_recon_psnr']:.2f} |", ""]
    g = res.get("generation")
    if g:
        L += [f"Class-conditional samples: **{100 * g['recognised']:.1f}%** recognised as their class by the own "
              f"classifier (its accuracy on real held-out images {100 * a['classifier_acc_originals']:.1f}%), own FD "
              f"{g['fd']:.2f} (cfg {g['cfg']}, top-k {g['top_k']}, top-p {g['top_p']}).", ""]
    ce = res.get("class_edit")
    if ce:
        L += [f"Class edits (`edit(image, box around its object, class)`, a class other than the image's; boxes "
              f"{100 * ce['box_area_mean']:.0f}% of the image on average): **{100 * ce['success']:.1f}%** of {ce['n']} "
              f"are read as the asked class by the own classifier ({100 * ce['still_original_class']:.1f}% still as "
              f"the original class).", ""]
        rows = ce.get("rows", {})
        if len(rows) > 1 or any("judge_success" in r for r in rows.values()):
            L += ["| class edit | settings | asked class (own) | asked class (judge's probe) | KID x1e3 | still original (own) |",
                  "|---|---|---|---|---|---|"]
            for name, r in rows.items():
                st = ", ".join(f"{k} {v}" for k, v in r.get("settings", {}).items()) or "defaults"
                L.append(f"| {name} | {st} | {_pct(r['success'])} | {_pct(r.get('judge_success'))} | {_kid(r)} "
                         f"| {_pct(r['still_original_class'])} |")
            L.append("")
    e = res.get("editing_sampling")
    if e:
        L += [f"Inpainting rows: cfg {e['cfg']}, top-k {e['top_k']}, top-p {e['top_p']}, guided by the class inferred "
              f"from the known pixels (label auto) unless the row says otherwise; inferred class correct: "
              + ", ".join(f"{k} {100 * v:.0f}%" for k, v in res.get("label_inference", {}).items()) + ".", ""]
    for kind, rows in res["inpainting"].items():
        pre = res.get("default_prefill", {}).get(kind)
        L += [f"**{kind}**" + (f" (the default mode's prefill: {pre}, as its task's)" if pre else ""), ""]
        head = "| method |" + (" KID x1e3 | judge class kept | paired |" if jd else "")
        L += [head + " own FD | own class kept | hole PSNR | hole SSIM | hole colour | known-region drift |",
              "|---|" + ("---|" * 3 if jd else "") + "---|---|---|---|---|---|"]
        for name in _ordered(rows):
            r = rows[name]
            d = f"{r['known_drift']:.2f}" if "known_drift" in r else ""
            j = f" {_kid(r)} | {_pct(r['judge_class_kept'])} | {r['paired']:.3f} |" if jd else ""
            L.append(f"| {name} |{j} {r['fd']:.2f} | {_pct(r['class_kept'])} | {r['hole_psnr']:.2f} | "
                     f"{r['hole_ssim']:.3f} | {r['hole_colour']:.1f} | {d} |")
        L.append("")
    st = res.get("outpaint_strategy")
    if st:
        L += [f"**outpaint past the model's size** ({st['n']} images: the left half of a {st['size'][0]} px image "
              f"extended by {st['size'][0] // 2} px to the right through the Editor, every default; `auto` = crop here)", "",
              "| method |" + (" KID x1e3 | judge class kept | paired |" if jd else "") + " own FD | own class kept | hole PSNR |",
              "|---|" + ("---|" * 3 if jd else "") + "---|---|---|"]
        for name in _ordered(st["rows"]):
            r = st["rows"][name]
            j = f" {_kid(r)} | {_pct(r['judge_class_kept'])} | {r['paired']:.3f} |" if jd else ""
            L.append(f"| {name} |{j} {r['fd']:.2f} | {_pct(r['class_kept'])} | {r['hole_psnr']:.2f} |")
        L.append("")
    u = res.get("upscale")
    if u:
        L += ["**upscale 2x from half resolution**", "",
              "token agreement per scale (image vs its Lanczos down-up copy): "
              + ", ".join(f"{100 * x:.0f}%" for x in u["token_agreement_per_scale"]), "",
              "| method | PSNR | own FD |", "|---|---|---|"]
        for name, r in u["rows"].items():
            L.append(f"| {name} | {r['psnr']:.2f} | {r['fd']:.2f} |")
    return "\n".join(L) + "\n"


def _delta(r: dict[str, Any], base: dict[str, Any]) -> str:
    """KID(r) - KID(base) x 1e3 with its paired jackknife standard error (same images, same groups)."""
    if r.get("kid_loo") is None or base.get("kid_loo") is None:
        return ""
    from .metrics import paired_se
    return f"{1e3 * (r['kid'] - base['kid']):+.1f} ± {1e3 * paired_se(r['kid_loo'], base['kid_loo']):.1f}"


def _paired_class(r: dict[str, Any], base: dict[str, Any]) -> str:
    """Class kept (judge) minus the default's, with the standard error of the paired difference."""
    if r.get("judge_class_ok") is None:
        return ""
    d = np.asarray(r["judge_class_ok"], float) - np.asarray(base["judge_class_ok"], float)
    return f"{100 * d.mean():+.0f} ± {100 * d.std(ddof=1) / np.sqrt(len(d)):.0f}"


def merge_reports(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reports of the same seed (e.g. one run per mask kind) merged into one per seed, in order of first
    appearance: the same seed means the same images, masks, reference set and probe."""
    by_seed: dict[int, dict[str, Any]] = {}
    for r in reports:
        m = by_seed.setdefault(r["seed"], {**r, "inpainting": {}})
        for key in ("n", "n_ref", "model"):
            if m[key] != r[key]:
                raise ValueError(f"reports of seed {r['seed']} differ in {key}: {m[key]} and {r[key]}")
        m["inpainting"].update(r["inpainting"])
        for key in ("label_inference", "default_prefill"):
            m.setdefault(key, {}).update(r.get(key, {}))
        for key in ("outpaint_strategy", "upscale", "generation"):
            if key in r:
                m[key] = r[key]
    return list(by_seed.values())


def combine_markdown(results: list[dict[str, Any]], baseline: str = "default") -> str:
    """Several reports (other seeds: other images, other samples) side by side, each row against
    ``baseline`` with paired standard errors: a difference is real when both seeds agree beyond them.
    Reports of the same seed are merged first (:func:`merge_reports`)."""
    results = merge_reports(results)
    seeds = ", ".join(str(r["seed"]) for r in results)
    L = [f"Model `{results[0]['model']}`; {len(results)} runs (seeds {seeds}: other held-out images, masks and samples), "
         f"{' / '.join(str(r['n']) for r in results)} images, reference sets of "
         f"{' / '.join(str(r['n_ref']) for r in results)}. Per seed: KID x1e3, its difference to the `{baseline}` row "
         "± the paired jackknife standard error, class kept by the judge's probe (its difference to the default ± "
         "paired standard error, in points), paired perceptual distance; own FD = the project's classifier.", ""]
    L += _judge_line(results[0])
    sl = lambda f: " / ".join(f(r) for r in results)  # noqa: E731
    a = lambda r: r["anchors"]  # noqa: E731
    L += ["| anchor (per seed) | KID x1e3 | judge class kept | own FD |", "|---|---|---|---|",
          "| originals (held-out vs reference) | " + sl(lambda r: _kid({"kid": a(r).get("originals_kid"), "kid_se": None}))
          + " | " + sl(lambda r: _pct(a(r).get("originals_judge_class_kept"))) + " | "
          + sl(lambda r: f"{a(r)['originals_fd']:.1f}") + " |",
          "| VQVAE reconstruction (the tokeniser's floor) | "
          + sl(lambda r: _kid({"kid": a(r).get("vqvae_recon_kid"), "kid_se": None})) + " | "
          + sl(lambda r: _pct(a(r).get("vqvae_recon_judge_class_kept"))) + " | "
          + sl(lambda r: f"{a(r)['vqvae_recon_fd']:.1f}") + " |", ""]
    li = [f"{k} " + sl(lambda r, k=k: _pct(r.get("label_inference", {}).get(k))) for k in results[0].get("label_inference", {})]
    if li:
        L += ["Inferred class (label auto) correct: " + ", ".join(li) + ".", ""]
    kinds = [k for k in results[0]["inpainting"] if all(k in r["inpainting"] for r in results)]
    for kind in kinds:
        names = [nm for nm in _ordered(results[0]["inpainting"][kind]) if all(nm in r["inpainting"][kind] for r in results)]
        L += [f"**{kind}**", "",
              "| method | KID x1e3 | ΔKID vs default | judge class kept | Δ class (points) | paired | own FD | hole PSNR |",
              "|---|---|---|---|---|---|---|---|"]
        for nm in names:
            cells = []
            for key in ("kid", "delta", "class", "dclass", "paired", "fd", "psnr"):
                vals = []
                for r in results:
                    row, base = r["inpainting"][kind][nm], r["inpainting"][kind].get(baseline, {})
                    vals.append({"kid": lambda: _kid(row, se=False), "delta": lambda: _delta(row, base),
                                 "class": lambda: _pct(row.get("judge_class_kept")),
                                 "dclass": lambda: _paired_class(row, base),
                                 "paired": lambda: f"{row['paired']:.3f}" if "paired" in row else "",
                                 "fd": lambda: f"{row['fd']:.1f}", "psnr": lambda: f"{row['hole_psnr']:.2f}"}[key]())
                cells.append(" / ".join(vals) if nm != baseline or key not in ("delta", "dclass") else "")
            L.append(f"| {nm} | " + " | ".join(cells) + " |")
        L.append("")
    if all("outpaint_strategy" in r for r in results):
        rows0 = results[0]["outpaint_strategy"]["rows"]
        L += [f"**outpaint past the model's size** (2x extension, {results[0]['outpaint_strategy']['n']} images)", "",
              "| method | KID x1e3 | ΔKID vs crop | judge class kept | paired | own FD |", "|---|---|---|---|---|---|"]
        for nm in _ordered(rows0):
            rs = [r["outpaint_strategy"]["rows"][nm] for r in results]
            bs = [r["outpaint_strategy"]["rows"]["crop"] for r in results]
            L.append(f"| {nm} | " + " / ".join(_kid(x, se=False) for x in rs) + " | "
                     + (" / ".join(_delta(x, b) for x, b in zip(rs, bs)) if nm != "crop" else "") + " | "
                     + " / ".join(_pct(x.get("judge_class_kept")) for x in rs) + " | "
                     + " / ".join(f"{x['paired']:.3f}" if "paired" in x else "" for x in rs) + " | "
                     + " / ".join(f"{x['fd']:.1f}" for x in rs) + " |")
        L.append("")
    for r in results:  # every seed's full tables below the comparison
        L += [f"### seed {r['seed']}", "", to_markdown(r)]
    return "\n".join(L) + "\n"


def save_report(res: dict[str, Any], out_dir: str | Path, stem: str, markdown: str) -> None:
    """A report as ``stem.json`` (the data) and ``stem.md`` (its tables), each written atomically."""
    from ..io import atomic_write_bytes, save_json
    save_json(res, Path(out_dir) / f"{stem}.json")
    atomic_write_bytes(Path(out_dir) / f"{stem}.md", markdown.encode())


def write_report(res: dict[str, Any], out_dir: str | Path) -> None:
    save_report(res, out_dir, "eval", to_markdown(res))
