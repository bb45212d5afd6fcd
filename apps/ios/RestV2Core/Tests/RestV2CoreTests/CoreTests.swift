import Foundation
import RestV2Core
import XCTest

/// Properties that hold without golden vectors.
final class CoreTests: XCTestCase {
    func testRoundsHalfToEvenLikePython() {
        XCTAssertEqual([0.5, 1.5, 2.5, 4.5, 4.6].map(Preprocessing.roundHalfEven), [0, 2, 2, 4, 5])
    }

    func testShorterSideGoesToTheTarget() {
        let portrait = Preprocessing.resizeTarget(width: 375, height: 500, shortSide: 256)
        XCTAssertEqual([portrait.width, portrait.height], [256, 341])
        let landscape = Preprocessing.resizeTarget(width: 500, height: 375, shortSide: 256)
        XCTAssertEqual([landscape.width, landscape.height], [341, 256])
    }

    func testConstantImageStaysConstant() {
        let pixel: [UInt8] = [200, 17, 255]
        let image = RGBImage(pixels: Array([[UInt8]](repeating: pixel, count: 37 * 23).joined()), width: 37, height: 23)
        for (w, h) in [(11, 7), (64, 40), (37, 5), (3, 23)] {
            let out = Preprocessing.resize(image, width: w, height: h)
            XCTAssertEqual(out.width, w)
            XCTAssertEqual(out.height, h)
            XCTAssertEqual(out.pixels, Array([[UInt8]](repeating: pixel, count: w * h).joined()))
        }
    }

    func testCropOutsideTheImageIsBlack() {
        let out = Preprocessing.centerCrop(RGBImage(pixels: [10, 20, 30], width: 1, height: 1), size: 3)
        XCTAssertEqual(Array(out.pixels[12..<15]), [10, 20, 30])
        XCTAssertEqual(out.pixels.map(Int.init).reduce(0, +), 60)
    }

    /// A 3x2 image numbered 1..6 row by row, and the upright image per EXIF orientation, by hand.
    func testAllEightOrientations() {
        let image = RGBImage(pixels: (1...6).flatMap { [UInt8($0), UInt8($0 * 10), 200] }, width: 3, height: 2)
        let expected: [Int: (Int, Int, [UInt8])] = [
            1: (3, 2, [1, 2, 3, 4, 5, 6]), 2: (3, 2, [3, 2, 1, 6, 5, 4]), 3: (3, 2, [6, 5, 4, 3, 2, 1]),
            4: (3, 2, [4, 5, 6, 1, 2, 3]), 5: (2, 3, [1, 4, 2, 5, 3, 6]), 6: (2, 3, [4, 1, 5, 2, 6, 3]),
            7: (2, 3, [6, 3, 5, 2, 4, 1]), 8: (2, 3, [3, 6, 2, 5, 1, 4]),
        ]
        for (orientation, (w, h, reds)) in expected {
            let out = Orientation.apply(image, orientation: orientation)
            XCTAssertEqual(out.width, w, "orientation \(orientation)")
            XCTAssertEqual(out.height, h, "orientation \(orientation)")
            XCTAssertEqual(stride(from: 0, to: out.pixels.count, by: 3).map { out.pixels[$0] }, reds,
                           "orientation \(orientation)")
        }
    }

    static let minimal = """
    {"target": "coreml", "precision": "fp16", "variant": "T", "image_size": 4, "num_classes": 2,
     "model_file": "model.mlpackage", "files": [{"path": "model.mlpackage", "sha256": "ab", "bytes": 1}],
     "input": {"name": "input", "shape": [1, 3, 4, 4], "dtype": "float32", "layout": "NCHW",
               "scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "crop_pct": 0.875,
               "interpolation": "bicubic"},
     "output": {"name": "logits", "shape": [1, 2]}, "labels": LABELS}
    """

    func testParsesARawInputManifest() throws {
        let manifest = try Manifest.parse(Data(Self.minimal.replacingOccurrences(of: "LABELS", with: "[\"cat\", \"dog\"]").utf8))
        XCTAssertTrue(manifest.rawInput)
        XCTAssertEqual(manifest.resizeSize, 4)  // floor(4 / 0.875) when resize_size is absent
        XCTAssertEqual(manifest.labels, ["cat", "dog"])
        XCTAssertEqual(manifest.modelSha256, "ab")
        XCTAssertNoThrow(try manifest.requireTarget("coreml"))
        XCTAssertThrowsError(try manifest.requireTarget("onnx"))
    }

    func testComputeUnitsAndClassifierFromTheExportRecord() throws {
        let base = Self.minimal.replacingOccurrences(of: "LABELS", with: "[\"cat\", \"dog\"]")
        let old = try Manifest.parse(Data(base.utf8))  // before export.compute_units existed
        XCTAssertEqual(old.computeUnits, .all)  // fp16: ALL
        XCTAssertNil(old.classifier)
        XCTAssertFalse(old.dynamicBatch)
        let record = """
        , "export": {"compute_units": "CPU_AND_NE", "op_types": {"conv": 3},
                     "classifier": {"label_output": "classLabel", "probabilities_output": "classLabel_probs",
                                    "labels": "..."}}}
        """
        let json = String(base.trimmingCharacters(in: .whitespacesAndNewlines).dropLast()) + record
        let manifest = try Manifest.parse(Data(json.utf8))
        XCTAssertEqual(manifest.computeUnits, .cpuAndNeuralEngine)
        XCTAssertEqual(manifest.classifier, ClassifierOutputs(label: "classLabel", probabilities: "classLabel_probs"))
        let bad = json.replacingOccurrences(of: "CPU_AND_NE", with: "NPU")
        XCTAssertThrowsError(try Manifest.parse(Data(bad.utf8))) { error in
            XCTAssertTrue(((error as? ManifestError)?.message ?? "").contains("compute_units NPU"))
        }
    }

    func testReadsLabelsFromASiblingFile() throws {
        let data = Data(Self.minimal.replacingOccurrences(of: "LABELS", with: "\"labels.txt\"").utf8)
        let manifest = try Manifest.parse(data) { name in
            XCTAssertEqual(name, "labels.txt")
            return "cat\ndog\n"
        }
        XCTAssertEqual(manifest.labels, ["cat", "dog"])
    }

    func testBadManifestsGiveReadableErrors() {
        let cases: [(String, String)] = [
            (Self.minimal.replacingOccurrences(of: "LABELS", with: "[\"cat\"]"), "labels do not match num_classes"),
            (Self.minimal.replacingOccurrences(of: "LABELS", with: "[\"a\", \"b\"]")
                .replacingOccurrences(of: "bicubic", with: "lanczos"), "lanczos"),
            ("[1, 2]", "cannot be read"),
        ]
        for (json, fragment) in cases {
            XCTAssertThrowsError(try Manifest.parse(Data(json.utf8))) { error in
                let message = (error as? ManifestError)?.message ?? "\(error)"
                XCTAssertTrue(message.hasPrefix("manifest.json: "), message)
                XCTAssertTrue(message.contains(fragment), message)
            }
        }
    }

    func testTopKOrdersByProbabilityThenIndex() {
        let got = TopK.topK([1, 3, 3, 0], labels: ["a", "b", "c", "d"], k: 3)
        XCTAssertEqual(got.map(\.index), [1, 2, 0])
        XCTAssertEqual(got.map(\.probability).reduce(0, +), 1 - TopK.softmax([1, 3, 3, 0])[3], accuracy: 1e-12)
    }
}
