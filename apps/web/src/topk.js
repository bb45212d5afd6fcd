// Logits -> probabilities (softmax in float64) -> top-k, ties broken by the lower index
// (the same order as restv2_edge.artifact.top_k).

export function softmax(logits) {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    out[i] = Math.exp(logits[i] - max);
    sum += out[i];
  }
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

export function topK(logits, labels, k = 5) {
  const probs = softmax(logits);
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
  return order
    .slice(0, Math.min(k, order.length))
    .map((index) => ({ index, label: labels[index], probability: probs[index] }));
}
