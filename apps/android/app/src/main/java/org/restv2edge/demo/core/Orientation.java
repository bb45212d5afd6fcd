package org.restv2edge.demo.core;

/**
 * EXIF orientation (TIFF tag 0x0112, values 1-8) applied to packed RGB as an exact pixel
 * permutation, so a rotated phone photo reaches the preprocessing upright without resampling.
 */
public final class Orientation {
  private Orientation() {}

  /** Packed RGB with its size. */
  public static final class Pixels {
    public final byte[] rgb;
    public final int width;
    public final int height;

    public Pixels(byte[] rgb, int width, int height) {
      this.rgb = rgb;
      this.width = width;
      this.height = height;
    }
  }

  /**
   * The upright image for an EXIF orientation: 1 normal, 2 mirrored, 3 rotated 180, 4 flipped,
   * 5 transposed, 6 rotated 90 clockwise, 7 transversed, 8 rotated 90 counter-clockwise.
   * Unknown values are treated as 1.
   */
  public static Pixels apply(byte[] rgb, int width, int height, int orientation) {
    if (orientation < 2 || orientation > 8) {
      return new Pixels(rgb, width, height);
    }
    boolean swap = orientation >= 5;
    int outW = swap ? height : width;
    int outH = swap ? width : height;
    byte[] out = new byte[rgb.length];
    for (int y = 0; y < outH; y++) {
      for (int x = 0; x < outW; x++) {
        int sx;
        int sy;
        switch (orientation) {
          case 2:
            sx = width - 1 - x;
            sy = y;
            break;
          case 3:
            sx = width - 1 - x;
            sy = height - 1 - y;
            break;
          case 4:
            sx = x;
            sy = height - 1 - y;
            break;
          case 5:
            sx = y;
            sy = x;
            break;
          case 6:
            sx = y;
            sy = height - 1 - x;
            break;
          case 7:
            sx = width - 1 - y;
            sy = height - 1 - x;
            break;
          default: // 8
            sx = width - 1 - y;
            sy = x;
            break;
        }
        System.arraycopy(rgb, (sy * width + sx) * 3, out, (y * outW + x) * 3, 3);
      }
    }
    return new Pixels(out, outW, outH);
  }
}
