// The canvas: the working image, its mask, pan and zoom, the tools (brush, eraser, rectangle, edit box,
// outpaint handles), undo and redo, and the comparison with the original.
//
// Coordinates: image pixels (x, y) map to canvas CSS pixels as view.x + x * view.s, view.y + y * view.s.

const MASK_CSS = "rgb(255, 64, 64)";
const MASK_RGB = [255, 64, 64];
const HANDLE = 7; // half the size of an outpaint handle, CSS pixels
const UNDO_BYTES = 192e6; // memory for undo snapshots of the mask (1 byte per pixel each)

export function canvasOf(w, h, readback = false) {
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  if (readback) c.getContext("2d", { willReadFrequently: true }); // the mask is read back often
  return c;
}

// A canvas holding the pixels of an image blob exactly (no colour conversion, straight alpha).
export async function canvasFromBlob(blob) {
  const bmp = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const c = canvasOf(bmp.width, bmp.height);
  c.getContext("2d").drawImage(bmp, 0, 0);
  bmp.close();
  return c;
}

export function canvasToBlob(c, type = "image/png") {
  return new Promise((resolve, reject) => c.toBlob((b) => (b ? resolve(b) : reject(new Error("encode failed"))), type));
}

// Distance (chamfer 1 / sqrt 2) from every pixel to the nearest pixel where src is 1.
function distanceTo(src, w, h) {
  const INF = 1e9, D = Math.SQRT2;
  const d = new Float32Array(w * h);
  for (let i = 0; i < d.length; i++) d[i] = src[i] ? 0 : INF;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      let v = d[i];
      if (x > 0) v = Math.min(v, d[i - 1] + 1);
      if (y > 0) {
        v = Math.min(v, d[i - w] + 1);
        if (x > 0) v = Math.min(v, d[i - w - 1] + D);
        if (x < w - 1) v = Math.min(v, d[i - w + 1] + D);
      }
      d[i] = v;
    }
  }
  for (let y = h - 1; y >= 0; y--) {
    for (let x = w - 1; x >= 0; x--) {
      const i = y * w + x;
      let v = d[i];
      if (x < w - 1) v = Math.min(v, d[i + 1] + 1);
      if (y < h - 1) {
        v = Math.min(v, d[i + w] + 1);
        if (x < w - 1) v = Math.min(v, d[i + w + 1] + D);
        if (x > 0) v = Math.min(v, d[i + w - 1] + D);
      }
      d[i] = v;
    }
  }
  return d;
}

export class Stage {
  // insetTop(): CSS pixels at the canvas's top covered by a toolbar (the fitted image stays below them)
  constructor(canvas, onChange = () => {}, { insetTop = () => 40 } = {}) {
    this.el = canvas;
    this.insetTop = insetTop;
    this.ctx = canvas.getContext("2d");
    this.onChange = onChange;
    this.image = null; // canvas with the working image
    this.imageBlob = null; // its exact bytes (what is sent to the server)
    this.mask = null; // canvas of the image's size; painted pixels are opaque
    this.original = null; // {img, rect}: the image as opened, in working-image coordinates
    this.overlay = null; // {img, rect, compare}: a result shown over the stage
    this.view = { x: 0, y: 0, s: 1 };
    this.task = "inpaint";
    this.tool = "brush";
    this.brush = 24;
    this.box = null; // edit box {x0, y0, x1, y1}, image pixels
    this.pads = { left: 0, right: 0, top: 0, bottom: 0 };
    this.comparing = false;
    this.spaceDown = false;
    this.undoStack = [];
    this.redoStack = [];
    this.pointer = null;
    this.drag = null;
    this.raf = 0;
    this.autoFit = true; // the view follows the canvas's size until the user zooms or pans
    this.bind();
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  // ---- state ------------------------------------------------------------------------------------
  get width() { return this.image ? this.image.width : 0; }
  get height() { return this.image ? this.image.height : 0; }

  setImage(canvas, blob, { original = "reset", map = null } = {}) {
    const sizeChanged = !this.image || canvas.width !== this.image.width || canvas.height !== this.image.height;
    if (original === "reset") {
      this.original = { img: canvas, rect: { x: 0, y: 0, w: canvas.width, h: canvas.height } };
    } else if (map && this.original) {
      // the working image was replaced by a result placed at map = {x, y, w, h} of the old one
      const fx = canvas.width / map.w, fy = canvas.height / map.h, r = this.original.rect;
      this.original = { img: this.original.img,
        rect: { x: (r.x - map.x) * fx, y: (r.y - map.y) * fy, w: r.w * fx, h: r.h * fy } };
    }
    this.image = canvas;
    this.imageBlob = blob;
    this.mask = canvasOf(canvas.width, canvas.height, true);
    this.box = null;
    this.pads = { left: 0, right: 0, top: 0, bottom: 0 };
    this.overlay = null;
    if (sizeChanged) this.fit();
    this.changed("image");
  }

  setTask(task) {
    this.task = task;
    this.drag = null;
    this.fit();
    this.changed("task");
  }

  setTool(tool) {
    this.tool = tool;
    this.updateCursor();
    this.changed("tool");
  }

  setBrush(px) {
    this.brush = Math.max(1, Math.min(512, Math.round(px)));
    this.changed("brush");
  }

  setPads(pads) {
    for (const k of ["left", "right", "top", "bottom"]) {
      const v = Math.max(0, Math.round(Number(pads[k] ?? this.pads[k]) || 0));
      this.pads[k] = v;
    }
    this.changed("pads");
  }

  showOverlay(overlay) {
    this.overlay = overlay;
    this.fit();
    this.changed("overlay");
  }

  clearOverlay() {
    if (!this.overlay) return;
    this.overlay = null;
    this.fit();
    this.changed("overlay");
  }

  setComparing(on) {
    if (this.comparing === on) return;
    this.comparing = on;
    this.changed("compare");
  }

  changed(kind) {
    this.requestRender();
    this.onChange(kind);
  }

  // ---- undo -------------------------------------------------------------------------------------
  maskAlpha() {
    const { width: w, height: h } = this.mask;
    const data = this.mask.getContext("2d").getImageData(0, 0, w, h).data;
    const a = new Uint8Array(w * h);
    for (let i = 0; i < a.length; i++) a[i] = data[4 * i + 3];
    return a;
  }

  setMaskAlpha(a) {
    const { width: w, height: h } = this.mask;
    const img = new ImageData(w, h);
    for (let i = 0; i < a.length; i++) {
      img.data[4 * i] = MASK_RGB[0];
      img.data[4 * i + 1] = MASK_RGB[1];
      img.data[4 * i + 2] = MASK_RGB[2];
      img.data[4 * i + 3] = a[i];
    }
    this.mask.getContext("2d").putImageData(img, 0, 0);
  }

  snapshot() {
    return { image: this.image, imageBlob: this.imageBlob, original: this.original,
      mask: this.mask ? this.maskAlpha() : null, box: this.box && { ...this.box }, pads: { ...this.pads } };
  }

  restore(s) {
    const resized = s.image !== this.image;
    this.image = s.image;
    this.imageBlob = s.imageBlob;
    this.original = s.original;
    this.mask = s.image ? canvasOf(s.image.width, s.image.height, true) : null;
    if (s.mask) this.setMaskAlpha(s.mask);
    this.box = s.box;
    this.pads = s.pads;
    this.overlay = null;
    if (resized) this.fit();
    this.changed("image");
  }

  pushUndo() {
    if (!this.image) return;
    this.undoStack.push(this.snapshot());
    const keep = Math.max(5, Math.floor(UNDO_BYTES / Math.max(1, this.width * this.height)));
    while (this.undoStack.length > keep) this.undoStack.shift();
    this.redoStack = [];
    this.onChange("undo");
  }

  undo() {
    if (!this.undoStack.length) return;
    this.redoStack.push(this.snapshot());
    this.restore(this.undoStack.pop());
  }

  redo() {
    if (!this.redoStack.length) return;
    this.undoStack.push(this.snapshot());
    this.restore(this.redoStack.pop());
  }

  // ---- the mask -----------------------------------------------------------------------------------
  maskBinary() {
    const a = this.maskAlpha();
    const b = new Uint8Array(a.length);
    for (let i = 0; i < a.length; i++) b[i] = a[i] >= 128 ? 1 : 0;
    return b;
  }

  maskEmpty() {
    if (!this.mask) return true;
    const a = this.maskAlpha();
    for (let i = 0; i < a.length; i++) if (a[i] >= 128) return false;
    return true;
  }

  // black and white PNG of the mask (white = regenerate)
  maskBlob() {
    const { width: w, height: h } = this.mask;
    const b = this.maskBinary();
    const c = canvasOf(w, h);
    const img = new ImageData(w, h);
    for (let i = 0; i < b.length; i++) {
      const v = b[i] ? 255 : 0;
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
      img.data[4 * i + 3] = 255;
    }
    c.getContext("2d").putImageData(img, 0, 0);
    return canvasToBlob(c);
  }

  growMask(px) {
    if (!this.mask) return;
    this.pushUndo();
    const { width: w, height: h } = this.mask;
    const d = distanceTo(this.maskBinary(), w, h);
    const out = new Uint8Array(w * h);
    for (let i = 0; i < out.length; i++) out[i] = d[i] <= px ? 255 : 0;
    this.setMaskAlpha(out);
    this.changed("mask");
  }

  shrinkMask(px) {
    if (!this.mask) return;
    this.pushUndo();
    const { width: w, height: h } = this.mask;
    const b = this.maskBinary();
    const inv = new Uint8Array(b.length);
    for (let i = 0; i < b.length; i++) inv[i] = 1 - b[i];
    const d = distanceTo(inv, w, h);
    const out = new Uint8Array(w * h);
    for (let i = 0; i < out.length; i++) out[i] = b[i] && d[i] > px ? 255 : 0;
    this.setMaskAlpha(out);
    this.changed("mask");
  }

  invertMask() {
    if (!this.mask) return;
    this.pushUndo();
    const b = this.maskBinary();
    const out = new Uint8Array(b.length);
    for (let i = 0; i < b.length; i++) out[i] = b[i] ? 0 : 255;
    this.setMaskAlpha(out);
    this.changed("mask");
  }

  clearMask() {
    if (!this.mask) return;
    this.pushUndo();
    this.mask.getContext("2d").clearRect(0, 0, this.mask.width, this.mask.height);
    this.changed("mask");
  }

  paintLine(a, b) {
    const c = this.mask.getContext("2d");
    c.save();
    c.globalCompositeOperation = this.tool === "eraser" ? "destination-out" : "source-over";
    c.strokeStyle = c.fillStyle = MASK_CSS;
    c.lineWidth = this.brush;
    c.lineCap = c.lineJoin = "round";
    c.beginPath();
    c.arc(a.x, a.y, this.brush / 2, 0, 2 * Math.PI);
    c.fill();
    c.beginPath();
    c.moveTo(a.x, a.y);
    c.lineTo(b.x, b.y);
    c.stroke();
    c.restore();
  }

  fillRect(r) {
    const c = this.mask.getContext("2d");
    c.fillStyle = MASK_CSS;
    c.fillRect(r.x0, r.y0, r.x1 - r.x0, r.y1 - r.y0);
  }

  // ---- view -------------------------------------------------------------------------------------
  resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.el.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.el.clientHeight * dpr));
    if (this.el.width !== w || this.el.height !== h) {
      this.el.width = w;
      this.el.height = h;
      if (!this.fitted || this.autoFit) this.fit(); // a fitted view stays fitted when the canvas resizes
      this.requestRender();
    }
  }

  bounds() {
    if (this.overlay) return this.overlay.rect;
    if (!this.image) return null;
    const p = this.task === "outpaint" ? this.pads : { left: 0, right: 0, top: 0, bottom: 0 };
    return { x: -p.left, y: -p.top, w: this.width + p.left + p.right, h: this.height + p.top + p.bottom };
  }

  fit() {
    const b = this.bounds();
    const W = this.el.clientWidth, H = this.el.clientHeight;
    if (!b || !W || !H) { this.fitted = false; return; }
    const margin = this.task === "outpaint" ? 0.7 : 0.86;
    const top = this.insetTop() + 8, bottom = 24; // under the toolbar, above the status line
    const avail = Math.max(1, H - top - bottom);
    const s = Math.min(16, (W * margin) / b.w, (avail * margin) / b.h);
    this.view = { s, x: (W - b.w * s) / 2 - b.x * s, y: top + (avail - b.h * s) / 2 - b.y * s };
    this.fitted = true;
    this.autoFit = true;
    this.changed("view");
  }

  zoomAt(sx, sy, factor) {
    const v = this.view;
    const s = Math.min(64, Math.max(0.02, v.s * factor));
    const k = s / v.s;
    this.view = { s, x: sx - (sx - v.x) * k, y: sy - (sy - v.y) * k };
    this.autoFit = false;
    this.changed("view");
  }

  toImage(p) { return { x: (p.x - this.view.x) / this.view.s, y: (p.y - this.view.y) / this.view.s }; }
  toScreen(p) { return { x: this.view.x + p.x * this.view.s, y: this.view.y + p.y * this.view.s }; }

  clampToImage(p) {
    return { x: Math.max(0, Math.min(this.width, Math.round(p.x))), y: Math.max(0, Math.min(this.height, Math.round(p.y))) };
  }

  handles() {
    const w = this.width, h = this.height, p = this.pads;
    const x0 = -p.left, x1 = w + p.right, y0 = -p.top, y1 = h + p.bottom;
    return {
      left: this.toScreen({ x: x0, y: (y0 + y1) / 2 }), right: this.toScreen({ x: x1, y: (y0 + y1) / 2 }),
      top: this.toScreen({ x: (x0 + x1) / 2, y: y0 }), bottom: this.toScreen({ x: (x0 + x1) / 2, y: y1 }),
    };
  }

  // ---- input ------------------------------------------------------------------------------------
  pos(e) {
    const r = this.el.getBoundingClientRect();
    return { x: e.clientX - r.left, y: e.clientY - r.top };
  }

  painting() { return this.task === "inpaint" && (this.tool === "brush" || this.tool === "eraser"); }

  updateCursor() {
    const c = this.el.classList;
    c.remove("pan", "panning", "paint", "box");
    if (this.drag && this.drag.kind === "pan") c.add("panning");
    else if (this.spaceDown || !this.image || this.overlay) c.add("pan");
    else if (this.painting()) c.add("paint");
    else if (this.task === "edit" || (this.task === "inpaint" && this.tool === "rect")) c.add("box");
  }

  bind() {
    const el = this.el;
    el.addEventListener("contextmenu", (e) => e.preventDefault());
    el.addEventListener("pointerdown", (e) => this.down(e));
    el.addEventListener("pointermove", (e) => this.move(e));
    el.addEventListener("pointerup", (e) => this.up(e));
    el.addEventListener("pointercancel", (e) => this.up(e));
    el.addEventListener("pointerleave", () => { this.pointer = null; this.requestRender(); });
    el.addEventListener("wheel", (e) => {
      e.preventDefault();
      const p = this.pos(e);
      this.zoomAt(p.x, p.y, Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015)));
    }, { passive: false });
  }

  down(e) {
    this.el.focus({ preventScroll: true });
    const p = this.pos(e);
    this.pointer = p;
    this.el.setPointerCapture(e.pointerId);
    const panning = e.button === 1 || e.button === 2 || this.spaceDown || !this.image || this.overlay;
    if (panning) {
      this.drag = { kind: "pan", start: p, view: { ...this.view } };
    } else if (e.button !== 0) {
      return;
    } else if (this.task === "inpaint") {
      const q = this.toImage(p);
      if (this.tool === "rect") {
        this.drag = { kind: "rect", a: this.clampToImage(q), b: this.clampToImage(q) };
      } else {
        this.pushUndo();
        this.drag = { kind: "paint", last: q };
        this.paintLine(q, q);
        this.changed("mask");
      }
    } else if (this.task === "edit") {
      const q = this.clampToImage(this.toImage(p));
      this.drag = { kind: "box", a: q, b: q };
    } else if (this.task === "outpaint") {
      const side = Object.entries(this.handles()).find(([, h]) => Math.abs(h.x - p.x) <= HANDLE + 4 && Math.abs(h.y - p.y) <= HANDLE + 4);
      if (side) {
        this.pushUndo();
        this.drag = { kind: "pad", side: side[0] };
      } else {
        this.drag = { kind: "pan", start: p, view: { ...this.view } };
      }
    } else {
      this.drag = { kind: "pan", start: p, view: { ...this.view } };
    }
    this.updateCursor();
    this.requestRender();
  }

  move(e) {
    const p = this.pos(e);
    this.pointer = p;
    const d = this.drag;
    if (d) {
      if (d.kind === "pan") {
        this.view = { ...d.view, x: d.view.x + p.x - d.start.x, y: d.view.y + p.y - d.start.y };
        this.autoFit = false;
        this.onChange("view");
      } else if (d.kind === "paint") {
        const q = this.toImage(p);
        this.paintLine(d.last, q);
        d.last = q;
        this.onChange("mask");
      } else if (d.kind === "rect" || d.kind === "box") {
        d.b = this.clampToImage(this.toImage(p));
      } else if (d.kind === "pad") {
        const q = this.toImage(p);
        const v = { left: -q.x, right: q.x - this.width, top: -q.y, bottom: q.y - this.height }[d.side];
        this.setPads({ [d.side]: Math.max(0, Math.round(v)) });
      }
    }
    this.requestRender();
  }

  up(e) {
    const d = this.drag;
    this.drag = null;
    if (this.el.hasPointerCapture(e.pointerId)) this.el.releasePointerCapture(e.pointerId);
    if (d && (d.kind === "rect" || d.kind === "box")) {
      const r = { x0: Math.min(d.a.x, d.b.x), y0: Math.min(d.a.y, d.b.y), x1: Math.max(d.a.x, d.b.x), y1: Math.max(d.a.y, d.b.y) };
      if (r.x1 - r.x0 >= 2 && r.y1 - r.y0 >= 2) {
        this.pushUndo();
        if (d.kind === "rect") {
          this.fillRect(r);
          this.changed("mask");
        } else {
          this.box = r;
          this.changed("box");
        }
      }
    }
    this.updateCursor();
    this.requestRender();
  }

  // ---- drawing ----------------------------------------------------------------------------------
  requestRender() {
    if (!this.raf) this.raf = requestAnimationFrame(() => { this.raf = 0; this.render(); });
  }

  shown() {
    if (this.overlay) return this.comparing && this.overlay.compare ? this.overlay.compare : this.overlay;
    if (!this.image) return null;
    if (this.comparing && this.original) return this.original;
    return { img: this.image, rect: { x: 0, y: 0, w: this.width, h: this.height } };
  }

  render() {
    const { ctx, el, view: v } = this;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, el.width, el.height);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const shown = this.shown();
    if (!shown) return;
    const editing = !this.overlay && !this.comparing;
    ctx.save();
    ctx.translate(v.x, v.y);
    ctx.scale(v.s, v.s);
    ctx.imageSmoothingEnabled = v.s < 2;
    if (this.task === "outpaint" && editing) {
      const p = this.pads;
      ctx.fillStyle = "rgba(79, 157, 255, 0.16)";
      ctx.fillRect(-p.left, -p.top, this.width + p.left + p.right, this.height + p.top + p.bottom);
    }
    const r = shown.rect;
    ctx.drawImage(shown.img, r.x, r.y, r.w, r.h);
    if (this.task === "inpaint" && editing && this.mask) {
      ctx.globalAlpha = 0.5;
      ctx.drawImage(this.mask, 0, 0);
      ctx.globalAlpha = 1;
    }
    ctx.restore();

    // screen-space overlays
    ctx.lineWidth = 1;
    const a = this.toScreen({ x: r.x, y: r.y });
    ctx.strokeStyle = "rgba(255, 255, 255, 0.25)";
    ctx.strokeRect(a.x - 0.5, a.y - 0.5, r.w * v.s + 1, r.h * v.s + 1);
    if (!editing) {
      this.label(this.comparing ? "original" : "result", a);
      return;
    }
    const rectOf = (b) => {
      const p0 = this.toScreen({ x: b.x0, y: b.y0 }), p1 = this.toScreen({ x: b.x1, y: b.y1 });
      return [p0.x, p0.y, p1.x - p0.x, p1.y - p0.y];
    };
    const d = this.drag;
    if (this.task === "edit") {
      const b = d && d.kind === "box" ? { x0: Math.min(d.a.x, d.b.x), y0: Math.min(d.a.y, d.b.y), x1: Math.max(d.a.x, d.b.x), y1: Math.max(d.a.y, d.b.y) } : this.box;
      if (b) {
        ctx.fillStyle = "rgba(255, 180, 84, 0.18)";
        ctx.fillRect(...rectOf(b));
        ctx.strokeStyle = "#ffb454";
        ctx.lineWidth = 2;
        ctx.strokeRect(...rectOf(b));
      }
    }
    if (d && d.kind === "rect") {
      const b = { x0: Math.min(d.a.x, d.b.x), y0: Math.min(d.a.y, d.b.y), x1: Math.max(d.a.x, d.b.x), y1: Math.max(d.a.y, d.b.y) };
      ctx.fillStyle = "rgba(255, 64, 64, 0.35)";
      ctx.fillRect(...rectOf(b));
    }
    if (this.task === "outpaint") {
      const p = this.pads;
      const b = { x0: -p.left, y0: -p.top, x1: this.width + p.right, y1: this.height + p.bottom };
      ctx.setLineDash([6, 4]);
      ctx.strokeStyle = "#4f9dff";
      ctx.lineWidth = 1.5;
      ctx.strokeRect(...rectOf(b));
      ctx.setLineDash([]);
      ctx.fillStyle = "#4f9dff";
      for (const h of Object.values(this.handles())) ctx.fillRect(h.x - HANDLE, h.y - HANDLE, 2 * HANDLE, 2 * HANDLE);
    }
    if (this.painting() && this.pointer && !this.spaceDown && !(d && d.kind === "pan")) {
      ctx.beginPath();
      ctx.arc(this.pointer.x, this.pointer.y, Math.max(1, (this.brush / 2) * v.s), 0, 2 * Math.PI);
      ctx.strokeStyle = this.tool === "eraser" ? "#ffffff" : "#ff4040";
      ctx.lineWidth = 1.5;
      ctx.stroke();
    }
  }

  label(text, at) {
    const ctx = this.ctx;
    ctx.font = "12px system-ui, sans-serif";
    const w = ctx.measureText(text).width + 10;
    ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
    ctx.fillRect(at.x, at.y - 20, w, 18);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, at.x + 5, at.y - 7);
  }
}
