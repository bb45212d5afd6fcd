import Foundation
import RestV2Core

/// A golden-vector folder written by `restv2-edge golden` (format: apps/README.md).
struct GoldenVectors {
    struct Image {
        let name: String
        let photo: URL
        let iccProfile: Bool
        let exifOrientation: Int
        let decoded: RGBImage
        let resized: RGBImage
        let input: [Float]
        let logits: [Float]
        let top5: [Prediction]
    }

    let directory: URL
    let manifestData: Data
    let images: [Image]

    /// The folder named by GOLDEN_DIR, or nil.
    static func configured() -> URL? {
        guard let path = ProcessInfo.processInfo.environment["GOLDEN_DIR"], !path.isEmpty else { return nil }
        return URL(fileURLWithPath: path, isDirectory: true)
    }

    init(directory: URL) throws {
        self.directory = directory
        let index = try JSONSerialization.jsonObject(
            with: Data(contentsOf: directory.appendingPathComponent("golden.json"))) as! [String: Any]
        guard index["format"] as? String == "restv2-edge-golden" else {
            throw CocoaError(.fileReadCorruptFile)
        }
        manifestData = try Data(contentsOf: directory.appendingPathComponent(index["manifest"] as! String))
        var images: [Image] = []
        for case let entry as [String: Any] in index["images"] as! [Any] {
            let decodedSpec = entry["decoded"] as! [String: Any]
            let shape = decodedSpec["shape"] as! [Int]
            let resizedSpec = entry["resized"] as! [String: Any]
            let resizedShape = resizedSpec["shape"] as! [Int]
            let top5 = (entry["top5"] as! [[String: Any]]).map {
                Prediction(index: $0["index"] as! Int, label: $0["label"] as! String,
                           probability: ($0["probability"] as! NSNumber).doubleValue)
            }
            images.append(Image(
                name: entry["name"] as! String,
                photo: directory.appendingPathComponent(entry["photo"] as! String),
                iccProfile: entry["icc_profile"] as? Bool ?? false,
                exifOrientation: entry["exif_orientation"] as? Int ?? 1,
                decoded: RGBImage(pixels: try bytes(decodedSpec), width: shape[1], height: shape[0]),
                resized: RGBImage(pixels: try bytes(resizedSpec), width: resizedShape[1], height: resizedShape[0]),
                input: try floats(entry["input"] as! [String: Any]),
                logits: (entry["logits"] as! [NSNumber]).map { $0.floatValue },
                top5: top5))
        }
        self.images = images
    }

    private func bytes(_ spec: [String: Any]) throws -> [UInt8] {
        precondition(spec["dtype"] as? String == "uint8")
        return [UInt8](try Data(contentsOf: directory.appendingPathComponent(spec["path"] as! String)))
    }

    private func floats(_ spec: [String: Any]) throws -> [Float] {
        precondition(spec["dtype"] as? String == "float32" && spec["byte_order"] as? String == "little")
        let data = try Data(contentsOf: directory.appendingPathComponent(spec["path"] as! String))
        return stride(from: 0, to: data.count, by: 4).map { offset in
            var bits: UInt32 = 0
            for i in 0..<4 { bits |= UInt32(data[data.startIndex + offset + i]) << (8 * UInt32(i)) }
            return Float(bitPattern: bits)
        }
    }
}
