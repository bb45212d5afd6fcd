// Read a golden-vector folder (written by `restv2-edge golden`; format in apps/README.md).
import { readFileSync } from "node:fs";
import { join } from "node:path";

function readArray(dir, spec) {
  const bytes = readFileSync(join(dir, spec.path));
  const count = spec.shape.reduce((a, b) => a * b, 1);
  if (spec.dtype === "uint8") {
    if (bytes.length !== count) throw new Error(`${spec.path}: ${bytes.length} bytes, expected ${count}`);
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
  }
  if (spec.dtype === "float32") {
    if (bytes.length !== count * 4) throw new Error(`${spec.path}: wrong size`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
    return out;
  }
  throw new Error(`${spec.path}: unknown dtype ${spec.dtype}`);
}

export function loadGolden(dir) {
  const index = JSON.parse(readFileSync(join(dir, "golden.json"), "utf8"));
  if (index.format !== "restv2-edge-golden") throw new Error(`${dir}: not a golden-vector folder`);
  const manifest = JSON.parse(readFileSync(join(dir, index.manifest), "utf8"));
  const images = index.images.map((entry) => ({
    ...entry,
    photoPath: join(dir, entry.photo),
    decodedPixels: readArray(dir, entry.decoded),
    resizedPixels: readArray(dir, entry.resized),
    inputTensor: readArray(dir, entry.input),
  }));
  return { index, manifest, images };
}
