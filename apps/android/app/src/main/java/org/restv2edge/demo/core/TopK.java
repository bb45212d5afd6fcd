package org.restv2edge.demo.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

/**
 * Logits to the top-k classes: softmax in double precision, ordered by probability, ties broken
 * by the lower class index (the order of restv2_edge.artifact.top_k).
 */
public final class TopK {
  private TopK() {}

  /** One class of a top-k answer. */
  public static final class Prediction {
    public final int index;
    public final String label;
    public final double probability;

    public Prediction(int index, String label, double probability) {
      this.index = index;
      this.label = label;
      this.probability = probability;
    }

    @Override
    public String toString() {
      return String.format("%6.2f%%  %s (%d)", probability * 100, label, index);
    }
  }

  public static double[] softmax(float[] logits) {
    double max = Double.NEGATIVE_INFINITY;
    for (float v : logits) {
      max = Math.max(max, v);
    }
    double[] out = new double[logits.length];
    double sum = 0;
    for (int i = 0; i < logits.length; i++) {
      out[i] = Math.exp(logits[i] - max);
      sum += out[i];
    }
    for (int i = 0; i < out.length; i++) {
      out[i] /= sum;
    }
    return out;
  }

  public static List<Prediction> topK(float[] logits, List<String> labels, int k) {
    if (labels.size() != logits.length) {
      throw new IllegalArgumentException(
          logits.length + " logits but " + labels.size() + " labels");
    }
    double[] probs = softmax(logits);
    Integer[] order = new Integer[probs.length];
    for (int i = 0; i < order.length; i++) {
      order[i] = i;
    }
    Arrays.sort(
        order,
        Comparator.<Integer>comparingDouble(i -> -probs[i]).thenComparingInt(Integer::intValue));
    List<Prediction> out = new ArrayList<>();
    for (int i = 0; i < Math.min(k, order.length); i++) {
      int index = order[i];
      out.add(new Prediction(index, labels.get(index), probs[index]));
    }
    return out;
  }
}
