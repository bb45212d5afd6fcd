/// Resampling filters the manifest can name; both use Pillow's resample code path.
public enum Interpolation: String, Equatable, Sendable {
    case bicubic
    case bilinear

    var support: Double { self == .bicubic ? 2.0 : 1.0 }

    func weight(_ value: Double) -> Double {
        var x = value
        if x < 0.0 { x = -x }
        switch self {
        case .bicubic:
            let a = -0.5
            if x < 1.0 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1 }
            if x < 2.0 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0.0
        case .bilinear:
            return x < 1.0 ? 1.0 - x : 0.0
        }
    }
}

/// Packed 8-bit RGB, row-major, 3 bytes per pixel.
public struct RGBImage: Equatable, Sendable {
    public var pixels: [UInt8]
    public let width: Int
    public let height: Int

    public init(pixels: [UInt8], width: Int, height: Int) {
        precondition(width > 0 && height > 0 && pixels.count == width * height * 3, "RGB buffer does not match its size")
        self.pixels = pixels
        self.width = width
        self.height = height
    }
}

/// Decoded RGB to the model input, exactly as restv2_edge.preprocess does it in Python with
/// Pillow: (1) resize so the shorter side is the manifest's `resize_size` with Pillow's BICUBIC
/// (or BILINEAR) resample -- separable, antialiased when downscaling (support scaled by the
/// factor), 8-bit fixed-point coefficients, uint8 rounding and clipping after each pass, as in
/// Pillow's libImaging/Resample.c; (2) center crop `image_size` with Python's round-half-even
/// offsets; (3) `(rgb * scale - mean) / std` per channel in Float32.
public enum Preprocessing {
    static let precisionBits = 32 - 8 - 2
    static let one = Double(1 << precisionBits)
    static let half = 1 << (precisionBits - 1)

    /// Python's round(): to nearest, ties to even.
    public static func roundHalfEven(_ x: Double) -> Int {
        Int(x.rounded(.toNearestOrEven))
    }

    /// The shorter side goes to `shortSide`; the other is scaled and rounded as Python does.
    public static func resizeTarget(width: Int, height: Int, shortSide: Int) -> (width: Int, height: Int) {
        if width <= height {
            return (shortSide, max(1, roundHalfEven(Double(shortSide * height) / Double(width))))
        }
        return (max(1, roundHalfEven(Double(shortSide * width) / Double(height))), shortSide)
    }

    struct Coefficients {
        let ksize: Int
        let bounds: [Int]  // (first input index, count) per output index
        let weights: [Int]  // fixed point, ksize per output index

        init(inSize: Int, outSize: Int, interpolation: Interpolation) {
            let scale = Double(inSize) / Double(outSize)
            let filterscale = max(scale, 1.0)
            let support = interpolation.support * filterscale
            ksize = Int(support.rounded(.up)) * 2 + 1
            var bounds = [Int](repeating: 0, count: outSize * 2)
            var weights = [Int](repeating: 0, count: outSize * ksize)
            var k = [Double](repeating: 0, count: ksize)
            let ss = 1.0 / filterscale
            for xx in 0..<outSize {
                let center = (Double(xx) + 0.5) * scale
                var xmin = Int(center - support + 0.5)  // truncation toward zero, as the C cast
                if xmin < 0 { xmin = 0 }
                var xmax = Int(center + support + 0.5)
                if xmax > inSize { xmax = inSize }
                xmax -= xmin
                var ww = 0.0
                for x in 0..<xmax {
                    let w = interpolation.weight((Double(x + xmin) - center + 0.5) * ss)
                    k[x] = w
                    ww += w
                }
                for x in 0..<xmax {
                    let w = ww != 0.0 ? k[x] / ww : k[x]
                    weights[xx * ksize + x] = Int(w < 0 ? -0.5 + w * Preprocessing.one : 0.5 + w * Preprocessing.one)
                }
                bounds[xx * 2] = xmin
                bounds[xx * 2 + 1] = xmax
            }
            self.bounds = bounds
            self.weights = weights
        }
    }

    @inline(__always)
    static func clip8(_ sum: Int) -> UInt8 {
        let v = sum >> precisionBits
        return UInt8(v < 0 ? 0 : min(v, 255))
    }

    /// Pillow's Image.resize: horizontal pass first (on the rows the vertical pass needs), then
    /// vertical; an axis whose size does not change is not resampled.
    public static func resize(_ image: RGBImage, width newWidth: Int, height newHeight: Int,
                              interpolation: Interpolation = .bicubic) -> RGBImage {
        let needH = newWidth != image.width
        let needV = newHeight != image.height
        if !needH && !needV { return image }
        let vert = Coefficients(inSize: image.height, outSize: newHeight, interpolation: interpolation)
        var src = image.pixels
        var srcWidth = image.width
        var rowOffset = 0
        if needH {
            let first = vert.bounds[0]
            let last = vert.bounds[newHeight * 2 - 2] + vert.bounds[newHeight * 2 - 1]
            let rows = last - first
            let horiz = Coefficients(inSize: image.width, outSize: newWidth, interpolation: interpolation)
            var tmp = [UInt8](repeating: 0, count: newWidth * rows * 3)
            image.pixels.withUnsafeBufferPointer { input in
                for yy in 0..<rows {
                    let inRow = (yy + first) * image.width * 3
                    for xx in 0..<newWidth {
                        let xmin = horiz.bounds[xx * 2]
                        let xmax = horiz.bounds[xx * 2 + 1]
                        let kBase = xx * horiz.ksize
                        var s0 = half, s1 = half, s2 = half
                        for x in 0..<xmax {
                            let w = horiz.weights[kBase + x]
                            let p = inRow + (x + xmin) * 3
                            s0 += Int(input[p]) * w
                            s1 += Int(input[p + 1]) * w
                            s2 += Int(input[p + 2]) * w
                        }
                        let o = (yy * newWidth + xx) * 3
                        tmp[o] = clip8(s0)
                        tmp[o + 1] = clip8(s1)
                        tmp[o + 2] = clip8(s2)
                    }
                }
            }
            src = tmp
            srcWidth = newWidth
            rowOffset = first
        }
        if !needV { return RGBImage(pixels: src, width: srcWidth, height: newHeight) }
        var out = [UInt8](repeating: 0, count: srcWidth * newHeight * 3)
        src.withUnsafeBufferPointer { input in
            for yy in 0..<newHeight {
                let ymin = vert.bounds[yy * 2] - rowOffset
                let ymax = vert.bounds[yy * 2 + 1]
                let kBase = yy * vert.ksize
                for xx in 0..<srcWidth {
                    var s0 = half, s1 = half, s2 = half
                    for y in 0..<ymax {
                        let w = vert.weights[kBase + y]
                        let p = ((y + ymin) * srcWidth + xx) * 3
                        s0 += Int(input[p]) * w
                        s1 += Int(input[p + 1]) * w
                        s2 += Int(input[p + 2]) * w
                    }
                    let o = (yy * srcWidth + xx) * 3
                    out[o] = clip8(s0)
                    out[o + 1] = clip8(s1)
                    out[o + 2] = clip8(s2)
                }
            }
        }
        return RGBImage(pixels: out, width: srcWidth, height: newHeight)
    }

    /// Center crop `size` x `size`; pixels outside the image are black (as PIL's crop).
    public static func centerCrop(_ image: RGBImage, size: Int) -> RGBImage {
        let left = roundHalfEven(Double(image.width - size) / 2.0)
        let top = roundHalfEven(Double(image.height - size) / 2.0)
        var out = [UInt8](repeating: 0, count: size * size * 3)
        for y in 0..<size {
            let sy = y + top
            if sy < 0 || sy >= image.height { continue }
            for x in 0..<size {
                let sx = x + left
                if sx < 0 || sx >= image.width { continue }
                let s = (sy * image.width + sx) * 3
                let o = (y * size + x) * 3
                out[o] = image.pixels[s]
                out[o + 1] = image.pixels[s + 1]
                out[o + 2] = image.pixels[s + 2]
            }
        }
        return RGBImage(pixels: out, width: size, height: size)
    }

    /// `(rgb * scale - mean) / std` per channel in Float32, in the manifest's layout.
    public static func normalize(_ crop: RGBImage, manifest: Manifest) -> [Float] {
        let plane = crop.width * crop.height
        let nhwc = manifest.layout == "NHWC"
        var out = [Float](repeating: 0, count: 3 * plane)
        for i in 0..<plane {
            for c in 0..<3 {
                let v = (Float(crop.pixels[i * 3 + c]) * manifest.scale - manifest.mean[c]) / manifest.std[c]
                out[nhwc ? i * 3 + c : c * plane + i] = v
            }
        }
        return out
    }

    /// Decoded photo -> (uint8 crop, one image of model input) per the manifest.
    public static func preprocess(_ image: RGBImage, manifest: Manifest) -> (resized: RGBImage, input: [Float]) {
        let size = resizeTarget(width: image.width, height: image.height, shortSide: manifest.resizeSize)
        let resized = resize(image, width: size.width, height: size.height, interpolation: manifest.interpolation)
        let crop = centerCrop(resized, size: manifest.imageSize)
        return (crop, normalize(crop, manifest: manifest))
    }
}
