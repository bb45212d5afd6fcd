// manifest.json (written by `restv2-edge export`) -> the few fields the page needs.
// Every preprocessing constant and every label comes from here, never from this code.

function need(condition, message) {
  if (!condition) throw new Error(`manifest.json: ${message}`);
}

function isNumberList(value, length) {
  return Array.isArray(value) && value.length === length && value.every(Number.isFinite);
}

/** Validate a parsed manifest.json and return a flat spec; throws a readable Error. */
export function parseManifest(manifest) {
  need(manifest && typeof manifest === "object", "not a JSON object");
  need(manifest.target === "onnx", `target is "${manifest.target}"; this page runs ONNX artifacts`);
  const input = manifest.input;
  const output = manifest.output;
  need(input && typeof input === "object", "no input section");
  need(output && typeof output === "object", "no output section");
  need(input.dtype === "float32", `input dtype ${input.dtype} is not supported (float32 only)`);
  const layout = input.layout || "NCHW";
  need(layout === "NCHW" || layout === "NHWC", `input layout ${layout} is not supported`);
  const imageSize = manifest.image_size;
  need(Number.isInteger(imageSize) && imageSize > 0, "image_size missing");
  need(Array.isArray(input.shape) && input.shape.length === 4, "input.shape is not 4-D");
  const spatial = layout === "NCHW" ? input.shape.slice(2) : input.shape.slice(1, 3);
  need(spatial[0] === imageSize && spatial[1] === imageSize, "input.shape does not match image_size");
  need(isNumberList(input.mean, 3) && isNumberList(input.std, 3), "input.mean/std must be 3 numbers");
  need(Number.isFinite(input.scale), "input.scale missing");
  need(Number.isFinite(input.crop_pct) && input.crop_pct > 0, "input.crop_pct missing");
  const interpolation = input.interpolation || "bicubic";
  need(
    interpolation === "bicubic" || interpolation === "bilinear",
    `interpolation ${interpolation} is not supported (bicubic, bilinear)`,
  );
  const resizeSize = Number.isInteger(input.resize_size)
    ? input.resize_size
    : Math.floor(imageSize / input.crop_pct);
  need(Array.isArray(manifest.labels), "labels must be a list in manifest.json");
  need(manifest.labels.length === manifest.num_classes, "labels do not match num_classes");
  const modelEntry = (manifest.files || []).find((f) => f.path === manifest.model_file);
  return {
    target: manifest.target,
    precision: manifest.precision,
    variant: manifest.variant,
    modelFile: manifest.model_file,
    modelSha256: modelEntry ? modelEntry.sha256 : null,
    inputName: input.name,
    outputName: output.name,
    inputShape: input.shape.slice(),
    batchSize: input.shape[0],
    // the batch dimension is symbolic: one image runs as batch 1, no padding
    dynamicBatch: input.dynamic_batch === true,
    layout,
    imageSize,
    resizeSize,
    cropPct: input.crop_pct,
    interpolation,
    scale: input.scale,
    mean: input.mean.slice(),
    std: input.std.slice(),
    labels: manifest.labels.slice(),
    numClasses: manifest.num_classes,
  };
}
