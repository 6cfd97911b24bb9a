// Images in and out of the browser runtime: PNG data URLs, Blobs, ImageData, <img>, <canvas> or
// ImageBitmap -> RGBA pixels {width, height, data}; and pixels -> PNG Blob or data URL. Pixels are read
// without colour conversion, so an opaque 8-bit image round-trips exactly.

function canvas(w, h) {
  if (typeof OffscreenCanvas !== "undefined") return new OffscreenCanvas(w, h);
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  return c;
}

export function dataURLToBlob(url) {
  const m = /^data:([^;,]*)(;base64)?,(.*)$/s.exec(url);
  if (!m) throw new TypeError("not a data: URL");
  const body = m[2] ? atob(m[3]) : decodeURIComponent(m[3]);
  const bytes = new Uint8Array(body.length);
  for (let i = 0; i < body.length; i++) bytes[i] = body.charCodeAt(i);
  return new Blob([bytes], { type: m[1] || "application/octet-stream" });
}

export async function toPixels(src) {
  if (src && typeof src === "object" && "data" in src && "width" in src && "height" in src && !(src instanceof Blob)) {
    if (src.data.length !== src.width * src.height * 4) throw new TypeError("pixels must be RGBA, width * height * 4 bytes");
    return { width: src.width, height: src.height, data: new Uint8ClampedArray(src.data) };
  }
  let source = src;
  if (typeof src === "string") {
    if (!src.startsWith("data:")) throw new TypeError("images are PNG data URLs (data:image/png;base64,...), Blobs, ImageData or canvases");
    source = dataURLToBlob(src);
  }
  let bmp;
  try {
    bmp = await createImageBitmap(source, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (e) {
    throw new TypeError(`cannot read this image (${e.message})`);
  }
  const c = canvas(bmp.width, bmp.height);
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  const d = ctx.getImageData(0, 0, bmp.width, bmp.height);
  bmp.close();
  return { width: d.width, height: d.height, data: d.data };
}

export async function toPngBlob(px) {
  const c = canvas(px.width, px.height);
  c.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(px.data), px.width, px.height), 0, 0);
  if (c.convertToBlob) return c.convertToBlob({ type: "image/png" });
  return new Promise((resolve, reject) => c.toBlob((b) => (b ? resolve(b) : reject(new Error("PNG encoding failed"))), "image/png"));
}

export function blobToDataURL(blob) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(blob);
  });
}

export async function toDataURL(px) {
  return blobToDataURL(await toPngBlob(px));
}
