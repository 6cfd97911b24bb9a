// Pixel work of the in-browser runtime, no DOM: images are {w, h, c, data: Float32Array} (interleaved
// channels, [0, 1]) and masks Uint8Array(w * h) (1 = regenerate). Ports of varedit.processing: the
// windows (plan_crop, plan_resize, extract, place), the push-pull fill and harmonize, the feathered
// paste-back. The windows' arithmetic is exact; the resamplers follow OpenCV's rules (area when
// shrinking, bicubic a = -0.75 when growing, bilinear) in float64, so they agree with Python to
// within rounding, not bit for bit.

export function image(w, h, c = 3, data = null) {
  return { w, h, c, data: data || new Float32Array(w * h * c) };
}

// ---- resampling ----------------------------------------------------------------------------------
// separable: resample rows then columns with per-axis weight lists [{i0, w: [...]}]
function resample(img, nw, nh, axisW, axisH) {
  const { w, h, c, data } = img;
  const tmp = new Float64Array(nw * h * c);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < nw; x++) {
      const { idx, wt } = axisW[x];
      for (let k = 0; k < c; k++) {
        let s = 0;
        for (let t = 0; t < idx.length; t++) s += wt[t] * data[(y * w + idx[t]) * c + k];
        tmp[(y * nw + x) * c + k] = s;
      }
    }
  }
  const out = image(nw, nh, c);
  for (let y = 0; y < nh; y++) {
    const { idx, wt } = axisH[y];
    for (let x = 0; x < nw; x++) {
      for (let k = 0; k < c; k++) {
        let s = 0;
        for (let t = 0; t < idx.length; t++) s += wt[t] * tmp[(idx[t] * nw + x) * c + k];
        out.data[(y * nw + x) * c + k] = s;
      }
    }
  }
  return out;
}

function areaAxis(n, m) { // n source pixels -> m (m <= n): each output averages its source interval
  const f = n / m, out = [];
  for (let i = 0; i < m; i++) {
    const a = i * f, b = (i + 1) * f, idx = [], wt = [];
    for (let j = Math.floor(a); j < Math.min(n, Math.ceil(b)); j++) {
      const cover = Math.min(b, j + 1) - Math.max(a, j);
      if (cover > 1e-12) { idx.push(j); wt.push(cover / f); }
    }
    out.push({ idx, wt });
  }
  return out;
}

function cubicAxis(n, m) { // OpenCV INTER_CUBIC: a = -0.75, half-pixel centres, replicated border
  const A = -0.75, f = n / m, out = [];
  const k = (x) => {
    x = Math.abs(x);
    if (x <= 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
    if (x < 2) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
    return 0;
  };
  for (let i = 0; i < m; i++) {
    const src = (i + 0.5) * f - 0.5, i0 = Math.floor(src), t = src - i0, idx = [], wt = [];
    for (let j = -1; j <= 2; j++) {
      idx.push(Math.min(n - 1, Math.max(0, i0 + j)));
      wt.push(k(j - t));
    }
    out.push({ idx, wt });
  }
  return out;
}

function linearAxis(n, m) { // OpenCV INTER_LINEAR: half-pixel centres, replicated border
  const f = n / m, out = [];
  for (let i = 0; i < m; i++) {
    let src = (i + 0.5) * f - 0.5;
    if (src < 0) src = 0;
    const i0 = Math.min(n - 1, Math.floor(src)), i1 = Math.min(n - 1, i0 + 1), t = src - i0;
    out.push(i1 === i0 ? { idx: [i0], wt: [1] } : { idx: [i0, i1], wt: [1 - t, t] });
  }
  return out;
}

const identityAxis = (n) => Array.from({ length: n }, (_, i) => ({ idx: [i], wt: [1] }));

export function resize(img, nw, nh, kind = "auto") {
  if (nw === img.w && nh === img.h) return image(img.w, img.h, img.c, Float32Array.from(img.data));
  const axis = (n, m) => {
    if (n === m) return identityAxis(n);
    if (kind === "linear") return linearAxis(n, m);
    return m < n ? areaAxis(n, m) : cubicAxis(n, m);
  };
  return resample(img, nw, nh, axis(img.w, nw), axis(img.h, nh));
}

export function clip01(img) {
  for (let i = 0; i < img.data.length; i++) img.data[i] = Math.min(1, Math.max(0, img.data[i]));
  return img;
}

// ---- fills ------------------------------------------------------------------------------------------
// push-pull (Gortler et al. 1996), as varedit.processing.fills._push_pull: known pixels averaged down a
// pyramid (weights clamped to 1), holes filled on the way up from the coarser level
export function pushPull(img, known) {
  const colors = [img], weights = [Float32Array.from(known, (v) => (v ? 1 : 0))];
  while (Math.max(colors[colors.length - 1].w, colors[colors.length - 1].h) > 1) {
    const col = colors[colors.length - 1], wt = weights[weights.length - 1];
    const { w, h, c } = col, nw = Math.max(1, (w + 1) >> 1), nh = Math.max(1, (h + 1) >> 1);
    const premult = image(w, h, c + 1);
    for (let i = 0; i < w * h; i++) {
      for (let k = 0; k < c; k++) premult.data[i * (c + 1) + k] = col.data[i * c + k] * wt[i];
      premult.data[i * (c + 1) + c] = wt[i];
    }
    const small = resize(premult, nw, nh, "area"), scale = (w * h) / (nw * nh);
    const ncol = image(nw, nh, c), nwt = new Float32Array(nw * nh);
    for (let i = 0; i < nw * nh; i++) {
      const ws = small.data[i * (c + 1) + c] * scale;
      for (let k = 0; k < c; k++) ncol.data[i * c + k] = ws > 1e-8 ? (small.data[i * (c + 1) + k] * scale) / ws : 0;
      nwt[i] = Math.min(ws, 1);
    }
    colors.push(ncol);
    weights.push(nwt);
  }
  let filled = colors[colors.length - 1];
  for (let l = colors.length - 2; l >= 0; l--) {
    const col = colors[l], wt = weights[l];
    const up = resize(filled, col.w, col.h, "linear");
    const out = image(col.w, col.h, col.c);
    for (let i = 0; i < col.w * col.h; i++) {
      for (let k = 0; k < col.c; k++) out.data[i * col.c + k] = col.data[i * col.c + k] * wt[i] + up.data[i * col.c + k] * (1 - wt[i]);
    }
    filled = out;
  }
  return filled;
}

// the hole (mask 1) filled from known pixels only: "pushpull", "mean", "gray" or "edge" (nearest known)
export function prefill(img, hole, method = "pushpull") {
  const out = image(img.w, img.h, img.c, Float32Array.from(img.data));
  const n = img.w * img.h, c = img.c;
  let any = false, allHole = true;
  for (let i = 0; i < n; i++) { if (hole[i]) any = true; else allHole = false; }
  if (!any || method === "none") return out;
  if (allHole || method === "gray") {
    for (let i = 0; i < n; i++) if (hole[i]) for (let k = 0; k < c; k++) out.data[i * c + k] = 0.5;
    return out;
  }
  const known = Uint8Array.from(hole, (v) => 1 - v);
  const safe = image(img.w, img.h, c);
  for (let i = 0; i < n; i++) if (known[i]) for (let k = 0; k < c; k++) safe.data[i * c + k] = img.data[i * c + k];
  let fill;
  if (method === "mean") {
    const m = new Float64Array(c);
    let cnt = 0;
    for (let i = 0; i < n; i++) if (known[i]) { cnt++; for (let k = 0; k < c; k++) m[k] += safe.data[i * c + k]; }
    fill = { at: (i, k) => m[k] / cnt };
  } else if (method === "edge") {
    const near = nearestKnown(known, img.w, img.h);
    fill = { at: (i, k) => safe.data[near[i] * c + k] };
  } else if (method === "pushpull") {
    const pp = pushPull(safe, known);
    fill = { at: (i, k) => pp.data[i * c + k] };
  } else {
    throw new Error(`unknown prefill ${method}: use pushpull, mean, edge or gray`);
  }
  for (let i = 0; i < n; i++) if (hole[i]) for (let k = 0; k < c; k++) out.data[i * c + k] = Math.min(1, Math.max(0, fill.at(i, k)));
  return out;
}

// ---- distances -------------------------------------------------------------------------------------
// exact squared Euclidean distance transform (Felzenszwalb & Huttenlocher), 1-D pass
function edt1d(f, n, d, v, z) {
  let k = 0;
  v[0] = 0; z[0] = -Infinity; z[1] = Infinity;
  for (let q = 1; q < n; q++) {
    if (f[q] === Infinity) continue;
    if (f[v[k]] === Infinity) { v[k] = q; continue; }
    let s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k]);
    while (s <= z[k]) {
      k--;
      s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k]);
    }
    k++; v[k] = q; z[k] = s; z[k + 1] = Infinity;
  }
  k = 0;
  for (let q = 0; q < n; q++) {
    while (z[k + 1] < q) k++;
    d[q] = f[v[k]] === Infinity ? Infinity : (q - v[k]) * (q - v[k]) + f[v[k]];
  }
}

// Euclidean distance of every pixel to the nearest pixel where src is 1 (0 on it)
export function distanceTo(src, w, h) {
  const n = Math.max(w, h), f = new Float64Array(n), d = new Float64Array(n), v = new Int32Array(n), z = new Float64Array(n + 1);
  const g = new Float64Array(w * h);
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) f[y] = src[y * w + x] ? 0 : Infinity;
    edt1d(f, h, d, v, z);
    for (let y = 0; y < h; y++) g[y * w + x] = d[y];
  }
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) f[x] = g[y * w + x];
    edt1d(f, w, d, v, z);
    for (let x = 0; x < w; x++) out[y * w + x] = Math.sqrt(d[x]);
  }
  return out;
}

function nearestKnown(known, w, h) { // index of a nearest known pixel (two-pass propagation)
  const near = new Int32Array(w * h).fill(-1), dist = new Float64Array(w * h).fill(Infinity);
  for (let i = 0; i < w * h; i++) if (known[i]) { near[i] = i; dist[i] = 0; }
  const relax = (i, j) => {
    if (near[j] < 0) return;
    const p = near[j], dx = (p % w) - (i % w), dy = Math.floor(p / w) - Math.floor(i / w), dd = dx * dx + dy * dy;
    if (dd < dist[i]) { dist[i] = dd; near[i] = p; }
  };
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const i = y * w + x;
    if (x > 0) relax(i, i - 1);
    if (y > 0) { relax(i, i - w); if (x > 0) relax(i, i - w - 1); if (x < w - 1) relax(i, i - w + 1); }
  }
  for (let y = h - 1; y >= 0; y--) for (let x = w - 1; x >= 0; x--) {
    const i = y * w + x;
    if (x < w - 1) relax(i, i + 1);
    if (y < h - 1) { relax(i, i + w); if (x < w - 1) relax(i, i + w + 1); if (x > 0) relax(i, i + w - 1); }
  }
  return near;
}

// paste-back weight (varedit.processing.feather): 1 on the mask, a smoothstep down to exactly 0 at
// `radius` pixels from it, 0 beyond (those pixels stay the input's, bit for bit)
export function feather(mask, w, h, radius) {
  const d = distanceTo(mask, w, h), out = new Float32Array(w * h);
  for (let i = 0; i < w * h; i++) {
    if (mask[i]) out[i] = 1;
    else if (radius <= 0 || d[i] >= radius) out[i] = 0;
    else { const t = d[i] / radius; out[i] = 1 - t * t * (3 - 2 * t); }
  }
  return out;
}

// membrane colour correction of a decoded fill (varedit.processing.harmonize): the error on the known
// pixels is interpolated into the hole by push-pull and added
export function harmonize(dec, ref, hole) {
  const n = dec.w * dec.h, c = dec.c;
  let anyHole = false, anyKnown = false;
  for (let i = 0; i < n; i++) { if (hole[i]) anyHole = true; else anyKnown = true; }
  if (!anyHole || !anyKnown) return image(dec.w, dec.h, c, Float32Array.from(dec.data));
  const err = image(dec.w, dec.h, c);
  for (let i = 0; i < n; i++) if (!hole[i]) for (let k = 0; k < c; k++) err.data[i * c + k] = ref.data[i * c + k] - dec.data[i * c + k];
  const known = Uint8Array.from(hole, (v) => 1 - v);
  const pp = pushPull(err, known);
  const out = image(dec.w, dec.h, c);
  for (let i = 0; i < n * c; i++) out.data[i] = Math.min(1, Math.max(0, dec.data[i] + pp.data[i]));
  return out;
}

// ---- windows (varedit.processing.windows) -----------------------------------------------------------
export function maskBBox(mask, w, h) {
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (mask[y * w + x]) {
    if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
  }
  return x1 < 0 ? null : [x0, y0, x1 + 1, y1 + 1];
}

const floorDiv = (a, b) => Math.floor(a / b);

function placeAxis(lo, hi, side, dim) {
  if (side >= dim) return -floorDiv(side - dim, 2);
  const start = floorDiv(lo + hi, 2) - floorDiv(side, 2);
  return Math.min(Math.max(start, 0), dim - side);
}

export function planCrop(mask, w, h, S, margin = 0.5, minMargin = 16) {
  const bb = maskBBox(mask, w, h);
  if (!bb) throw new Error("the mask is empty: nothing to regenerate");
  const bside = Math.max(bb[2] - bb[0], bb[3] - bb[1]);
  let side = Math.ceil(bside + 2 * Math.max(margin * bside, minMargin));
  side = Math.max(side, Math.min(S, Math.max(w, h)));
  side = Math.max(Math.min(side, Math.max(w, h)), bside, 1);
  const x0 = placeAxis(bb[0], bb[2], side, w), y0 = placeAxis(bb[1], bb[3], side, h);
  return { box: [x0, y0, x0 + side, y0 + side], S, w, h, kind: "crop" };
}

export function planResize(w, h, S) {
  const side = Math.max(w, h), x0 = -floorDiv(side - w, 2), y0 = -floorDiv(side - h, 2);
  return { box: [x0, y0, x0 + side, y0 + side], S, w, h, kind: "resize" };
}

export function clipBox(win) {
  const [x0, y0, x1, y1] = win.box;
  return [Math.max(x0, 0), Math.max(y0, 0), Math.min(x1, win.w), Math.min(y1, win.h)];
}

// the window's square cut out of (img, mask) with replicated borders, resized to S x S; the canvas mask
// is conservative (a canvas pixel is hole when any image pixel it is computed from is)
export function extract(win, img, mask) {
  const [x0, y0, x1] = win.box, side = x1 - x0, S = win.S, c = img.c;
  const sq = image(side, side, c), sm = new Uint8Array(side * side);
  for (let y = 0; y < side; y++) {
    const sy = Math.min(win.h - 1, Math.max(0, y0 + y));
    for (let x = 0; x < side; x++) {
      const sx = Math.min(win.w - 1, Math.max(0, x0 + x)), i = sy * win.w + sx, o = y * side + x;
      for (let k = 0; k < c; k++) sq.data[o * c + k] = img.data[i * c + k];
      sm[o] = mask ? mask[i] : 0;
    }
  }
  const canvas = clip01(resize(sq, S, S));
  let cmask = sm;
  if (side !== S && mask) {
    cmask = new Uint8Array(S * S);
    if (S < side) { // shrinking: any covered source pixel
      const f = side / S;
      for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) {
        let hit = 0;
        for (let yy = Math.floor(y * f); yy < Math.min(side, Math.ceil((y + 1) * f)) && !hit; yy++)
          for (let xx = Math.floor(x * f); xx < Math.min(side, Math.ceil((x + 1) * f)) && !hit; xx++) hit = sm[yy * side + xx];
        cmask[y * S + x] = hit;
      }
    } else { // growing: the bicubic taps lie within 2 source pixels of the nearest one
      const f = side / S;
      for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) {
        const cy = Math.floor(y * f), cx = Math.floor(x * f);
        let hit = 0;
        for (let yy = Math.max(0, cy - 2); yy <= Math.min(side - 1, cy + 2) && !hit; yy++)
          for (let xx = Math.max(0, cx - 2); xx <= Math.min(side - 1, cx + 2) && !hit; xx++) hit = sm[yy * side + xx];
        cmask[y * S + x] = hit;
      }
    }
  }
  return { canvas, cmask };
}

// a model canvas mapped back onto the window's in-image region: {x, y, img}
export function place(win, canvas) {
  const [x0, y0, x1] = win.box, side = x1 - x0;
  const full = clip01(resize(canvas, side, side));
  const [cx0, cy0, cx1, cy1] = clipBox(win), rw = cx1 - cx0, rh = cy1 - cy0, c = canvas.c;
  const region = image(rw, rh, c);
  for (let y = 0; y < rh; y++) for (let x = 0; x < rw; x++) {
    const o = ((cy0 - y0 + y) * side + (cx0 - x0 + x)) * c;
    for (let k = 0; k < c; k++) region.data[(y * rw + x) * c + k] = full.data[o + k];
  }
  return { x: cx0, y: cy0, img: region };
}
