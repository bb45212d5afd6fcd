package org.restv2edge.demo.core;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A golden-vector folder written by {@code restv2-edge golden} (format: apps/README.md). Found
 * through the system property {@code restv2.golden} or the environment variable RESTV2_GOLDEN.
 */
final class GoldenVectors {
  final Path dir;
  final Map<String, Object> index;
  final String manifestJson;
  final List<Image> images = new ArrayList<>();

  static final class Image {
    String name;
    boolean iccProfile;
    int exifOrientation;
    Path photo;
    int height;
    int width;
    byte[] decoded;
    byte[] resized;
    float[] input;
    long[] inputShape;
    float[] logits;
    List<TopK.Prediction> top5 = new ArrayList<>();
  }

  /** The configured folder, or null when none is configured. */
  static Path configured() {
    String value = System.getProperty("restv2.golden");
    if (value == null || value.isEmpty()) {
      value = System.getenv("RESTV2_GOLDEN");
    }
    return value == null || value.isEmpty() ? null : Paths.get(value);
  }

  @SuppressWarnings("unchecked")
  GoldenVectors(Path dir) throws IOException {
    this.dir = dir;
    index = (Map<String, Object>) Json.parse(read(dir.resolve("golden.json")));
    if (!"restv2-edge-golden".equals(index.get("format"))) {
      throw new IllegalArgumentException(dir + " is not a golden-vector folder");
    }
    manifestJson = read(dir.resolve((String) index.get("manifest")));
    for (Object o : (List<Object>) index.get("images")) {
      Map<String, Object> e = (Map<String, Object>) o;
      Image image = new Image();
      image.name = (String) e.get("name");
      image.photo = dir.resolve((String) e.get("photo"));
      image.iccProfile = Boolean.TRUE.equals(e.get("icc_profile"));
      Object orientation = e.get("exif_orientation");
      image.exifOrientation = orientation == null ? 1 : ((Number) orientation).intValue();
      Map<String, Object> decoded = (Map<String, Object>) e.get("decoded");
      List<Object> shape = (List<Object>) decoded.get("shape");
      image.height = ((Number) shape.get(0)).intValue();
      image.width = ((Number) shape.get(1)).intValue();
      image.decoded = bytes(decoded);
      image.resized = bytes((Map<String, Object>) e.get("resized"));
      Map<String, Object> input = (Map<String, Object>) e.get("input");
      image.input = floats(input);
      List<Object> inShape = (List<Object>) input.get("shape");
      image.inputShape = inShape.stream().mapToLong(v -> ((Number) v).longValue()).toArray();
      List<Object> logits = (List<Object>) e.get("logits");
      image.logits = new float[logits.size()];
      for (int i = 0; i < logits.size(); i++) {
        image.logits[i] = ((Number) logits.get(i)).floatValue();
      }
      for (Object t : (List<Object>) e.get("top5")) {
        Map<String, Object> p = (Map<String, Object>) t;
        image.top5.add(
            new TopK.Prediction(
                ((Number) p.get("index")).intValue(),
                (String) p.get("label"),
                ((Number) p.get("probability")).doubleValue()));
      }
      images.add(image);
    }
  }

  private static String read(Path path) throws IOException {
    return new String(Files.readAllBytes(path), StandardCharsets.UTF_8);
  }

  private byte[] bytes(Map<String, Object> spec) throws IOException {
    if (!"uint8".equals(spec.get("dtype"))) {
      throw new IllegalArgumentException(spec.get("path") + " is not uint8");
    }
    return Files.readAllBytes(dir.resolve((String) spec.get("path")));
  }

  private float[] floats(Map<String, Object> spec) throws IOException {
    if (!"float32".equals(spec.get("dtype")) || !"little".equals(spec.get("byte_order"))) {
      throw new IllegalArgumentException(spec.get("path") + " is not little-endian float32");
    }
    byte[] raw = Files.readAllBytes(dir.resolve((String) spec.get("path")));
    float[] out = new float[raw.length / 4];
    ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out);
    return out;
  }
}
