import Foundation

/// A manifest.json problem, described in one readable line.
public struct ManifestError: Error, LocalizedError, Equatable {
    public let message: String
    public init(_ message: String) { self.message = "manifest.json: " + message }
    public var errorDescription: String? { message }
}

/// The Core ML compute units an export was made for (manifest `export.compute_units`, written
/// by `restv2-edge export --target coreml`), spelled as coremltools' `ComputeUnit`. The app maps
/// them onto `MLModelConfiguration.computeUnits` (this package has no Core ML dependency).
public enum ComputeUnits: String, Equatable, Sendable, CaseIterable {
    case all = "ALL"
    case cpuOnly = "CPU_ONLY"
    case cpuAndGPU = "CPU_AND_GPU"
    case cpuAndNeuralEngine = "CPU_AND_NE"

    /// What an export without the field meant: CPU only for fp32 (computes in fp32), else all.
    public static func exportDefault(precision: String) -> ComputeUnits {
        precision == "fp32" ? .cpuOnly : .all
    }
}

/// The outputs of a Core ML image classifier (`--raw-input` export; manifest
/// `export.classifier`): the predicted label and the label -> probability dictionary.
public struct ClassifierOutputs: Equatable, Sendable {
    public let label: String
    public let probabilities: String

    public init(label: String, probabilities: String) {
        self.label = label
        self.probabilities = probabilities
    }
}

/// The fields of an artifact's manifest.json (written by `restv2-edge export`) that the app
/// needs. Every preprocessing constant and every label comes from here, never from app code.
public struct Manifest: Equatable {
    public let target: String
    public let precision: String
    public let variant: String?
    public let imageSize: Int
    public let numClasses: Int
    public let modelFile: String
    /// sha256 of `modelFile` from the manifest's file list (nil when not listed).
    public let modelSha256: String?
    public let inputName: String
    public let outputName: String
    public let inputShape: [Int]
    public let layout: String
    public let scale: Float
    public let mean: [Float]
    public let std: [Float]
    public let cropPct: Double
    public let resizeSize: Int
    public let interpolation: Interpolation
    public let labels: [String]
    /// Core ML compute units to load the model with (`export.compute_units`).
    public let computeUnits: ComputeUnits
    /// The classifier outputs of an image-classifier export (nil for a logits-only model).
    public let classifier: ClassifierOutputs?
    /// True when the input's batch dimension is flexible (`input.dynamic_batch`).
    public let dynamicBatch: Bool

    /// True when the model takes raw RGB 0-255 and normalizes inside (e.g. `--raw-input`).
    public var rawInput: Bool {
        scale == 1 && std == [1, 1, 1] && mean == [0, 0, 0]
    }

    /// Batch size of the model input as exported (`input.shape[0]`; the app sends one image,
    /// zero padded to it).
    public var batchSize: Int { inputShape[0] }

    /// Parse manifest.json; `readSibling` returns the text of a file next to it (for labels
    /// kept in a separate file).
    public static func parse(_ data: Data, readSibling: ((String) throws -> String)? = nil) throws -> Manifest {
        let raw: Raw
        do {
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            raw = try decoder.decode(Raw.self, from: data)
        } catch let error as DecodingError {
            throw ManifestError("cannot be read (\(describe(error)))")
        }
        return try Manifest(raw: raw, readSibling: readSibling)
    }

    /// Throws unless this manifest belongs to `expected` (e.g. "coreml").
    public func requireTarget(_ expected: String) throws {
        guard target == expected else {
            throw ManifestError("this is a \(target) artifact; this app needs a \(expected) export")
        }
    }

    private init(raw: Raw, readSibling: ((String) throws -> String)?) throws {
        func need(_ ok: Bool, _ message: String) throws {
            if !ok { throw ManifestError(message) }
        }
        target = raw.target
        precision = raw.precision
        variant = raw.variant
        imageSize = raw.imageSize
        numClasses = raw.numClasses
        modelFile = raw.modelFile
        modelSha256 = raw.files?.first(where: { $0.path == raw.modelFile })?.sha256
        inputName = raw.input.name
        outputName = raw.output.name
        try need(raw.input.dtype == "float32", "input dtype \(raw.input.dtype) is not supported (float32 only)")
        layout = raw.input.layout ?? "NCHW"
        try need(layout == "NCHW" || layout == "NHWC", "input layout \(layout) is not supported")
        try need(raw.input.shape.count == 4, "input.shape is not 4-D")
        inputShape = raw.input.shape
        let spatial = layout == "NCHW" ? Array(inputShape[2...3]) : Array(inputShape[1...2])
        try need(spatial == [imageSize, imageSize], "input.shape does not match image_size")
        try need(raw.input.mean.count == 3 && raw.input.std.count == 3, "input.mean/std must have 3 values")
        scale = Float(raw.input.scale)
        mean = raw.input.mean.map { Float($0) }
        std = raw.input.std.map { Float($0) }
        cropPct = raw.input.cropPct
        try need(cropPct > 0, "input.crop_pct must be positive")
        resizeSize = raw.input.resizeSize ?? Int((Double(imageSize) / cropPct).rounded(.down))
        let name = raw.input.interpolation ?? "bicubic"
        guard let interpolation = Interpolation(rawValue: name) else {
            throw ManifestError("interpolation \(name) is not supported (bicubic, bilinear)")
        }
        self.interpolation = interpolation
        switch raw.labels {
        case .list(let names):
            labels = names
        case .file(let file):
            guard let readSibling else { throw ManifestError("labels live in \(file); it could not be read") }
            labels = try readSibling(file).split(whereSeparator: \.isNewline).map(String.init)
        }
        try need(labels.count == numClasses, "labels do not match num_classes")
        dynamicBatch = raw.input.dynamicBatch ?? false
        if let name = raw.export?.computeUnits {
            guard let units = ComputeUnits(rawValue: name) else {
                throw ManifestError("export.compute_units \(name) is not one of "
                    + ComputeUnits.allCases.map(\.rawValue).joined(separator: ", "))
            }
            computeUnits = units
        } else {
            computeUnits = ComputeUnits.exportDefault(precision: precision)
        }
        classifier = raw.export?.classifier.map {
            ClassifierOutputs(label: $0.labelOutput, probabilities: $0.probabilitiesOutput)
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, _): return "\(key.stringValue) is missing"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "\(path): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    // The JSON as written, before validation.
    private struct Raw: Decodable {
        struct FileEntry: Decodable { let path: String; let sha256: String? }
        struct Input: Decodable {
            let name: String
            let shape: [Int]
            let dtype: String
            let layout: String?
            let scale: Double
            let mean: [Double]
            let std: [Double]
            let cropPct: Double
            let interpolation: String?
            let resizeSize: Int?
            let dynamicBatch: Bool?
        }
        struct Output: Decodable { let name: String }
        /// The target's export record: only what the app reads (other keys are ignored).
        struct Export: Decodable {
            struct Classifier: Decodable { let labelOutput: String; let probabilitiesOutput: String }
            let computeUnits: String?
            let classifier: Classifier?
        }
        enum Labels: Decodable {
            case list([String])
            case file(String)
            init(from decoder: Decoder) throws {
                let container = try decoder.singleValueContainer()
                if let names = try? container.decode([String].self) {
                    self = .list(names)
                } else {
                    self = .file(try container.decode(String.self))
                }
            }
        }
        let target: String
        let precision: String
        let variant: String?
        let imageSize: Int
        let numClasses: Int
        let modelFile: String
        let files: [FileEntry]?
        let input: Input
        let output: Output
        let labels: Labels
        let export: Export?
    }
}
