// End-to-end test of the page in headless Chromium (playwright-core, the system's Chromium).
//
//   node tests/e2e.mjs --golden GOLDEN_DIR --model ARTIFACT_DIR [--screenshot PNG] [--report JSON]
//                      [--ep auto|webgpu|wasm] [--webgpu]
//
// Serves this folder on 127.0.0.1 (the artifact under /model/), opens the page, classifies every
// golden photo through the real file input (and the first once more by drag and drop), and checks
// the page's top-5 against the golden vectors: top-1 identical, each golden top-5 probability
// within 1e-3. A text file must produce a readable "not an image" message. The screenshot is
// taken once every photo went through the file input.
//
// Execution provider: the page is opened with ?ep=MODE (default auto). Before that, the test asks
// the browser itself for a WebGPU adapter (navigator.gpu.requestAdapter() on a blank page of the
// same origin) and records the answer; with auto, the page must run on WebGPU when a GPU adapter
// exists and on wasm, with the reason shown, when none does or the only one is a software
// adapter; with webgpu it must run on WebGPU on any adapter. --webgpu starts Chromium with
// --enable-unsafe-webgpu (which offers SwiftShader's software WebGPU adapter on a machine
// without a GPU) instead of --disable-gpu. Exit code 0 = passed.
import { createReadStream, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { basename, dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import { loadGolden } from "./golden.mjs";

const PROB_TOL = 1e-3;
const CHROMIUM_FLAGS = [
  "--no-sandbox",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const MIME = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".onnx": "application/octet-stream",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
};

const { values: args } = parseArgs({
  options: {
    golden: { type: "string" },
    model: { type: "string" },
    screenshot: { type: "string" },
    report: { type: "string" },
    timeout: { type: "string", default: "60000" },
    ep: { type: "string", default: "auto" },
    webgpu: { type: "boolean", default: false },
  },
});
if (!args.golden || !args.model) {
  console.error("usage: node tests/e2e.mjs --golden DIR --model ARTIFACT_DIR [--screenshot PNG]");
  process.exit(2);
}

const webRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const modelRoot = resolve(args.model);

function serve() {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://localhost").pathname);
    const [root, rel] = path.startsWith("/model/")
      ? [modelRoot, path.slice("/model/".length)]
      : [webRoot, path.slice(1) || "index.html"];
    const file = normalize(join(root, rel));
    if (!(file === root || file.startsWith(root + sep)) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    res.writeHead(200, {
      "content-type": MIME[extname(file).toLowerCase()] || "application/octet-stream",
      "cache-control": "no-store",
    });
    createReadStream(file).pipe(res);
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

/** What the browser itself says about WebGPU on this origin, independently of the page's code. */
async function probeWebGPU(page, origin) {
  await page.goto(`${origin}/tests/blank.html`);
  return page.evaluate(async () => {
    const probe = { secureContext: isSecureContext, navigatorGpu: Boolean(navigator.gpu), adapter: null };
    if (!navigator.gpu) return probe;
    try {
      const adapter = await navigator.gpu.requestAdapter();
      if (adapter) {
        const info = adapter.info || {};
        probe.adapter = {
          vendor: info.vendor,
          architecture: info.architecture,
          description: info.description,
          isFallbackAdapter: Boolean(info.isFallbackAdapter),
        };
      }
    } catch (err) {
      probe.error = String(err);
    }
    return probe;
  });
}

/** The provider the page runs on must be the one the browser's answer calls for, and be shown. */
function checkBackend(backend, probe, mode) {
  const problems = [];
  if (!backend) return ["the page exposes no backend"];
  if (backend.shownEp !== backend.ep) problems.push(`page shows ${backend.shownEp}, runs ${backend.ep}`);
  if (!backend.shown.includes(backend.ep === "webgpu" ? "WebGPU" : "wasm")) {
    problems.push(`the page does not say which provider it runs on: "${backend.shown}"`);
  }
  if (backend.ep === "wasm" && !(backend.fallbackReason && backend.shown.includes(backend.fallbackReason))) {
    problems.push(`fell back to wasm without showing why: "${backend.shown}"`);
  }
  // auto takes a GPU adapter, not a software one; webgpu takes any adapter; wasm never WebGPU
  const gpu = probe.adapter && !probe.adapter.isFallbackAdapter;
  const expected = mode === "webgpu" || (mode === "auto" && gpu) ? "webgpu" : "wasm";
  if (backend.ep !== expected) {
    problems.push(`runs on ${backend.ep}, expected ${expected} (adapter: ${JSON.stringify(probe.adapter)}; ` +
      `reason: ${backend.fallbackReason})`);
  }
  return problems;
}

async function waitFor(page, seq, timeout) {
  await page.waitForSelector(`#status[data-seq="${seq}"][data-state="done"], #status[data-seq="${seq}"][data-state="error"]`, {
    state: "attached",
    timeout,
  });
  return page.evaluate(() => {
    const d = window.restv2Demo;
    return {
      state: document.getElementById("status").dataset.state,
      error: d.error,
      errorShown: !document.getElementById("error").hidden,
      last: d.last && {
        name: d.last.name,
        width: d.last.width,
        height: d.last.height,
        top5: d.last.top5,
        logits: d.last.logits,
        input: Array.from(d.last.input),
        feedShape: d.last.feedShape,
        inferenceMs: d.last.inferenceMs,
        preprocessMs: d.last.preprocessMs,
      },
      shown: Array.from(document.querySelectorAll("#top5 li")).map((li) => li.textContent),
    };
  });
}

function softmax(logits) {
  const max = Math.max(...logits);
  const exps = logits.map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / sum);
}

function check(image, result) {
  const problems = [];
  if (result.state !== "done") return { problems: [`page error: ${result.error}`] };
  const page = result.last;
  const probs = softmax(page.logits);
  const golden = image.top5;
  if (page.top5[0].index !== golden[0].index) {
    problems.push(`top-1 ${page.top5[0].label} (${page.top5[0].index}) != golden ${golden[0].label}`);
  }
  let maxProbDiff = 0;
  for (const entry of golden) {
    maxProbDiff = Math.max(maxProbDiff, Math.abs(probs[entry.index] - entry.probability));
  }
  if (!(maxProbDiff <= PROB_TOL)) problems.push(`probability differs by ${maxProbDiff} > ${PROB_TOL}`);
  let maxInputDiff = 0;
  let differing = 0;
  for (let i = 0; i < image.inputTensor.length; i++) {
    const d = Math.abs(page.input[i] - image.inputTensor[i]);
    if (d > 0) differing++;
    maxInputDiff = Math.max(maxInputDiff, d);
  }
  if (page.top5.length !== golden.length) problems.push("page shows a different number of classes");
  if (result.shown.length !== golden.length) problems.push("top-5 list not rendered");
  return {
    problems,
    topPage: page.top5.map((e) => [e.index, e.label, e.probability]),
    topGolden: golden.map((e) => [e.index, e.label, e.probability]),
    pageProbabilities: probs,
    maxProbDiff,
    maxInputDiff,
    inputValuesDiffering: differing,
    feedShape: page.feedShape,
    inferenceMs: page.inferenceMs,
    preprocessMs: page.preprocessMs,
  };
}

/** Open the page and wait until the model loaded or failed: what it says and runs on. */
async function loadPage(page, url, timeout) {
  await page.goto(url);
  await page.waitForSelector('#status[data-state="ready"], #status[data-state="failed"]', { timeout });
  return page.evaluate(() => {
    const line = document.getElementById("backend");
    const backend = window.restv2Demo.backend;
    return {
      state: document.getElementById("status").dataset.state,
      error: window.restv2Demo.error,
      info: document.getElementById("model-info").textContent,
      backend: backend && { ...backend, shown: line.textContent, shownEp: line.dataset.ep },
    };
  });
}

/** Every golden photo through the file input, the first once more by drag and drop, a text file. */
async function classifyPhotos(page, golden, report, timeout) {
  let seq = 0;
  for (const image of golden.images) {
    await page.setInputFiles("#file", image.photoPath);
    const outcome = check(image, await waitFor(page, ++seq, timeout));
    report.images.push({ name: image.name, via: "file input", ...outcome });
    for (const p of outcome.problems) report.failures.push(`${image.name}: ${p}`);
  }
  report.history = await page.evaluate(() =>
    Array.from(document.querySelectorAll("#history-list li"), (li) => li.textContent),
  );
  if (report.history.length !== golden.images.length) {
    report.failures.push(`history lists ${report.history.length} photos, not ${golden.images.length}`);
  }
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });

  const first = golden.images[0];
  const bytes = readFileSync(first.photoPath).toString("base64");
  const dataTransfer = await page.evaluateHandle(
    ([b64, name]) => {
      const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([raw], name, { type: "image/jpeg" }));
      return dt;
    },
    [bytes, basename(first.photoPath)],
  );
  await page.dispatchEvent("#drop", "drop", { dataTransfer });
  const dropped = check(first, await waitFor(page, ++seq, timeout));
  report.images.push({ name: first.name, via: "drop", ...dropped });
  for (const p of dropped.problems) report.failures.push(`${first.name} (drop): ${p}`);

  // a file that is not an image: a readable message, no results
  await page.setInputFiles("#file", {
    name: "notes.txt",
    mimeType: "text/plain",
    buffer: Buffer.from("this is not an image\n"),
  });
  const bad = await waitFor(page, ++seq, timeout);
  report.checks.nonImage = { state: bad.state, message: bad.error, shown: bad.errorShown };
  if (bad.state !== "error" || !bad.errorShown || !/not an image/i.test(bad.error || "")) {
    report.failures.push(`non-image file: expected a readable error, got ${JSON.stringify(bad)}`);
  }
}

async function main() {
  const timeout = Number(args.timeout);
  const golden = loadGolden(args.golden);
  const server = await serve();
  const origin = `http://127.0.0.1:${server.address().port}`;
  const url = `${origin}/index.html?model=/model/&ep=${encodeURIComponent(args.ep)}`;
  const flags = [...CHROMIUM_FLAGS, args.webgpu ? "--enable-unsafe-webgpu" : "--disable-gpu"];
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    headless: true,
    args: flags,
  });
  const report = { url, browser: `Chromium ${browser.version()}`, flags, images: [], checks: {}, failures: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 760 } });
    const consoleErrors = [];
    page.on("pageerror", (err) => consoleErrors.push(String(err)));
    report.webgpuProbe = await probeWebGPU(page, origin);
    const loaded = await loadPage(page, url, timeout);
    Object.assign(report, { modelInfo: loaded.info, backend: loaded.backend, loadError: loaded.error });
    if (loaded.state === "ready") {
      for (const p of checkBackend(loaded.backend, report.webgpuProbe, args.ep)) report.failures.push(p);
      await classifyPhotos(page, golden, report, timeout);
    } else {
      // the report says why (e.g. ?ep=webgpu where the browser has no adapter)
      report.failures.push(`model did not load: ${loaded.error}`);
    }
    if (consoleErrors.length) report.failures.push(`page errors: ${consoleErrors.join("; ")}`);
  } finally {
    await browser.close();
    server.close();
  }
  if (args.report) writeFileSync(args.report, JSON.stringify(report, null, 2) + "\n");
  for (const image of report.images) {
    console.log(
      `${image.problems.length ? "FAIL" : "ok  "} ${image.name} (${image.via}): top-1 ${image.topPage?.[0]?.[1]}, ` +
        `max |dp| ${image.maxProbDiff?.toExponential(2)}, max |dinput| ${image.maxInputDiff?.toExponential(2)}, ` +
        `inference ${image.inferenceMs?.toFixed(1)} ms`,
    );
  }
  console.log(`non-image file: ${report.checks.nonImage?.message}`);
  console.log(`${report.browser}; ${report.modelInfo}`);
  console.log(`WebGPU adapter: ${JSON.stringify(report.webgpuProbe?.adapter ?? null)}; page: ${report.backend?.shown}`);
  const passed = report.failures.length === 0;
  for (const f of report.failures) console.log(`FAIL ${f}`);
  const total = report.images.length + 1;
  console.log(`${passed ? total : total - report.failures.length} passed, ${report.failures.length} failed`);
  process.exit(passed ? 0 : 1);
}

main().catch((err) => {
  console.error(`e2e: ${err.stack || err}`);
  process.exit(1);
});
