// The page: load manifest.json + the ONNX model, classify dropped or chosen images.
// The model folder is ./model/ (python3 apps/scripts/copy-export.py puts an export there) or ?model=URL.
// The execution provider: WebGPU where the browser offers it, else wasm (?ep=auto|webgpu|wasm).
import { createSession, describeAdapter, MODES, WebGPUUnavailable } from "./backend.js";
import { parseManifest } from "./manifest.js";
import { preprocessRGB, rgbaToRgb } from "./preprocess.js";
import { topK } from "./topk.js";

const $ = (id) => document.getElementById(id);
const EXTERNAL_DATA = [".data", ".onnx_data", ".onnx.data"];

// Exposed for curious users and for the end-to-end test (tests/e2e.mjs).
const demo = { spec: null, ort: null, session: null, backend: null, seq: 0, last: null, error: null };
demo.history = []; // every photo classified on this page: {id, name, url, top5, timings}
window.restv2Demo = demo;

class UserError extends Error {}

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.dataset.seq = String(demo.seq);
  status.textContent = text;
}

function showError(message) {
  demo.error = message;
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  demo.error = null;
  $("error").hidden = true;
  $("error").textContent = "";
}

function requestedMode() {
  const mode = new URLSearchParams(location.search).get("ep") || "auto";
  if (!MODES.includes(mode)) throw new UserError(`?ep=${mode} is not one of ${MODES.join(", ")}`);
  return mode;
}

function modelBase() {
  const param = new URLSearchParams(location.search).get("model") || "model/";
  return new URL(param.endsWith("/") ? param : `${param}/`, location.href);
}

async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new UserError(`could not fetch ${what} at ${url}: ${err.message}`);
  }
  if (!response.ok) {
    throw new UserError(
      `no ${what} at ${url} (HTTP ${response.status}). ` +
        "Copy an ONNX export into apps/web/model/ with apps/scripts/copy-export.py.",
    );
  }
  return response;
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function checkSha256(bytes, expected, name) {
  if (!expected || !globalThis.crypto || !crypto.subtle) return false; // not a secure context
  const actual = hex(await crypto.subtle.digest("SHA-256", bytes));
  if (actual !== expected) {
    throw new UserError(`${name} does not match the sha256 in manifest.json (damaged copy?)`);
  }
  return true;
}

async function loadModel() {
  const mode = requestedMode();
  const base = modelBase();
  const raw = await (await fetchOk(new URL("manifest.json", base), "manifest.json")).json();
  let spec;
  try {
    spec = parseManifest(raw);
  } catch (err) {
    throw new UserError(err.message);
  }
  const modelUrl = new URL(spec.modelFile, base);
  const bytes = new Uint8Array(await (await fetchOk(modelUrl, spec.modelFile)).arrayBuffer());
  const verified = await checkSha256(bytes, spec.modelSha256, spec.modelFile);
  const externalData = (raw.files || [])
    .filter((f) => f.path !== spec.modelFile && EXTERNAL_DATA.some((s) => f.path.endsWith(s)))
    .map((f) => ({ path: f.path, data: new URL(f.path, base).href }));
  const options = { graphOptimizationLevel: "all" };
  if (externalData.length) options.externalData = externalData;
  // one warm-up run checks the session works on its provider, and makes the latency shown for
  // the first photo a steady-state number
  const size = spec.inputShape.reduce((a, b) => a * b, 1);
  const zeros = (ort) => ({
    [spec.inputName]: new ort.Tensor("float32", new Float32Array(size), spec.inputShape),
  });
  let created;
  try {
    created = await createSession(bytes, options, mode, zeros);
  } catch (err) {
    throw err instanceof WebGPUUnavailable ? new UserError(err.message) : err;
  }
  Object.assign(demo, { spec, ...created });
  demo.runtime = runtimeName(created.ort, created.backend);
  showBackend(created.backend);
  $("model-info").textContent =
    `${spec.variant ? `ResTv2-${spec.variant}` : "ResTv2"} · ${spec.precision} · ` +
    `${spec.imageSize}×${spec.imageSize} · ${spec.numClasses} classes · ${demo.runtime}` +
    (verified ? " · sha256 ✓" : "");
}

function runtimeName(ort, backend) {
  const version = `onnxruntime-web ${ort.env.versions?.web ?? ""}`;
  if (backend.ep === "webgpu") return `${version} (WebGPU)`;
  // wasm threads need a cross-origin isolated page (COOP/COEP headers); otherwise one thread
  const threads = globalThis.crossOriginIsolated ? ort.env.wasm.numThreads || 1 : 1;
  return `${version} (wasm, ${threads} thread${threads > 1 ? "s" : ""})`;
}

/** Say which provider runs the model and, for wasm, why not WebGPU. */
function showBackend(backend) {
  const line = $("backend");
  line.dataset.ep = backend.ep;
  if (backend.ep === "webgpu") {
    line.textContent = `Runs on WebGPU: ${describeAdapter(backend.adapter)}.`;
  } else {
    line.textContent = `Runs on wasm (CPU). WebGPU not used: ${backend.fallbackReason}.`;
  }
  line.hidden = false;
}

async function decode(file) {
  let bitmap;
  try {
    // no colour management (Pillow ignores embedded profiles too); EXIF orientation is applied
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    const kind = file.type ? ` (${file.type})` : "";
    throw new UserError(
      `"${file.name}"${kind} is not an image this browser can read. ` +
        "Choose a photo (JPEG, PNG, WebP or GIF).",
    );
  }
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const { data, width, height } = ctx.getImageData(0, 0, canvas.width, canvas.height);
  return { rgb: rgbaToRgb(data), width, height };
}

const HISTORY_LIMIT = 24;

/** The big view: the photo and its top-5. */
function render(entry) {
  for (const button of document.querySelectorAll("#history-list button")) {
    button.setAttribute("aria-current", String(button.dataset.id === String(entry.id)));
  }
  const preview = $("preview");
  preview.src = entry.url;
  preview.alt = entry.name;
  preview.hidden = false;
  const list = $("top5");
  list.replaceChildren(
    ...entry.top5.map((item) => {
      const row = document.createElement("li");
      const label = document.createElement("span");
      label.textContent = item.label;
      const prob = document.createElement("span");
      prob.className = "prob";
      prob.textContent = `${(item.probability * 100).toFixed(2)}%`;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.max(0.5, item.probability * 100)}%`;
      row.append(label, prob, bar);
      return row;
    }),
  );
  $("latency").textContent =
    `inference ${entry.inferenceMs.toFixed(1)} ms · preprocessing ` +
    `${entry.preprocessMs.toFixed(1)} ms · ${entry.name}`;
  $("results").hidden = false;
}

/** Every photo classified on this page, each with its top-1; a click shows its top-5 again. */
function remember(entry) {
  demo.history.push(entry);
  if (demo.history.length > HISTORY_LIMIT) URL.revokeObjectURL(demo.history.shift().url);
  const items = demo.history.map((item) => {
    const button = document.createElement("button");
    button.type = "button";
    button.title = item.name;
    button.dataset.id = String(item.id);
    button.addEventListener("click", () => render(item));
    const thumb = document.createElement("img");
    thumb.src = item.url;
    thumb.alt = item.name;
    const caption = document.createElement("span");
    const best = item.top5[0];
    caption.textContent = `${best.label} ${(best.probability * 100).toFixed(0)}%`;
    button.append(thumb, caption);
    const li = document.createElement("li");
    li.append(button);
    return li;
  });
  $("history-list").replaceChildren(...items);
  $("history").hidden = false;
}

async function classify(file) {
  const spec = demo.spec;
  const { rgb, width, height } = await decode(file);
  const t0 = performance.now();
  const { tensor } = preprocessRGB(rgb, width, height, spec);
  // a static batch is padded with zeros; a dynamic batch takes the one image
  const shape = spec.dynamicBatch ? [1, ...spec.inputShape.slice(1)] : spec.inputShape;
  const batch = new Float32Array(tensor.length * shape[0]);
  batch.set(tensor);
  const t1 = performance.now();
  const feeds = { [spec.inputName]: new demo.ort.Tensor("float32", batch, shape) };
  const outputs = await demo.session.run(feeds);
  const t2 = performance.now();
  const output = outputs[spec.outputName] ?? outputs[demo.session.outputNames[0]];
  if (output.type !== "float32") throw new UserError(`model output is ${output.type}, not float32`);
  const logits = Array.from(output.data.subarray(0, spec.numClasses));
  const top5 = topK(logits, spec.labels, 5);
  const timings = { preprocessMs: t1 - t0, inferenceMs: t2 - t1 };
  demo.last = { name: file.name, width, height, top5, logits, input: tensor, feedShape: shape, ...timings };
  const entry = { id: demo.seq, name: file.name, url: URL.createObjectURL(file), top5, ...timings };
  remember(entry);
  render(entry);
}

async function handle(file) {
  if (!demo.session) return;
  demo.seq += 1;
  clearError();
  setStatus("busy", `Classifying ${file.name}…`);
  try {
    await classify(file);
    setStatus("done", `Classified ${file.name}.`);
  } catch (err) {
    demo.last = null;
    $("results").hidden = true;
    showError(err instanceof UserError ? err.message : `Classification failed: ${err.message}`);
    setStatus("error", "Could not classify that file.");
  }
}

/** Several files are classified one after the other. */
async function handleAll(files) {
  for (const file of files) await handle(file);
}

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    const files = Array.from(event.target.files);
    event.target.value = "";
    handleAll(files);
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const files = Array.from(event.dataTransfer?.files ?? []);
    if (files.length) {
      handleAll(files);
    } else {
      showError("Drop an image file (from your files, not a link or text).");
    }
  });
}

async function main() {
  wire();
  try {
    await loadModel();
    setStatus("ready", "Ready: drop or choose an image.");
  } catch (err) {
    showError(err instanceof UserError ? err.message : `Could not load the model: ${err.message}`);
    $("model-info").textContent = "No model loaded.";
    setStatus("failed", "The model could not be loaded.");
  }
}

main();
