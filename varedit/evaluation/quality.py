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
from typing import Any, Callable

import cv2
import numpy as np

from .. import processing as P
from ..data.synthetic import SyntheticShapes
from ..editing.plan import make_plan
from ..tasks import INPAINT_PREFILL, OUTPAINT_PREFILL
from .metrics import frechet_distance, psnr

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
    inferred_label: bool = True  # guided by the class inferred from the known pixels (label "auto"), else none
    generation_cfg: bool = False  # the model's generation cfg instead of the editing cfg


VARIANTS = [
    # every row is guided by the same inferred label (the default "auto") unless it says otherwise
    Variant("official", dict(mode="official"), harmonize=False),   # the notebook's tokens + paste-back
    Variant("default", dict(mode="default")),
    # the official token plan with varedit's post-processing (harmonize), reading the hole (its leak)
    # and with the hole's content unknown (grey): the second isolates what the leak is worth
    Variant("official-harmonized", dict(mode="official")),
    Variant("official-grey-hole", dict(mode="official"), grey_hole=True),
    # ablations: each switches off (or back to its old value) one choice of the default mode
    Variant("default-no-harmonize", dict(mode="default"), harmonize=False),
    Variant("default-no-prefill", dict(mode="default", prefill="none")),
    Variant("default-closed-loop", dict(mode="default", closed_loop=True)),  # the default before the NS prefill
    Variant("default-ns-prefill", dict(mode="default", prefill="ns")),  # one of these two is the default
    Variant("default-pushpull-prefill", dict(mode="default", prefill="pushpull")),
    Variant("default-free-1x1", dict(mode="default", coarse_tokens=0)),  # the 1x1 token by coverage too
    Variant("default-coverage-1", dict(mode="default", coverage=1.0)),
    Variant("default-grow-1", dict(mode="default", grow_tokens=1)),
    Variant("default-unconditional", dict(mode="default"), inferred_label=False),
    Variant("default-generation-cfg", dict(mode="default"), generation_cfg=True),
]


def _u8(x01: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x01 * 255 + 0.5), 0, 255).astype(np.uint8)


def run_eval(pipe: Any, *, classifier: Any, n: int = 200, n_ref: int = 1000, n_gen_per_class: int = 20,
             seed: int = 20_000, batch: int = 20, ablations: bool = True, n_upscale: int = 100,
             upscale_keeps: tuple[int, ...] | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from .classifier import features, predict
    t0 = time.time()
    S = pipe.image_size
    backend = pipe.editor.backend
    say = progress or (lambda s: log.info(s))
    ref = SyntheticShapes(n_ref, seed=seed + 1, size=S)
    test = SyntheticShapes(n, seed=seed, size=S)
    ref_imgs = [ref[i][0] for i in range(n_ref)]
    imgs = [test[i][0] for i in range(n)]
    labels = np.array([test[i][1] for i in range(n)])
    f_ref = features(classifier, ref_imgs)
    fd = lambda xs: frechet_distance(features(classifier, xs), f_ref)  # noqa: E731
    res: dict[str, Any] = {"n": n, "n_ref": n_ref, "seed": seed, "model": pipe.name, "image_size": S}

    # anchors
    recon = []
    for s in range(0, n, batch):
        x = np.stack(imgs[s:s + batch]).astype(np.float32) / 255
        plans = [make_plan(im, np.zeros((S, S), bool), backend.patch_nums, backend.downsample) for im in x]
        for p in plans:  # all known: the closed loop reproduces the tokenisation, decode = reconstruction
            p.keep_maps = [np.ones_like(k) for k in p.keep_maps]
        out, _ = backend.run(plans, [backend.num_classes] * len(plans), pipe.defaults, backend.stream(0))
        recon.extend(_u8(out))
    res["anchors"] = {"originals_fd": fd(imgs), "vqvae_recon_fd": fd(recon),
                      "vqvae_recon_psnr": float(np.mean([psnr(a, b) for a, b in zip(recon, imgs)])),
                      "classifier_acc_originals": float((predict(classifier, imgs) == labels).mean())}
    say(f"anchors {res['anchors']}")

    # class-conditional generation
    gen, gen_lab = [], []
    for c in range(backend.num_classes):
        r = pipe.generate(c, n=n_gen_per_class, seed=seed + c, batch_size=batch)
        gen.extend(np.asarray(im) for im in r.images)
        gen_lab.extend([c] * n_gen_per_class)
    res["generation"] = {"recognised": float((predict(classifier, gen) == np.array(gen_lab)).mean()),
                         "fd": fd(gen), "per_class": n_gen_per_class, **pipe.defaults.as_dict()}
    say(f"generation {res['generation']}")

    # inpainting
    res["editing_sampling"] = pipe.editor.edit_defaults.as_dict()
    rng = np.random.default_rng(seed)
    masks = {k: [eval_mask(k, S, rng) for _ in range(n)] for k in MASK_KINDS}
    res["inpainting"] = {}
    for kind in MASK_KINDS:
        rows: dict[str, dict[str, float]] = {}
        ms = masks[kind]

        def score(name: str, filled: list[np.ndarray], drift: float | None = None) -> None:
            rows[name] = {"fd": fd(filled),
                          "hole_psnr": float(np.mean([psnr(f, o, m) for f, o, m in zip(filled, imgs, ms)])),
                          "class_kept": float((predict(classifier, filled) == labels).mean())}
            if drift is not None:
                rows[name]["known_drift"] = drift
            say(f"{kind} {name} {rows[name]}")

        for name, flag in (("opencv-telea", cv2.INPAINT_TELEA), ("opencv-ns", cv2.INPAINT_NS)):
            score(name, [cv2.inpaint(im, m.astype(np.uint8) * 255, 5, flag) for im, m in zip(imgs, ms)])
        score("pushpull-fill", [_u8(P.prefill_hole(im.astype(np.float32) / 255, m, "pushpull"))
                                for im, m in zip(imgs, ms)])
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
        variants = VARIANTS if ablations else VARIANTS[:2]
        measured: dict[tuple[Any, ...], str] = {}  # a variant's settings -> the row that measured them
        for v in variants:
            kw = {"prefill": TASK_PREFILL[kind], **v.plan_kw} if v.plan_kw.get("mode") == "default" else v.plan_kw
            key = (tuple(sorted(kw.items())), v.harmonize, v.grey_hole, v.inferred_label, v.generation_cfg)
            if key in measured:  # e.g. the prefill row that is this kind's default: the same fill, same seed
                rows[v.name] = dict(rows[measured[key]])
                say(f"{kind} {v.name} = {measured[key]}")
                continue
            measured[key] = v.name
            filled, drifts = [], []
            stream = backend.stream(seed)
            for s in range(0, n, batch):
                x = np.stack(imgs[s:s + batch]).astype(np.float32) / 255
                if v.grey_hole:
                    x = np.where(np.stack(ms[s:s + batch])[..., None], np.float32(0.5), x)
                plans = [make_plan(im, m, backend.patch_nums, backend.downsample, **kw)
                         for im, m in zip(x, ms[s:s + batch])]
                labs = inferred[s:s + batch] if v.inferred_label else [backend.num_classes] * len(plans)
                opts = pipe.defaults if v.generation_cfg else pipe.editor.edit_defaults
                out, _ = backend.run(plans, list(labs), opts, stream)
                for j, (o, p) in enumerate(zip(out, plans)):
                    i = s + j
                    known_px = ~np.kron(p.hole_latent, np.ones((backend.downsample,) * 2, bool))
                    drifts.append(float(np.abs(_u8(o).astype(float) - recon[i].astype(float))[known_px].mean())
                                  if known_px.any() else 0.0)
                    if v.harmonize:  # as the Editor does: the canvas is the whole image here
                        o = P.harmonize(o, imgs[i].astype(np.float32) / 255, ms[i])
                    w = P.feather(ms[i], pipe.editor.feather_px((S, S)))
                    filled.append(P.compose(imgs[i], o, w))
            score(v.name, filled, float(np.mean(drifts)))
        res["inpainting"][kind] = rows

    # upscaling from half resolution
    half = [cv2.resize(im, (S // 2, S // 2), interpolation=cv2.INTER_AREA) for im in imgs[: min(n, n_upscale)]]
    gt = imgs[: len(half)]
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
    res["upscale"] = {"token_agreement_per_scale": agree, "rows": up_rows, "n": len(half)}
    res["seconds"] = round(time.time() - t0, 1)
    return res


def to_markdown(res: dict[str, Any]) -> str:
    L = [f"Model `{res['model']}`, {res['n']} held-out images (seed {res['seed']}), reference set {res['n_ref']} "
         f"images; FD = Fréchet distance in the shape classifier's features (lower is better).", ""]
    a = res["anchors"]
    L += ["| anchor | FD | PSNR |", "|---|---|---|",
          f"| originals (held-out vs reference) | {a['originals_fd']:.2f} | |",
          f"| VQVAE reconstruction | {a['vqvae_recon_fd']:.2f} | {a['vqvae_recon_psnr']:.2f} |", ""]
    g = res["generation"]
    L += [f"Class-conditional samples: **{100 * g['recognised']:.1f}%** recognised as their class "
          f"(classifier accuracy on real held-out images {100 * a['classifier_acc_originals']:.1f}%), FD {g['fd']:.2f} "
          f"(cfg {g['cfg']}, top-k {g['top_k']}, top-p {g['top_p']}).", ""]
    e = res.get("editing_sampling")
    if e:
        L += [f"Inpainting rows: cfg {e['cfg']}, top-k {e['top_k']}, top-p {e['top_p']}, guided by the class inferred "
              f"from the known pixels (label auto) unless the row says otherwise; inferred class correct: "
              + ", ".join(f"{k} {100 * v:.0f}%" for k, v in res.get("label_inference", {}).items()) + ".", ""]
    for kind, rows in res["inpainting"].items():
        pre = res.get("default_prefill", {}).get(kind)
        L += [f"**{kind}**" + (f" (the default mode's prefill: {pre}, as its task's)" if pre else ""), "",
              "| method | FD | hole PSNR | class kept | known-region drift |", "|---|---|---|---|---|"]
        for name, r in rows.items():
            d = f"{r['known_drift']:.2f}" if "known_drift" in r else ""
            L.append(f"| {name} | {r['fd']:.2f} | {r['hole_psnr']:.2f} | {100 * r['class_kept']:.1f}% | {d} |")
        L.append("")
    u = res["upscale"]
    L += ["**upscale 2x from half resolution**", "",
          "token agreement per scale (image vs its Lanczos down-up copy): "
          + ", ".join(f"{100 * x:.0f}%" for x in u["token_agreement_per_scale"]), "",
          "| method | PSNR | FD |", "|---|---|---|"]
    for name, r in u["rows"].items():
        L.append(f"| {name} | {r['psnr']:.2f} | {r['fd']:.2f} |")
    return "\n".join(L) + "\n"


def write_report(res: dict[str, Any], out_dir: str | Path) -> None:
    from ..io import atomic_write_with, save_json
    out = Path(out_dir)
    save_json(res, out / "eval.json")
    md = to_markdown(res).encode()
    atomic_write_with(out / "eval.md", lambda f: f.write(md))
