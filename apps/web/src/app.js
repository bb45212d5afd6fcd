// The page: load manifest.json + the ONNX model, classify a dropped or chosen image.
// The model folder is ./model/ (python3 apps/scripts/copy-export.py puts an export there) or ?model=URL.
import * as ort from "../node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { parseManifest } from "./manifest.js";
import { preprocessRGB, rgbaToRgb } from "./preprocess.js";
import { topK } from "./topk.js";

const $ = (id) => document.getElementById(id);
const EXTERNAL_DATA = [".data", ".onnx_data", ".onnx.data"];

// Exposed for curious users and for the end-to-end test (tests/e2e.mjs).
const demo = { spec: null, session: null, seq: 0, last: null, error: null };
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
  const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
  if (externalData.length) options.externalData = externalData;
  const session = await ort.InferenceSession.create(bytes, options);
  // one warm-up run so the latency shown for the first photo is a steady-state number
  const size = spec.inputShape.reduce((a, b) => a * b, 1);
  await session.run({ [spec.inputName]: new ort.Tensor("float32", new Float32Array(size), spec.inputShape) });
  demo.spec = spec;
  demo.session = session;
  // wasm threads need a cross-origin isolated page (COOP/COEP headers); otherwise one thread
  const threads = globalThis.crossOriginIsolated ? ort.env.wasm.numThreads || 1 : 1;
  demo.runtime = `onnxruntime-web ${ort.env.versions?.web ?? ""} (wasm, ${threads} thread${threads > 1 ? "s" : ""})`;
  $("model-info").textContent =
    `${spec.variant ? `ResTv2-${spec.variant}` : "ResTv2"} · ${spec.precision} · ` +
    `${spec.imageSize}×${spec.imageSize} · ${spec.numClasses} classes · ${demo.runtime}` +
    (verified ? " · sha256 ✓" : "");
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

function render(file, top5, timings) {
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.alt = file.name;
  preview.hidden = false;
  const list = $("top5");
  list.replaceChildren(
    ...top5.map((entry) => {
      const item = document.createElement("li");
      const label = document.createElement("span");
      label.textContent = entry.label;
      const prob = document.createElement("span");
      prob.className = "prob";
      prob.textContent = `${(entry.probability * 100).toFixed(2)}%`;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.max(0.5, entry.probability * 100)}%`;
      item.append(label, prob, bar);
      return item;
    }),
  );
  $("latency").textContent =
    `inference ${timings.inferenceMs.toFixed(1)} ms · preprocessing ` +
    `${timings.preprocessMs.toFixed(1)} ms · ${file.name}`;
  $("results").hidden = false;
}

async function classify(file) {
  const spec = demo.spec;
  const { rgb, width, height } = await decode(file);
  const t0 = performance.now();
  const { tensor } = preprocessRGB(rgb, width, height, spec);
  const batch = new Float32Array(tensor.length * spec.batchSize); // static batch: pad with zeros
  batch.set(tensor);
  const t1 = performance.now();
  const feeds = { [spec.inputName]: new ort.Tensor("float32", batch, spec.inputShape) };
  const outputs = await demo.session.run(feeds);
  const t2 = performance.now();
  const output = outputs[spec.outputName] ?? outputs[demo.session.outputNames[0]];
  if (output.type !== "float32") throw new UserError(`model output is ${output.type}, not float32`);
  const logits = Array.from(output.data.subarray(0, spec.numClasses));
  const top5 = topK(logits, spec.labels, 5);
  const timings = { preprocessMs: t1 - t0, inferenceMs: t2 - t1 };
  demo.last = { name: file.name, width, height, top5, logits, input: tensor, ...timings };
  render(file, top5, timings);
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

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file) handle(file);
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer?.files?.[0];
    if (file) {
      handle(file);
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
