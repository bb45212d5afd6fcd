package org.restv2edge.demo;

import android.content.Context;
import android.content.res.AssetManager;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileNotFoundException;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;
import org.pytorch.executorch.EValue;
import org.pytorch.executorch.Module;
import org.pytorch.executorch.Tensor;
import org.restv2edge.demo.core.Hashing;
import org.restv2edge.demo.core.Manifest;
import org.restv2edge.demo.core.Orientation;
import org.restv2edge.demo.core.Preprocessor;
import org.restv2edge.demo.core.TopK;

/**
 * The exported ExecuTorch artifact in assets/model/ (manifest.json + the .pte it names), run
 * with the ExecuTorch Android runtime (XNNPACK delegate). Preprocessing, labels and tensor names
 * all come from manifest.json.
 */
final class Classifier implements AutoCloseable {
  static final String ASSET_DIR = "model";

  /** One classification: top-5 and where the time went. */
  static final class Result {
    final List<TopK.Prediction> top5;
    final double preprocessMs;
    final double inferenceMs;

    Result(List<TopK.Prediction> top5, double preprocessMs, double inferenceMs) {
      this.top5 = top5;
      this.preprocessMs = preprocessMs;
      this.inferenceMs = inferenceMs;
    }
  }

  final Manifest manifest;
  private final Preprocessor preprocessor;
  private final Module module;

  Classifier(Context context) throws IOException {
    AssetManager assets = context.getAssets();
    String json;
    try {
      json = readAsset(assets, ASSET_DIR + "/manifest.json");
    } catch (FileNotFoundException e) {
      throw new IOException(
          "No model in the app: run python3 apps/scripts/copy-export.py android EXPORT_DIR, then rebuild.");
    }
    try {
      manifest = Manifest.parse(json, name -> readSibling(assets, name));
      manifest.requireTarget("executorch");
    } catch (UncheckedIOException e) {
      throw e.getCause();
    }
    preprocessor = new Preprocessor(manifest);
    File model = installModel(context, assets);
    module = Module.load(model.getAbsolutePath());
    int status = module.loadMethod("forward");
    if (status != 0) {
      throw new IOException("ExecuTorch could not load forward() (error 0x" + Integer.toHexString(status) + ")");
    }
  }

  /** Preprocess per the manifest, run the model once, and take the top-5. */
  Result classify(Orientation.Pixels pixels) {
    long t0 = System.nanoTime();
    float[] image = preprocessor.fromRgb(pixels.rgb, pixels.width, pixels.height).input;
    float[] batch = new float[image.length * manifest.batchSize()]; // static batch: zero padding
    System.arraycopy(image, 0, batch, 0, image.length);
    long t1 = System.nanoTime();
    EValue[] outputs = module.forward(EValue.from(Tensor.fromBlob(batch, manifest.inputShape)));
    float[] all = outputs[0].toTensor().getDataAsFloatArray();
    long t2 = System.nanoTime();
    float[] logits = Arrays.copyOf(all, manifest.numClasses);
    return new Result(TopK.topK(logits, manifest.labels, 5), (t1 - t0) / 1e6, (t2 - t1) / 1e6);
  }

  @Override
  public void close() {
    module.destroy();
  }

  /** Copy the .pte out of the APK (Module.load needs a path) unless an intact copy exists. */
  private File installModel(Context context, AssetManager assets) throws IOException {
    File target = new File(context.getFilesDir(), manifest.modelFile);
    if (manifest.modelSha256 != null && target.isFile() && manifest.modelSha256.equals(sha256(target))) {
      return target;
    }
    File partial = new File(context.getFilesDir(), manifest.modelFile + ".partial");
    try (InputStream in = assets.open(ASSET_DIR + "/" + manifest.modelFile);
        OutputStream out = new FileOutputStream(partial)) {
      byte[] buffer = new byte[1 << 16];
      int read;
      while ((read = in.read(buffer)) != -1) {
        out.write(buffer, 0, read);
      }
    } catch (FileNotFoundException e) {
      throw new IOException(manifest.modelFile + " is missing from assets/model/");
    }
    if (manifest.modelSha256 != null && !manifest.modelSha256.equals(sha256(partial))) {
      partial.delete();
      throw new IOException(manifest.modelFile + " does not match the sha256 in manifest.json");
    }
    if (!partial.renameTo(target)) {
      throw new IOException("cannot install " + target);
    }
    return target;
  }

  private static String sha256(File file) throws IOException {
    try (InputStream in = new FileInputStream(file)) {
      return Hashing.sha256Hex(in);
    }
  }

  private static String readSibling(AssetManager assets, String name) {
    try {
      return readAsset(assets, ASSET_DIR + "/" + name);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  private static String readAsset(AssetManager assets, String path) throws IOException {
    try (InputStream in = assets.open(path)) {
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      byte[] buffer = new byte[8192];
      int read;
      while ((read = in.read(buffer)) != -1) {
        out.write(buffer, 0, read);
      }
      return new String(out.toByteArray(), StandardCharsets.UTF_8);
    }
  }
}
