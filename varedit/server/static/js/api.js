// The HTTP API of `varedit serve`: JSON calls and task runs streamed as server-sent events over fetch
// (a POST with multipart form data; EventSource can only GET).

const TOKEN_KEY = "varedit-token";

export class ApiError extends Error {
  constructor(status, detail, retryAfter = null) {
    super(detail);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

export function takeTokenFromUrl() {
  const url = new URL(location.href);
  const t = url.searchParams.get("token");
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function authHeaders() {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function failure(r) {
  let detail = r.statusText || `HTTP ${r.status}`;
  try {
    const j = await r.json();
    if (j && j.detail) detail = j.detail;
  } catch (_) { /* not JSON */ }
  return new ApiError(r.status, detail, r.headers.get("Retry-After"));
}

export async function getJSON(path) {
  const r = await fetch(path, { headers: authHeaders() });
  if (!r.ok) throw await failure(r);
  return r.json();
}

// Run a task with progress: onEvent(name, data) for queued, start, progress, result, error.
// Resolves with the result JSON; rejects with ApiError (or AbortError when `signal` aborts).
export async function runTask(task, form, { onEvent = () => {}, signal } = {}) {
  const r = await fetch(`/api/v1/${task}?stream=true`, { method: "POST", body: form, headers: authHeaders(), signal });
  if (!r.ok) throw await failure(r);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // keep-alive comment
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      const payload = JSON.parse(data.join("\n"));
      onEvent(name, payload);
      if (name === "result") return payload;
      if (name === "error") throw new ApiError(payload.status, payload.detail);
    }
  }
  throw new ApiError(0, "the connection closed before a result arrived");
}

export function b64ToBlob(b64, type = "image/png") {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type });
}
