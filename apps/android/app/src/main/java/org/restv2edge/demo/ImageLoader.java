package org.restv2edge.demo;

import android.content.ContentResolver;
import android.graphics.Bitmap;
import android.graphics.BitmapFactory;
import android.media.ExifInterface;
import android.net.Uri;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import org.restv2edge.demo.core.Orientation;

/**
 * Decodes a photo to packed RGB the way the Python side sees it: full resolution, no colour
 * conversion (the bitmap keeps the photo's own colour space and its bytes are copied as they are),
 * alpha dropped without premultiplying; then the EXIF orientation is applied as an exact pixel
 * permutation so phone photos arrive upright.
 */
final class ImageLoader {
  /** The file could not be decoded as an image. */
  static final class NotAnImageException extends IOException {
    private static final long serialVersionUID = 1L;

    NotAnImageException(String message) {
      super(message);
    }
  }

  private ImageLoader() {}

  static Orientation.Pixels load(ContentResolver resolver, Uri uri) throws IOException {
    BitmapFactory.Options options = new BitmapFactory.Options();
    options.inPreferredConfig = Bitmap.Config.ARGB_8888;
    options.inPremultiplied = false;
    options.inScaled = false;
    Bitmap bitmap;
    try (InputStream in = open(resolver, uri)) {
      bitmap = BitmapFactory.decodeStream(in, null, options);
    }
    if (bitmap == null) {
      String type = resolver.getType(uri);
      throw new NotAnImageException(
          "That file is not an image this phone can read"
              + (type != null ? " (" + type + ")" : "")
              + ". Choose a photo (JPEG, PNG, WebP or HEIC).");
    }
    if (bitmap.getConfig() != Bitmap.Config.ARGB_8888) {
      Bitmap copy = bitmap.copy(Bitmap.Config.ARGB_8888, false);
      bitmap.recycle();
      bitmap = copy;
    }
    int width = bitmap.getWidth();
    int height = bitmap.getHeight();
    int stride = bitmap.getRowBytes();
    ByteBuffer buffer = ByteBuffer.allocate(stride * height);
    bitmap.copyPixelsToBuffer(buffer); // R, G, B, A bytes per pixel, as stored
    bitmap.recycle();
    byte[] rgba = buffer.array();
    byte[] rgb = new byte[width * height * 3];
    for (int y = 0; y < height; y++) {
      for (int x = 0, s = y * stride, d = y * width * 3; x < width; x++, s += 4, d += 3) {
        rgb[d] = rgba[s];
        rgb[d + 1] = rgba[s + 1];
        rgb[d + 2] = rgba[s + 2];
      }
    }
    return Orientation.apply(rgb, width, height, exifOrientation(resolver, uri));
  }

  /** A small bitmap for the preview only (never used for classification). */
  static Bitmap preview(Orientation.Pixels pixels, int maxSide) {
    int step = Math.max(1, Math.max(pixels.width, pixels.height) / maxSide);
    int w = Math.max(1, pixels.width / step);
    int h = Math.max(1, pixels.height / step);
    int[] argb = new int[w * h];
    for (int y = 0; y < h; y++) {
      for (int x = 0; x < w; x++) {
        int s = ((y * step) * pixels.width + x * step) * 3;
        argb[y * w + x] =
            0xFF000000
                | (pixels.rgb[s] & 0xFF) << 16
                | (pixels.rgb[s + 1] & 0xFF) << 8
                | (pixels.rgb[s + 2] & 0xFF);
      }
    }
    return Bitmap.createBitmap(argb, w, h, Bitmap.Config.ARGB_8888);
  }

  private static int exifOrientation(ContentResolver resolver, Uri uri) {
    try (InputStream in = open(resolver, uri)) {
      return new ExifInterface(in)
          .getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL);
    } catch (IOException | RuntimeException e) {
      return ExifInterface.ORIENTATION_NORMAL; // no EXIF block (PNG, WebP, ...): upright
    }
  }

  private static InputStream open(ContentResolver resolver, Uri uri) throws IOException {
    InputStream in = resolver.openInputStream(uri);
    if (in == null) {
      throw new IOException("cannot open " + uri);
    }
    return in;
  }
}
