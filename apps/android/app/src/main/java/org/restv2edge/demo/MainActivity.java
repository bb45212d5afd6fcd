package org.restv2edge.demo;

import android.content.ActivityNotFoundException;
import android.graphics.Bitmap;
import android.net.Uri;
import android.os.Bundle;
import android.view.View;
import android.widget.Button;
import android.widget.ImageView;
import android.widget.TextView;
import androidx.activity.ComponentActivity;
import androidx.activity.result.ActivityResultLauncher;
import androidx.activity.result.PickVisualMediaRequest;
import androidx.activity.result.contract.ActivityResultContracts;
import androidx.core.content.FileProvider;
import androidx.core.os.BundleCompat;
import java.io.File;
import java.io.IOException;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import org.restv2edge.demo.core.Manifest;
import org.restv2edge.demo.core.Orientation;
import org.restv2edge.demo.core.TopK;

/** Take or choose a photo; show the model's top-5 and the time one inference took. */
public class MainActivity extends ComponentActivity {
  private static final String STATE_PENDING_PHOTO = "pending_photo";

  private final ExecutorService worker = Executors.newSingleThreadExecutor();
  private volatile Classifier classifier;
  private Uri pendingPhoto;

  private TextView modelInfo;
  private TextView status;
  private TextView error;
  private TextView results;
  private TextView latency;
  private ImageView preview;
  private Button takePhoto;
  private Button pickPhoto;

  private final ActivityResultLauncher<PickVisualMediaRequest> pickLauncher =
      registerForActivityResult(
          new ActivityResultContracts.PickVisualMedia(),
          uri -> {
            if (uri != null) {
              classify(uri);
            }
          });

  private final ActivityResultLauncher<Uri> cameraLauncher =
      registerForActivityResult(
          new ActivityResultContracts.TakePicture(),
          saved -> {
            if (Boolean.TRUE.equals(saved) && pendingPhoto != null) {
              classify(pendingPhoto);
            }
          });

  @Override
  protected void onCreate(Bundle savedInstanceState) {
    super.onCreate(savedInstanceState);
    setContentView(R.layout.activity_main);
    modelInfo = findViewById(R.id.model_info);
    status = findViewById(R.id.status);
    error = findViewById(R.id.error);
    results = findViewById(R.id.results);
    latency = findViewById(R.id.latency);
    preview = findViewById(R.id.preview);
    takePhoto = findViewById(R.id.take_photo);
    pickPhoto = findViewById(R.id.pick_photo);
    if (savedInstanceState != null) {
      pendingPhoto = BundleCompat.getParcelable(savedInstanceState, STATE_PENDING_PHOTO, Uri.class);
    }
    takePhoto.setOnClickListener(v -> launchCamera());
    pickPhoto.setOnClickListener(
        v ->
            pickLauncher.launch(
                new PickVisualMediaRequest.Builder()
                    .setMediaType(ActivityResultContracts.PickVisualMedia.ImageOnly.INSTANCE)
                    .build()));
    worker.execute(this::loadModel);
  }

  @Override
  protected void onSaveInstanceState(Bundle outState) {
    super.onSaveInstanceState(outState);
    outState.putParcelable(STATE_PENDING_PHOTO, pendingPhoto);
  }

  @Override
  protected void onDestroy() {
    super.onDestroy();
    worker.execute(
        () -> {
          if (classifier != null) {
            classifier.close();
          }
        });
    worker.shutdown();
  }

  private void loadModel() {
    try {
      Classifier loaded = new Classifier(getApplicationContext());
      classifier = loaded;
      Manifest m = loaded.manifest;
      String info =
          String.format(
              Locale.US,
              "%s · %s · %d×%d · %d classes · ExecuTorch (XNNPACK)",
              m.variant != null ? "ResTv2-" + m.variant : "ResTv2",
              m.precision,
              m.imageSize,
              m.imageSize,
              m.numClasses);
      runOnUiThread(
          () -> {
            modelInfo.setText(info);
            status.setText(R.string.pick_prompt);
            takePhoto.setEnabled(true);
            pickPhoto.setEnabled(true);
          });
    } catch (IOException | RuntimeException e) {
      String message = "Could not load the model: " + e.getMessage();
      runOnUiThread(
          () -> {
            modelInfo.setText(message);
            status.setText("");
            showError(message);
          });
    }
  }

  private void launchCamera() {
    File dir = new File(getCacheDir(), "camera");
    if (!dir.isDirectory() && !dir.mkdirs()) {
      showError("Cannot create " + dir);
      return;
    }
    pendingPhoto =
        FileProvider.getUriForFile(this, getPackageName() + ".fileprovider", new File(dir, "photo.jpg"));
    try {
      cameraLauncher.launch(pendingPhoto);
    } catch (ActivityNotFoundException e) {
      showError(getString(R.string.no_camera));
    }
  }

  private void classify(Uri uri) {
    Classifier model = classifier;
    if (model == null) {
      return;
    }
    error.setVisibility(View.GONE);
    status.setText(R.string.classifying);
    takePhoto.setEnabled(false);
    pickPhoto.setEnabled(false);
    worker.execute(
        () -> {
          try {
            Orientation.Pixels pixels = ImageLoader.load(getContentResolver(), uri);
            Classifier.Result result = model.classify(pixels);
            Bitmap thumb = ImageLoader.preview(pixels, 1024);
            runOnUiThread(() -> show(thumb, result));
          } catch (ImageLoader.NotAnImageException e) {
            runOnUiThread(() -> fail(e.getMessage()));
          } catch (IOException | RuntimeException e) {
            runOnUiThread(() -> fail("Classification failed: " + e.getMessage()));
          }
        });
  }

  private void show(Bitmap thumb, Classifier.Result result) {
    preview.setImageBitmap(thumb);
    StringBuilder text = new StringBuilder(getString(R.string.top5_title)).append('\n');
    for (TopK.Prediction p : result.top5) {
      text.append(String.format(Locale.US, "%6.2f%%  %s%n", p.probability * 100, p.label));
    }
    results.setText(text.toString().trim());
    latency.setText(
        String.format(
            Locale.US,
            "inference %.1f ms · preprocessing %.1f ms",
            result.inferenceMs,
            result.preprocessMs));
    status.setText(R.string.pick_prompt);
    takePhoto.setEnabled(true);
    pickPhoto.setEnabled(true);
  }

  private void fail(String message) {
    results.setText("");
    latency.setText("");
    status.setText(R.string.pick_prompt);
    showError(message);
    takePhoto.setEnabled(true);
    pickPhoto.setEnabled(true);
  }

  private void showError(String message) {
    error.setText(message);
    error.setVisibility(View.VISIBLE);
  }
}
