// The samfast contouring page: plain JavaScript and canvas, served by `samfast serve` itself.
// Every request goes to the server that served the page, with the key in the X-API-Key header;
// the key lives in sessionStorage (gone with the tab), never in a URL, where logs would keep it.
"use strict";

const KEY_STORE = "samfast-api-key";
const $ = (id) => document.getElementById(id);
const PRESETS = {  // [width, level]; "auto" takes the 1st-99th percentile of the slice shown
  "ct-soft": [400, 40], "ct-brain": [80, 40], "ct-lung": [1500, -600], "ct-bone": [2000, 500],
};
const PRESET_KEYS = ["auto", "ct-soft", "ct-brain", "ct-lung", "ct-bone"];

const state = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  info: null,          // the session as GET /sessions/{id} describes it
  dims: null,          // [X, Y, Z]
  mask: null,          // Uint8Array, z * Y * X + y * X + x
  images: new Map(),   // "plane:index" -> {rows, cols, values}
  z: 0, cx: 0, cy: 0,  // the axial slice and the crosshair (voxel indices)
  tool: "box",
  view: { zoom: 1, panX: 0, panY: 0 },
  wl: null,            // [width, level]
  overlay: true,
  prompts: {},         // slice -> {box, points}: what this page sent for it
  box3d: null,         // {box: [x0, y0, x1, y1], first, last}
  walked: false,       // a propagation the server still holds: prompts become edits
  walking: null,       // AbortController of a running propagation
  scores: {},          // slice -> predicted IoU
  drag: null,
};
window.samfastTimings = [];  // click -> overlay drawn, ms (performance.now), for tests and benchmarks
window.samfastLastExport = null;

// ---- talking to the server ------------------------------------------------------------------

function showError(text) { $("error").textContent = text || ""; }

async function api(method, path, { json, form, raw } = {}) {
  const headers = { "X-API-Key": state.key };
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = form;
  const reply = await fetch(path, { method, headers, body });
  if (!reply.ok) {
    // The server's errors are one line of JSON {"detail"}; shown as they are.
    let detail = `${reply.status} ${reply.statusText}`;
    try { detail = (await reply.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  if (raw) return reply;
  return reply.json();
}

function guarded(action) {  // run an action; a failure shows its one line and the page goes on
  return async (...args) => {
    try { showError(""); await action(...args); } catch (error) { showError(error.message); }
  };
}

function fromBase64(text) {
  const binary = atob(text), out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

function unpackInto(target, offset, packedBytes, count) {  // np.packbits order: the first bit is the high one
  for (let i = 0; i < count; i++) target[offset + i] = (packedBytes[i >> 3] >> (7 - (i & 7))) & 1;
}

function setSliceMask(z, packed) {
  const [X, Y] = state.dims;
  unpackInto(state.mask, z * X * Y, fromBase64(packed.packbits), X * Y);
}

async function gunzip(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function loadWholeMask() {  // after undo/redo: the server's mask is the truth
  const bits = await api("GET", `/sessions/${state.info.session}/mask/bits`);
  const [X, Y, Z] = state.dims;
  state.mask = new Uint8Array(X * Y * Z);
  if (!bits.data) return;
  const [dz, dy, dx] = bits.box_shape, [oz, oy, ox] = bits.offset;
  const flat = new Uint8Array(dz * dy * dx);
  unpackInto(flat, 0, await gunzip(fromBase64(bits.data)), flat.length);
  for (let z = 0; z < dz; z++)
    for (let y = 0; y < dy; y++)
      state.mask.set(flat.subarray((z * dy + y) * dx, (z * dy + y + 1) * dx), ((oz + z) * Y + oy + y) * X + ox);
}

async function imageSlice(plane, index) {
  const name = `${plane}:${index}`;
  if (state.images.has(name)) return state.images.get(name);
  const reply = await api("GET", `/sessions/${state.info.session}/image?plane=${plane}&index=${index}`);
  const bytes = fromBase64(reply.data);
  const values = reply.dtype === "int16" ? new Int16Array(bytes.buffer) : new Float32Array(bytes.buffer);
  const slice = { rows: reply.shape[0], cols: reply.shape[1], values };
  if (state.images.size > 96) state.images.delete(state.images.keys().next().value);  // oldest first
  state.images.set(name, slice);
  return slice;
}

// ---- opening --------------------------------------------------------------------------------

async function useKey(event) {
  event.preventDefault();
  state.key = $("key").value.trim();
  sessionStorage.setItem(KEY_STORE, state.key);
  const health = await api("GET", "/health");
  $("info").textContent = state.info ? $("info").textContent : `Connected: ${health.model || "model"} on ${health.backend || "?"}. Open a series.`;
}

async function opened(info) {
  state.info = await api("GET", `/sessions/${info.session}`);
  state.dims = state.info.size;
  const [X, Y, Z] = state.dims;
  state.mask = new Uint8Array(X * Y * Z);
  state.images.clear();
  Object.assign(state, { z: Math.floor(Z / 2), cx: Math.floor(X / 2), cy: Math.floor(Y / 2), prompts: {},
    box3d: null, walked: false, scores: {}, wl: null, view: { zoom: 1, panX: 0, panY: 0 } });
  const s = state.info.spacing.map((v) => v.toFixed(3)), o = state.info.origin.map((v) => v.toFixed(2));
  $("info").textContent = `${state.info.description} · ${X}×${Y}×${Z} voxels · spacing ${s.join(" × ")} mm · ` +
    `origin (${o.join(", ")}) mm · direction [${state.info.direction.map((v) => +v.toFixed(3)).join(" ")}]` +
    `${state.info.dicom ? " · DICOM" : ""} · session ${state.info.session}`;
  $("slice").max = Z - 1;
  $("slice").value = state.z;
  renderTable();
  $("box3d").textContent = "none";
  $("walk-status").textContent = "";
  await showSlice(state.z);
}

async function openPath(event) {
  event.preventDefault();
  await opened(await api("POST", "/sessions", { json: { path: $("path").value } }));
}

async function openUpload(event) {
  event.preventDefault();
  const file = $("upload").files[0];
  if (!file) throw new Error("choose a file to upload");
  const form = new FormData();
  form.append("file", file, file.name);
  await opened(await api("POST", "/sessions/upload", { form }));
}

async function closeSession() {
  if (!state.info) return;
  await api("DELETE", `/sessions/${state.info.session}`);
  state.info = null;
  $("info").textContent = "Session closed. Open a series.";
  draw();
}

// ---- drawing --------------------------------------------------------------------------------

function maskColor() {
  const hex = $("roi-color").value;
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

function autoWindow(values) {  // 1st to 99th percentile of a sample of the slice
  const step = Math.max(1, Math.floor(values.length / 20000)), sample = [];
  for (let i = 0; i < values.length; i += step) sample.push(values[i]);
  sample.sort((a, b) => a - b);
  const low = sample[Math.floor(sample.length * 0.01)], high = sample[Math.floor(sample.length * 0.99)];
  return [Math.max(high - low, 1e-6), (high + low) / 2];
}

// A slice as an offscreen canvas: the windowed image with the mask filled and outlined on top.
function composite(slice, maskAt) {
  const { rows, cols, values } = slice;
  const canvas = document.createElement("canvas");
  canvas.width = cols; canvas.height = rows;
  const ctx = canvas.getContext("2d"), pixels = ctx.createImageData(cols, rows), data = pixels.data;
  const [width, level] = state.wl, low = level - width / 2;
  const [mr, mg, mb] = maskColor(), alpha = Number($("opacity").value) / 100;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      let g = ((values[i] - low) / width) * 255;
      g = g < 0 ? 0 : g > 255 ? 255 : g;
      let R = g, G = g, B = g;
      if (state.overlay && maskAt(r, c)) {
        const edge = r === 0 || c === 0 || r === rows - 1 || c === cols - 1 ||
          !maskAt(r - 1, c) || !maskAt(r + 1, c) || !maskAt(r, c - 1) || !maskAt(r, c + 1);
        const a = edge ? 1 : alpha;  // the outline stays visible at any opacity
        R = g + (mr - g) * a; G = g + (mg - g) * a; B = g + (mb - g) * a;
      }
      data[4 * i] = R; data[4 * i + 1] = G; data[4 * i + 2] = B; data[4 * i + 3] = 255;
    }
  }
  ctx.putImageData(pixels, 0, 0);
  return canvas;
}

function axialGeometry() {  // screen px per voxel along x and y, and the image's top-left corner
  const canvas = $("axial"), [X, Y] = state.dims, [sx, sy] = state.info.spacing;
  const fit = Math.min(canvas.width / (X * sx), canvas.height / (Y * sy)) * state.view.zoom;
  const px = fit * sx, py = fit * sy;
  return { px, py, ox: (canvas.width - X * px) / 2 + state.view.panX, oy: (canvas.height - Y * py) / 2 + state.view.panY };
}

function toVoxel(event) {  // continuous voxel coordinates; voxel i covers [i, i + 1)
  const rect = $("axial").getBoundingClientRect(), g = axialGeometry();
  return [(event.clientX - rect.left - g.ox) / g.px, (event.clientY - rect.top - g.oy) / g.py];
}

let axialLayer = null;

function drawAxial() {
  const canvas = $("axial"), ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!state.info || !axialLayer) return;
  const g = axialGeometry(), [X, Y] = state.dims;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(axialLayer, g.ox, g.oy, X * g.px, Y * g.py);
  const at = (x, y) => [g.ox + x * g.px, g.oy + y * g.py];
  const prompt = state.prompts[state.z];
  ctx.lineWidth = 1.5;
  if (prompt && prompt.box) {  // boxes in yellow, points green (fg) / blue (bg): never the mask's red
    const [x0, y0, x1, y1] = prompt.box, [a, b] = at(x0 + 0.5, y0 + 0.5), [c, d] = at(x1 + 0.5, y1 + 0.5);
    ctx.strokeStyle = "#ffd400"; ctx.setLineDash([5, 4]); ctx.strokeRect(a, b, c - a, d - b); ctx.setLineDash([]);
  }
  for (const [x, y, label] of (prompt && prompt.points) || []) {
    const [a, b] = at(x + 0.5, y + 0.5);
    ctx.fillStyle = label ? "#20e060" : "#3090ff";
    ctx.beginPath(); ctx.arc(a, b, 4, 0, 2 * Math.PI); ctx.fill();
  }
  const b3 = state.box3d;
  if (b3 && (b3.first === undefined || (state.z >= Math.min(b3.first, b3.last ?? b3.first) && state.z <= Math.max(b3.first, b3.last ?? b3.first)))) {
    const [x0, y0, x1, y1] = b3.box, [a, b] = at(x0 + 0.5, y0 + 0.5), [c, d] = at(x1 + 0.5, y1 + 0.5);
    ctx.strokeStyle = "#ffa000"; ctx.strokeRect(a, b, c - a, d - b);
  }
  if (state.drag && state.drag.kind === "box") {
    const { u0, v0, u1, v1 } = state.drag, [a, b] = at(u0, v0), [c, d] = at(u1, v1);
    ctx.strokeStyle = "#ffd400"; ctx.strokeRect(a, b, c - a, d - b);
  }
  const [hx, hy] = at(state.cx + 0.5, state.cy + 0.5);  // the crosshair, in cyan
  ctx.strokeStyle = "rgba(0, 220, 255, 0.45)"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(hx, 0); ctx.lineTo(hx, hy - 8); ctx.moveTo(hx, hy + 8); ctx.lineTo(hx, canvas.height);
  ctx.moveTo(0, hy); ctx.lineTo(hx - 8, hy); ctx.moveTo(hx + 8, hy); ctx.lineTo(canvas.width, hy); ctx.stroke();
}

function maskAt(z, y, x) {
  const [X, Y] = state.dims;
  return state.mask[(z * Y + y) * X + x];
}

// Coronal (rows z, columns x) and sagittal (rows z, columns y), superior up, spacing kept.
async function drawReformat(plane) {
  const canvas = $(plane), ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!state.info) return;
  const index = plane === "coronal" ? state.cy : state.cx;
  const slice = await imageSlice(plane, index);
  if (!state.info || (plane === "coronal" ? state.cy : state.cx) !== index) return;  // moved on meanwhile
  const [X, Y, Z] = state.dims, [sx, sy, sz] = state.info.spacing;
  const upward = state.info.direction[8] > 0;  // z towards the head: the highest slice on top
  const row = (r) => (upward ? Z - 1 - r : r);
  const layer = composite(
    { rows: slice.rows, cols: slice.cols, values: flipRows(slice, upward) },
    plane === "coronal" ? (r, c) => maskAt(row(r), index, c) : (r, c) => maskAt(row(r), c, index),
  );
  const wide = plane === "coronal" ? X * sx : Y * sy, tall = Z * sz;
  const fit = Math.min(canvas.width / wide, canvas.height / tall), w = wide * fit, h = tall * fit;
  const ox = (canvas.width - w) / 2, oy = (canvas.height - h) / 2;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(layer, ox, oy, w, h);
  const y = oy + (row(state.z) + 0.5) * (h / Z);  // where the axial slice is
  ctx.strokeStyle = "rgba(0, 220, 255, 0.6)"; ctx.beginPath(); ctx.moveTo(ox, y); ctx.lineTo(ox + w, y); ctx.stroke();
}

function flipRows(slice, flip) {
  if (!flip) return slice.values;
  const out = new slice.values.constructor(slice.values.length);
  for (let r = 0; r < slice.rows; r++)
    out.set(slice.values.subarray((slice.rows - 1 - r) * slice.cols, (slice.rows - r) * slice.cols), r * slice.cols);
  return out;
}

let reformatPending = false;
function drawReformats() {  // at most one pair in flight: a crosshair drag does not queue dozens
  if (reformatPending || !state.info) return;
  reformatPending = true;
  Promise.all([drawReformat("coronal"), drawReformat("sagittal")])
    .catch((error) => showError(error.message))
    .finally(() => { reformatPending = false; });
}

async function rebuildAxial() {
  if (!state.info) { axialLayer = null; return; }
  const z = state.z, slice = await imageSlice("axial", z);
  if (z !== state.z) return;
  if (!state.wl) state.wl = autoWindow(slice.values);
  const [X] = state.dims;
  axialLayer = composite(slice, (r, c) => maskAt(z, r, c));
  $("wl-readout").textContent = `W ${state.wl[0].toFixed(0)}  L ${state.wl[1].toFixed(0)}`;
}

async function draw() {  // the axial view now, the reformats after
  await rebuildAxial();
  drawAxial();
  drawReformats();
  updateReadout();
}

async function showSlice(z) {
  if (!state.info) return;
  const Z = state.dims[2];
  state.z = Math.max(0, Math.min(Z - 1, z));
  $("slice").value = state.z;
  $("slice-label").textContent = `${state.z + 1} / ${Z}`;
  for (const row of document.querySelectorAll("#slices tr.current")) row.classList.remove("current");
  const current = document.querySelector(`#slices tr[data-slice="${state.z}"]`);
  if (current) current.classList.add("current");
  await draw();
}

function nextFrame() { return new Promise((resolve) => requestAnimationFrame(() => resolve(performance.now()))); }

// ---- readout --------------------------------------------------------------------------------

function updateReadout() {
  if (!state.info) { $("readout").textContent = "–"; return; }
  const { cx: x, cy: y, z } = state, [sx, sy, sz] = state.info.spacing, o = state.info.origin, d = state.info.direction;
  const i = [x * sx, y * sy, z * sz];  // LPS = origin + direction · (spacing ∘ index)
  const lps = [0, 1, 2].map((r) => o[r] + d[3 * r] * i[0] + d[3 * r + 1] * i[1] + d[3 * r + 2] * i[2]);
  const slice = state.images.get(`axial:${z}`);
  const value = slice ? slice.values[y * slice.cols + x] : NaN;
  $("readout").textContent = `voxel (${x}, ${y}, ${z})  LPS (${lps.map((v) => v.toFixed(1)).join(", ")}) mm  ` +
    `value ${Number.isInteger(value) ? value : value.toFixed(2)}  mask ${maskAt(z, y, x) ? "in" : "out"}`;
}

// ---- prompts, propagation, edits --------------------------------------------------------------

function clampIndex(u, size) { return Math.max(0, Math.min(size - 1, Math.floor(u))); }

async function recordTiming(started, kind, serverMs) {
  const drawn = await nextFrame();  // the overlay is on screen at the next frame
  const ms = drawn - started;
  window.samfastTimings.push({ kind, ms, server_ms: serverMs });
  $("timing").textContent = `click → overlay: ${ms.toFixed(0)} ms (server ${serverMs === undefined ? "–" : serverMs.toFixed(0)} ms)`;
}

async function sendPrompt(z, started) {
  const prompt = state.prompts[z], body = { slice: z };
  if (prompt.box) body.box = prompt.box;
  if (prompt.points.length) body.points = prompt.points;
  if (state.walked) {  // correct the propagation on this slice and re-walk from it
    const reply = await api("POST", `/sessions/${state.info.session}/edit`, { json: body });
    for (const entry of reply.masks) setSliceMask(entry.slice, entry.mask);
    showStops(reply.stops, `edit of slice ${z}: re-ran ${reply.rerun.length} slice(s), ${reply.voxels} voxels`);
    await draw();
    await recordTiming(started, "edit");
    return;
  }
  const reply = await api("POST", `/sessions/${state.info.session}/prompt`, { json: body });
  setSliceMask(z, reply.mask);
  state.scores[z] = reply.predicted_iou;
  renderTable();
  await draw();
  await recordTiming(started, reply.cached ? "prompt" : "prompt-encode", reply.elapsed_ms);
}

async function boxDone(drag, started) {
  const [X, Y] = state.dims;
  let [x0, x1] = [drag.u0, drag.u1].sort((a, b) => a - b), [y0, y1] = [drag.v0, drag.v1].sort((a, b) => a - b);
  const box = [clampIndex(x0, X), clampIndex(y0, Y), clampIndex(x1, X), clampIndex(y1, Y)];
  if (box[2] - box[0] < 1 || box[3] - box[1] < 1) return;  // a click, not a box
  if (drag.tool === "box3d") {
    state.box3d = { box, first: state.z, last: undefined };
    show3dBox();
    drawAxial();
    return;
  }
  state.prompts[state.z] = { box, points: [] };
  await sendPrompt(state.z, started);
}

async function clickAt(u, v, label, started) {
  // Sent as clicked, even off the image: the server's refusal is the one line shown.
  const z = state.z, prompt = state.prompts[z] || (state.prompts[z] = { box: null, points: [] });
  prompt.points.push([Math.floor(u), Math.floor(v), label]);
  try {
    await sendPrompt(z, started);
  } catch (error) {
    prompt.points.pop();  // a refused click is not kept: the next one would be refused with it
    throw error;
  }
}

function show3dBox() {
  const b = state.box3d;
  $("box3d").textContent = b ? `[${b.box.join(", ")}] slices ${b.first} to ${b.last ?? "?"}` : "none";
}

function setEnd(which) {
  if (!state.box3d) throw new Error("draw a box with the 3D box tool first");
  state.box3d[which] = state.z;
  show3dBox();
  drawAxial();
}

function showStops(stops, text) {
  const parts = Object.entries(stops || {}).map(([k, v]) => `${k}: ${v}`);
  $("stops").textContent = parts.length ? `stops: ${parts.join("; ")}` : "";
  if (text) $("walk-status").textContent = text;
}

function renderTable() {
  const body = $("slices").tBodies[0];
  body.textContent = "";
  if (!state.info) return;
  const [X, Y] = state.dims;
  for (const z of Object.keys(state.scores).map(Number).sort((a, b) => a - b)) {
    let pixels = 0;
    for (let i = z * X * Y; i < (z + 1) * X * Y; i++) pixels += state.mask[i];
    const row = body.insertRow();
    row.dataset.slice = z;
    if (z === state.z) row.className = "current";
    row.insertCell().textContent = z;
    row.insertCell().textContent = pixels;
    row.insertCell().textContent = state.scores[z].toFixed(3);
    row.addEventListener("click", () => showSlice(z));
  }
}

async function propagate() {
  if (!state.info) throw new Error("open a series first");
  if (state.walking) state.walking.abort();
  const body = {}, Z = state.dims[2];
  let expected = Z;
  const b = state.box3d;
  if (b && b.last !== undefined) {
    const [z0, z1] = [b.first, b.last].sort((p, q) => p - q);
    body.box = [b.box[0], b.box[1], z0, b.box[2], b.box[3], z1];
    expected = z1 - z0 + 1;
  }
  const controller = new AbortController();
  state.walking = controller;
  const started = performance.now();
  $("progress").max = expected; $("progress").value = 0;
  $("walk-status").textContent = "propagating…";
  const reply = await fetch(`/sessions/${state.info.session}/propagate`, {
    method: "POST", signal: controller.signal,
    headers: { "X-API-Key": state.key, "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!reply.ok) {
    state.walking = null;
    $("walk-status").textContent = "";
    let detail = `${reply.status} ${reply.statusText}`;
    try { detail = (await reply.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  // NDJSON: each slice is drawn as it arrives; the last line says how the walk ended.
  const reader = reply.body.getReader(), decoder = new TextDecoder();
  let buffered = "", count = 0, final = null, redraw = null;
  const handle = (line) => {
    const record = JSON.parse(line);
    if (record.done) { final = record; return; }
    setSliceMask(record.slice, record.mask);
    state.scores[record.slice] = record.predicted_iou;
    $("progress").value = ++count;
    if (count === 1) showSlice(record.slice);  // follow the walk from its first slice
    redraw = redraw || requestAnimationFrame(() => { redraw = null; draw(); });
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      const lines = buffered.split("\n");
      buffered = lines.pop();
      for (const line of lines) if (line.trim()) handle(line);
    }
    if (buffered.trim()) handle(buffered);
  } finally {
    if (state.walking === controller) state.walking = null;
  }
  renderTable();
  await draw();
  if (!final) throw new Error("the propagation stream ended early");
  $("progress").value = $("progress").max = Math.max(count, 1);
  showStops(final.stops, `${final.status}: ${count} slices in ${(performance.now() - started).toFixed(0)} ms` +
    (final.voxels !== undefined && final.voxels !== null ? `, ${final.voxels} voxels` : ""));
  if (final.status === "complete") state.walked = true;
  else if (final.status === "error") throw new Error(final.detail);
  window.samfastTimings.push({ kind: "propagate", ms: performance.now() - started, slices: count });
}

async function undoRedo(which) {
  if (!state.info) throw new Error("open a series first");
  if (state.walking) state.walking.abort();
  const reply = await api("POST", `/sessions/${state.info.session}/${which}`);
  await loadWholeMask();
  state.walked = false;  // the server forgets the walk: the next prompt starts afresh
  $("walk-status").textContent = `${which}: slices ${reply.slices.join(", ")}`;
  renderTable();
  await draw();
}

// ---- export ---------------------------------------------------------------------------------

function download(blob, name) {
  const url = URL.createObjectURL(blob), link = document.createElement("a");
  link.href = url; link.download = name;
  document.body.appendChild(link); link.click(); link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function exportRtstruct() {
  if (!state.info) throw new Error("open a series first");
  const body = { roi_name: $("roi-name").value, roi_type: $("roi-type").value, color: maskColor() };
  if ($("send").value.trim()) body.send = $("send").value.trim();
  const reply = await api("POST", `/sessions/${state.info.session}/rtstruct`, { json: body, raw: true });
  const bytes = new Uint8Array(await reply.arrayBuffer());
  const name = `RS_${body.roi_name.replace(/[^A-Za-z0-9_-]+/g, "_")}.dcm`;
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  window.samfastLastExport = { name, bytes: bytes.length, base64: btoa(binary) };
  download(new Blob([bytes], { type: "application/dicom" }), name);
  $("export-status").textContent = `${name}: ${bytes.length} bytes${body.send ? `, sent to ${body.send}` : ""}`;
}

async function exportNifti() {
  if (!state.info) throw new Error("open a series first");
  const reply = await api("GET", `/sessions/${state.info.session}/mask`, { raw: true });
  download(await reply.blob(), "mask.nii.gz");
  $("export-status").textContent = "mask.nii.gz downloaded";
}

// ---- input ----------------------------------------------------------------------------------

function setTool(tool) {
  state.tool = tool;
  for (const button of document.querySelectorAll("button.tool")) button.classList.toggle("active", button.dataset.tool === tool);
}

function applyPreset(name) {
  $("preset").value = name;
  const slice = state.info && state.images.get(`axial:${state.z}`);
  state.wl = PRESETS[name] ? [...PRESETS[name]] : slice ? autoWindow(slice.values) : null;
  draw();
}

function zoomBy(factor, at) {
  const canvas = $("axial"), v = state.view;
  const [mx, my] = at || [canvas.width / 2, canvas.height / 2];
  const before = axialGeometry();
  const u = (mx - before.ox) / before.px, w = (my - before.oy) / before.py;
  v.zoom = Math.max(0.25, Math.min(16, v.zoom * factor));
  const after = axialGeometry();  // keep the voxel under the cursor where it was
  v.panX += mx - (after.ox + u * after.px);
  v.panY += my - (after.oy + w * after.py);
  drawAxial();
}

function onMouseDown(event) {
  if (!state.info) return;
  const started = performance.now(), [u, v] = toVoxel(event);
  event.preventDefault();
  $("axial").focus();
  if (event.button === 1 || state.tool === "pan") {
    state.drag = { kind: "pan", x: event.clientX, y: event.clientY };
  } else if (state.tool === "wl" || (event.button === 0 && event.ctrlKey)) {
    state.drag = { kind: "wl", x: event.clientX, y: event.clientY, wl: [...state.wl] };
  } else if (state.tool === "click" && (event.button === 2 || event.button === 0)) {
    const label = event.button === 2 || event.shiftKey ? 0 : 1;
    guarded(clickAt)(u, v, label, started);
  } else if (event.button === 0 && (state.tool === "box" || state.tool === "box3d")) {
    state.drag = { kind: "box", tool: state.tool, u0: u, v0: v, u1: u, v1: v };
  }
}

function onMouseMove(event) {
  if (!state.info) return;
  const [u, v] = toVoxel(event), [X, Y] = state.dims, drag = state.drag;
  if (u >= 0 && v >= 0 && u < X && v < Y) {
    const x = Math.floor(u), y = Math.floor(v), moved = x !== state.cx || y !== state.cy;
    state.cx = x; state.cy = y;
    updateReadout();
    if (moved && !drag) { drawAxial(); drawReformats(); }
  }
  if (!drag) return;
  if (drag.kind === "pan") {
    state.view.panX += event.clientX - drag.x; state.view.panY += event.clientY - drag.y;
    drag.x = event.clientX; drag.y = event.clientY;
  } else if (drag.kind === "wl") {  // right: wider window; down: lower level
    const scale = Math.max(drag.wl[0], 1) / 200;
    state.wl = [Math.max(1e-6, drag.wl[0] + (event.clientX - drag.x) * scale), drag.wl[1] - (event.clientY - drag.y) * scale];
    rebuildAxial().then(drawAxial);
    return;
  } else if (drag.kind === "box") {
    drag.u1 = u; drag.v1 = v;
  }
  drawAxial();
}

function onMouseUp(event) {
  const drag = state.drag;
  if (!drag) return;
  state.drag = null;
  if (drag.kind === "box") {
    const started = performance.now();  // the user's click ends here: the box is complete
    guarded(boxDone)(drag, started);
  } else if (drag.kind === "wl") {
    drawReformats();
  }
  drawAxial();
}

function onWheel(event) {
  if (!state.info) return;
  event.preventDefault();
  if (event.ctrlKey) {
    const rect = $("axial").getBoundingClientRect();
    zoomBy(event.deltaY < 0 ? 1.2 : 1 / 1.2, [event.clientX - rect.left, event.clientY - rect.top]);
  } else {
    showSlice(state.z + (event.deltaY > 0 ? 1 : -1));
  }
}

function onKey(event) {
  const target = event.target;
  if (target instanceof HTMLInputElement && target.type !== "range") return;  // typing in a field
  if (target instanceof HTMLSelectElement || $("help").open && event.key !== "Escape" && event.key !== "?") return;
  const key = event.key, ctrl = event.ctrlKey || event.metaKey;
  const run = (action) => { event.preventDefault(); guarded(action)(); };
  if (ctrl && (key === "z" || key === "Z")) return run(() => undoRedo(event.shiftKey ? "redo" : "undo"));
  if (ctrl && (key === "y" || key === "Y")) return run(() => undoRedo("redo"));
  if (ctrl) return;
  const tools = { b: "box", c: "click", d: "box3d", w: "wl", p: "pan" };
  if (tools[key.toLowerCase()]) return run(() => setTool(tools[key.toLowerCase()]));
  switch (key) {
    case "ArrowUp": return run(() => showSlice(state.z - 1));
    case "ArrowDown": return run(() => showSlice(state.z + 1));
    case "PageUp": return run(() => showSlice(state.z - 5));
    case "PageDown": return run(() => showSlice(state.z + 5));
    case "[": return run(() => setEnd("first"));
    case "]": return run(() => setEnd("last"));
    case "g": case "G": case "Enter": return run(propagate);
    case "u": case "U": return run(() => undoRedo("undo"));
    case "r": case "R": return run(() => undoRedo("redo"));
    case "+": case "=": return run(() => zoomBy(1.25));
    case "-": return run(() => zoomBy(0.8));
    case "0": return run(() => { state.view = { zoom: 1, panX: 0, panY: 0 }; drawAxial(); });
    case "o": case "O": return run(() => { state.overlay = !state.overlay; draw(); });
    case "e": case "E": return run(exportRtstruct);
    case "?": return run(() => ($("help").open ? $("help").close() : $("help").showModal()));
    case "Escape": return run(() => { state.box3d = null; show3dBox(); drawAxial(); });
    default:
      if (key >= "1" && key <= "5") return run(() => applyPreset(PRESET_KEYS[Number(key) - 1]));
  }
}

function start() {
  $("key").value = state.key;
  $("key-form").addEventListener("submit", guarded(useKey));
  $("open-form").addEventListener("submit", guarded(openPath));
  $("upload-form").addEventListener("submit", guarded(openUpload));
  $("close").addEventListener("click", guarded(closeSession));
  $("help-open").addEventListener("click", () => $("help").showModal());
  for (const button of document.querySelectorAll("button.tool")) button.addEventListener("click", () => setTool(button.dataset.tool));
  $("set-first").addEventListener("click", guarded(() => setEnd("first")));
  $("set-last").addEventListener("click", guarded(() => setEnd("last")));
  $("propagate").addEventListener("click", guarded(propagate));
  $("undo").addEventListener("click", guarded(() => undoRedo("undo")));
  $("redo").addEventListener("click", guarded(() => undoRedo("redo")));
  $("export-rt").addEventListener("click", guarded(exportRtstruct));
  $("export-nii").addEventListener("click", guarded(exportNifti));
  $("preset").addEventListener("change", () => applyPreset($("preset").value));
  $("opacity").addEventListener("input", () => draw());
  $("roi-color").addEventListener("input", () => draw());
  $("slice").addEventListener("input", () => showSlice(Number($("slice").value)));
  const canvas = $("axial");
  canvas.addEventListener("mousedown", onMouseDown);
  canvas.addEventListener("mousemove", onMouseMove);
  window.addEventListener("mouseup", onMouseUp);
  canvas.addEventListener("wheel", onWheel, { passive: false });
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());  // right click: background
  document.addEventListener("keydown", onKey);
  drawAxial();
}

start();
