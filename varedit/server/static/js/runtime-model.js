// The exported graphs (manifest.json + tokenizer, sampler, decoder and scorer .onnx) on onnxruntime-web:
// the tensor-level API of varedit_onnx.runtime.OnnxVAR in JavaScript. The sampler graph samples from
// uniforms given as inputs, so the same inputs give the same tokens as Python's runtime.
//
// `ort` is onnxruntime-web's module object (passed in, so that a bundler's copy or the page's vendored
// copy can be used alike).

export const FORMAT = "varedit-onnx";
export const FORMAT_VERSION = 1;

export class RuntimeError extends Error {}

function fail(msg) {
  throw new RuntimeError(msg);
}

// per scale [1 + t, t], t = cfg * si / (SN - 1) ("linear", the official order) or cfg ("constant")
export function guidanceWeights(cfg, SN, schedule = "linear") {
  const t = Array.isArray(schedule) ? schedule.map(Number)
    : schedule === "constant" ? Array(SN).fill(cfg)
      : schedule === "linear" ? Array.from({ length: SN }, (_, si) => cfg * (si / (SN - 1)))
        : fail(`unknown guidance schedule ${schedule}: linear, constant, or ${SN} weights`);
  if (t.length !== SN) fail(`guidance has ${t.length} weights; this model has ${SN} scales`);
  return Float32Array.from(t.flatMap((x) => [1 + x, x]));
}

export function checkManifest(m, where) {
  const need = (cond, msg) => { if (!cond) fail(`${where}: ${msg}; export the model again`); };
  need(m && typeof m === "object" && m.format === FORMAT, "not a varedit ONNX manifest");
  need(m.format_version === FORMAT_VERSION, `format version ${m.format_version}, this page reads ${FORMAT_VERSION}`);
  const md = m.model || {};
  const pns = md.patch_nums;
  need(Array.isArray(pns) && pns.length > 0 && pns.every((p, i) => Number.isInteger(p) && p > 0 && (i === 0 || p > pns[i - 1])),
    "model.patch_nums is not a scale list");
  need(Number.isInteger(md.image_size) && md.image_size % pns[pns.length - 1] === 0, "model.image_size is not a multiple of the last scale");
  for (const k of ["vocab_size", "Cvae", "num_classes"]) need(Number.isInteger(md[k]) && md[k] > 0, `model.${k} is not a positive integer`);
  need(Number.isInteger(m.batch) && m.batch > 0, "batch is not a positive integer");
  for (const g of ["tokenizer", "sampler", "decoder"]) {
    need(m.graphs && m.graphs[g] && typeof m.graphs[g].file === "string", `it lists no ${g} graph`);
    need(m.files && m.files[m.graphs[g].file], `the ${g} graph's file is not among the files`);
  }
  for (const f of Object.keys(m.files)) need(/^[A-Za-z0-9._-]+$/.test(f) && !f.startsWith("."), `file name ${JSON.stringify(f)} is not a plain name`);
}

function padRows(data, rowLen, s, e, B) { // rows s..e-1 of a row-major array, padded to B rows with copies of the last
  const out = new data.constructor(B * rowLen);
  out.set(data.subarray(s * rowLen, e * rowLen));
  for (let r = e - s; r < B; r++) out.copyWithin(r * rowLen, (e - s - 1) * rowLen, (e - s) * rowLen);
  return out;
}

export class Model {
  // base: URL of the export folder (ends with "/"); fetchBytes(url) -> ArrayBuffer
  constructor(ort, base, manifest, { fetchBytes, sessionOptions } = {}) {
    this.ort = ort;
    this.base = base;
    this.manifest = manifest;
    const md = manifest.model;
    this.name = md.name;
    this.imageSize = md.image_size;
    this.patchNums = md.patch_nums;
    this.latentSize = this.patchNums[this.patchNums.length - 1];
    this.downsample = this.imageSize / this.latentSize;
    this.vocabSize = md.vocab_size;
    this.Cvae = md.Cvae;
    this.numClasses = md.num_classes;
    this.classNames = md.class_names || null;
    this.batch = manifest.batch;
    this.precision = manifest.precision;
    this.defaults = { cfg: 4.0, top_k: 900, top_p: 0.95, guidance: "linear", ...(manifest.defaults || {}) };
    this.fetchBytes = fetchBytes || (async (url) => {
      const r = await fetch(url);
      if (!r.ok) fail(`cannot load ${url}: HTTP ${r.status}`);
      return r.arrayBuffer();
    });
    // severity 3: errors only (graph-optimisation warnings are not the page's errors)
    this.sessionOptions = sessionOptions || { executionProviders: ["wasm"], graphOptimizationLevel: "all", logSeverityLevel: 3 };
    this.sessions = {};
  }

  static async open(ort, base, opts = {}) {
    const fetchJSON = opts.fetchJSON || (async (url) => {
      const r = await fetch(url);
      if (!r.ok) fail(`cannot load ${url}: HTTP ${r.status} (is the model folder next to the page?)`);
      return r.json();
    });
    const m = await fetchJSON(base + "manifest.json");
    checkManifest(m, base + "manifest.json");
    return new Model(ort, base, m, opts);
  }

  get hasScorer() { return !!this.manifest.graphs.scorer; }
  get hasCellLogprob() { return this.manifest.graphs.sampler.outputs.some((o) => o.name === "cell_logprob_0"); }
  get canScoreLabels() { return this.hasScorer || this.hasCellLogprob; }

  async session(g) {
    if (!this.sessions[g]) {
      this.sessions[g] = (async () => {
        const spec = this.manifest.graphs[g];
        const bytes = await this.fetchBytes(this.base + spec.file);
        const want = this.manifest.files[spec.file].bytes;
        if (bytes.byteLength !== want) fail(`${spec.file} is ${bytes.byteLength} bytes, the manifest says ${want}: copy the folder again`);
        return this.ort.InferenceSession.create(new Uint8Array(bytes), this.sessionOptions);
      })();
      this.sessions[g].catch(() => { delete this.sessions[g]; });
    }
    return this.sessions[g];
  }

  async load(graphs = null) {
    const gs = graphs || ["tokenizer", "sampler", "decoder", ...(this.hasScorer ? ["scorer"] : [])];
    for (const g of gs) await this.session(g); // one after the other: peak memory stays one graph's
    return this;
  }

  tensor(type, data, dims) { return new this.ort.Tensor(type, data, dims); }

  // encodes: N images S x S x 3 in [0, 1] -> {f: Float32Array (N, Cvae, h, h), tokens: per scale BigInt64Array (N, pn^2)}
  async tokenize(encodes) {
    const S = this.imageSize, N = encodes.length, B = this.batch, pns = this.patchNums, h = this.latentSize;
    const x = new Float32Array(N * 3 * S * S);
    encodes.forEach((img, n) => {
      if (img.w !== S || img.h !== S) fail(`a canvas is ${img.w}x${img.h}; this model takes ${S}x${S}`);
      for (let c = 0; c < 3; c++) for (let i = 0; i < S * S; i++) x[((n * 3 + c) * S * S) + i] = Math.fround(img.data[i * 3 + c]) * 2 - 1;
    });
    const sess = await this.session("tokenizer");
    const fLen = this.Cvae * h * h, f = new Float32Array(N * fLen), tokens = pns.map((p) => new BigInt64Array(N * p * p));
    for (let s = 0; s < N; s += B) {
      const e = Math.min(s + B, N);
      const o = await sess.run({ image: this.tensor("float32", padRows(x, 3 * S * S, s, e, B), [B, 3, S, S]) });
      f.set(o.f.data.subarray(0, (e - s) * fLen), s * fLen);
      pns.forEach((p, k) => tokens[k].set(o[`tokens_${k}`].data.subarray(0, (e - s) * p * p), s * p * p));
    }
    return { f, tokens };
  }

  // masked next-scale prediction, as OnnxVAR.sample: labels (N), keep / known per scale (N * pn^2) or null,
  // uniforms per scale Float32Array (N * pn^2); fKnown (closed loop) Float32Array (N, Cvae, h, h);
  // poolW per scale (SN - 1) Float32Array (h * h, shared by the rows) or null
  async sample({ labels, keep = null, known = null, uniforms, fKnown = null, poolW = null, cfg, topK, topP,
    guidance = "linear" }) {
    const N = labels.length, B = this.batch, pns = this.patchNums, SN = pns.length, h = this.latentSize;
    for (const l of labels) if (!Number.isInteger(l) || l < 0 || l > this.numClasses) fail(`class index ${l} is out of range`);
    if (!Number.isFinite(cfg) || cfg < 0) fail(`cfg must be a finite number >= 0, not ${cfg}`);
    if (!Number.isInteger(topK) || topK < 0) fail(`top_k must be an integer >= 0, not ${topK}`);
    if (!(topP >= 0 && topP <= 1)) fail(`top_p must be in [0, 1], not ${topP}`);
    const g = guidanceWeights(cfg, SN, guidance);
    // fresh tensors for every run: onnxruntime's worker (proxy mode) takes over the buffers it is given
    const fixed = () => ({
      guidance: this.tensor("float32", g.slice(), [SN, 2]),
      top_k: this.tensor("int64", BigInt64Array.of(BigInt(topK)), []),
      top_p_threshold: this.tensor("float32", Float32Array.of(topP > 0 ? 1 - topP : -1), []),
      closed_loop: this.tensor("bool", Uint8Array.of(fKnown ? 1 : 0), []),
    });
    const lab = BigInt64Array.from(labels, (v) => BigInt(v));
    const fLen = this.Cvae * h * h;
    const f = fKnown || new Float32Array(N * fLen);
    const sess = await this.session("sampler");
    const cells = this.hasCellLogprob;
    const out = { tokens: pns.map((p) => new BigInt64Array(N * p * p)), fHat: new Float32Array(N * fLen),
      logprob: new Float32Array(N), cellLogprob: cells ? pns.map((p) => new Float32Array(N * p * p)) : null };
    for (let s = 0; s < N; s += B) {
      const e = Math.min(s + B, N);
      const feeds = { ...fixed(), label: this.tensor("int64", padRows(lab, 1, s, e, B), [B]),
        f_known: this.tensor("float32", padRows(f, fLen, s, e, B), [B, this.Cvae, h, h]) };
      pns.forEach((p, k) => {
        const L = p * p;
        feeds[`keep_${k}`] = this.tensor("bool", keep ? padRows(keep[k], L, s, e, B) : new Uint8Array(B * L), [B, L]);
        feeds[`known_${k}`] = this.tensor("int64", known ? padRows(known[k], L, s, e, B) : new BigInt64Array(B * L), [B, L]);
        feeds[`uniform_${k}`] = this.tensor("float32", padRows(uniforms[k], L, s, e, B), [B, L]);
        if (k < SN - 1) {
          const w = new Float32Array(B * h * h);
          for (let b = 0; b < B; b++) w.set(poolW && poolW[k] ? poolW[k] : new Float32Array(h * h).fill(1), b * h * h);
          feeds[`pool_w_${k}`] = this.tensor("float32", w, [B, 1, h, h]);
        }
      });
      const o = await sess.run(feeds);
      pns.forEach((p, k) => {
        out.tokens[k].set(o[`tokens_${k}`].data.subarray(0, (e - s) * p * p), s * p * p);
        if (cells) out.cellLogprob[k].set(o[`cell_logprob_${k}`].data.subarray(0, (e - s) * p * p), s * p * p);
      });
      out.fHat.set(o.f_hat.data.subarray(0, (e - s) * fLen), s * fLen);
      out.logprob.set(o.logprob.data.subarray(0, e - s), s);
    }
    return out;
  }

  // f_hat (N, Cvae, h, h) -> N images S x S x 3 in [0, 1]
  async decode(fHat, N) {
    const S = this.imageSize, B = this.batch, h = this.latentSize, fLen = this.Cvae * h * h;
    const sess = await this.session("decoder");
    const imgs = [];
    for (let s = 0; s < N; s += B) {
      const e = Math.min(s + B, N);
      const o = await sess.run({ f_hat: this.tensor("float32", padRows(fHat, fLen, s, e, B), [B, this.Cvae, h, h]) });
      const d = o.image.data;
      for (let r = 0; r < e - s; r++) {
        const img = { w: S, h: S, c: 3, data: new Float32Array(S * S * 3) };
        for (let c = 0; c < 3; c++) for (let i = 0; i < S * S; i++) img.data[i * 3 + c] = d[((r * 3 + c) * S * S) + i];
        imgs.push(img);
      }
    }
    return imgs;
  }

  // log p(kept tokens | class) for every class: N rows of numClasses (float64), as
  // OnnxVAR.class_log_likelihood (scorer graph; without it one sampler run per class)
  async classLogLikelihood(f, tokens, keep, N) {
    const C = this.numClasses, pns = this.patchNums, SN = pns.length;
    const out = Array.from({ length: N }, () => new Float64Array(C));
    if (this.hasScorer) {
      const R = this.manifest.graphs.scorer.rows, sess = await this.session("scorer");
      const rows = N * C;
      for (let s = 0; s < rows; s += R) {
        const e = Math.min(s + R, rows);
        const feeds = { label: this.tensor("int64", BigInt64Array.from({ length: R }, (_, r) => BigInt((s + Math.min(r, e - s - 1)) % C)), [R]) };
        pns.forEach((p, k) => {
          const L = p * p, t = new BigInt64Array(R * L);
          for (let r = 0; r < R; r++) {
            const img = Math.floor((s + Math.min(r, e - s - 1)) / C);
            t.set(tokens[k].subarray(img * L, (img + 1) * L), r * L);
          }
          feeds[`tokens_${k}`] = this.tensor("int64", t, [R, L]);
        });
        const o = await sess.run(feeds);
        for (let r = 0; r < e - s; r++) {
          const img = Math.floor((s + r) / C), cls = (s + r) % C;
          let sum = 0;
          for (let k = 0; k < SN; k++) {
            const L = pns[k] * pns[k], cl = o[`cell_logprob_${k}`].data;
            for (let j = 0; j < L; j++) if (keep[k][img * L + j]) sum += cl[r * L + j];
          }
          out[img][cls] = sum;
        }
      }
      return out;
    }
    if (!this.hasCellLogprob) fail("this export cannot score classes (made before label inference): give a class");
    const every = pns.map((p) => new Uint8Array(N * p * p).fill(1));
    const zeros = pns.map((p) => new Float32Array(N * p * p));
    for (let c = 0; c < C; c++) {
      const o = await this.sample({ labels: Array(N).fill(c), keep: every, uniforms: zeros, fKnown: f, cfg: 0, topK: 0, topP: 0 });
      for (let n = 0; n < N; n++) {
        let sum = 0;
        for (let k = 0; k < SN; k++) {
          const L = pns[k] * pns[k];
          for (let j = 0; j < L; j++) if (keep[k][n * L + j]) sum += o.cellLogprob[k][n * L + j];
        }
        out[n][c] = sum;
      }
    }
    return out;
  }
}
