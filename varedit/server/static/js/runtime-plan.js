// From a model canvas and its hole to what the sampler graph needs: varedit.editing.plan.make_plan and
// varedit.editing.masks in JavaScript. Keep maps and pool weights are exact (the same booleans as
// Python); the default mode's prefill is push-pull here (Python's inpaint default, OpenCV's
// Navier-Stokes inpainting, has no port: see docs/onnx.md, "In the browser").

import { prefill } from "./runtime-imaging.js";

export const COVERAGE = 0.25;
export const EDIT_COVERAGE = 1.0;
export const COARSE_TOKENS = 4;

// area (adaptive average) resize of an h x h map to pn x pn, float64, as masks.area_resize
export function areaResize(m, h, pn) {
  const out = new Float64Array(pn * pn);
  for (let i = 0; i < pn; i++) {
    const ys = Math.floor((i * h) / pn), ye = Math.ceil(((i + 1) * h) / pn);
    for (let j = 0; j < pn; j++) {
      const xs = Math.floor((j * h) / pn), xe = Math.ceil(((j + 1) * h) / pn);
      let s = 0;
      for (let y = ys; y < ye; y++) for (let x = xs; x < xe; x++) s += m[y * h + x];
      out[i * pn + j] = s / ((ye - ys) * (xe - xs));
    }
  }
  return out;
}

export function coverageKeepMaps(known, h, pns, threshold = 1, keepFirst = 0) {
  return pns.map((pn, si) => {
    if (si < keepFirst) return new Uint8Array(pn * pn).fill(1);
    const a = areaResize(known, h, pn);
    return Uint8Array.from(a, (v) => (v >= threshold - 1e-6 ? 1 : 0));
  });
}

// torch's bilinear resize (align_corners=False) in float32 arithmetic, as masks.bilinear_resize
function bilinearAxis(nIn, nOut) {
  const f = Math.fround;
  const scale = f(nIn / nOut);
  const out = [];
  for (let d = 0; d < nOut; d++) {
    let src = f((d + 0.5) * scale - 0.5);
    if (src < 0) src = 0;
    const i0 = Math.min(Math.floor(src), nIn - 1), i1 = Math.min(i0 + 1, nIn - 1);
    const lam1 = i1 === i0 ? 0 : f(src - i0);
    out.push([i0, i1, lam1]);
  }
  return out;
}

export function officialKeepMaps(keepLast, h, pns) {
  const f = Math.fround;
  return pns.map((pn) => {
    if (pn * pn <= 3) return new Uint8Array(pn * pn).fill(1);
    const ax = bilinearAxis(h, pn), out = new Uint8Array(pn * pn);
    for (let i = 0; i < pn; i++) {
      const [h0, h1, lh] = ax[i], lh0 = f(1 - lh);
      for (let j = 0; j < pn; j++) {
        const [w0, w1, lw] = ax[j], lw0 = f(1 - lw);
        const x00 = keepLast[h0 * h + w0], x01 = keepLast[h0 * h + w1], x10 = keepLast[h1 * h + w0], x11 = keepLast[h1 * h + w1];
        let v = f(f(lh0 * lw0) * x00);
        v = f(v + f(f(lh0 * lw) * x01));
        v = f(v + f(f(lh * lw0) * x10));
        v = f(v + f(f(lh * lw) * x11));
        out[i * pn + j] = v > 0.5 ? 1 : 0;
      }
    }
    return out;
  });
}

export function growLatentHole(known, h, cells) {
  let hole = Uint8Array.from(known, (v) => 1 - v);
  for (let c = 0; c < cells; c++) {
    const g = Uint8Array.from(hole);
    for (let y = 0; y < h; y++) for (let x = 0; x < h; x++) {
      if (!hole[y * h + x]) continue;
      for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
        const yy = y + dy, xx = x + dx;
        if (yy >= 0 && yy < h && xx >= 0 && xx < h) g[yy * h + xx] = 1;
      }
    }
    hole = g;
  }
  return Uint8Array.from(hole, (v) => 1 - v);
}

// canvas (S x S image), cmask (S x S, 1 = regenerate) -> {encode, keep (per scale Uint8Array), closedLoop,
// poolW (per scale Float32Array(h * h) or null), hole (h * h)}; options as make_plan's
export function makePlan(canvas, cmask, pns, ds, { mode = "default", keepFirst = 0, growTokens = 0,
  prefillMethod = "pushpull", closedLoop = false, coarseTokens = COARSE_TOKENS, coverage = COVERAGE } = {}) {
  const S = canvas.w, h = pns[pns.length - 1];
  if (S / ds !== h) throw new Error(`a ${S}-px canvas gives a ${S / ds} latent grid, the model's last scale is ${h}`);
  if (mode === "official") {
    const anyHole = new Uint8Array(h * h); // a latent cell is hole when any of its pixels is
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) if (cmask[y * S + x]) anyHole[Math.floor(y / ds) * h + Math.floor(x / ds)] = 1;
    const keep = officialKeepMaps(Uint8Array.from(anyHole, (v) => 1 - v), h, pns);
    for (let si = 0; si < keepFirst; si++) keep[si].fill(1);
    return { encode: canvas, keep, closedLoop: false, poolW: pns.map(() => null), hole: anyHole };
  }
  if (mode !== "default") throw new Error(`unknown mode ${mode}: default or official`);
  const frac = areaResize(Float64Array.from(cmask), S, h);
  let hole = Uint8Array.from(frac, (v) => (v > 1 - coverage + 1e-6 ? 1 : 0));
  let anyHole = hole.some((v) => v);
  if (growTokens > 0 && anyHole) hole = Uint8Array.from(growLatentHole(Uint8Array.from(hole, (v) => 1 - v), h, growTokens), (v) => 1 - v);
  const known = Uint8Array.from(hole, (v) => 1 - v);
  anyHole = hole.some((v) => v);
  const partial = anyHole && !hole.every((v) => v);
  const coarse = partial ? pns.filter((pn) => pn * pn <= coarseTokens).length : 0;
  const glob = Math.min(coarse, pns.filter((pn) => pn * pn <= 3).length);
  const keep = coverageKeepMaps(known, h, pns, coverage, Math.max(keepFirst, glob));
  const unfilled = keepFirst > 0 || prefillMethod === "none" || !cmask.some((v) => v);
  const encode = unfilled ? canvas : prefill(canvas, cmask, prefillMethod);
  const allKnown = known.every((v) => v);
  const kf = Math.max(keepFirst, coarse);
  const knownF = Float32Array.from(known);
  const poolW = pns.map((_, si) => (allKnown || si < kf ? null : knownF));
  return { encode, keep, closedLoop, poolW, hole };
}
