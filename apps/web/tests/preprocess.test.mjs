// Unit tests of the page's pure modules against golden vectors (GOLDEN_DIR):
// PIL-decoded pixels -> resize/crop must equal PIL's uint8 crop exactly, the float input
// must match the golden tensor, and top-k of the golden logits must match Python's top-5.
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseManifest } from "../src/manifest.js";
import {
  centerCrop,
  normalize,
  preprocessRGB,
  resizeRGB,
  resizeTarget,
  roundHalfEven,
} from "../src/preprocess.js";
import { topK } from "../src/topk.js";
import { loadGolden } from "./golden.mjs";

const dir = process.env.GOLDEN_DIR;
const skip = dir ? false : "GOLDEN_DIR is not set (make one with `restv2-edge golden`)";
const golden = dir ? loadGolden(dir) : null;

test("round half to even like Python", () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, 4.5, 4.4, 4.6].map(roundHalfEven), [0, 2, 2, 0, 4, 4, 5]);
});

test("crop outside the image is black", () => {
  const rgb = new Uint8Array([10, 20, 30]);
  const out = centerCrop(rgb, 1, 1, 3);
  assert.deepEqual(Array.from(out.slice(12, 15)), [10, 20, 30]);
  assert.equal(out.reduce((a, b) => a + b, 0), 60);
});

test("manifest errors are readable", () => {
  assert.throws(() => parseManifest({ target: "coreml" }), /this page runs ONNX artifacts/);
});

test("resize + crop equal PIL's bytes", { skip }, () => {
  const spec = parseManifest(golden.manifest);
  for (const image of golden.images) {
    const [h, w] = image.decoded.shape;
    const [nw, nh] = resizeTarget(w, h, spec.resizeSize);
    const full = resizeRGB(image.decodedPixels, w, h, nw, nh, spec.interpolation);
    const crop = centerCrop(full, nw, nh, spec.imageSize);
    let differing = 0;
    for (let i = 0; i < crop.length; i++) if (crop[i] !== image.resizedPixels[i]) differing++;
    assert.equal(differing, 0, `${image.name}: ${differing} bytes differ from PIL`);
  }
});

test("input tensor matches the golden tensor", { skip }, () => {
  const spec = parseManifest(golden.manifest);
  for (const image of golden.images) {
    const [h, w] = image.decoded.shape;
    const { tensor } = preprocessRGB(image.decodedPixels, w, h, spec);
    assert.equal(tensor.length, image.inputTensor.length);
    let maxDiff = 0;
    for (let i = 0; i < tensor.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(tensor[i] - image.inputTensor[i]));
    }
    console.log(`${image.name}: max |input diff| ${maxDiff}`);
    assert.equal(maxDiff, 0, `${image.name}: max diff ${maxDiff}`);
    // normalize alone, on PIL's own crop, is bit-exact as well
    const again = normalize(image.resizedPixels, spec.imageSize, spec);
    assert.deepEqual(again, image.inputTensor);
  }
});

test("top-k of the golden logits equals Python's top-5", { skip }, () => {
  const spec = parseManifest(golden.manifest);
  for (const image of golden.images) {
    const got = topK(image.logits, spec.labels, image.top5.length);
    assert.deepEqual(
      got.map((e) => [e.index, e.label]),
      image.top5.map((e) => [e.index, e.label]),
    );
    got.forEach((e, i) => assert.ok(Math.abs(e.probability - image.top5[i].probability) < 1e-9));
  }
});
