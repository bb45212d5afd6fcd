package org.restv2edge.demo.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/** Properties of the Pillow-compatible resize that hold without golden vectors. */
class PreprocessorTest {
  @Test
  void roundsHalfToEvenLikePython() {
    assertEquals(0, Preprocessor.roundHalfEven(0.5));
    assertEquals(2, Preprocessor.roundHalfEven(1.5));
    assertEquals(2, Preprocessor.roundHalfEven(2.5));
    assertEquals(4, Preprocessor.roundHalfEven(4.5));
    assertEquals(5, Preprocessor.roundHalfEven(4.6));
  }

  @Test
  void shorterSideGoesToTheTarget() {
    assertArrayEquals(new int[] {256, 341}, Preprocessor.resizeTarget(375, 500, 256));
    assertArrayEquals(new int[] {341, 256}, Preprocessor.resizeTarget(500, 375, 256));
    assertArrayEquals(new int[] {64, 64}, Preprocessor.resizeTarget(32, 32, 64));
  }

  @Test
  void constantImageStaysConstant() {
    byte[] rgb = new byte[37 * 23 * 3];
    for (int i = 0; i < rgb.length; i += 3) {
      rgb[i] = (byte) 200;
      rgb[i + 1] = 17;
      rgb[i + 2] = (byte) 255;
    }
    for (int[] size : new int[][] {{11, 7}, {64, 40}, {37, 5}, {3, 23}}) {
      byte[] out = Preprocessor.resize(rgb, 37, 23, size[0], size[1], "bicubic");
      assertEquals(size[0] * size[1] * 3, out.length);
      for (int i = 0; i < out.length; i += 3) {
        assertEquals(200, out[i] & 0xFF);
        assertEquals(17, out[i + 1] & 0xFF);
        assertEquals(255, out[i + 2] & 0xFF);
      }
    }
  }

  @Test
  void sameSizeIsACopy() {
    byte[] rgb = {1, 2, 3, 4, 5, 6};
    assertArrayEquals(rgb, Preprocessor.resize(rgb, 2, 1, 2, 1, "bicubic"));
  }

  @Test
  void cropOutsideTheImageIsBlack() {
    byte[] out = Preprocessor.centerCrop(new byte[] {10, 20, 30}, 1, 1, 3);
    assertArrayEquals(new byte[] {10, 20, 30}, java.util.Arrays.copyOfRange(out, 12, 15));
    int sum = 0;
    for (byte b : out) {
      sum += b & 0xFF;
    }
    assertEquals(60, sum);
  }

  @Test
  void rejectsUnknownInterpolationAndWrongBuffers() {
    assertThrows(
        IllegalArgumentException.class,
        () -> Preprocessor.resize(new byte[12], 2, 2, 1, 1, "lanczos"));
    assertThrows(
        IllegalArgumentException.class,
        () -> Preprocessor.resize(new byte[11], 2, 2, 1, 1, "bicubic"));
  }
}
