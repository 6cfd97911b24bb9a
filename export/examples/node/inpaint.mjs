// Inpaint with varedit's exported ONNX graphs from Node.js: no Python, no torch.
//
//   node inpaint.mjs ONNX_DIR INPUT.png x0,y0,x1,y1 OUTPUT.png [--seed N] [--noise FILE] [--tokens FILE]
//
// INPUT must be the model's size (manifest.model.image_size, square). The box (pixels, end exclusive)
// is regenerated with varedit's closed-loop method (make_plan(..., prefill="gray", closed_loop=True)):
// the hole is filled with mid-grey before
// encoding (no information leaks from the hole), per-scale keep maps come from area coverage (a latent
// cell is hole when more than three quarters of its pixels are, a cell of a coarser scale is regenerated
// when more than three quarters of it is hole: COVERAGE below, varedit's default; the 1x1 scale is
// kept whole, and the 1x1 and 2x2 scales read whole
// cells of the filled image), known cells are re-quantised in a closed loop, and the result is pasted
// back so every pixel outside the box is the input's. Noise: --noise FILE gives the sampler's uniforms
// (float32, scale after scale, batch rows first), else a seeded xorshift generator.
import fs from "node:fs";
import path from "node:path";
import ort from "onnxruntime-node";
import { PNG } from "pngjs";

function die(msg) {
  console.error(`Error: ${msg}`);
  process.exit(1);
}

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const seed = Number(opt("--seed", "0"));
const noiseFile = opt("--noise", null);
const tokensFile = opt("--tokens", null);
if (args.length !== 4) die("usage: node inpaint.mjs ONNX_DIR INPUT.png x0,y0,x1,y1 OUTPUT.png [--seed N] [--noise F]");
const [dir, input, boxArg, output] = args;

const manifestPath = path.join(dir, "manifest.json");
if (!fs.existsSync(manifestPath)) die(`${dir} has no manifest.json: export with \`varedit export onnx\``);
const manifest = JSON.parse(fs.readFileSync(manifestPath, "utf8"));
const { image_size: S, patch_nums: pns, Cvae: C, num_classes: numClasses } = manifest.model;
const B = manifest.batch;
const h = pns[pns.length - 1];
const ds = S / h;
const SN = pns.length;
const defaults = manifest.defaults || {};
const cfg = defaults.cfg ?? 4.0;
const topK = defaults.top_k ?? 900;
const topP = defaults.top_p ?? 0.95;
// area coverage rule, as varedit.editing.plan.COVERAGE: a cell is kept when at least this fraction is known
const COVERAGE = 0.25;

// ---- image and mask --------------------------------------------------------------------------------
const png = PNG.sync.read(fs.readFileSync(input));
if (png.width !== S || png.height !== S) die(`${input} is ${png.width}x${png.height}; this model needs ${S}x${S}`);
const box = boxArg.split(",").map(Number);
if (box.length !== 4 || box.some(Number.isNaN)) die(`box must be x0,y0,x1,y1, got ${boxArg}`);
const [x0, y0, x1, y1] = box.map((v) => Math.max(0, Math.min(S, Math.round(v))));
if (x1 <= x0 || y1 <= y0) die(`box ${boxArg} is empty inside the ${S}x${S} image`);
const inHole = (x, y) => x >= x0 && x < x1 && y >= y0 && y < y1;

// NCHW float in [-1, 1], hole filled with mid-grey (0.5 -> 0.0), every batch row the same image
const img = new Float32Array(B * 3 * S * S);
for (let b = 0; b < B; b++)
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < S; y++)
      for (let x = 0; x < S; x++) {
        const v = inHole(x, y) ? 0.5 : png.data[(y * S + x) * 4 + c] / 255;
        img[((b * 3 + c) * S + y) * S + x] = Math.fround(Math.fround(v) * 2 - 1);
      }

// latent hole: a cell is hole when more than 1 - COVERAGE of its ds x ds pixels are in the box
const hole = new Uint8Array(h * h);
const overlap = (a0, a1, b0, b1) => Math.max(0, Math.min(a1, b1) - Math.max(a0, b0));
for (let i = 0; i < h; i++)
  for (let j = 0; j < h; j++) {
    const area = overlap(i * ds, (i + 1) * ds, y0, y1) * overlap(j * ds, (j + 1) * ds, x0, x1);
    hole[i * h + j] = area / (ds * ds) > 1 - COVERAGE + 1e-6 ? 1 : 0;
  }

// keep map per scale: a cell is kept when at least COVERAGE of the latent cells under it (area pooling
// bounds) are known; the closed loop then forces it from its known cells only, except at the coarse
// scales (at most 4 tokens: 1x1 and 2x2), which read whole cells of the grey-filled image. Scales of
// at most 3 tokens (the 1x1 global token) are kept whole
const global = (pn) => pn * pn <= 3;
const coarse = (pn) => pn * pn <= 4;
function keepMap(pn) {
  const out = new Uint8Array(pn * pn);
  if (global(pn)) return out.fill(1);
  for (let i = 0; i < pn; i++) {
    const ys = Math.floor((i * h) / pn), ye = Math.ceil(((i + 1) * h) / pn);
    for (let j = 0; j < pn; j++) {
      const xs = Math.floor((j * h) / pn), xe = Math.ceil(((j + 1) * h) / pn);
      let known = 0;
      for (let y = ys; y < ye; y++) for (let x = xs; x < xe; x++) known += 1 - hole[y * h + x];
      out[i * pn + j] = known / ((ye - ys) * (xe - xs)) >= COVERAGE - 1e-6 ? 1 : 0;
    }
  }
  return out;
}

// ---- noise -----------------------------------------------------------------------------------------
let noise = null;
if (noiseFile) {
  const buf = fs.readFileSync(noiseFile);
  noise = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const need = pns.reduce((a, p) => a + B * p * p, 0);
  if (noise.length !== need) die(`${noiseFile} holds ${noise.length} floats, this model needs ${need}`);
}
let state = BigInt(seed) ^ 0x9e3779b97f4a7c15n;
function uniform() { // xorshift64*, 24-bit uniforms in [0, 1)
  state ^= state >> 12n; state ^= (state << 25n) & 0xffffffffffffffffn; state ^= state >> 27n;
  return Number(((state * 0x2545f4914f6cdd1dn) & 0xffffffffffffffffn) >> 40n) / 16777216;
}

// ---- run -------------------------------------------------------------------------------------------
const sessionOptions = { executionProviders: ["cpu"] };
const tok = await ort.InferenceSession.create(path.join(dir, manifest.graphs.tokenizer.file), sessionOptions);
const sam = await ort.InferenceSession.create(path.join(dir, manifest.graphs.sampler.file), sessionOptions);
const dec = await ort.InferenceSession.create(path.join(dir, manifest.graphs.decoder.file), sessionOptions);

const t = await tok.run({ image: new ort.Tensor("float32", img, [B, 3, S, S]) });

const feeds = {
  label: new ort.Tensor("int64", new BigInt64Array(B).fill(BigInt(numClasses)), [B]), // null class
  guidance: new ort.Tensor("float32", Float32Array.from(pns.flatMap((_, s) => {
    const tt = cfg * (s / (SN - 1)); // official order: ratio first, then cfg * ratio
    return [1 + tt, tt];
  })), [SN, 2]),
  top_k: new ort.Tensor("int64", BigInt64Array.of(BigInt(topK)), []),
  top_p_threshold: new ort.Tensor("float32", Float32Array.of(topP > 0 ? 1 - topP : -1), []),
  closed_loop: new ort.Tensor("bool", Uint8Array.of(1), []),
  f_known: t.f,
};
let off = 0;
const known = Float32Array.from(hole, (v) => 1 - v);
for (let s = 0; s < SN; s++) {
  const l = pns[s] * pns[s];
  const km = keepMap(pns[s]);
  const keep = new Uint8Array(B * l);
  for (let b = 0; b < B; b++) keep.set(km, b * l);
  feeds[`keep_${s}`] = new ort.Tensor("bool", keep, [B, l]);
  feeds[`known_${s}`] = new ort.Tensor("int64", new BigInt64Array(B * l), [B, l]);
  const u = noise ? noise.slice(off, off + B * l) : Float32Array.from({ length: B * l }, uniform);
  off += B * l;
  feeds[`uniform_${s}`] = new ort.Tensor("float32", u, [B, l]);
  if (s < SN - 1) {
    const w = new Float32Array(B * h * h);
    for (let b = 0; b < B; b++) w.set(coarse(pns[s]) ? new Float32Array(h * h).fill(1) : known, b * h * h);
    feeds[`pool_w_${s}`] = new ort.Tensor("float32", w, [B, 1, h, h]);
  }
}
const o = await sam.run(feeds);
const d = await dec.run({ f_hat: o.f_hat });
const gen = d.image.data; // (B, 3, S, S) in [0, 1]

// ---- paste back (first batch row) and write -----------------------------------------------------------
const out = new PNG({ width: S, height: S });
png.data.copy(out.data);
for (let y = y0; y < y1; y++)
  for (let x = x0; x < x1; x++)
    for (let c = 0; c < 3; c++) {
      const v = gen[(c * S + y) * S + x];
      out.data[(y * S + x) * 4 + c] = Math.max(0, Math.min(255, Math.floor(v * 255 + 0.5)));
    }
fs.writeFileSync(output + ".tmp", PNG.sync.write(out));
fs.renameSync(output + ".tmp", output); // atomic: a reader never sees half a file
if (tokensFile) {
  const toks = pns.map((p, s) => Array.from(o[`tokens_${s}`].data.slice(0, p * p), Number));
  fs.writeFileSync(tokensFile, JSON.stringify(toks));
}
console.log(output);
