package org.restv2edge.demo.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

class ManifestTest {
  static final String MINIMAL =
      "{\"target\": \"executorch\", \"precision\": \"fp32\", \"variant\": null, \"image_size\": 4,"
          + " \"num_classes\": 2, \"model_file\": \"model.pte\", \"files\": [{\"path\":"
          + " \"model.pte\", \"sha256\": \"ab\", \"bytes\": 1}], \"input\": {\"name\": \"input\","
          + " \"shape\": [1, 3, 4, 4], \"dtype\": \"float32\", \"layout\": \"NCHW\", \"scale\": 1.0,"
          + " \"mean\": [0.0, 0.0, 0.0], \"std\": [1.0, 1.0, 1.0], \"crop_pct\": 0.875,"
          + " \"interpolation\": \"bicubic\"}, \"output\": {\"name\": \"logits\", \"shape\": [1, 2]},"
          + " \"labels\": LABELS}";

  @Test
  void parsesARawInputManifest() {
    Manifest m = Manifest.parse(MINIMAL.replace("LABELS", "[\"cat\", \"dog\"]"));
    assertEquals("executorch", m.target);
    assertTrue(m.rawInput());
    assertEquals(4, m.resizeSize); // floor(4 / 0.875) when resize_size is absent
    assertEquals(Arrays.asList("cat", "dog"), m.labels);
    assertEquals("ab", m.modelSha256);
    assertArrayEquals(new long[] {1, 3, 4, 4}, m.inputShape);
    m.requireTarget("executorch");
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> m.requireTarget("onnx"));
    assertTrue(e.getMessage().contains("needs a onnx export"), e.getMessage());
  }

  @Test
  void readsLabelsFromASiblingFile() {
    Manifest m =
        Manifest.parse(
            MINIMAL.replace("LABELS", "\"labels.txt\""),
            name -> name.equals("labels.txt") ? "cat\ndog\n" : null);
    assertEquals(Arrays.asList("cat", "dog"), m.labels);
  }

  @Test
  void badManifestsGiveReadableErrors() {
    String[][] cases = {
      {MINIMAL.replace("LABELS", "[\"cat\"]"), "labels do not match num_classes"},
      {MINIMAL.replace("LABELS", "[\"a\", \"b\"]").replace("\"float32\"", "\"float16\""), "dtype"},
      {MINIMAL.replace("LABELS", "[\"a\", \"b\"]").replace("[1, 3, 4, 4]", "[1, 3, 5, 5]"),
        "does not match image_size"},
      {MINIMAL.replace("LABELS", "[\"a\", \"b\"]").replace("bicubic", "lanczos"), "lanczos"},
      {"[1, 2]", "not a JSON object"},
      {"{\"target\": ", "invalid JSON"},
    };
    for (String[] c : cases) {
      IllegalArgumentException e =
          assertThrows(IllegalArgumentException.class, () -> Manifest.parse(c[0]));
      assertTrue(e.getMessage().startsWith("manifest.json: "), e.getMessage());
      assertTrue(e.getMessage().contains(c[1]), e.getMessage());
    }
  }

  /** rawInput() tells whether the golden input tensor is the uint8 crop itself (0-255). */
  @Test
  void rawInputFlagMatchesTheGoldenTensor() throws IOException {
    Path dir = GoldenVectors.configured();
    Assumptions.assumeTrue(dir != null, "no golden vectors configured");
    GoldenVectors golden = new GoldenVectors(dir);
    Manifest m = Manifest.parse(golden.manifestJson);
    GoldenVectors.Image image = golden.images.get(0);
    int plane = m.imageSize * m.imageSize;
    boolean tensorIsCrop = true;
    for (int i = 0; i < plane && tensorIsCrop; i++) {
      for (int c = 0; c < 3; c++) {
        if (image.input[c * plane + i] != (image.resized[i * 3 + c] & 0xFF)) {
          tensorIsCrop = false;
        }
      }
    }
    assertEquals(tensorIsCrop, m.rawInput());
  }

  @Test
  void sha256MatchesTheStandardTestVector() throws IOException {
    InputStream in = new ByteArrayInputStream("abc".getBytes(StandardCharsets.US_ASCII));
    assertEquals(
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        Hashing.sha256Hex(in));
  }

  /** The exported model file hashes to the sha256 its manifest lists (-Drestv2.artifact=DIR). */
  @Test
  void modelFileMatchesItsManifest() throws IOException {
    String value = System.getProperty("restv2.artifact", "");
    Assumptions.assumeFalse(value.isEmpty(), "no artifact folder configured");
    Path dir = Paths.get(value);
    Manifest m =
        Manifest.parse(
            new String(Files.readAllBytes(dir.resolve("manifest.json")), StandardCharsets.UTF_8));
    try (InputStream in = Files.newInputStream(dir.resolve(m.modelFile))) {
      assertEquals(m.modelSha256, Hashing.sha256Hex(in));
    }
  }
}
