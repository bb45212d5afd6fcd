import CoreGraphics
import Foundation
import ImageIO
import RestV2Core
import UIKit

enum ImageDecodingError: LocalizedError {
    case notAnImage
    case unsupported(String)

    var errorDescription: String? {
        switch self {
        case .notAnImage:
            return "That file is not an image this iPhone can read. Choose a photo (JPEG, PNG, HEIC)."
        case .unsupported(let what):
            return "That image cannot be classified: \(what)."
        }
    }
}

/// Photo -> upright packed RGB the way the Python side sees it: full resolution and no colour
/// conversion (the pixels are drawn into a bitmap in the image's own colour space, so Core
/// Graphics copies them unchanged); the EXIF orientation is then applied as an exact pixel
/// permutation, so phone photos arrive upright.
enum ImageDecoding {
    /// Encoded file bytes (what the photo picker hands over).
    static func decode(_ data: Data) throws -> RGBImage {
        guard let source = CGImageSourceCreateWithData(data as CFData, nil),
              CGImageSourceGetCount(source) > 0,
              let image = CGImageSourceCreateImageAtIndex(source, 0, nil)
        else { throw ImageDecodingError.notAnImage }
        let properties = CGImageSourceCopyPropertiesAtIndex(source, 0, nil) as? [CFString: Any]
        let orientation = (properties?[kCGImagePropertyOrientation] as? NSNumber)?.intValue ?? 1
        return Orientation.apply(try rawRGB(image), orientation: orientation)
    }

    /// A photo from the camera.
    static func decode(_ image: UIImage) throws -> RGBImage {
        guard let cgImage = image.cgImage else { throw ImageDecodingError.unsupported("no bitmap") }
        return Orientation.apply(try rawRGB(cgImage), orientation: exifOrientation(image.imageOrientation))
    }

    /// UIImage.Orientation as its EXIF / CGImagePropertyOrientation number.
    static func exifOrientation(_ orientation: UIImage.Orientation) -> Int {
        switch orientation {
        case .up: return 1
        case .upMirrored: return 2
        case .down: return 3
        case .downMirrored: return 4
        case .leftMirrored: return 5
        case .right: return 6
        case .rightMirrored: return 7
        case .left: return 8
        @unknown default: return 1
        }
    }

    /// The decoded samples as packed RGB; grey images are replicated to RGB (as PIL does).
    static func rawRGB(_ image: CGImage) throws -> RGBImage {
        let width = image.width, height = image.height
        let rect = CGRect(x: 0, y: 0, width: width, height: height)
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        if image.colorSpace?.model == .monochrome {
            let space = image.colorSpace ?? CGColorSpaceCreateDeviceGray()
            guard let context = CGContext(data: nil, width: width, height: height, bitsPerComponent: 8,
                                          bytesPerRow: 0, space: space,
                                          bitmapInfo: CGImageAlphaInfo.none.rawValue),
                  let data = context.data
            else { throw ImageDecodingError.unsupported("grey bitmap context") }
            context.interpolationQuality = .none
            context.draw(image, in: rect)
            let row = context.bytesPerRow
            let gray = data.bindMemory(to: UInt8.self, capacity: row * height)
            for y in 0..<height {
                for x in 0..<width {
                    let value = gray[y * row + x]
                    let o = (y * width + x) * 3
                    rgb[o] = value
                    rgb[o + 1] = value
                    rgb[o + 2] = value
                }
            }
            return RGBImage(pixels: rgb, width: width, height: height)
        }
        let own = image.colorSpace?.model == .rgb ? image.colorSpace : nil
        let bitmapInfo = CGImageAlphaInfo.noneSkipLast.rawValue | CGBitmapInfo.byteOrder32Big.rawValue
        func makeContext(_ space: CGColorSpace) -> CGContext? {
            CGContext(data: nil, width: width, height: height, bitsPerComponent: 8, bytesPerRow: 0,
                      space: space, bitmapInfo: bitmapInfo)
        }
        // the image's own RGB space: no colour matching; anything else (CMYK, Lab) goes to sRGB
        guard let context = own.flatMap(makeContext) ?? makeContext(CGColorSpace(name: CGColorSpace.sRGB)!),
              let data = context.data
        else { throw ImageDecodingError.unsupported("RGB bitmap context") }
        context.interpolationQuality = .none
        context.draw(image, in: rect)
        let row = context.bytesPerRow
        let rgba = data.bindMemory(to: UInt8.self, capacity: row * height)
        for y in 0..<height {
            for x in 0..<width {
                let s = y * row + x * 4
                let o = (y * width + x) * 3
                rgb[o] = rgba[s]
                rgb[o + 1] = rgba[s + 1]
                rgb[o + 2] = rgba[s + 2]
            }
        }
        return RGBImage(pixels: rgb, width: width, height: height)
    }

    /// A UIImage of packed RGB, for showing what was classified.
    static func uiImage(_ image: RGBImage) -> UIImage? {
        var rgba = [UInt8](repeating: 255, count: image.width * image.height * 4)
        for i in 0..<(image.width * image.height) {
            rgba[i * 4] = image.pixels[i * 3]
            rgba[i * 4 + 1] = image.pixels[i * 3 + 1]
            rgba[i * 4 + 2] = image.pixels[i * 3 + 2]
        }
        guard let provider = CGDataProvider(data: Data(rgba) as CFData),
              let cgImage = CGImage(width: image.width, height: image.height, bitsPerComponent: 8,
                                    bitsPerPixel: 32, bytesPerRow: image.width * 4,
                                    space: CGColorSpace(name: CGColorSpace.sRGB)!,
                                    bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                                    provider: provider, decode: nil, shouldInterpolate: true,
                                    intent: .defaultIntent)
        else { return nil }
        return UIImage(cgImage: cgImage)
    }
}
