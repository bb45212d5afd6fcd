package org.restv2edge.demo.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

/**
 * A 3x2 image whose pixels are numbered 1..6 (red channel), row by row:
 *
 * <pre>
 *   1 2 3
 *   4 5 6
 * </pre>
 *
 * and the upright image each EXIF orientation describes (EXIF 2.32, tag 0x0112), drawn by hand.
 */
class OrientationTest {
  private static byte[] image() {
    byte[] rgb = new byte[18];
    for (int i = 0; i < 6; i++) {
      rgb[i * 3] = (byte) (i + 1);
      rgb[i * 3 + 1] = (byte) (10 * (i + 1));
      rgb[i * 3 + 2] = (byte) 200;
    }
    return rgb;
  }

  private static void check(int orientation, int w, int h, int... reds) {
    Orientation.Pixels p = Orientation.apply(image(), 3, 2, orientation);
    assertEquals(w, p.width, "width for " + orientation);
    assertEquals(h, p.height, "height for " + orientation);
    byte[] got = new byte[reds.length];
    for (int i = 0; i < reds.length; i++) {
      got[i] = p.rgb[i * 3];
      assertEquals((byte) (10 * reds[i]), p.rgb[i * 3 + 1]);
      assertEquals((byte) 200, p.rgb[i * 3 + 2]);
    }
    byte[] want = new byte[reds.length];
    for (int i = 0; i < reds.length; i++) {
      want[i] = (byte) reds[i];
    }
    assertArrayEquals(want, got, "orientation " + orientation);
  }

  @Test
  void allEightOrientations() {
    check(1, 3, 2, 1, 2, 3, 4, 5, 6);
    check(2, 3, 2, 3, 2, 1, 6, 5, 4); // mirrored
    check(3, 3, 2, 6, 5, 4, 3, 2, 1); // rotated 180
    check(4, 3, 2, 4, 5, 6, 1, 2, 3); // flipped
    check(5, 2, 3, 1, 4, 2, 5, 3, 6); // transposed
    check(6, 2, 3, 4, 1, 5, 2, 6, 3); // rotated 90 clockwise
    check(7, 2, 3, 6, 3, 5, 2, 4, 1); // transversed
    check(8, 2, 3, 3, 6, 2, 5, 1, 4); // rotated 90 counter-clockwise
  }

  @Test
  void unknownValuesLeaveTheImageAlone() {
    assertArrayEquals(image(), Orientation.apply(image(), 3, 2, 0).rgb);
    assertArrayEquals(image(), Orientation.apply(image(), 3, 2, 9).rgb);
  }
}
