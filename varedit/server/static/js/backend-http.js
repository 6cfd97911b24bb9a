// The editor's backend on `varedit serve`: the HTTP API (api.js). Every backend has the same shape:
// name, start(), model() (the server's GET /api/v1/model JSON), setToken(t), and
// run(task, params, {signal, onEvent}) resolving to {seed, settings, scores, width, height,
// images: [Blob], mask: Blob | null, elapsed_s}.

import { b64ToBlob, getJSON, runTask, setToken, takeTokenFromUrl } from "./api.js";

function formWith(fields) {
  const f = new FormData();
  for (const [k, v] of Object.entries(fields)) {
    if (v === null || v === undefined || v === "") continue;
    if (v instanceof Blob) f.append(k, v, `${k}.png`);
    else f.append(k, String(v));
  }
  return f;
}

export function httpBackend() {
  return {
    name: "http",
    async start() { takeTokenFromUrl(); },
    model() { return getJSON("/api/v1/model"); },
    setToken,
    async run(task, params, { signal, onEvent = () => {} } = {}) {
      const res = await runTask(task, formWith(params), { signal, onEvent });
      return { ...res, images: res.images.map((b) => b64ToBlob(b)), mask: res.mask ? b64ToBlob(res.mask) : null };
    },
  };
}
