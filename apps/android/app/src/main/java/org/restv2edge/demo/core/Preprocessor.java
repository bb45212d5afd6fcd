package org.restv2edge.demo.core;

/**
 * Decoded RGB pixels to the model input, exactly as restv2_edge.preprocess does it in Python
 * with Pillow: (1) resize so the shorter side is the manifest's {@code resize_size} with
 * Pillow's BICUBIC (or BILINEAR) resample -- separable, antialiased when downscaling (support
 * scaled by the factor), 8-bit fixed-point coefficients and uint8 rounding/clipping after each
 * pass, mirroring Pillow's libImaging/Resample.c; (2) center crop {@code image_size} with
 * Python's round-half-even offsets; (3) {@code (rgb * scale - mean) / std} per channel in float32.
 *
 * <p>Plain JVM, no android.*: the app hands it {@code Bitmap.getPixels} output, tests hand it
 * golden vectors.
 */
public final class Preprocessor {
  private static final int PRECISION_BITS = 32 - 8 - 2;
  private static final double ONE = 1 << PRECISION_BITS;
  private static final int HALF = 1 << (PRECISION_BITS - 1);

  private final Manifest manifest;

  public Preprocessor(Manifest manifest) {
    this.manifest = manifest;
  }

  /** The uint8 crop and the float input of one image. */
  public static final class Result {
    /** Packed RGB, imageSize x imageSize x 3. */
    public final byte[] resized;
    /** One image of the model input, in the manifest's layout (NCHW or NHWC). */
    public final float[] input;

    Result(byte[] resized, float[] input) {
      this.resized = resized;
      this.input = input;
    }
  }

  /** Packed RGB bytes (row-major, 3 per pixel) -> crop and model input. */
  public Result fromRgb(byte[] rgb, int width, int height) {
    int[] size = resizeTarget(width, height, manifest.resizeSize);
    byte[] resized = resize(rgb, width, height, size[0], size[1], manifest.interpolation);
    byte[] crop = centerCrop(resized, size[0], size[1], manifest.imageSize);
    return new Result(crop, normalize(crop, manifest));
  }

  /** {@code Bitmap.getPixels}-style ARGB ints -> crop and model input (alpha is dropped). */
  public Result fromArgb(int[] argb, int width, int height) {
    return fromRgb(argbToRgb(argb), width, height);
  }

  /**
   * Packed RGBA bytes ({@code Bitmap.copyPixelsToBuffer} of an ARGB_8888 bitmap: R, G, B, A per
   * pixel, no colour conversion) -> crop and model input. Alpha is dropped, as PIL's
   * {@code convert("RGB")} does; decode with premultiplication off for images with alpha.
   */
  public Result fromRgba(byte[] rgba, int width, int height) {
    return fromRgb(rgbaToRgb(rgba), width, height);
  }

  public static byte[] rgbaToRgb(byte[] rgba) {
    byte[] rgb = new byte[rgba.length / 4 * 3];
    for (int i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
      rgb[j] = rgba[i];
      rgb[j + 1] = rgba[i + 1];
      rgb[j + 2] = rgba[i + 2];
    }
    return rgb;
  }

  public static byte[] argbToRgb(int[] argb) {
    byte[] rgb = new byte[argb.length * 3];
    for (int i = 0; i < argb.length; i++) {
      int c = argb[i];
      rgb[i * 3] = (byte) (c >> 16);
      rgb[i * 3 + 1] = (byte) (c >> 8);
      rgb[i * 3 + 2] = (byte) c;
    }
    return rgb;
  }

  /** Python's {@code round()}: to nearest, ties to even. */
  public static int roundHalfEven(double x) {
    return (int) Math.rint(x);
  }

  /** Shorter side to {@code shortSide}, the other scaled and rounded as Python does. */
  public static int[] resizeTarget(int width, int height, int shortSide) {
    if (width <= height) {
      return new int[] {
        shortSide, Math.max(1, roundHalfEven((double) shortSide * height / width))
      };
    }
    return new int[] {Math.max(1, roundHalfEven((double) shortSide * width / height)), shortSide};
  }

  private static double filter(double x, boolean bicubic) {
    if (x < 0.0) {
      x = -x;
    }
    if (bicubic) {
      final double a = -0.5;
      if (x < 1.0) {
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      }
      if (x < 2.0) {
        return (((x - 5) * x + 8) * x - 4) * a;
      }
      return 0.0;
    }
    return x < 1.0 ? 1.0 - x : 0.0;
  }

  /** Pillow's coefficients for one axis: bounds (xmin, count) per output, fixed-point weights. */
  static final class Coeffs {
    final int ksize;
    final int[] bounds;
    final int[] kk;

    Coeffs(int inSize, int outSize, String interpolation) {
      boolean bicubic = "bicubic".equals(interpolation);
      if (!bicubic && !"bilinear".equals(interpolation)) {
        throw new IllegalArgumentException("unsupported interpolation " + interpolation);
      }
      double scale = (double) inSize / outSize;
      double filterscale = Math.max(scale, 1.0);
      double support = (bicubic ? 2.0 : 1.0) * filterscale;
      ksize = (int) Math.ceil(support) * 2 + 1;
      bounds = new int[outSize * 2];
      kk = new int[outSize * ksize];
      double[] k = new double[ksize];
      double ss = 1.0 / filterscale;
      for (int xx = 0; xx < outSize; xx++) {
        double center = (xx + 0.5) * scale;
        int xmin = (int) (center - support + 0.5);
        if (xmin < 0) {
          xmin = 0;
        }
        int xmax = (int) (center + support + 0.5);
        if (xmax > inSize) {
          xmax = inSize;
        }
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
          double w = filter((x + xmin - center + 0.5) * ss, bicubic);
          k[x] = w;
          ww += w;
        }
        for (int x = 0; x < xmax; x++) {
          double w = ww != 0.0 ? k[x] / ww : k[x];
          kk[xx * ksize + x] = (int) (w < 0 ? -0.5 + w * ONE : 0.5 + w * ONE);
        }
        bounds[xx * 2] = xmin;
        bounds[xx * 2 + 1] = xmax;
      }
    }
  }

  private static byte clip8(int sum) {
    int v = sum >> PRECISION_BITS;
    return (byte) (v < 0 ? 0 : Math.min(v, 255));
  }

  /** Pillow's Image.resize for packed RGB: horizontal pass, then vertical; unchanged axes skip. */
  public static byte[] resize(
      byte[] rgb, int width, int height, int newWidth, int newHeight, String interpolation) {
    if (rgb.length != width * height * 3) {
      throw new IllegalArgumentException("RGB buffer does not match its size");
    }
    boolean needH = newWidth != width;
    boolean needV = newHeight != height;
    if (!needH && !needV) {
      return rgb.clone();
    }
    Coeffs vert = new Coeffs(height, newHeight, interpolation);
    byte[] src = rgb;
    int srcWidth = width;
    int rowOffset = 0;
    if (needH) {
      int first = vert.bounds[0];
      int last = vert.bounds[newHeight * 2 - 2] + vert.bounds[newHeight * 2 - 1];
      int rows = last - first;
      Coeffs horiz = new Coeffs(width, newWidth, interpolation);
      byte[] tmp = new byte[newWidth * rows * 3];
      for (int yy = 0; yy < rows; yy++) {
        int inRow = (yy + first) * width * 3;
        for (int xx = 0; xx < newWidth; xx++) {
          int xmin = horiz.bounds[xx * 2];
          int xmax = horiz.bounds[xx * 2 + 1];
          int kBase = xx * horiz.ksize;
          int s0 = HALF;
          int s1 = HALF;
          int s2 = HALF;
          for (int x = 0; x < xmax; x++) {
            int w = horiz.kk[kBase + x];
            int p = inRow + (x + xmin) * 3;
            s0 += (rgb[p] & 0xFF) * w;
            s1 += (rgb[p + 1] & 0xFF) * w;
            s2 += (rgb[p + 2] & 0xFF) * w;
          }
          int o = (yy * newWidth + xx) * 3;
          tmp[o] = clip8(s0);
          tmp[o + 1] = clip8(s1);
          tmp[o + 2] = clip8(s2);
        }
      }
      src = tmp;
      srcWidth = newWidth;
      rowOffset = first;
    }
    if (!needV) {
      return src;
    }
    byte[] out = new byte[srcWidth * newHeight * 3];
    for (int yy = 0; yy < newHeight; yy++) {
      int ymin = vert.bounds[yy * 2] - rowOffset;
      int ymax = vert.bounds[yy * 2 + 1];
      int kBase = yy * vert.ksize;
      for (int xx = 0; xx < srcWidth; xx++) {
        int s0 = HALF;
        int s1 = HALF;
        int s2 = HALF;
        for (int y = 0; y < ymax; y++) {
          int w = vert.kk[kBase + y];
          int p = ((y + ymin) * srcWidth + xx) * 3;
          s0 += (src[p] & 0xFF) * w;
          s1 += (src[p + 1] & 0xFF) * w;
          s2 += (src[p + 2] & 0xFF) * w;
        }
        int o = (yy * srcWidth + xx) * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      }
    }
    return out;
  }

  /** Center crop size x size; pixels outside the image are black (as PIL's crop). */
  public static byte[] centerCrop(byte[] rgb, int width, int height, int size) {
    int left = roundHalfEven((width - size) / 2.0);
    int top = roundHalfEven((height - size) / 2.0);
    byte[] out = new byte[size * size * 3];
    for (int y = 0; y < size; y++) {
      int sy = y + top;
      if (sy < 0 || sy >= height) {
        continue;
      }
      for (int x = 0; x < size; x++) {
        int sx = x + left;
        if (sx < 0 || sx >= width) {
          continue;
        }
        System.arraycopy(rgb, (sy * width + sx) * 3, out, (y * size + x) * 3, 3);
      }
    }
    return out;
  }

  /** {@code (rgb * scale - mean) / std} per channel, float32 arithmetic, manifest's layout. */
  public static float[] normalize(byte[] crop, Manifest manifest) {
    int size = manifest.imageSize;
    int plane = size * size;
    boolean nhwc = "NHWC".equals(manifest.layout);
    float[] out = new float[3 * plane];
    for (int i = 0; i < plane; i++) {
      for (int c = 0; c < 3; c++) {
        float v = ((crop[i * 3 + c] & 0xFF) * manifest.scale - manifest.mean[c]) / manifest.std[c];
        out[nhwc ? i * 3 + c : c * plane + i] = v;
      }
    }
    return out;
  }
}
