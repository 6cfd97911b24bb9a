// The editor: wires the stage, the task options, runs with streamed progress, the gallery of candidates
// and the history of results. One editor, two backends (the page's <meta name="varedit-backend">):
// "http", the API of `varedit serve` (backend-http.js), or "runtime", the exported graphs in the browser
// (backend-runtime.js, the page `varedit export web` writes).

import { History } from "./history.js";
import { Stage, canvasFromBlob, canvasOf, canvasToBlob } from "./stage.js";

const $ = (id) => document.getElementById(id);
const MASKED = ["inpaint", "outpaint", "edit"];
const TITLES = { inpaint: "Inpaint", outpaint: "Outpaint", edit: "Edit", upscale: "Upscale", generate: "Generate" };

const state = { model: null, task: "inpaint", running: null, run: null, selected: 0, runs: [] };
const stats = { previews: 0, previewsShown: 0, progress: 0, results: 0 };
const history = new History();
const stage = new Stage($("stage"), onStageChange, { insetTop: () => $("toolbar").offsetHeight });
const canvases = new WeakMap(); // blob -> decoded canvas
let urls = []; // object URLs of the gallery, revoked when it is redrawn

const BACKEND = document.querySelector('meta[name="varedit-backend"]')?.content || "http";
const backendReady = BACKEND === "runtime"
  ? import("./backend-runtime.js").then((m) => m.runtimeBackend())
  : import("./backend-http.js").then((m) => m.httpBackend());
let backend = null;

// for scripts and tests: the state, and image pixels -> page coordinates
window.varedit = {
  stage, state, stats,
  imageToClient(x, y) {
    const r = stage.el.getBoundingClientRect();
    const p = stage.toScreen({ x, y });
    return { x: r.left + p.x, y: r.top + p.y };
  },
};
if (BACKEND === "runtime") {
  // the JavaScript API of the in-browser page (docs/onnx.md, "In the browser"): PNG data URLs in and out
  const api = backendReady.then((b) => b.api);
  Object.assign(window.varedit, {
    ready: api.then((a) => a.ready),
    inpaint: async (image, mask, o) => (await api).inpaint(image, mask, o),
    outpaint: async (image, o) => (await api).outpaint(image, o),
    edit: async (image, o) => (await api).edit(image, o),
    generate: async (o) => (await api).generate(o),
    run: async (task, ...args) => (await api).run(task, ...args),
  });
}

function msg(text, error = false) {
  const m = $("message");
  m.textContent = text || "";
  m.classList.toggle("error", !!error);
}

async function decoded(blob) {
  if (!canvases.has(blob)) canvases.set(blob, await canvasFromBlob(blob));
  return canvases.get(blob);
}

function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

// ---- the model ----------------------------------------------------------------------------------
async function loadModel() {
  for (;;) {
    try {
      state.model = await backend.model();
      break;
    } catch (e) {
      if (e.status === 401) {
        await askToken();
        continue;
      }
      $("model-name").textContent = backend.name === "http" ? `cannot reach the server: ${e.message}`
        : `cannot load the model: ${e.message}`;
      throw e;
    }
  }
  const m = state.model;
  $("model-name").textContent = `${m.name} · ${m.backend} · ${m.image_size} px · ${m.num_classes} classes`;
  const classes = $("class-list"), labels = $("label-list");
  classes.replaceChildren();
  labels.replaceChildren();
  for (const k of m.can_infer_label ? ["auto", "none"] : ["none"]) labels.append(new Option(k === "auto" ? "infer from the image" : "unconditional", k));
  for (const c of m.classes) {
    const text = c.names.length > 1 ? c.names.slice(1).join(", ") : `class ${c.index}`;
    classes.append(new Option(text, c.names[0]));
    labels.append(new Option(text, c.names[0]));
  }
  if (!m.can_infer_label) $("label").value = "none";
  const SN = m.patch_nums.length;
  $("keep").max = String(SN - 1);
  $("reroll-k").max = String(SN - 1);
  $("reroll-k").value = String(Math.max(1, Math.ceil(SN / 2)));
  $("n").max = String(m.limits.max_candidates);
  if (Array.isArray(m.tasks)) { // a backend without some tasks (the browser runtime has no upscaling)
    for (const b of document.querySelectorAll("#tasks button")) b.hidden = !m.tasks.includes(b.dataset.task);
  }
  $("strategy-original").hidden = backend.name !== "http"; // tiles: the server only
  setTask(state.task);
}

function askToken() {
  return new Promise((resolve) => {
    const d = $("token-dialog");
    d.addEventListener("close", () => {
      backend.setToken($("token-input").value.trim());
      resolve();
    }, { once: true });
    d.showModal();
  });
}

// ---- tasks and options --------------------------------------------------------------------------
function setTask(task) {
  state.task = task;
  for (const b of document.querySelectorAll("#tasks button")) b.classList.toggle("active", b.dataset.task === task);
  for (const el of document.querySelectorAll("[data-tasks]")) el.hidden = !el.dataset.tasks.split(" ").includes(task);
  $("task-title").textContent = TITLES[task];
  if (state.model) {
    const d = MASKED.includes(task) ? state.model.edit_defaults : state.model.defaults;
    $("cfg").placeholder = String(d.cfg);
    $("top-k").placeholder = String(d.top_k);
    $("top-p").placeholder = String(d.top_p);
  }
  stage.setTask(task);
  updateButtons();
}

function setTool(tool) {
  stage.setTool(tool);
  for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("active", b.dataset.tool === tool);
}

function onStageChange(kind) {
  if (kind === "brush") {
    $("brush").value = String(stage.brush);
    $("brush-val").textContent = String(stage.brush);
  }
  if (kind === "pads" || kind === "image") {
    for (const k of ["left", "right", "top", "bottom"]) $(`pad-${k}`).value = String(stage.pads[k]);
  }
  if (kind === "box" || kind === "image") {
    const b = stage.box;
    $("box-info").textContent = b ? `box ${b.x0},${b.y0} – ${b.x1},${b.y1} (${b.x1 - b.x0}×${b.y1 - b.y0})` : "no box yet: drag on the image";
  }
  if (kind === "image" || kind === "overlay") $("drop-hint").classList.toggle("hidden", !!(stage.image || stage.overlay));
  if (kind === "overlay" && !stage.overlay) {
    for (const el of document.querySelectorAll(".cand")) el.classList.remove("selected");
  }
  stage.updateCursor();
  updateStatus();
  updateButtons();
}

function updateStatus() {
  const parts = [];
  if (stage.overlay) parts.push("showing a result (Esc: back to the image)");
  if (stage.image) parts.push(`${stage.width}×${stage.height}`);
  parts.push(`zoom ${Math.round(stage.view.s * 100)}%`);
  if (state.task === "inpaint") parts.push(`brush ${stage.brush} px`);
  if (state.task === "outpaint" && stage.image) {
    const p = stage.pads;
    parts.push(`→ ${stage.width + p.left + p.right}×${stage.height + p.top + p.bottom}`);
  }
  $("status-line").textContent = parts.join(" · ");
}

function updateButtons() {
  $("undo").disabled = !stage.undoStack.length;
  $("redo").disabled = !stage.redoStack.length;
  $("run").disabled = !!state.running || (state.task !== "generate" && !stage.image);
  $("download").disabled = !stage.image && !stage.overlay;
}

// ---- images in ----------------------------------------------------------------------------------
async function openBlob(blob) {
  if (!blob || (blob.type && !blob.type.startsWith("image/"))) {
    msg("that is not an image", true);
    return;
  }
  try {
    const c = await canvasFromBlob(blob);
    stage.pushUndo();
    stage.setImage(c, blob, { original: "reset" });
    msg(`opened ${c.width}×${c.height}`);
  } catch (e) {
    msg(`cannot read this image (${e.message})`, true);
  }
}

// ---- running ------------------------------------------------------------------------------------
function num(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function pickSeed() {
  const s = num("seed");
  if ($("seed-random").checked || s === null) return Math.floor(Math.random() * 2 ** 31);
  return s;
}

function sampling() {
  return { seed: pickSeed(), cfg: num("cfg"), top_k: num("top-k"), top_p: num("top-p") };
}

function maskedOptions() {
  return { n: num("n") || 1, keep_scales: num("keep") || 0, mode: $("mode").value, strategy: $("strategy").value,
    harmonize: $("harmonize").checked };
}

async function prepare(task) {
  const m = state.model;
  if (!m) throw new Error(backend && backend.name === "runtime" ? "the model is not loaded yet" : "not connected to the server");
  const w = stage.width, h = stage.height;
  const base = { task, endpoint: task, input: stage.imageBlob, inputRect: { x: 0, y: 0, w, h },
    placement: { x: 0, y: 0, w, h } };
  if (task !== "generate" && !stage.image) throw new Error("open an image first (or paste one)");
  if (task === "inpaint") {
    if (stage.maskEmpty()) throw new Error("paint over what to regenerate first");
    return { ...base, params: { image: stage.imageBlob, mask: await stage.maskBlob(), label: $("label").value.trim() || "auto",
      ...sampling(), ...maskedOptions() } };
  }
  if (task === "outpaint") {
    const p = stage.pads;
    if (!(p.left + p.right + p.top + p.bottom)) throw new Error("drag a handle outwards (or type pixels) to extend the image");
    return { ...base, placement: { x: -p.left, y: -p.top, w: w + p.left + p.right, h: h + p.top + p.bottom },
      params: { image: stage.imageBlob, ...p, fill: $("fill").value, label: $("label").value.trim() || "auto",
        ...sampling(), ...maskedOptions() } };
  }
  if (task === "edit") {
    const b = stage.box;
    if (!b) throw new Error("draw a box on the image first");
    const cls = $("class").value.trim();
    if (!cls) throw new Error("pick the class to put in the box");
    return { ...base, params: { image: stage.imageBlob, box: `${b.x0},${b.y0},${b.x1},${b.y1}`, class: cls,
      ...sampling(), ...maskedOptions() } };
  }
  if (task === "upscale") {
    return { ...base, params: { image: stage.imageBlob, scale: num("scale") || 2, ...sampling() } };
  }
  const S = m.image_size;
  return { ...base, input: null, inputRect: null, placement: { x: 0, y: 0, w: S, h: S },
    params: { class: $("class").value.trim(), n: num("n") || 1, ...sampling() } };
}

function progressUI(on) {
  $("run").disabled = on;
  $("cancel").hidden = !on;
  if (on) {
    $("progress").hidden = false;
    $("progress-bar").value = 0;
    $("progress-text").textContent = "sending…";
    $("preview").hidden = true;
    $("preview-caption").textContent = "";
  }
}

async function run(job) {
  if (state.running) return;
  if (!job) {
    try {
      job = await prepare(state.task);
    } catch (e) {
      msg(e.message, true);
      return;
    }
  }
  const ctrl = new AbortController();
  state.running = ctrl;
  progressUI(true);
  msg("");
  const t0 = performance.now();
  const timer = setInterval(() => { $("progress-time").textContent = `${((performance.now() - t0) / 1000).toFixed(1)} s`; }, 200);
  const SN = state.model.patch_nums.length;
  try {
    const res = await backend.run(job.endpoint, job.params, {
      signal: ctrl.signal,
      onEvent(name, d) {
        if (name === "phase") {
          $("progress-text").textContent = d.text;
          if (d.value !== undefined) $("progress-bar").value = d.value;
        } else if (name === "queued") $("progress-text").textContent = d.position ? `waiting: ${d.position} ahead` : "starting…";
        else if (name === "start") $("progress-text").textContent = "working…";
        else if (name === "progress") {
          stats.progress += 1;
          $("progress-bar").value = d.step / d.total;
          const si = (d.step - 1) % SN, pn = state.model.patch_nums[si];
          $("progress-text").textContent = `scale ${si + 1} of ${SN} (${pn}×${pn} tokens)` + (d.total > SN ? ` · step ${d.step}/${d.total}` : "");
          if (d.preview) {
            stats.previews += 1;
            // the first scale is one token: its decoded canvas is noise, not yet the picture
            if (si >= 1) {
              stats.previewsShown += 1;
              $("preview").src = `data:image/png;base64,${d.preview}`;
              $("preview").hidden = false;
              $("preview-caption").textContent = `coarse to fine: scale ${si + 1} of ${SN}`;
            }
          }
        }
      },
    });
    $("progress-bar").value = 1;
    $("progress-text").textContent = "done";
    $("progress").hidden = true; // the candidates take the room
    stats.results += 1;
    if (job.task !== "generate" && $("seed-random").checked) $("seed").value = String(res.seed);
    const record = {
      id: newId(), time: Date.now(), task: job.task, title: job.title || TITLES[job.task], seed: res.seed,
      settings: res.settings, scores: res.scores, width: res.width, height: res.height,
      images: res.images, mask: res.mask,
      input: job.input, inputRect: job.inputRect, placement: job.placement, elapsed: res.elapsed_s,
    };
    state.runs.unshift(record);
    await history.put(record).catch((e) => console.warn("varedit: could not store the result", e));
    await showRun(record, 0);
    renderHistory();
    msg(`${record.title}: ${res.images.length} result${res.images.length > 1 ? "s" : ""} in ${((performance.now() - t0) / 1000).toFixed(1)} s, seed ${res.seed}`);
  } catch (e) {
    if (e.name === "AbortError") {
      msg("cancelled");
      $("progress-text").textContent = "cancelled";
    } else if (e.status === 401) {
      msg("the server wants an access token", true);
      await askToken();
    } else {
      const retry = e.retryAfter ? ` (retry in ${e.retryAfter} s)` : "";
      msg(`${e.status ? `${e.status}: ` : ""}${e.message}${retry}`, true);
      $("progress-text").textContent = "failed";
    }
  } finally {
    clearInterval(timer);
    state.running = null;
    progressUI(false);
    updateButtons();
  }
}

// ---- results ------------------------------------------------------------------------------------
async function showRun(run, idx) {
  state.run = run;
  state.selected = idx;
  renderGallery();
  const img = await decoded(run.images[idx]);
  const compare = run.input ? { img: await decoded(run.input), rect: run.inputRect || { x: 0, y: 0, w: 0, h: 0 } } : null;
  if (compare && !compare.rect.w) compare.rect = { x: 0, y: 0, w: compare.img.width, h: compare.img.height };
  stage.showOverlay({ img, rect: run.placement || { x: 0, y: 0, w: img.width, h: img.height }, compare });
  for (const [i, el] of document.querySelectorAll(".cand").entries()) el.classList.toggle("selected", i === idx);
  for (const el of document.querySelectorAll(".hist")) el.classList.toggle("selected", el.dataset.id === run.id);
}

function renderGallery() {
  const run = state.run;
  for (const u of urls) URL.revokeObjectURL(u);
  urls = [];
  const g = $("gallery");
  g.replaceChildren();
  $("gallery-card").hidden = !run;
  if (!run) return;
  const label = run.settings.label_posterior ? ` · class ${run.settings.label_posterior[0][0]} (inferred)` : "";
  $("run-info").textContent = `${run.title} · seed ${run.seed}${label} · ${new Date(run.time).toLocaleTimeString()}`;
  $("settings").textContent = JSON.stringify(run.settings, null, 1);
  run.images.forEach((blob, i) => {
    const url = URL.createObjectURL(blob);
    urls.push(url);
    const card = document.createElement("div");
    card.className = "cand" + (i === state.selected ? " selected" : "");
    const img = new Image();
    img.src = url;
    img.alt = `candidate ${i + 1}`;
    img.title = "Show it on the canvas (hold Tab to compare)";
    img.addEventListener("click", () => showRun(run, i));
    const meta = document.createElement("div");
    meta.className = "meta";
    const score = run.scores[i];
    meta.textContent = `#${i + 1}` + (score !== undefined ? ` · log-lik ${score.toFixed(3)}` : "");
    const acts = document.createElement("div");
    acts.className = "acts";
    const btn = (text, title, fn) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = text;
      b.title = title;
      b.addEventListener("click", fn);
      acts.append(b);
      return b;
    };
    btn("Use", "Make it the working image (undo brings the old one back)", () => useResult(run, i));
    btn("Re-roll", "Keep the layout (the first k scales), sample the detail again", () => reroll(run, i)).className = "reroll";
    btn("↓", "Download this PNG", () => download(blob, `varedit-${run.task}-${run.seed}-${i + 1}.png`));
    card.append(img, meta, acts);
    g.append(card);
  });
}

async function useResult(run, idx) {
  const blob = run.images[idx];
  const c = await decoded(blob);
  const same = run.input && run.input === stage.imageBlob;
  stage.pushUndo();
  stage.setImage(c, blob, same ? { original: "map", map: run.placement } : { original: "reset" });
  msg("the result is now the working image (Ctrl+Z to undo)");
}

function labelOf(run, idx) {
  const s = run.settings, n = state.model.num_classes;
  const lab = Array.isArray(s.labels) ? s.labels[idx] : s.label;
  return lab === undefined || lab === null || lab >= n ? "none" : String(lab);
}

async function reroll(src, idx) {
  const k = Math.max(1, Math.min(state.model.patch_nums.length - 1, num("reroll-k") || 1));
  let mask = src.mask;
  if (!mask) { // nothing marked (generate, upscale): the whole image
    const c = canvasOf(src.width, src.height);
    const ctx = c.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, src.width, src.height);
    mask = await canvasToBlob(c);
  }
  const rect = src.placement || { x: 0, y: 0, w: src.width, h: src.height };
  await run({
    task: "inpaint", endpoint: "inpaint", title: `Re-roll of ${src.title} #${idx + 1} (keep ${k})`,
    input: src.images[idx], inputRect: rect, placement: rect,
    params: { image: src.images[idx], mask, label: labelOf(src, idx), keep_scales: k, n: num("n") || 1,
      seed: Math.floor(Math.random() * 2 ** 31), cfg: num("cfg"), top_k: num("top-k"), top_p: num("top-p") },
  });
}

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function downloadShown() {
  if (stage.overlay && state.run) {
    const r = state.run;
    download(r.images[state.selected], `varedit-${r.task}-${r.seed}-${state.selected + 1}.png`);
  } else if (stage.imageBlob) {
    const ext = (stage.imageBlob.type.split("/")[1] || "png").replace("jpeg", "jpg");
    download(stage.imageBlob, `varedit-image.${ext}`);
  }
}

// ---- history ------------------------------------------------------------------------------------
function renderHistory() {
  const h = $("history");
  for (const el of h.querySelectorAll("img")) URL.revokeObjectURL(el.src);
  h.replaceChildren();
  if (!state.runs.length) {
    h.textContent = "Results of this browser are kept here.";
    return;
  }
  for (const run of state.runs) {
    const d = document.createElement("div");
    d.className = "hist" + (state.run && state.run.id === run.id ? " selected" : "");
    d.dataset.id = run.id;
    const img = new Image();
    img.src = URL.createObjectURL(run.images[0]);
    img.title = `${run.title}, seed ${run.seed}, ${new Date(run.time).toLocaleString()}`;
    img.addEventListener("click", () => showRun(run, 0));
    const s = document.createElement("span");
    s.textContent = run.title;
    d.append(img, s);
    h.append(d);
  }
}

// ---- wiring -------------------------------------------------------------------------------------
function wire() {
  for (const b of document.querySelectorAll("#tasks button")) b.addEventListener("click", () => setTask(b.dataset.task));
  for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) openBlob(e.target.files[0]); e.target.value = ""; });
  $("brush").addEventListener("input", (e) => stage.setBrush(Number(e.target.value)));
  $("grow").addEventListener("click", () => stage.growMask(num("grow-px") || 4));
  $("shrink").addEventListener("click", () => stage.shrinkMask(num("grow-px") || 4));
  $("invert").addEventListener("click", () => stage.invertMask());
  $("clear").addEventListener("click", () => stage.clearMask());
  $("undo").addEventListener("click", () => stage.undo());
  $("redo").addEventListener("click", () => stage.redo());
  $("fit").addEventListener("click", () => stage.fit());
  $("back").addEventListener("click", () => stage.clearOverlay());
  const cmp = $("compare");
  cmp.addEventListener("pointerdown", () => stage.setComparing(true));
  for (const ev of ["pointerup", "pointerleave", "pointercancel"]) cmp.addEventListener(ev, () => stage.setComparing(false));
  $("run").addEventListener("click", () => run());
  $("cancel").addEventListener("click", () => state.running && state.running.abort());
  $("download").addEventListener("click", downloadShown);
  $("help-btn").addEventListener("click", () => $("help").showModal());
  for (const k of ["left", "right", "top", "bottom"]) {
    $(`pad-${k}`).addEventListener("change", (e) => { stage.pushUndo(); stage.setPads({ [k]: Number(e.target.value) }); stage.fit(); });
  }
  $("history-clear").addEventListener("click", async () => {
    if (!confirm("Forget every stored result?")) return;
    await history.clear();
    state.runs = [];
    state.run = null;
    stage.clearOverlay();
    renderGallery();
    renderHistory();
  });

  const wrap = $("stage-wrap");
  wrap.addEventListener("dragover", (e) => { e.preventDefault(); wrap.classList.add("dragover"); });
  wrap.addEventListener("dragleave", () => wrap.classList.remove("dragover"));
  wrap.addEventListener("drop", (e) => {
    e.preventDefault();
    wrap.classList.remove("dragover");
    const f = [...e.dataTransfer.files].find((x) => x.type.startsWith("image/"));
    if (f) openBlob(f);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
    if (item) {
      e.preventDefault();
      openBlob(item.getAsFile());
    }
  });

  const typing = (t) => t && ((t.tagName === "INPUT" && !["range", "checkbox", "button"].includes(t.type)) || t.tagName === "TEXTAREA" || t.tagName === "SELECT");
  document.addEventListener("keydown", (e) => {
    const mod = e.ctrlKey || e.metaKey;
    if (mod && e.key === "Enter") { e.preventDefault(); run(); return; }
    if (typing(e.target) || document.querySelector("dialog[open]")) return;
    if (mod) {
      const k = e.key.toLowerCase();
      if (k === "z") { e.preventDefault(); if (e.shiftKey) stage.redo(); else stage.undo(); }
      else if (k === "y") { e.preventDefault(); stage.redo(); }
      return;
    }
    const W = stage.el.clientWidth / 2, H = stage.el.clientHeight / 2;
    switch (e.key) {
      case "[": stage.setBrush(stage.brush / 1.25); break;
      case "]": stage.setBrush(Math.max(stage.brush + 1, stage.brush * 1.25)); break;
      case "b": case "B": setTool("brush"); break;
      case "e": case "E": setTool("eraser"); break;
      case "r": case "R": setTool("rect"); break;
      case "g": stage.growMask(num("grow-px") || 4); break;
      case "G": stage.shrinkMask(num("grow-px") || 4); break;
      case "i": case "I": stage.invertMask(); break;
      case "Delete": case "Backspace": stage.clearMask(); break;
      case "Tab": e.preventDefault(); stage.setComparing(true); break;
      case " ": e.preventDefault(); stage.spaceDown = true; stage.updateCursor(); break;
      case "Escape": if (stage.overlay) stage.clearOverlay(); else stage.fit(); break;
      case "0": stage.fit(); break;
      case "+": case "=": stage.zoomAt(W, H, 1.25); break;
      case "-": stage.zoomAt(W, H, 0.8); break;
      case "?": $("help").showModal(); break;
      default: return;
    }
  });
  document.addEventListener("keyup", (e) => {
    if (e.key === "Tab") stage.setComparing(false);
    if (e.key === " ") { stage.spaceDown = false; stage.updateCursor(); }
  });
  window.addEventListener("blur", () => { stage.setComparing(false); stage.spaceDown = false; });
}

async function main() {
  if (BACKEND === "runtime") $("model-name").textContent = "loading the model into the page…";
  backend = await backendReady;
  await backend.start();
  wire();
  setTool("brush");
  onStageChange("image");
  await history.open();
  state.runs = await history.all().catch(() => []);
  renderHistory();
  await loadModel();
  document.body.dataset.ready = "1";
}

main().catch((e) => msg(`start-up failed: ${e.message}`, true));
