package org.restv2edge.demo.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

/**
 * The fields of an artifact's manifest.json (written by {@code restv2-edge export}) that an app
 * needs: model file and its sha256, input/output names and shape, preprocessing, labels. Every
 * preprocessing constant and every label comes from here, never from app code.
 */
public final class Manifest {
  public final String target;
  public final String precision;
  public final String variant;
  public final int imageSize;
  public final int numClasses;
  public final String modelFile;
  /** sha256 of {@link #modelFile} from the manifest's file list, or null when not listed. */
  public final String modelSha256;
  public final String inputName;
  public final String outputName;
  public final long[] inputShape;
  public final String layout;
  public final float scale;
  public final float[] mean;
  public final float[] std;
  public final double cropPct;
  public final int resizeSize;
  public final String interpolation;
  public final List<String> labels;

  private Manifest(Map<String, Object> m, Function<String, String> readSibling) {
    target = str(m, "target");
    precision = str(m, "precision");
    Object v = m.get("variant");
    variant = v instanceof String ? (String) v : null;
    imageSize = integer(m, "image_size");
    numClasses = integer(m, "num_classes");
    modelFile = str(m, "model_file");
    modelSha256 = findSha256(m.get("files"), modelFile);
    Map<String, Object> input = obj(m, "input");
    Map<String, Object> output = obj(m, "output");
    inputName = str(input, "name");
    outputName = str(output, "name");
    String dtype = str(input, "dtype");
    require("float32".equals(dtype), "input dtype " + dtype + " is not supported (float32 only)");
    layout = input.containsKey("layout") ? str(input, "layout") : "NCHW";
    require(
        "NCHW".equals(layout) || "NHWC".equals(layout), "input layout " + layout + " unsupported");
    List<Object> shape = list(input, "shape");
    require(shape.size() == 4, "input.shape is not 4-D");
    inputShape = new long[4];
    for (int i = 0; i < 4; i++) {
      inputShape[i] = toInt(shape.get(i), "input.shape");
    }
    long h = "NCHW".equals(layout) ? inputShape[2] : inputShape[1];
    long w = "NCHW".equals(layout) ? inputShape[3] : inputShape[2];
    require(h == imageSize && w == imageSize, "input.shape does not match image_size");
    scale = (float) number(input, "scale");
    mean = floats(input, "mean");
    std = floats(input, "std");
    cropPct = number(input, "crop_pct");
    require(cropPct > 0, "input.crop_pct must be positive");
    resizeSize =
        input.get("resize_size") instanceof Number
            ? toInt(input.get("resize_size"), "input.resize_size")
            : (int) Math.floor(imageSize / cropPct);
    interpolation =
        input.containsKey("interpolation") ? str(input, "interpolation") : "bicubic";
    require(
        "bicubic".equals(interpolation) || "bilinear".equals(interpolation),
        "interpolation " + interpolation + " is not supported (bicubic, bilinear)");
    labels = Collections.unmodifiableList(readLabels(m.get("labels"), readSibling));
    require(labels.size() == numClasses, "labels do not match num_classes");
  }

  /** Parse manifest.json text whose labels are a list (what {@code restv2-edge export} writes). */
  public static Manifest parse(String json) {
    return parse(json, null);
  }

  /**
   * Parse manifest.json text; when its {@code labels} names a file, {@code readSibling} returns
   * that file's text (one label per line).
   */
  public static Manifest parse(String json, Function<String, String> readSibling) {
    Object root;
    try {
      root = Json.parse(json);
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException("manifest.json: " + e.getMessage(), e);
    }
    if (!(root instanceof Map)) {
      throw new IllegalArgumentException("manifest.json: not a JSON object");
    }
    @SuppressWarnings("unchecked")
    Map<String, Object> map = (Map<String, Object>) root;
    return new Manifest(map, readSibling);
  }

  /** True when the model takes raw RGB 0-255 (it normalizes inside). */
  public boolean rawInput() {
    return scale == 1.0f
        && std[0] == 1.0f
        && std[1] == 1.0f
        && std[2] == 1.0f
        && mean[0] == 0.0f
        && mean[1] == 0.0f
        && mean[2] == 0.0f;
  }

  /** Number of floats one image occupies in the input tensor. */
  public int imageElements() {
    return 3 * imageSize * imageSize;
  }

  /** Static batch size of the model input (images beyond the first are zero padding). */
  public int batchSize() {
    return (int) inputShape[0];
  }

  /** Throws unless this manifest belongs to {@code expected} (e.g. "executorch"). */
  public void requireTarget(String expected) {
    require(
        expected.equals(target),
        "this is a " + target + " artifact; this app needs a " + expected + " export");
  }

  private static List<String> readLabels(Object labels, Function<String, String> readSibling) {
    List<String> out = new ArrayList<>();
    if (labels instanceof List) {
      for (Object label : (List<?>) labels) {
        require(label instanceof String, "labels must be strings");
        out.add((String) label);
      }
      return out;
    }
    require(labels instanceof String, "labels missing");
    require(readSibling != null, "labels live in " + labels + "; it could not be read");
    String text = readSibling.apply((String) labels);
    for (String line : text.split("\r?\n")) {
      if (!line.isEmpty()) {
        out.add(line);
      }
    }
    return out;
  }

  private static String findSha256(Object files, String modelFile) {
    if (!(files instanceof List)) {
      return null;
    }
    for (Object entry : (List<?>) files) {
      if (entry instanceof Map) {
        Map<?, ?> file = (Map<?, ?>) entry;
        if (modelFile.equals(file.get("path")) && file.get("sha256") instanceof String) {
          return (String) file.get("sha256");
        }
      }
    }
    return null;
  }

  private static void require(boolean ok, String message) {
    if (!ok) {
      throw new IllegalArgumentException("manifest.json: " + message);
    }
  }

  private static String str(Map<String, Object> m, String key) {
    Object v = m.get(key);
    require(v instanceof String, key + " missing or not a string");
    return (String) v;
  }

  private static double number(Map<String, Object> m, String key) {
    Object v = m.get(key);
    require(v instanceof Number, key + " missing or not a number");
    return ((Number) v).doubleValue();
  }

  private static int integer(Map<String, Object> m, String key) {
    return toInt(m.get(key), key);
  }

  private static int toInt(Object v, String what) {
    require(v instanceof Number, what + " missing or not a number");
    double d = ((Number) v).doubleValue();
    require(d == Math.rint(d) && Math.abs(d) < Integer.MAX_VALUE, what + " is not an integer");
    return (int) d;
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> obj(Map<String, Object> m, String key) {
    Object v = m.get(key);
    require(v instanceof Map, key + " missing or not an object");
    return (Map<String, Object>) v;
  }

  @SuppressWarnings("unchecked")
  private static List<Object> list(Map<String, Object> m, String key) {
    Object v = m.get(key);
    require(v instanceof List, key + " missing or not a list");
    return (List<Object>) v;
  }

  private static float[] floats(Map<String, Object> m, String key) {
    List<Object> values = list(m, key);
    require(values.size() == 3, key + " must have 3 values");
    float[] out = new float[3];
    for (int i = 0; i < 3; i++) {
      require(values.get(i) instanceof Number, key + " must be numbers");
      out[i] = ((Number) values.get(i)).floatValue();
    }
    return out;
  }
}
