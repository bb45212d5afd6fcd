import CoreGraphics
import CoreML
import CoreVideo
import CryptoKit
import Foundation
import RestV2Core
import Vision

/// One classification: top-5 and where the time went.
struct Classification: Sendable {
    let top5: [Prediction]
    let preprocessMs: Double
    let inferenceMs: Double
    /// For an image-classifier export: Vision's answer on the same crop
    /// (VNCoreMLRequest -> VNClassificationObservation), top-1 label and confidence.
    let vision: Prediction?
}

extension ComputeUnits {
    /// The manifest's compute units as Core ML spells them.
    var mlComputeUnits: MLComputeUnits {
        switch self {
        case .all: return .all
        case .cpuOnly: return .cpuOnly
        case .cpuAndGPU: return .cpuAndGPU
        case .cpuAndNeuralEngine: return .cpuAndNeuralEngine
        }
    }
}

enum ClassifierError: LocalizedError {
    case noModel
    case badModel(String)
    case prediction(String)

    var errorDescription: String? {
        switch self {
        case .noModel:
            return "No model in the app: run python3 apps/scripts/copy-export.py ios EXPORT_DIR, then rebuild."
        case .badModel(let why): return "The bundled model does not fit its manifest: \(why)."
        case .prediction(let why): return "Core ML could not classify the photo: \(why)."
        }
    }
}

/// The exported Core ML artifact in the app's Model folder (manifest.json + the .mlpackage it
/// names). Preprocessing, labels, feature names and compute units come from manifest.json. The
/// model input may be an image (a `--raw-input` export, an image classifier: the model
/// normalizes inside) or a float multi-array (normalized here, per the manifest); the model
/// description says which. The top-5 come from the `logits` output (MLModel); an image
/// classifier is also run through Vision, whose top-1 the app shows beside them.
final class Classifier: @unchecked Sendable {
    let manifest: Manifest
    private let model: MLModel
    private let visionModel: VNCoreMLModel?
    private let inputName: String
    private let outputName: String
    private let imageInput: Bool

    /// Loads Model/manifest.json from `bundle` and the model it names; an .mlpackage is compiled
    /// on first launch and the compiled model cached under Application Support.
    static func load(bundle: Bundle = .main) async throws -> Classifier {
        guard let folder = bundle.url(forResource: "Model", withExtension: nil),
              let manifestData = try? Data(contentsOf: folder.appendingPathComponent("manifest.json"))
        else { throw ClassifierError.noModel }
        let manifest = try Manifest.parse(manifestData) { name in
            try String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)
        }
        try manifest.requireTarget("coreml")
        let source = folder.appendingPathComponent(manifest.modelFile)
        guard FileManager.default.fileExists(atPath: source.path) else { throw ClassifierError.noModel }
        let key = SHA256.hash(data: manifestData).map { String(format: "%02x", $0) }.joined()
        let compiled = try await compiledModel(source, cacheKey: key)
        let configuration = MLModelConfiguration()
        configuration.computeUnits = manifest.computeUnits.mlComputeUnits
        return try Classifier(manifest: manifest, model: MLModel(contentsOf: compiled, configuration: configuration))
    }

    private static func compiledModel(_ source: URL, cacheKey: String) async throws -> URL {
        if source.pathExtension == "mlmodelc" { return source }
        let files = FileManager.default
        let cache = try files.url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appendingPathComponent("CompiledModels", isDirectory: true)
        try files.createDirectory(at: cache, withIntermediateDirectories: true)
        let cached = cache.appendingPathComponent("\(cacheKey).mlmodelc", isDirectory: true)
        if files.fileExists(atPath: cached.path) { return cached }
        let temporary = try await MLModel.compileModel(at: source)
        try? files.removeItem(at: cached)
        try files.moveItem(at: temporary, to: cached)
        return cached
    }

    init(manifest: Manifest, model: MLModel) throws {
        self.manifest = manifest
        self.model = model
        let inputs = model.modelDescription.inputDescriptionsByName
        guard let input = inputs[manifest.inputName] ?? (inputs.count == 1 ? inputs.values.first : nil) else {
            throw ClassifierError.badModel("no input named \(manifest.inputName)")
        }
        inputName = input.name
        switch input.type {
        case .image:
            imageInput = true
            guard manifest.batchSize == 1 else { throw ClassifierError.badModel("image input with batch \(manifest.batchSize)") }
        case .multiArray:
            imageInput = false
        default:
            throw ClassifierError.badModel("input \(input.name) is neither an image nor a multi-array")
        }
        let outputs = model.modelDescription.outputDescriptionsByName
        guard let output = outputs[manifest.outputName] ?? outputs.values.first(where: { $0.type == .multiArray }) else {
            throw ClassifierError.badModel("no output named \(manifest.outputName)")
        }
        outputName = output.name
        // An image classifier (predictedFeatureName set, as export.classifier says) also
        // answers through Vision.
        let isClassifier = model.modelDescription.predictedFeatureName != nil
        if isClassifier != (manifest.classifier != nil) {
            throw ClassifierError.badModel("classifier outputs differ from export.classifier")
        }
        visionModel = isClassifier && imageInput ? try VNCoreMLModel(for: model) : nil
    }

    /// Decoded photo -> top-5, timing preprocessing and the Core ML prediction separately.
    func classify(_ image: RGBImage) throws -> Classification {
        let start = DispatchTime.now()
        let (crop, input) = Preprocessing.preprocess(image, manifest: manifest)
        let features = try featureProvider(crop: crop, input: input)
        let ready = DispatchTime.now()
        let logits = try predict(features)
        let done = DispatchTime.now()
        return Classification(
            top5: TopK.topK(logits, labels: manifest.labels, k: 5),
            preprocessMs: Double(ready.uptimeNanoseconds - start.uptimeNanoseconds) / 1e6,
            inferenceMs: Double(done.uptimeNanoseconds - ready.uptimeNanoseconds) / 1e6,
            vision: try visionTop1(crop))
    }

    /// Vision's top-1 for the crop (already the model's size, so `.scaleFill` does not crop);
    /// nil for a model that is not an image classifier. Its labels are the classifier's: the
    /// manifest's, with repeated names suffixed " (2)" (docs/coreml.md).
    private func visionTop1(_ crop: RGBImage) throws -> Prediction? {
        guard let visionModel, let image = cgImage(crop) else { return nil }
        let request = VNCoreMLRequest(model: visionModel)
        request.imageCropAndScaleOption = .scaleFill
        do {
            try VNImageRequestHandler(cgImage: image, orientation: .up).perform([request])
        } catch {
            throw ClassifierError.prediction("Vision: \(error.localizedDescription)")
        }
        guard let best = (request.results as? [VNClassificationObservation])?.first else { return nil }
        return Prediction(index: -1, label: best.identifier, probability: Double(best.confidence))
    }

    /// The crop as an 8-bit RGBX CGImage for Vision.
    private func cgImage(_ crop: RGBImage) -> CGImage? {
        var rgbx = [UInt8](repeating: 255, count: crop.width * crop.height * 4)
        for i in 0..<(crop.width * crop.height) {
            rgbx[i * 4] = crop.pixels[i * 3]
            rgbx[i * 4 + 1] = crop.pixels[i * 3 + 1]
            rgbx[i * 4 + 2] = crop.pixels[i * 3 + 2]
        }
        guard let provider = CGDataProvider(data: Data(rgbx) as CFData) else { return nil }
        return CGImage(width: crop.width, height: crop.height, bitsPerComponent: 8, bitsPerPixel: 32,
                       bytesPerRow: crop.width * 4, space: CGColorSpace(name: CGColorSpace.sRGB)!,
                       bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    }

    /// Logits for an already preprocessed image (the uint8 crop and its float tensor).
    func logits(crop: RGBImage, input: [Float]) throws -> [Float] {
        try predict(featureProvider(crop: crop, input: input))
    }

    private func featureProvider(crop: RGBImage, input: [Float]) throws -> MLFeatureProvider {
        let value = imageInput
            ? MLFeatureValue(pixelBuffer: try pixelBuffer(crop))
            : MLFeatureValue(multiArray: try multiArray(input))
        return try MLDictionaryFeatureProvider(dictionary: [inputName: value])
    }

    private func predict(_ features: MLFeatureProvider) throws -> [Float] {
        let result: MLFeatureProvider
        do {
            result = try model.prediction(from: features)
        } catch {
            throw ClassifierError.prediction(error.localizedDescription)
        }
        guard let array = result.featureValue(for: outputName)?.multiArrayValue else {
            throw ClassifierError.badModel("output \(outputName) is not a multi-array")
        }
        let classes = manifest.numClasses
        guard array.count >= classes else { throw ClassifierError.badModel("output has \(array.count) values") }
        // first image of the batch, whatever the output's rank and strides
        let prefix = [NSNumber](repeating: 0, count: max(0, array.shape.count - 1))
        return (0..<classes).map { array[prefix + [NSNumber(value: $0)]].floatValue }
    }

    /// The crop as a 32BGRA pixel buffer of exactly the model's input size (no resampling).
    private func pixelBuffer(_ crop: RGBImage) throws -> CVPixelBuffer {
        var buffer: CVPixelBuffer?
        let attributes = [kCVPixelBufferCGImageCompatibilityKey: true,
                          kCVPixelBufferCGBitmapContextCompatibilityKey: true] as CFDictionary
        let status = CVPixelBufferCreate(kCFAllocatorDefault, crop.width, crop.height,
                                         kCVPixelFormatType_32BGRA, attributes, &buffer)
        guard status == kCVReturnSuccess, let buffer else { throw ClassifierError.prediction("pixel buffer \(status)") }
        CVPixelBufferLockBaseAddress(buffer, [])
        defer { CVPixelBufferUnlockBaseAddress(buffer, []) }
        let row = CVPixelBufferGetBytesPerRow(buffer)
        let base = CVPixelBufferGetBaseAddress(buffer)!.bindMemory(to: UInt8.self, capacity: row * crop.height)
        for y in 0..<crop.height {
            for x in 0..<crop.width {
                let s = (y * crop.width + x) * 3
                let d = y * row + x * 4
                base[d] = crop.pixels[s + 2]
                base[d + 1] = crop.pixels[s + 1]
                base[d + 2] = crop.pixels[s]
                base[d + 3] = 255
            }
        }
        return buffer
    }

    /// One image of input in a Float32 multi-array of the manifest's static shape (zero padded).
    private func multiArray(_ input: [Float]) throws -> MLMultiArray {
        let array = try MLMultiArray(shape: manifest.inputShape.map { NSNumber(value: $0) }, dataType: .float32)
        array.withUnsafeMutableBufferPointer(ofType: Float.self) { pointer, _ in
            pointer.initialize(repeating: 0)
            for index in input.indices {
                pointer[index] = input[index]
            }
        }
        return array
    }
}
