import Foundation

/// One class of a top-k answer.
public struct Prediction: Equatable, Sendable {
    public let index: Int
    public let label: String
    public let probability: Double

    public init(index: Int, label: String, probability: Double) {
        self.index = index
        self.label = label
        self.probability = probability
    }
}

/// Logits to top-k: softmax in Double, ordered by probability, ties broken by the lower class
/// index (the order of restv2_edge.artifact.top_k).
public enum TopK {
    public static func softmax(_ logits: [Float]) -> [Double] {
        let maxValue = Double(logits.max() ?? 0)
        let exps = logits.map { exp(Double($0) - maxValue) }
        let sum = exps.reduce(0, +)
        return exps.map { $0 / sum }
    }

    public static func topK(_ logits: [Float], labels: [String], k: Int = 5) -> [Prediction] {
        precondition(labels.count == logits.count, "\(logits.count) logits but \(labels.count) labels")
        let probs = softmax(logits)
        let order = probs.indices.sorted { a, b in
            probs[a] != probs[b] ? probs[a] > probs[b] : a < b
        }
        return order.prefix(k).map { Prediction(index: $0, label: labels[$0], probability: probs[$0]) }
    }
}
