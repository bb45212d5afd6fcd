/// EXIF orientation (TIFF tag 0x0112 / CGImagePropertyOrientation, values 1-8) applied to packed
/// RGB as an exact pixel permutation, so a rotated phone photo reaches preprocessing upright.
public enum Orientation {
    /// 1 normal, 2 mirrored, 3 rotated 180, 4 flipped, 5 transposed, 6 rotated 90 clockwise,
    /// 7 transversed, 8 rotated 90 counter-clockwise; other values leave the image alone.
    public static func apply(_ image: RGBImage, orientation: Int) -> RGBImage {
        guard (2...8).contains(orientation) else { return image }
        let w = image.width, h = image.height
        let swap = orientation >= 5
        let outW = swap ? h : w
        let outH = swap ? w : h
        var out = [UInt8](repeating: 0, count: image.pixels.count)
        for y in 0..<outH {
            for x in 0..<outW {
                let (sx, sy) = source(x: x, y: y, width: w, height: h, orientation: orientation)
                let s = (sy * w + sx) * 3
                let o = (y * outW + x) * 3
                out[o] = image.pixels[s]
                out[o + 1] = image.pixels[s + 1]
                out[o + 2] = image.pixels[s + 2]
            }
        }
        return RGBImage(pixels: out, width: outW, height: outH)
    }

    /// The source pixel of output pixel (x, y).
    static func source(x: Int, y: Int, width w: Int, height h: Int, orientation: Int) -> (Int, Int) {
        switch orientation {
        case 2: return (w - 1 - x, y)
        case 3: return (w - 1 - x, h - 1 - y)
        case 4: return (x, h - 1 - y)
        case 5: return (y, x)
        case 6: return (y, h - 1 - x)
        case 7: return (w - 1 - y, h - 1 - x)
        case 8: return (w - 1 - y, x)
        default: return (x, y)
        }
    }
}
