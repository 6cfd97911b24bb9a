"""Editing measured on real photographs (``varedit eval --real``) and the tokenizer's reconstruction on
shapes and photos (``varedit eval --reconstruction``).

The images are crops of the held-out CC0 / public-domain photos of :mod:`varedit.data.photos` (never
used in training), resized to the model's size.  Masks: a centre box (half the side), free-form
strokes, object-sized boxes (a quarter to a half of the side, anywhere) and the right half (outpaint).

Judged by the independent judge (EfficientNet-Lite0, ImageNet, :mod:`.judge`), which nobody here
trained and which no training loss here uses (the tokenizer's perceptual loss is a VGG16): the kernel
distance (the KID formula) of the fills to other crops of the same photos, and the paired perceptual
distance of each fill to its original; beside them PSNR and SSIM in the hole and in a ring just outside
it and just inside (the band across its border, where a seam would show).  These are this project's measures on its own
data: they are not comparable with published FID, KID or LPIPS figures.

Rows: OpenCV Telea and Navier-Stokes, the default mode, the official (notebook) mode (which reads the
hole's content: its leak) and the same plan with the hole unknown (grey), and the default mode with each
of its choices switched off or changed (:func:`varedit.evaluation.quality.select_variants`).  A photo has
no shape class: label ``auto`` infers one of the model's classes from the known pixels, as the Editor does.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from ..data.photos import HELDOUT, load_photo, photo_info, random_crop
from ..editing.plan import make_plan
from .metrics import RING_EDGES, kid, outside_change, paired_se, psnr, ssim
from .quality import (TASK_PREFILL, _kid, _reconstruct, _sample, _u8, eval_mask, finish_fills, row_plan, save_report,
                      select_variants)

log = logging.getLogger(__name__)

REAL_MASK_KINDS = ("box", "strokes", "objects", "outpaint")
REAL_PREFILL = {**TASK_PREFILL, "objects": TASK_PREFILL["box"]}


def heldout_crops(n: int, size: int, seed: int, photos: Sequence[str] = HELDOUT) -> tuple[list[np.ndarray], list[str]]:
    """``n`` crops (``size`` px) of the held-out photos, photo ``i % len(photos)`` for crop ``i``; the crop side
    is 35-100% of the photo's shorter side (area-resized), position and flip random (seeded)."""
    imgs, names = [], []
    for i in range(n):
        name = photos[i % len(photos)]
        rng = np.random.default_rng([seed, i])
        imgs.append(random_crop(load_photo(name), size, rng, min_frac=0.35))
        names.append(name)
    return imgs, names


def real_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """``objects``: one box of 25-50% of the side per axis, anywhere inside; the rest as :func:`eval_mask`."""
    if kind == "objects":
        m = np.zeros((size, size), bool)
        w, h = (int(rng.integers(size // 4, size // 2 + 1)) for _ in range(2))
        x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        m[y:y + h, x:x + w] = True
        return m
    if kind not in REAL_MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; choose from {', '.join(REAL_MASK_KINDS)}")
    return eval_mask(kind, size, rng)


def ring(mask: np.ndarray, width: int) -> np.ndarray:
    """The band of pixels within ``width`` px of the hole's border, on both sides (where a seam would show:
    the paste-back blends just inside the hole, the decoder's context just outside)."""
    k = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    m = mask.astype(np.uint8)
    return cv2.dilate(m, k).astype(bool) & ~cv2.erode(m, k, borderType=cv2.BORDER_REPLICATE).astype(bool)


class RealScorer:
    """Scores fills of the held-out crops: judge KID and paired distance, PSNR / SSIM in the hole and ring."""

    def __init__(self, judge: Any, imgs: list[np.ndarray], ref: list[np.ndarray], kid_groups: int):
        self.judge, self.imgs, self.kid_groups = judge, imgs, kid_groups
        self.j_ref = judge.features(ref).pooled if judge is not None else None
        self.j_orig = judge.features(imgs, maps=True) if judge is not None else None
        self.ring_px = max(2, imgs[0].shape[0] // 16)

    def judge_row(self, xs: list[np.ndarray]) -> dict[str, Any]:
        if self.judge is None:
            return {}
        from .judge import paired_distance
        jf = self.judge.features(xs, maps=True)
        k, se, loo = kid(jf.pooled, self.j_ref, groups=self.kid_groups)
        pd = paired_distance(jf, self.j_orig)
        return {"kid": k, "kid_se": se, "kid_loo": loo, "paired": float(pd.mean()),
                "paired_se": float(pd.std(ddof=1) / np.sqrt(len(pd))), "paired_i": [round(float(x), 5) for x in pd]}

    def __call__(self, filled: list[np.ndarray], masks: list[np.ndarray]) -> dict[str, Any]:
        rings = [ring(m, self.ring_px) for m in masks]
        row: dict[str, Any] = {
            "hole_psnr": float(np.mean([psnr(f, o, m) for f, o, m in zip(filled, self.imgs, masks)])),
            "hole_ssim": float(np.mean([ssim(f, o, m) for f, o, m in zip(filled, self.imgs, masks)])),
            "ring_psnr": float(np.mean([psnr(f, o, r) for f, o, r in zip(filled, self.imgs, rings) if r.any()]
                                       or [float("nan")])),
            "ring_ssim": float(np.mean([ssim(f, o, r) for f, o, r in zip(filled, self.imgs, rings) if r.any()]
                                       or [float("nan")])),
            # how much and how far the picture changed outside the hole (by distance from it)
            "outside": summarize_outside([outside_change(o, f, m) for f, o, m in zip(filled, self.imgs, masks)]),
        }
        row.update(self.judge_row(filled))
        return row


def run_real_eval(pipe: Any, *, judge: Any, n: int = 64, n_ref: int = 256, seed: int = 50_000, batch: int = 16,
                  ablations: str | bool = "defaults", masks: Sequence[str] = REAL_MASK_KINDS, kid_groups: int = 8,
                  progress: Callable[[str], None] | None = None,
                  checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The real-photo report (see the module docstring).  ``judge`` None scores pixels only."""
    t0 = time.time()
    S = pipe.image_size
    backend = pipe.editor.backend
    say = progress or (lambda s: log.info(s))
    for k in masks:
        if k not in REAL_MASK_KINDS:
            raise ValueError(f"unknown mask kind {k!r}; choose from {', '.join(REAL_MASK_KINDS)}")
    imgs, names = heldout_crops(n, S, seed)
    ref, _ = heldout_crops(n_ref, S, seed + 1)  # other crops of the same photos: the reference distribution
    scorer = RealScorer(judge, imgs, ref, kid_groups)
    res: dict[str, Any] = {
        "n": n, "n_ref": n_ref, "seed": seed, "model": pipe.name, "image_size": S, "ring_px": scorer.ring_px,
        "photos": [{"name": p, "licence": photo_info(p).licence, "credit": photo_info(p).credit}
                   for p in dict.fromkeys(names)]}
    if judge is not None:
        from .judge import describe
        res["judge"] = {**describe(), "kid_groups": kid_groups}

    recon: list[np.ndarray] = []
    for s in range(0, n, batch):
        recon.extend(_u8(_reconstruct(backend, np.stack(imgs[s:s + batch]).astype(np.float32) / 255, pipe.defaults)))
    anchors = {"originals": scorer.judge_row(imgs), "vqvae_recon": scorer.judge_row(recon)}
    anchors["vqvae_recon"].update(psnr=float(np.mean([psnr(a, b) for a, b in zip(recon, imgs)])),
                                  ssim=float(np.mean([ssim(a, b) for a, b in zip(recon, imgs)])))
    res["anchors"] = anchors
    say(f"anchors: recon PSNR {anchors['vqvae_recon']['psnr']:.2f}")

    rng = np.random.default_rng(seed)
    all_masks = {k: [real_mask(k, S, rng) for _ in range(n)] for k in REAL_MASK_KINDS}
    feather_px = pipe.editor.feather_px((S, S))
    dummy_labels = np.zeros(n, np.int64)  # photos have no class: the "true label" rows are left out
    res["inpainting"] = {}
    for kind in masks:
        ms = all_masks[kind]
        rows: dict[str, dict[str, Any]] = {}

        def score(name: str, filled: list[np.ndarray], **extra: float) -> None:
            rows[name] = {**scorer(filled, ms), **extra}
            say(f"real {kind} {name} " + ", ".join(f"{k} {v:.4g}" for k, v in rows[name].items()
                                                   if isinstance(v, float)))

        for name, flag in (("opencv-telea", cv2.INPAINT_TELEA), ("opencv-ns", cv2.INPAINT_NS)):
            score(name, [cv2.inpaint(im, m.astype(np.uint8) * 255, 5, flag) for im, m in zip(imgs, ms)])
        inferred = np.full(n, backend.num_classes)
        if pipe.editor.can_infer_label():
            for s in range(0, n, batch):
                x = np.stack(imgs[s:s + batch]).astype(np.float32) / 255
                plans = [make_plan(im, m, backend.patch_nums, backend.downsample) for im, m in zip(x, ms[s:s + batch])]
                inferred[s:s + len(plans)] = np.asarray(backend.score_labels(plans)).argmax(axis=1)
        sampled: dict[tuple[Any, ...], tuple[list[np.ndarray], np.ndarray, list[float]]] = {}
        variants = _with_official([v for v in select_variants(ablations) if v.label != "true"])
        vk = "box" if kind == "objects" else kind  # objects are boxes: the box's variant set
        for v, kw, cfg, same_as in row_plan(variants, vk, pipe.editor.edit_defaults.cfg, prefill=REAL_PREFILL[kind]):
            if same_as is not None:  # the same fill, same seed
                rows[v.name] = dict(rows[same_as])
                continue
            skey = v.sampling_key(kw, cfg)
            if skey not in sampled:
                sampled[skey] = _sample(pipe, v, kw, imgs, ms, dummy_labels, inferred, recon, seed, batch)
            outs, lps, drifts = sampled[skey]
            score(v.name, finish_fills(v, outs, lps, imgs, ms, feather_px), known_drift=float(np.mean(drifts)))
        res["inpainting"][kind] = rows
        if checkpoint is not None:
            checkpoint(res)
    res["seconds"] = round(time.time() - t0, 1)
    return res


# --------------------------------------------------------------------------------------------------
# the paste-back feather on whole photos (``varedit eval --real --feather LIST``)
# --------------------------------------------------------------------------------------------------
FEATHER_PHOTOS = ("astronaut", "coffee", "rocket")  # the held-out photos whose longer side is >= 512 px
FEATHER_MASKS = ("objects", "strokes")
FEATHER_SPECS = ("0", "4", "8", "16", "token")


def photo_mask(kind: str, hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A mask the size of a whole photo, where a user would draw it over an object: ``objects``, a box of
    25-50% of each side anywhere inside; ``strokes``, two or three painted brush strokes (round brush of
    2.5-6% of the longer side) inside such a box."""
    h, w = hw
    bw, bh = int(rng.integers(w // 4, w // 2 + 1)), int(rng.integers(h // 4, h // 2 + 1))
    x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    m = np.zeros((h, w), np.uint8)
    if kind == "objects":
        m[y:y + bh, x:x + bw] = 1
    elif kind == "strokes":
        brush = int(rng.integers(max(2, max(h, w) // 40), max(3, max(h, w) // 16) + 1))
        r = brush // 2
        for _ in range(int(rng.integers(2, 4))):
            pts = [(int(rng.integers(x + r, max(x + r + 1, x + bw - r))), int(rng.integers(y + r, max(y + r + 1, y + bh - r))))
                   for _ in range(int(rng.integers(2, 5)))]
            for a, b in zip(pts, pts[1:]):
                cv2.line(m, a, b, 1, brush)
            for p in pts:
                cv2.circle(m, p, r, 1, -1)
    else:
        raise ValueError(f"unknown mask kind {kind!r}; choose from {', '.join(FEATHER_MASKS)}")
    return m.astype(bool)


def parse_feathers(specs: str | Sequence[str]) -> list[str]:
    """Feather widths to compare: pixels of the output (``"0"``, ``"4.5"``) or ``"token"`` (half a token in
    the image's pixels: the width the feather study compares against), without repeats."""
    items = [x.strip().lower() for x in (specs.split(",") if isinstance(specs, str) else specs) if str(x).strip()]
    out: list[str] = []
    for x in items:
        if x != "token":
            try:
                v = float(x)
            except ValueError:
                raise ValueError(f"feather {x!r}: give pixels (a number >= 0) or 'token'") from None
            if not np.isfinite(v) or v < 0 or v > 1e4:
                raise ValueError(f"feather {x!r}: give pixels (a number >= 0) or 'token'")
            x = f"{v:g}"
        if x not in out:
            out.append(x)
    if not out:
        raise ValueError("no feather to measure")
    return out


def _feather_value(spec: str, editor: Any, wh: tuple[int, int]) -> float:
    return float(editor.half_token_px(wh)) if spec == "token" else float(spec)


def summarize_outside(changes: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per band of :func:`outside_change` over many images: the mean change (mean over images ± standard
    error), the largest change (mean of each image's max ± standard error) and the worst image's max."""
    out: dict[str, dict[str, float]] = {}
    for band in changes[0]:
        means = np.array([c[band]["mean"] for c in changes if c[band]["pixels"]], np.float64)
        maxes = np.array([c[band]["max"] for c in changes if c[band]["pixels"]], np.float64)
        se = (lambda v: float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan"))  # noqa: E731
        out[band] = {"mean": float(means.mean()) if len(means) else float("nan"), "mean_se": se(means),
                     "max_mean": float(maxes.mean()) if len(maxes) else float("nan"), "max_mean_se": se(maxes),
                     "worst": float(maxes.max()) if len(maxes) else float("nan"), "images": int(len(means))}
    return out


JUDGE_SIDE = 224  # the judge's input


def _border_patch(mask: np.ndarray, rng: np.random.Generator, side: int = JUDGE_SIDE) -> tuple[slice, slice]:
    """A square of ``side`` image pixels (less on a smaller image) centred on a random point of the mask's
    border (its pixels next to an unmasked one), kept inside the image."""
    h, w = mask.shape
    s = min(side, h, w)
    m8 = mask.astype(np.uint8)
    edge = mask & ~cv2.erode(m8, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE).astype(bool)
    ys, xs = np.nonzero(edge if edge.any() else mask)
    k = int(rng.integers(len(ys)))
    y0 = min(max(int(ys[k]) - s // 2, 0), h - s)
    x0 = min(max(int(xs[k]) - s // 2, 0), w - s)
    return slice(y0, y0 + s), slice(x0, x0 + s)


def _native_crops(img: np.ndarray, n: int, rng: np.random.Generator, side: int = JUDGE_SIDE) -> list[np.ndarray]:
    h, w = img.shape[:2]
    s = min(side, h, w)
    out = []
    for _ in range(n):
        y0, x0 = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        out.append(_to_judge(img[y0:y0 + s, x0:x0 + s]))
    return out


def _to_judge(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    if x.shape[:2] == (JUDGE_SIDE, JUDGE_SIDE):
        return x
    return cv2.resize(x, (JUDGE_SIDE, JUDGE_SIDE), interpolation=cv2.INTER_AREA)


FEATHER_VIEWS = ("region", "border")


def run_feather_study(pipe: Any, *, judge: Any, feathers: Sequence[str] = FEATHER_SPECS, n: int = 48,
                      n_ref: int = 256, seed: int = 60_000, masks: Sequence[str] = FEATHER_MASKS,
                      photos: Sequence[tuple[str, np.ndarray]] | None = None, edges: tuple[float, ...] = RING_EDGES,
                      kid_groups: int = 8, examples: int = 0, progress: Callable[[str], None] | None = None,
                      checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The paste-back feather on whole photos, at the sizes people edit.

    ``n`` edits per mask kind (:func:`photo_mask`) on the photos in turn (default: the held-out photos of
    512 px and more, at their own size), each made once with harmonize on and once off (same seed, so the
    same tokens) without paste-back, then pasted back with every feather of ``feathers``
    (:func:`parse_feathers`): the images, masks and seeds are the same for every feather.  Per feather:
    how much the picture changed outside the mask, by distance (:func:`summarize_outside`), and, with a
    judge, two views of each edit: ``region``, the Editor's crop window (the mask's bounding box with half
    its side of context all round: every changed pixel) area-resized to the judge's 224 px, and
    ``border``, a 224 px patch at the image's own resolution centred on a point of the mask's border
    (what a viewer sees at 100%).  Per view: the paired perceptual distance to the same view of the
    original and the KID to ``n_ref`` views of the same photos (whole-photo crops resized, native
    patches), each with its difference to the ``token`` feather (or the first one) and the paired
    standard error.  ``examples``: the first few edits of each kind are kept as strips of their region,
    the original then each feather with harmonize on (``res["examples"][kind]``: uint8 arrays, not part
    of the report)."""
    from .. import processing as P
    from .judge import paired_distance
    t0 = time.time()
    say = progress or (lambda s: log.info(s))
    specs = parse_feathers(feathers)
    base = "token" if "token" in specs else specs[0]
    for k in masks:
        if k not in FEATHER_MASKS:
            raise ValueError(f"unknown mask kind {k!r}; choose from {', '.join(FEATHER_MASKS)}")
    if photos is None:
        photos = [(p, load_photo(p)) for p in FEATHER_PHOTOS]
    if not photos:
        raise ValueError("no photos")
    S, editor = pipe.image_size, pipe.editor
    j_ref: dict[str, np.ndarray] = {}
    if judge is not None:
        rng_ref = np.random.default_rng([seed, 1])
        j_ref["region"] = judge.features([random_crop(photos[i % len(photos)][1], JUDGE_SIDE, rng_ref, min_frac=0.35)
                                          for i in range(n_ref)]).pooled
        j_ref["border"] = judge.features([c for i in range(len(photos)) for c in _native_crops(
            photos[i][1], n_ref // len(photos) + (i < n_ref % len(photos)), rng_ref)]).pooled
    res: dict[str, Any] = {
        "n": n, "seed": seed, "model": pipe.name, "image_size": S, "feathers": specs, "baseline": base,
        "edges": list(edges), "n_ref": n_ref,
        "photos": [{"name": p, "size": [int(im.shape[1]), int(im.shape[0])],
                    "token_px": float(editor.half_token_px((im.shape[1], im.shape[0])))} for p, im in photos],
        "feather": {}}
    if judge is not None:
        from .judge import describe
        res["judge"] = {**describe(), "kid_groups": kid_groups, "views": list(FEATHER_VIEWS)}
    examples_out: dict[str, list[np.ndarray]] = {}
    edit_s: list[float] = []
    for ki, kind in enumerate(masks):
        imgs, ms, views = [], [], []
        for i in range(n):
            im = photos[i % len(photos)][1]
            m = photo_mask(kind, im.shape[:2], np.random.default_rng([seed, ki, i]))
            imgs.append(im)
            ms.append(m)
            views.append({"region": P.plan_crop(m, (im.shape[1], im.shape[0]), S).slices,
                          "border": _border_patch(m, np.random.default_rng([seed, ki, i, 1]))})

        def judged(xs: list[np.ndarray], view: str) -> Any:
            return judge.features([_to_judge(x[v[view]]) for x, v in zip(xs, views)], maps=True)

        j_orig = {v: judged(imgs, v) for v in FEATHER_VIEWS} if judge is not None else {}
        rows: list[dict[str, Any]] = []
        for harmonize in (True, False):
            decoded = []
            for i, (im, m) in enumerate(zip(imgs, ms)):
                t1 = time.perf_counter()
                r = editor.inpaint(im, m, seed=seed + i, harmonize=harmonize, paste_back=False, output_type="np")
                edit_s.append(time.perf_counter() - t1)
                decoded.append(np.asarray(r.images[0], np.float32) / 255)
            say(f"feather {kind}: {n} edits, harmonize {'on' if harmonize else 'off'}")
            per: dict[str, dict[str, Any]] = {}
            for spec in specs:
                fpx = [_feather_value(spec, editor, (im.shape[1], im.shape[0])) for im in imgs]
                outs = [P.compose(im, d, P.feather(m, f)) for im, d, m, f in zip(imgs, decoded, ms, fpx)]
                row: dict[str, Any] = {"harmonize": harmonize, "feather": spec, "feather_px": [min(fpx), max(fpx)],
                                       "outside": summarize_outside([outside_change(im, o, m, edges)
                                                                     for im, o, m in zip(imgs, outs, ms)])}
                if judge is not None:
                    row["judge"] = {}
                    for view in FEATHER_VIEWS:
                        jf = judged(outs, view)
                        k, se, loo = kid(jf.pooled, j_ref[view], groups=kid_groups)
                        pd = paired_distance(jf, j_orig[view])
                        row["judge"][view] = dict(kid=k, kid_se=se, kid_loo=loo, paired=float(pd.mean()),
                                                  paired_se=float(pd.std(ddof=1) / np.sqrt(len(pd))),
                                                  paired_i=[round(float(x), 5) for x in pd])
                per[spec] = row
                say(f"feather {kind} harmonize {'on' if harmonize else 'off'} {spec}: "
                    + ", ".join(f"{b} {v['mean']:.2f}/{v['max_mean']:.1f}" for b, v in row["outside"].items())
                    + "".join(f", {v} paired {j['paired']:.4f} KID {1e3 * j['kid']:.2f}"
                              for v, j in row.get("judge", {}).items()))
            if judge is not None:
                for row in per.values():
                    for view, j in row["judge"].items():
                        b = per[base]["judge"][view]
                        d = np.asarray(j["paired_i"]) - np.asarray(b["paired_i"])
                        j.update(d_paired=float(d.mean()), d_paired_se=float(d.std(ddof=1) / np.sqrt(len(d))),
                                 d_kid=j["kid"] - b["kid"], d_kid_se=paired_se(j["kid_loo"], b["kid_loo"]))
            if harmonize and examples:
                for i in range(min(examples, n)):
                    wh = (imgs[i].shape[1], imgs[i].shape[0])
                    tiles = [imgs[i][views[i]["region"]]] + [P.compose(imgs[i], decoded[i], P.feather(
                        ms[i], _feather_value(sp, editor, wh)))[views[i]["region"]] for sp in specs]
                    examples_out.setdefault(kind, []).append(np.concatenate(tiles, axis=1))
            rows.extend(per.values())
        res["feather"][kind] = rows
        res["edit_seconds"] = round(float(np.mean(edit_s)), 3)
        if checkpoint is not None:
            checkpoint(res)
    res["seconds"] = round(time.time() - t0, 1)
    if examples:
        res["examples"] = examples_out
    return res


def _bands(outside: dict[str, Any]) -> list[str]:
    """The bands of an :func:`outside_change` summary nearest first (a report read back from JSON has its
    keys sorted as text)."""
    return sorted(outside, key=lambda b: float(b.lstrip(">").split("-")[0]))


def _pm(v: float, se: float, fmt: str = ".2f") -> str:
    return f"{v:{fmt}}" + (f" ± {se:{fmt.lstrip('+')}}" if np.isfinite(se) else "")


def feather_markdown(res: dict[str, Any]) -> str:
    jd = "judge" in res
    ph = ", ".join(f"{p['name']} ({p['size'][0]}x{p['size'][1]}, half a token = {p['token_px']:g} px)"
                   for p in res["photos"])
    L = [f"Model `{res['model']}` ({res['image_size']} px canvas), {res['n']} edits per mask kind (seed {res['seed']}) "
         f"on {ph}; every edit made once with harmonize on and once off, then pasted back with each feather "
         f"(same images, masks and seeds). Mean edit time {res.get('edit_seconds', float('nan')):.2f} s.", ""]
    if jd:
        j = res["judge"]
        L += [f"Judge: {j['network']} ({j['weights']}), two views of each edit: *region* = the mask's bounding box "
              f"with half its side of context all round, resized to 224 px; *border* = a 224 px patch at the "
              f"photo's own resolution centred on a point of the mask's border. paired = perceptual distance to "
              f"the same view of the original (± s.e.); KID x1e3 to {res['n_ref']} views of the same photos "
              f"(± jackknife s.e., {j['kid_groups']} groups); Δ = difference to the `{res['baseline']}` feather, "
              f"paired by edit (± s.e.). Lower is better.", ""]
    L += ["Change outside the mask, by distance from it (0-255 levels, a pixel's largest channel change): the "
          "band's mean (± s.e. over edits) / the band's max (mean over edits ± s.e.; the worst edit in "
          "brackets).", ""]
    bands = _bands(next(iter(res["feather"].values()))[0]["outside"])

    def fp(r: dict[str, Any]) -> list[str]:
        lo, hi = r["feather_px"]
        px = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
        return ["on" if r["harmonize"] else "off", px + (" (half a token)" if r["feather"] == "token" else "")]

    for kind, rows in res["feather"].items():
        L += [f"**{kind}**", ""]
        if jd:
            views = res["judge"]["views"]
            head = "| harmonize | feather px |" + "".join(f" {v} paired | Δ | {v} KID x1e3 | Δ |" for v in views)
            L += [head, "|" + "---|" * (head.count("|") - 1)]
            for r in rows:
                cells = fp(r)
                for v in views:
                    j = r["judge"][v]
                    cells += [_pm(j["paired"], j["paired_se"], ".4f"), _pm(j["d_paired"], j["d_paired_se"], "+.4f"),
                              _pm(1e3 * j["kid"], 1e3 * j["kid_se"]), _pm(1e3 * j["d_kid"], 1e3 * j["d_kid_se"], "+.2f")]
                L.append("| " + " | ".join(cells) + " |")
            L.append("")
        head = "| harmonize | feather px |" + "".join(f" {b} px |" for b in bands)
        L += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in rows:
            cells = fp(r)
            for b in bands:
                o = r["outside"][b]
                cells.append(f"{_pm(o['mean'], o['mean_se'], '.1f')} / {_pm(o['max_mean'], o['max_mean_se'], '.0f')} "
                             f"({o['worst']:.0f})")
            L.append("| " + " | ".join(cells) + " |")
        L.append("")
    return "\n".join(L) + "\n"


def _with_official(variants: list[Any]) -> list[Any]:
    """The official plan (and with the hole unknown) is part of every level of this benchmark."""
    from .quality import VARIANTS
    names = {v.name for v in variants}
    extra = [v for v in VARIANTS if v.name in ("official", "official-grey-hole") and v.name not in names]
    return variants + extra


REAL_ORDER = ("opencv-telea", "opencv-ns", "default", "official", "official-grey-hole")


def _order(names: Any) -> list[str]:
    from .quality import VARIANTS
    order = {n: i for i, n in enumerate([*REAL_ORDER, *(v.name for v in VARIANTS)])}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def real_markdown(res: dict[str, Any]) -> str:
    jd = "judge" in res
    L = [f"Model `{res['model']}`, {res['n']} held-out crops ({res['image_size']} px, seed {res['seed']}) of "
         + ", ".join(f"{p['name']} ({p['licence']})" for p in res["photos"])
         + f"; KID reference: {res['n_ref']} other crops of the same photos.", ""]
    if jd:
        j = res["judge"]
        L += [f"Judge: {j['network']} ({j['weights']}), never trained here and never a training loss. KID x1e3 = "
              f"kernel distance of the fills to the reference crops in its pooled features (± jackknife standard "
              f"error over {j['kid_groups']} groups); paired = perceptual distance of each fill to its original in "
              f"its channel-normalised stage maps (± standard error). Both lower is better; this project's "
              f"measures, not comparable with published FID / KID / LPIPS figures.", ""]
    else:
        L += ["No judge (pip install \"varedit[eval]\"): pixel measures only.", ""]
    a = res["anchors"]
    if jd:
        L += ["| anchor | KID x1e3 | paired | PSNR | SSIM |", "|---|---|---|---|---|",
              f"| originals | {_kid(a['originals'])} | {a['originals']['paired']:.3f} | | |",
              f"| VQVAE reconstruction | {_kid(a['vqvae_recon'])} | {a['vqvae_recon']['paired']:.3f} | "
              f"{a['vqvae_recon']['psnr']:.2f} | {a['vqvae_recon']['ssim']:.3f} |", ""]
    else:
        L += [f"VQVAE reconstruction: PSNR {a['vqvae_recon']['psnr']:.2f}, SSIM {a['vqvae_recon']['ssim']:.3f}.", ""]
    L += [f"Hole and ring (the band of {res['ring_px']} px on both sides of the hole's border) PSNR / SSIM: higher "
          "is better (PSNR rewards blur). Outside: the mean change of the pixels outside the hole (0-255 levels, a "
          "pixel's largest channel change), by their distance from it in px.", ""]
    for kind, rows in res["inpainting"].items():
        bands = _bands(next(iter(rows.values()))["outside"])
        L += [f"**{kind}**", "", "| method |" + (" KID x1e3 | paired |" if jd else "")
              + " hole PSNR | hole SSIM | ring PSNR | ring SSIM | outside " + " / ".join(bands) + " px |",
              "|---|" + ("---|---|" if jd else "") + "---|---|---|---|---|"]
        for name in _order(rows):
            r = rows[name]
            j = f" {_kid(r)} | {r['paired']:.3f} ± {r['paired_se']:.3f} |" if jd else ""
            out = " / ".join(f"{r['outside'][b]['mean']:.1f}" for b in bands)
            L.append(f"| {name} |{j} {r['hole_psnr']:.2f} | {r['hole_ssim']:.3f} | {r['ring_psnr']:.2f} | "
                     f"{r['ring_ssim']:.3f} | {out} |")
        L.append("")
    return "\n".join(L) + "\n"


def write_real_report(res: dict[str, Any], out_dir: str | Path) -> None:
    save_report(res, out_dir, "real", real_markdown(res))


# --------------------------------------------------------------------------------------------------
# the tokenizer's reconstruction
# --------------------------------------------------------------------------------------------------
def reconstruct_with_vae(vae: Any, imgs: list[np.ndarray], batch: int = 16) -> list[np.ndarray]:
    """Tokenise -> decode with a torch VQVAE (uint8 in, uint8 out)."""
    import torch
    out: list[np.ndarray] = []
    vae = vae.eval()
    with torch.no_grad():
        for s in range(0, len(imgs), batch):
            x = torch.from_numpy(np.stack(imgs[s:s + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
            idx = vae.img_to_idx(x)
            y = vae.idx_to_img(idx).permute(0, 2, 3, 1).numpy()
            out.extend(_u8((y + 1) / 2))
    return out


def reconstruct_with_pipeline(pipe: Any, imgs: list[np.ndarray], batch: int = 16) -> list[np.ndarray]:
    """Tokenise -> decode through a pipeline's backend (torch or onnxruntime)."""
    backend = pipe.editor.backend
    out: list[np.ndarray] = []
    for s in range(0, len(imgs), batch):
        out.extend(_u8(_reconstruct(backend, np.stack(imgs[s:s + batch]).astype(np.float32) / 255, pipe.defaults)))
    return out


def reconstruction_report(reconstruct: Callable[[list[np.ndarray]], list[np.ndarray]], size: int, *,
                          judge: Any = None, n_shapes: int = 200, n_photos: int = 64, shapes_seed: int = 424_242,
                          photos_seed: int = 50_000) -> dict[str, Any]:
    """PSNR, SSIM and (with a judge) the paired perceptual distance of a tokenizer's reconstructions
    (``reconstruct``: uint8 images -> uint8 images, ``size`` px) of held-out synthetic shapes (the model
    card's set) and of held-out photo crops."""
    from ..data.synthetic import SyntheticShapes
    ds = SyntheticShapes(n_shapes, seed=shapes_seed, size=size)
    sets = {"shapes": [ds[i][0] for i in range(n_shapes)], "photos": heldout_crops(n_photos, size, photos_seed)[0]}
    out: dict[str, Any] = {"image_size": size, "shapes_seed": shapes_seed, "photos_seed": photos_seed}
    for name, imgs in sets.items():
        rec = reconstruct(imgs)
        r: dict[str, Any] = {"n": len(imgs), "psnr": float(np.mean([psnr(a, b) for a, b in zip(rec, imgs)])),
                             "ssim": float(np.mean([ssim(a, b) for a, b in zip(rec, imgs)]))}
        if judge is not None:
            from .judge import paired_distance
            pd = paired_distance(judge.features(rec, maps=True), judge.features(imgs, maps=True))
            r.update(paired=float(pd.mean()), paired_se=float(pd.std(ddof=1) / np.sqrt(len(pd))))
        out[name] = r
    return out


def reconstruction_markdown(reports: dict[str, dict[str, Any]]) -> str:
    """One row per model: PSNR / SSIM / paired distance on shapes and photos."""
    L = ["| model | shapes PSNR | shapes SSIM | shapes paired | photos PSNR | photos SSIM | photos paired |",
         "|---|---|---|---|---|---|---|"]
    for name, r in reports.items():
        cells = []
        for k in ("shapes", "photos"):
            x = r[k]
            pd = f"{x['paired']:.3f} ± {x['paired_se']:.3f}" if "paired" in x else ""
            cells += [f"{x['psnr']:.2f}", f"{x['ssim']:.3f}", pd]
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    r0 = next(iter(reports.values()))
    L += ["", f"{r0['shapes']['n']} held-out shapes (seed {r0['shapes_seed']}), {r0['photos']['n']} held-out photo "
          f"crops (seed {r0['photos_seed']}), {r0['image_size']} px; paired = the judge's perceptual distance "
          "(lower is better)."]
    return "\n".join(L) + "\n"
