import CoreML
import RestV2Core
import XCTest

@testable import RestV2Demo

/// The app's platform code against golden vectors bundled in the test target (Golden/, copied
/// there by `python3 apps/scripts/copy-export.py ios-golden GOLDEN_DIR`; format in apps/README.md).
final class AppGoldenTests: XCTestCase {
    private func golden() throws -> (URL, [String: Any], Manifest) {
        guard let folder = Bundle(for: Self.self).url(forResource: "Golden", withExtension: nil) else {
            throw XCTSkip("no Golden folder in the test bundle (python3 apps/scripts/copy-export.py ios-golden DIR)")
        }
        let index = try JSONSerialization.jsonObject(
            with: Data(contentsOf: folder.appendingPathComponent("golden.json"))) as! [String: Any]
        let manifest = try Manifest.parse(Data(contentsOf: folder.appendingPathComponent("manifest.json")))
        return (folder, index, manifest)
    }

    private func images(_ index: [String: Any]) -> [[String: Any]] {
        index["images"] as! [[String: Any]]
    }

    private func bytes(_ folder: URL, _ spec: Any?) throws -> [UInt8] {
        let path = (spec as! [String: Any])["path"] as! String
        return [UInt8](try Data(contentsOf: folder.appendingPathComponent(path)))
    }

    private func floats(_ folder: URL, _ spec: Any?) throws -> [Float] {
        let data = try bytes(folder, spec)
        return stride(from: 0, to: data.count, by: 4).map { i in
            Float(bitPattern: UInt32(data[i]) | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2]) << 16 | UInt32(data[i + 3]) << 24)
        }
    }

    /// Apple's decoders against Pillow's: PNG must be identical; JPEG decoders differ slightly
    /// (Apple does not use libjpeg-turbo), so the tensor is compared loosely and reported.
    func testPlatformDecodingMatchesGolden() throws {
        let (folder, index, manifest) = try golden()
        for entry in images(index) {
            let name = entry["name"] as! String
            let photo = folder.appendingPathComponent(entry["photo"] as! String)
            let decoded = try ImageDecoding.decode(Data(contentsOf: photo))
            let expected = try bytes(folder, entry["decoded"])
            if (entry["exif_orientation"] as? Int ?? 1) != 1 { continue }  // Python does not rotate
            XCTAssertEqual(decoded.pixels.count, expected.count, name)
            let meanLevel = zip(decoded.pixels, expected).map { abs(Double($0) - Double($1)) }.reduce(0, +)
                / Double(max(1, expected.count))
            let input = Preprocessing.preprocess(decoded, manifest: manifest).input
            let golden = try floats(folder, entry["input"])
            let maxDiff = zip(input, golden).map { abs($0 - $1) }.max() ?? .infinity
            print("\(name): mean |pixel - Pillow| \(meanLevel) levels, max |input - golden| \(maxDiff)")
            if photo.pathExtension.lowercased() == "png" {
                XCTAssertEqual(decoded.pixels, expected, "\(name): PNG decoding differs from Pillow")
            } else {
                XCTAssertLessThan(meanLevel, 1.0, "\(name): JPEG decoding far from Pillow's")
            }
        }
    }

    /// The bundled model on the golden input tensors; only when the golden vectors were made
    /// from this very artifact (same manifest). Golden vectors made on Linux come from
    /// restv2-edge's MIL reference interpreter, on a Mac from Core ML; an fp16 model on the GPU or
    /// Neural Engine rounds differently from both, hence the wider tolerance for fp16.
    func testBundledModelReproducesGoldenTop5() async throws {
        let (folder, index, _) = try golden()
        let goldenManifest = try Data(contentsOf: folder.appendingPathComponent("manifest.json"))
        guard let modelFolder = Bundle.main.url(forResource: "Model", withExtension: nil),
              let appManifest = try? Data(contentsOf: modelFolder.appendingPathComponent("manifest.json")),
              appManifest == goldenManifest
        else { throw XCTSkip("the golden vectors were not made from the bundled Core ML artifact") }
        let classifier = try await Classifier.load()
        let manifest = classifier.manifest
        let tolerance = manifest.precision == "fp32" ? 1e-3 : 1e-2
        for entry in images(index) {
            let name = entry["name"] as! String
            let resizedShape = (entry["resized"] as! [String: Any])["shape"] as! [Int]
            let crop = RGBImage(pixels: try bytes(folder, entry["resized"]), width: resizedShape[1], height: resizedShape[0])
            let logits = try classifier.logits(crop: crop, input: try floats(folder, entry["input"]))
            let top5 = TopK.topK(logits, labels: manifest.labels, k: 5)
            let probabilities = TopK.softmax(logits)
            let expected = entry["top5"] as! [[String: Any]]
            XCTAssertEqual(top5.first?.index, expected.first?["index"] as? Int, "\(name): top-1")
            for item in expected {
                let index = item["index"] as! Int
                let probability = (item["probability"] as! NSNumber).doubleValue
                XCTAssertEqual(probabilities[index], probability, accuracy: tolerance, "\(name): class \(index)")
            }
        }
    }
}
