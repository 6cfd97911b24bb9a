// The portable sampler's noise in JavaScript: numpy's `default_rng(seed).random((batch, pn * pn),
// dtype=float32)` scale after scale (varedit.editing.noise.portable_uniforms), bit for bit.
// numpy: SeedSequence(seed) -> 4 x uint64 state words -> PCG64 (128-bit LCG, XSL-RR output); a float32
// takes 32 bits (two per 64-bit draw, low half first) and keeps the top 24.

const M32 = 0xffffffffn;
const M64 = (1n << 64n) - 1n;
const M128 = (1n << 128n) - 1n;
const PCG_MULT = (0x2360ed051fc65da4n << 64n) | 0x4385df649fccf645n;

// ---- numpy.random.SeedSequence (uint32 arithmetic) ------------------------------------------------
const INIT_A = 0x43b0d7e5, MULT_A = 0x931e8875, INIT_B = 0x8b51f9dd, MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd, MIX_MULT_R = 0x4973f715, XSHIFT = 16, POOL = 4;
const mul32 = (a, b) => Math.imul(a, b) >>> 0;

function entropyWords(seed) {
  let s = BigInt(seed);
  if (s < 0n) throw new RangeError("the seed must be a non-negative integer");
  const words = [];
  do {
    words.push(Number(s & M32));
    s >>= 32n;
  } while (s > 0n);
  return words;
}

function seedSequenceState(seed, nWords32) {
  const entropy = entropyWords(seed);
  const hc = { v: INIT_A };
  const hashmix = (value) => {
    value = (value ^ hc.v) >>> 0;
    hc.v = mul32(hc.v, MULT_A);
    value = mul32(value, hc.v);
    return (value ^ (value >>> XSHIFT)) >>> 0;
  };
  const mix = (x, y) => {
    const r = (mul32(MIX_MULT_L, x) - mul32(MIX_MULT_R, y)) >>> 0;
    return (r ^ (r >>> XSHIFT)) >>> 0;
  };
  const pool = new Array(POOL);
  for (let i = 0; i < POOL; i++) pool[i] = hashmix(i < entropy.length ? entropy[i] : 0);
  for (let s = 0; s < POOL; s++) for (let d = 0; d < POOL; d++) if (s !== d) pool[d] = mix(pool[d], hashmix(pool[s]));
  for (let s = POOL; s < entropy.length; s++) for (let d = 0; d < POOL; d++) pool[d] = mix(pool[d], hashmix(entropy[s]));
  const out = new Array(nWords32);
  let h = INIT_B;
  for (let i = 0; i < nWords32; i++) {
    let v = (pool[i % POOL] ^ h) >>> 0;
    h = mul32(h, MULT_B);
    v = mul32(v, h);
    out[i] = (v ^ (v >>> XSHIFT)) >>> 0;
  }
  return out;
}

// ---- PCG64 -------------------------------------------------------------------------------------------
export class PCG64 {
  constructor(seed) {
    const w = seedSequenceState(seed, 8); // 4 uint64 words, little-endian pairs of uint32
    const u64 = (i) => (BigInt(w[2 * i + 1]) << 32n) | BigInt(w[2 * i]);
    const initstate = (u64(0) << 64n) | u64(1);
    const initseq = (u64(2) << 64n) | u64(3);
    this.inc = ((initseq << 1n) | 1n) & M128;
    this.state = 0n;
    this.step();
    this.state = (this.state + initstate) & M128;
    this.step();
    this.spare = null; // the high half of the last 64-bit draw, given out by the next 32-bit draw
  }

  step() {
    this.state = (this.state * PCG_MULT + this.inc) & M128;
  }

  next64() {
    this.step();
    const s = this.state;
    const x = ((s >> 64n) ^ s) & M64;
    const rot = Number(s >> 122n);
    return ((x >> BigInt(rot)) | (x << BigInt((64 - rot) & 63))) & M64;
  }

  next32() {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    const n = this.next64();
    this.spare = Number(n >> 32n);
    return Number(n & M32);
  }

  // float32 in [0, 1): (next32 >> 8) / 2^24, exact in float32
  fillFloat32(out) {
    for (let i = 0; i < out.length; i++) out[i] = (this.next32() >>> 8) / 16777216;
    return out;
  }
}

// per scale a Float32Array of batch * pn * pn uniforms (rows first), as portable_uniforms(seed, batch, pns)
export function portableUniforms(seed, batch, patchNums) {
  const g = new PCG64(seed);
  return patchNums.map((pn) => g.fillFloat32(new Float32Array(batch * pn * pn)));
}
