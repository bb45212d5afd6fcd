// Image -> model input, exactly as restv2_edge.preprocess does it in Python with Pillow:
//   1. resize so the shorter side is `resize_size` (Pillow's BICUBIC or BILINEAR resample:
//      separable, antialiased when downscaling, 8-bit fixed-point coefficients, uint8 rounding
//      and clipping after each pass; this file mirrors Pillow's libImaging/Resample.c),
//   2. center crop `image_size` x `image_size` (Python's round-half-even offsets),
//   3. per channel (rgb * scale - mean) / std in float32, laid out NCHW (or NHWC).
// Pure functions on plain arrays: no DOM, so Node runs the same code in tests.

const PRECISION_BITS = 32 - 8 - 2;
const HALF = 2 ** (PRECISION_BITS - 1);
const ONE = 2 ** PRECISION_BITS;

const FILTERS = {
  bicubic: {
    support: 2.0,
    weight(x) {
      const a = -0.5;
      if (x < 0.0) x = -x;
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    },
  },
  bilinear: {
    support: 1.0,
    weight(x) {
      if (x < 0.0) x = -x;
      if (x < 1.0) return 1.0 - x;
      return 0.0;
    },
  },
};

/** Python's round(): to nearest, ties to even. */
export function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** The resize target: shorter side to `short`, the other side scaled and rounded like Python. */
export function resizeTarget(width, height, short) {
  if (width <= height) {
    return [short, Math.max(1, roundHalfEven((short * height) / width))];
  }
  return [Math.max(1, roundHalfEven((short * width) / height)), short];
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis. */
export function precomputeCoeffs(inSize, outSize, filterName = "bicubic") {
  const filter = FILTERS[filterName];
  if (!filter) throw new Error(`unsupported interpolation "${filterName}"`);
  const scale = inSize / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  const ss = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.weight((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? k[x] / ww : k[x];
      // (int)(w * 2^22 +- 0.5): truncation toward zero, as the C cast does
      kk[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * ONE : 0.5 + w * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(sum) {
  const v = Math.floor(sum / ONE); // arithmetic shift right by PRECISION_BITS
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Resize packed RGB (Uint8Array, width*height*3) to newWidth x newHeight like Pillow's
 * Image.resize(size, BICUBIC): horizontal pass first (on the rows the vertical pass needs),
 * then vertical; a pass whose size does not change is skipped.
 */
export function resizeRGB(rgb, width, height, newWidth, newHeight, filterName = "bicubic") {
  if (rgb.length !== width * height * 3) throw new Error("RGB buffer does not match its size");
  const needH = newWidth !== width;
  const needV = newHeight !== height;
  if (!needH && !needV) return Uint8Array.from(rgb);
  const vert = precomputeCoeffs(height, newHeight, filterName);
  let src = rgb;
  let srcWidth = width;
  let rowOffset = 0;
  if (needH) {
    const first = vert.bounds[0];
    const last = vert.bounds[newHeight * 2 - 2] + vert.bounds[newHeight * 2 - 1];
    const rows = last - first;
    const horiz = precomputeCoeffs(width, newWidth, filterName);
    const tmp = new Uint8Array(newWidth * rows * 3);
    for (let yy = 0; yy < rows; yy++) {
      const inRow = (yy + first) * width * 3;
      for (let xx = 0; xx < newWidth; xx++) {
        const xmin = horiz.bounds[xx * 2];
        const xmax = horiz.bounds[xx * 2 + 1];
        const kBase = xx * horiz.ksize;
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let x = 0; x < xmax; x++) {
          const w = horiz.kk[kBase + x];
          const p = inRow + (x + xmin) * 3;
          s0 += rgb[p] * w;
          s1 += rgb[p + 1] * w;
          s2 += rgb[p + 2] * w;
        }
        const o = (yy * newWidth + xx) * 3;
        tmp[o] = clip8(s0);
        tmp[o + 1] = clip8(s1);
        tmp[o + 2] = clip8(s2);
      }
    }
    src = tmp;
    srcWidth = newWidth;
    rowOffset = first;
  }
  if (!needV) return src;
  const out = new Uint8Array(srcWidth * newHeight * 3);
  for (let yy = 0; yy < newHeight; yy++) {
    const ymin = vert.bounds[yy * 2] - rowOffset;
    const ymax = vert.bounds[yy * 2 + 1];
    const kBase = yy * vert.ksize;
    for (let xx = 0; xx < srcWidth; xx++) {
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      for (let y = 0; y < ymax; y++) {
        const w = vert.kk[kBase + y];
        const p = ((y + ymin) * srcWidth + xx) * 3;
        s0 += src[p] * w;
        s1 += src[p + 1] * w;
        s2 += src[p + 2] * w;
      }
      const o = (yy * srcWidth + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}

/** Center crop size x size of packed RGB; outside the image is black (like PIL's crop). */
export function centerCrop(rgb, width, height, size) {
  const left = roundHalfEven((width - size) / 2.0);
  const top = roundHalfEven((height - size) / 2.0);
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= height) continue;
    for (let x = 0; x < size; x++) {
      const sx = x + left;
      if (sx < 0 || sx >= width) continue;
      const s = (sy * width + sx) * 3;
      const o = (y * size + x) * 3;
      out[o] = rgb[s];
      out[o + 1] = rgb[s + 1];
      out[o + 2] = rgb[s + 2];
    }
  }
  return out;
}

/** (rgb * scale - mean) / std per channel, in float32 arithmetic, NCHW or NHWC. */
export function normalize(crop, size, spec) {
  const f = Math.fround;
  const scale = f(spec.scale);
  const mean = spec.mean.map(f);
  const std = spec.std.map(f);
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  const nhwc = spec.layout === "NHWC";
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const v = f(f(f(crop[i * 3 + c] * scale) - mean[c]) / std[c]);
      out[nhwc ? i * 3 + c : c * plane + i] = v;
    }
  }
  return out;
}

/** Packed RGBA (e.g. canvas ImageData.data) -> packed RGB; alpha is dropped as PIL's convert does. */
export function rgbaToRgb(rgba) {
  const n = rgba.length / 4;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    out[i * 3] = rgba[i * 4];
    out[i * 3 + 1] = rgba[i * 4 + 1];
    out[i * 3 + 2] = rgba[i * 4 + 2];
  }
  return out;
}

/**
 * Decoded RGB -> { resized: uint8 crop (S*S*3), tensor: Float32Array for one image }.
 * `spec` is the parsed manifest (see manifest.js).
 */
export function preprocessRGB(rgb, width, height, spec) {
  const [newWidth, newHeight] = resizeTarget(width, height, spec.resizeSize);
  const resizedFull = resizeRGB(rgb, width, height, newWidth, newHeight, spec.interpolation);
  const resized = centerCrop(resizedFull, newWidth, newHeight, spec.imageSize);
  return { resized, tensor: normalize(resized, spec.imageSize, spec) };
}
