// Which onnxruntime-web execution provider the page runs on: WebGPU where the browser offers a
// GPU adapter and the session works on it, otherwise wasm, with the reason kept for the page.
// A software adapter (SwiftShader, reported as isFallbackAdapter) is used only when WebGPU is
// asked for by name (?ep=webgpu): on the CPU it runs the model far slower than wasm does.
//
// The two onnxruntime-web builds are imported on demand: the WebGPU build (which carries a wasm
// provider too, used if the WebGPU session fails) only when an adapter exists, the smaller
// wasm-only build otherwise.
const DIST = "../node_modules/onnxruntime-web/dist/";
const BUILDS = { webgpu: `${DIST}ort.webgpu.min.mjs`, wasm: `${DIST}ort.wasm.min.mjs` };
export const MODES = ["auto", "webgpu", "wasm"];

/** WebGPU was asked for by name (?ep=webgpu) and cannot be used: the message says why. */
export class WebGPUUnavailable extends Error {}

/** The first line of an error message (onnxruntime errors can be long). */
function firstLine(err) {
  return String(err?.message ?? err).split("\n")[0];
}

function adapterInfo(adapter) {
  const info = adapter.info || {};
  return {
    vendor: info.vendor || "",
    architecture: info.architecture || "",
    description: info.description || "",
    // a software adapter (e.g. SwiftShader), not a GPU
    isFallbackAdapter: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
  };
}

/** Describe an adapter in a few words: "google swiftshader, software adapter". */
export function describeAdapter(info) {
  const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(" ");
  return `${name || "unnamed adapter"}${info.isFallbackAdapter ? ", software adapter" : ""}`;
}

/**
 * Ask the browser for a WebGPU adapter. Returns {adapter, info} or {reason} saying, in words a
 * user can act on, why WebGPU cannot be used here.
 */
export async function probeWebGPU() {
  if (!globalThis.isSecureContext) {
    return { reason: "WebGPU needs a secure context (https or localhost)" };
  }
  if (!navigator.gpu) return { reason: "this browser has no WebGPU (navigator.gpu is undefined)" };
  let adapter;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch (err) {
    return { reason: `navigator.gpu.requestAdapter() failed: ${firstLine(err)}` };
  }
  if (!adapter) {
    return {
      reason:
        "navigator.gpu.requestAdapter() returned no adapter (no usable GPU, " +
        "or WebGPU is disabled for it in this browser)",
    };
  }
  return { adapter, info: adapterInfo(adapter) };
}

/** A WebGPU session on `probe.adapter`, checked by one run: {ort, session} or {ort, reason}. */
async function webgpuSession(bytes, options, probe, feeds) {
  const ort = await import(BUILDS.webgpu);
  try {
    ort.env.webgpu.adapter = probe.adapter;
    const session = await ort.InferenceSession.create(bytes, { ...options, executionProviders: ["webgpu"] });
    await session.run(feeds(ort));
    return { ort, session };
  } catch (err) {
    return { ort, reason: `the WebGPU session failed on ${describeAdapter(probe.info)}: ${firstLine(err)}` };
  }
}

/**
 * Create an inference session for `mode` ("auto", "webgpu" or "wasm") and check it with one run
 * of `feeds(ort)` (a GPU session can fail at its first run, not only at creation).
 * Returns {ort, session, backend}; backend = {ep, mode, adapter, fallbackReason}.
 * "auto" falls back to wasm; "webgpu" throws instead of falling back.
 */
export async function createSession(bytes, options, mode, feeds) {
  let reason = "wasm was requested (?ep=wasm)";
  let ort = null;
  if (mode !== "wasm") {
    const probe = await probeWebGPU();
    if (!probe.adapter) {
      reason = probe.reason;
    } else if (probe.info.isFallbackAdapter && mode === "auto") {
      reason =
        `the browser's WebGPU adapter is a software one (${describeAdapter(probe.info)}), ` +
        "slower than wasm; ?ep=webgpu uses it anyway";
    } else {
      const gpu = await webgpuSession(bytes, options, probe, feeds);
      if (gpu.session) {
        const backend = { ep: "webgpu", mode, adapter: probe.info, fallbackReason: null };
        return { ort: gpu.ort, session: gpu.session, backend };
      }
      ({ ort, reason } = gpu); // the WebGPU build's own wasm provider takes over
    }
    if (mode === "webgpu") throw new WebGPUUnavailable(`WebGPU was requested (?ep=webgpu) but ${reason}`);
  }
  ort = ort || (await import(BUILDS.wasm));
  const session = await ort.InferenceSession.create(bytes, { ...options, executionProviders: ["wasm"] });
  await session.run(feeds(ort));
  return { ort, session, backend: { ep: "wasm", mode, adapter: null, fallbackReason: reason } };
}
