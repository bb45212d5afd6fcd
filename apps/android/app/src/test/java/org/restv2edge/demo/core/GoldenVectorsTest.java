package org.restv2edge.demo.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.awt.image.Raster;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The app's plain-JVM core against golden vectors from a fresh export (see apps/README.md). */
class GoldenVectorsTest {
  static GoldenVectors golden;
  static Manifest manifest;

  @BeforeAll
  static void load() throws IOException {
    Path dir = GoldenVectors.configured();
    Assumptions.assumeTrue(dir != null, "no golden vectors: set -Drestv2.golden=DIR");
    golden = new GoldenVectors(dir);
    manifest = Manifest.parse(golden.manifestJson);
  }

  @Test
  void manifestDescribesTheGoldenTensors() {
    assertTrue(golden.images.size() > 0);
    for (GoldenVectors.Image image : golden.images) {
      assertEquals(1, image.inputShape[0]);
      assertEquals(manifest.imageElements(), image.input.length);
      assertEquals(manifest.numClasses, image.logits.length);
    }
  }

  @Test
  void resizeAndCropEqualPillowByteForByte() {
    for (GoldenVectors.Image image : golden.images) {
      int[] size = Preprocessor.resizeTarget(image.width, image.height, manifest.resizeSize);
      byte[] full =
          Preprocessor.resize(
              image.decoded, image.width, image.height, size[0], size[1], manifest.interpolation);
      byte[] crop = Preprocessor.centerCrop(full, size[0], size[1], manifest.imageSize);
      int differing = 0;
      for (int i = 0; i < crop.length; i++) {
        if (crop[i] != image.resized[i]) {
          differing++;
        }
      }
      assertEquals(0, differing, image.name + ": bytes differing from Pillow");
    }
  }

  @Test
  void inputTensorEqualsTheGoldenTensor() {
    Preprocessor pre = new Preprocessor(manifest);
    for (GoldenVectors.Image image : golden.images) {
      float[] input = pre.fromRgb(image.decoded, image.width, image.height).input;
      double maxDiff = maxAbsDiff(input, image.input);
      System.out.printf("%s: max |input - golden| = %.3g (Pillow-decoded pixels)%n", image.name, maxDiff);
      assertEquals(0.0, maxDiff, image.name);
    }
  }

  @Test
  void argbPathMatchesRgbPath() {
    Preprocessor pre = new Preprocessor(manifest);
    GoldenVectors.Image image = golden.images.get(0);
    int[] argb = new int[image.width * image.height];
    for (int i = 0; i < argb.length; i++) {
      argb[i] =
          0xFF000000
              | (image.decoded[i * 3] & 0xFF) << 16
              | (image.decoded[i * 3 + 1] & 0xFF) << 8
              | (image.decoded[i * 3 + 2] & 0xFF);
    }
    assertArrayEquals(image.input, pre.fromArgb(argb, image.width, image.height).input);
  }

  /**
   * The photo decoded by the JVM's own decoder (javax.imageio) instead of Pillow. Android decodes
   * with its own libjpeg-turbo build; this shows a second decoder lands on the same tensor. ImageIO
   * converts photos with an embedded ICC profile to sRGB while reading (Pillow, the web page and
   * the apps do not colour-manage), so those are reported but not compared.
   */
  @Test
  void photoDecodedByImageIoMatches() throws IOException {
    Preprocessor pre = new Preprocessor(manifest);
    double tolerance = 2.0 * manifest.scale / minStd(); // two uint8 levels
    int compared = 0;
    for (GoldenVectors.Image image : golden.images) {
      BufferedImage decoded;
      try (InputStream in = Files.newInputStream(image.photo)) {
        decoded = ImageIO.read(in);
      }
      assertNotNull(decoded, image.photo + " could not be decoded by ImageIO");
      float[] input = pre.fromRgb(rawRgb(decoded), decoded.getWidth(), decoded.getHeight()).input;
      double maxDiff = maxAbsDiff(input, image.input);
      String note = image.iccProfile ? " [ICC profile: converted by ImageIO, not compared]" : "";
      System.out.printf(
          "%s: max |input - golden| = %.3g (ImageIO-decoded photo)%s%n", image.name, maxDiff, note);
      if (!image.iccProfile && image.exifOrientation == 1) {
        assertTrue(maxDiff <= tolerance, image.name + ": " + maxDiff + " > " + tolerance);
        compared++;
      }
    }
    Assumptions.assumeTrue(compared > 0, "every golden photo carries an ICC profile");
  }

  /** Decoded samples as packed RGB without any colour conversion (grey replicated, as PIL). */
  private static byte[] rawRgb(BufferedImage image) {
    Raster raster = image.getRaster();
    int w = image.getWidth();
    int h = image.getHeight();
    int bands = raster.getNumBands();
    if (bands != 1 && bands != 3) {
      return Preprocessor.argbToRgb(image.getRGB(0, 0, w, h, null, 0, w));
    }
    int[] samples = raster.getPixels(0, 0, w, h, (int[]) null);
    byte[] rgb = new byte[w * h * 3];
    for (int i = 0; i < w * h; i++) {
      for (int c = 0; c < 3; c++) {
        rgb[i * 3 + c] = (byte) samples[bands == 1 ? i : i * 3 + c];
      }
    }
    return rgb;
  }

  @Test
  void topKOfGoldenLogitsEqualsPythonTop5() {
    for (GoldenVectors.Image image : golden.images) {
      List<TopK.Prediction> got = TopK.topK(image.logits, manifest.labels, image.top5.size());
      for (int i = 0; i < image.top5.size(); i++) {
        TopK.Prediction want = image.top5.get(i);
        assertEquals(want.index, got.get(i).index, image.name + " rank " + i);
        assertEquals(want.label, got.get(i).label);
        assertEquals(want.probability, got.get(i).probability, 1e-9);
      }
    }
  }

  private double minStd() {
    return Math.min(manifest.std[0], Math.min(manifest.std[1], manifest.std[2]));
  }

  static double maxAbsDiff(float[] a, float[] b) {
    assertEquals(b.length, a.length);
    double max = 0;
    for (int i = 0; i < a.length; i++) {
      max = Math.max(max, Math.abs((double) a[i] - b[i]));
    }
    return max;
  }
}
