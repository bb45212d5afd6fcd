import Foundation
import RestV2Core
import XCTest

/// The plain-Swift core against golden vectors from a fresh export (GOLDEN_DIR=...).
final class GoldenVectorTests: XCTestCase {
    private func golden() throws -> (GoldenVectors, Manifest) {
        guard let directory = GoldenVectors.configured() else {
            throw XCTSkip("GOLDEN_DIR is not set (make one with `restv2-edge golden`)")
        }
        let golden = try GoldenVectors(directory: directory)
        return (golden, try Manifest.parse(golden.manifestData))
    }

    func testResizeAndCropEqualPillowByteForByte() throws {
        let (golden, manifest) = try golden()
        XCTAssertFalse(golden.images.isEmpty)
        for image in golden.images {
            let (resized, _) = Preprocessing.preprocess(image.decoded, manifest: manifest)
            let differing = zip(resized.pixels, image.resized.pixels).filter { $0 != $1 }.count
            XCTAssertEqual(resized.width, image.resized.width)
            XCTAssertEqual(differing, 0, "\(image.name): bytes differing from Pillow")
        }
    }

    func testInputTensorEqualsTheGoldenTensor() throws {
        let (golden, manifest) = try golden()
        for image in golden.images {
            let (_, input) = Preprocessing.preprocess(image.decoded, manifest: manifest)
            XCTAssertEqual(input.count, image.input.count)
            let maxDiff = zip(input, image.input).map { abs($0 - $1) }.max() ?? .infinity
            print("\(image.name): max |input - golden| = \(maxDiff)")
            XCTAssertEqual(maxDiff, 0, image.name)
        }
    }

    func testTopKOfGoldenLogitsEqualsPythonTop5() throws {
        let (golden, manifest) = try golden()
        for image in golden.images {
            let got = TopK.topK(image.logits, labels: manifest.labels, k: image.top5.count)
            XCTAssertEqual(got.map(\.index), image.top5.map(\.index), image.name)
            XCTAssertEqual(got.map(\.label), image.top5.map(\.label), image.name)
            for (a, b) in zip(got, image.top5) {
                XCTAssertEqual(a.probability, b.probability, accuracy: 1e-9)
            }
        }
    }
}
