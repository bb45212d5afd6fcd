"""The Core ML image classifier (``--raw-input``): spec inspection and runs on real photos.

The spec is read back from the saved .mlpackage (protobuf, no Core ML needed); the program runs
in the restv2-edge MIL reference interpreter (Core ML itself on macOS through the runner) and
is compared with the official-structure reference model (tests/reference_restv2.py), never
with earlier output of the converter.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")

sys.path.insert(0, str(Path(__file__).parent))

from conftest import CIFAR10_CLASSES, TINY_CONFIG, oracle_logits, oracle_model  # noqa: E402
from restv2_edge.converters.base import ExportRequest, get_converter  # noqa: E402
from restv2_edge.converters.coreml import convert  # noqa: E402
from restv2_edge.converters.coreml_spec import (  # noqa: E402
    CLASS_LABEL,
    CLASS_PROBABILITIES,
    PREVIEW_TYPE_KEY,
    make_classifier,
    unique_labels,
)
from restv2_edge.converters.mil import Program, read_package  # noqa: E402

from restv2_edge.errors import ExportError  # noqa: E402
from restv2_edge.export import export_artifact  # noqa: E402
from restv2_edge.factory import create_model  # noqa: E402
from restv2_edge.labels import imagenet_classes  # noqa: E402
from restv2_edge.model import RawInput  # noqa: E402
from restv2_edge.parity import compare, load_inputs  # noqa: E402
from restv2_edge.preprocess import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

REPO = Path(__file__).resolve().parent.parent
IOS = REPO / "apps" / "ios"


# -- unique labels ---------------------------------------------------------------------------------


def test_unique_labels_of_imagenet():
    names = list(imagenet_classes())
    assert len(set(names)) == 998  # two "crane", two "maillot"
    labels = unique_labels(names)
    assert len(set(labels)) == 1000
    assert (labels[134], labels[517]) == ("crane", "crane (2)")
    assert (labels[638], labels[639]) == ("maillot", "maillot (2)")
    changed = [i for i, (a, b) in enumerate(zip(names, labels)) if a != b]
    assert changed == [517, 639]


def test_unique_labels_never_take_another_class_name():
    assert unique_labels(["a", "a", "a (2)", "a"]) == ["a", "a (3)", "a (2)", "a (4)"]
    assert unique_labels(["x", "y"]) == ["x", "y"]


# -- the exported classifier -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier(tiny_checkpoint, photo_dir, tmp_path_factory):
    """(folder, manifest) of the tiny checkpoint as an fp16 image classifier (parity on 8
    photos through the Core ML runner)."""
    model = create_model(weights=tiny_checkpoint)
    out = tmp_path_factory.mktemp("classifier") / "tiny-classifier"
    return export_artifact(
        model,
        "coreml",
        out,
        ExportRequest(precision="fp16", raw_input=True),
        parity_data=photo_dir,
        parity_limit=8,
    )


def test_manifest_of_the_classifier(classifier):
    _, manifest = classifier
    assert manifest.parity["status"] == "passed", manifest.parity
    assert manifest.raw_input and manifest.batch_size == 1 and not manifest.dynamic_batch
    record = manifest.export
    assert record["input_type"] == "image (RGB, 0-255)"
    assert record["classifier"]["label_output"] == CLASS_LABEL
    assert record["classifier"]["probabilities_output"] == CLASS_PROBABILITIES
    assert record["compute_units"] == "ALL"
    assert manifest.output["name"] == "logits"


def test_spec_is_an_rgb_image_classifier(classifier):
    folder, manifest = classifier
    package = read_package(folder / manifest.model_file)
    (image,) = package.inputs
    assert (image.kind, image.shape, image.color_space) == ("image", (64, 64), "RGB")
    kinds = {feature.name: feature.kind for feature in package.outputs}
    assert kinds == {CLASS_LABEL: "string", CLASS_PROBABILITIES: "dictionary", "logits": "tensor"}
    assert package.predicted_feature == CLASS_LABEL
    assert package.predicted_probabilities == CLASS_PROBABILITIES
    # the classify op's labels: the manifest's, unique
    program = Program.load(folder / manifest.model_file)
    (step,) = [s for s in program.steps if s.type == "classify"]
    (classes,) = step.bindings["classes"]
    labels = classes.value
    assert [str(label) for label in labels] == unique_labels(manifest.labels) == CIFAR10_CLASSES


def test_image_scale_and_bias_then_std_in_the_graph(classifier):
    """ImageType: pixel * 1/255 + (-mean) per channel (Core ML applies it; the ML program holds
    it as its first two ops), then the graph multiplies by 1/std."""
    folder, manifest = classifier
    program = Program.load(folder / manifest.model_file)
    first, second, _, third = program.steps[:4]  # mul, add, cast to fp16, mul
    assert (first.type, second.type, third.type) == ("mul", "add", "mul")

    def constant(step):
        (item,) = step.bindings["y"]
        value = program.constants[item] if isinstance(item, str) else item.value
        return np.asarray(value, np.float64).reshape(-1)

    np.testing.assert_allclose(constant(first), [1 / 255], rtol=1e-6)
    np.testing.assert_allclose(constant(second), -np.array(IMAGENET_MEAN), rtol=1e-6)
    np.testing.assert_allclose(constant(third), 1 / np.array(IMAGENET_STD), rtol=1e-3)


def test_metadata(classifier):
    folder, manifest = classifier
    spec = read_package(folder / manifest.model_file).spec
    meta = spec.description.metadata
    assert meta.author == "restv2-edge"
    assert "Apache-2.0" in meta.license and "wofmanaf/ResT" in meta.license
    assert meta.versionString and "image classifier" in meta.shortDescription
    user = dict(meta.userDefined)
    assert user[PREVIEW_TYPE_KEY] == "imageClassifier"
    assert json.loads(user["restv2_edge.preprocessing"]) == manifest.preprocessing().to_dict()
    assert json.loads(user["restv2_edge.labels"]) == manifest.labels
    assert user["restv2_edge.compute_units"] == manifest.export["compute_units"]


def test_outputs_match_the_reference_on_photos(classifier, tiny_checkpoint, photo_dir):
    """logits, classLabel and the probabilities of the program vs the official-structure
    model on real photos (fp16 program: cosine and probability tolerances of fp16)."""
    folder, manifest = classifier
    pixels = load_inputs(manifest.preprocessing(), photo_dir, 6).images  # raw RGB 0-255
    pre = create_model(weights=tiny_checkpoint).preprocessing
    normalized = (pixels * np.float32(pre.scale) - np.float32(pre.mean)[:, None, None]) / (
        np.float32(pre.std)[:, None, None]
    )
    want = oracle_logits(oracle_model(tiny_checkpoint, **TINY_CONFIG), normalized)
    program = Program.load(folder / manifest.model_file)
    labels = unique_labels(manifest.labels)
    for image, logits in zip(pixels, want):
        out = program.run({"input": np.rint(image)[None]})
        assert compare(logits[None], out["logits"])["cosine_min"] >= 0.999
        probabilities = torch.softmax(torch.from_numpy(logits), 0).numpy()
        got = np.array([out[CLASS_PROBABILITIES][label] for label in labels])
        np.testing.assert_allclose(got, probabilities, atol=2e-3)
        assert abs(got.sum() - 1) < 1e-2
        assert out[CLASS_LABEL] == labels[int(np.argmax(got))]
        if np.sort(probabilities)[-1] - np.sort(probabilities)[-2] > 5e-3:
            assert out[CLASS_LABEL] == labels[int(np.argmax(logits))]
    runner = get_converter("coreml").load(folder, manifest)
    assert compare(want, runner(pixels))["top1_agreement"] == 1.0


def test_runner_rounds_float_input_to_pixels(classifier, photo_dir):
    """The runner hands the image type 8-bit pixels: float input is rounded and clipped."""
    folder, manifest = classifier
    runner = get_converter("coreml").load(folder, manifest)
    x = load_inputs(manifest.preprocessing(), photo_dir, 2).images
    signs = np.sign(np.random.default_rng(0).standard_normal(x.shape))
    noisy = np.clip(x + np.float32(0.3) * signs, -5, 260).astype(np.float32)
    np.testing.assert_allclose(runner(noisy), runner(x), rtol=0, atol=1e-5)


# -- duplicate class names, batches ----------------------------------------------------------------


class _Small(torch.nn.Module):
    """A few ops ending in 4 logits: converts in a second."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_duplicate_class_names_become_unique_classifier_labels(tmp_path):
    graph = RawInput(_Small().eval(), IMAGENET_MEAN, IMAGENET_STD).eval()
    names = ["crane", "maillot", "crane", "maillot"]
    request = ExportRequest(precision="fp32", raw_input=True, class_names=names)
    example = torch.rand(1, 3, 16, 16) * 255
    image_model = convert(graph, example, request, ct.target.iOS17, lambda step: None)
    mlmodel = make_classifier(image_model, names, ct.target.iOS17)
    mlmodel.save(str(tmp_path / "m.mlpackage"))
    program = Program.load(tmp_path / "m.mlpackage")
    pixels = np.rint(example.numpy())
    out = program.run({"input": pixels})
    assert set(out[CLASS_PROBABILITIES]) == {"crane", "maillot", "crane (2)", "maillot (2)"}
    with torch.no_grad():
        want = graph(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(out["logits"], want, atol=1e-4)
    assert out[CLASS_LABEL] == unique_labels(names)[int(np.argmax(want))]


@pytest.mark.parametrize("batch, dynamic", [(2, False), (1, True)])
def test_image_input_takes_one_image(batch, dynamic):
    request = ExportRequest(raw_input=True, batch_size=batch, dynamic_batch=dynamic)
    with pytest.raises(ExportError, match="takes one image"):
        get_converter("coreml").check_request(request)


# -- the iOS app reads what the manifest says ------------------------------------------------


def test_ios_app_reads_compute_units_and_classifier_outputs():
    """Static checks (Swift is not compiled here): the app maps every compute-units name the
    exporter writes, reads ``export.compute_units`` and knows the classifier outputs."""
    from restv2_edge.converters.coreml_spec import COMPUTE_UNITS

    manifest = (IOS / "RestV2Core" / "Sources" / "RestV2Core" / "Manifest.swift").read_text()
    classifier = (IOS / "RestV2Demo" / "Classifier.swift").read_text()
    cases = re.findall(r'case (\w+) = "([A-Z_]+)"', manifest)
    assert sorted(name for _, name in cases) == sorted(COMPUTE_UNITS), cases
    mapped = set(re.findall(r"case \.(\w+): return \.\1", classifier))
    assert mapped == {case for case, _ in cases}, mapped  # each onto MLComputeUnits
    assert "let computeUnits: String?" in manifest and "let export: Export?" in manifest
    assert "let labelOutput: String; let probabilitiesOutput: String" in manifest
    assert "configuration.computeUnits = manifest.computeUnits.mlComputeUnits" in classifier
    assert "VNCoreMLRequest" in classifier and "VNClassificationObservation" in classifier
    assert "predictedFeatureName" in classifier


@pytest.mark.slow
@pytest.mark.parametrize("weights_only", [True, False], ids=["weights", "w8a8"])
def test_int8_classifier(tiny_checkpoint, photo_dir, tmp_path, weights_only):
    """int8 image classifiers: weight quantization before the classifier step (it cannot
    re-serialize the label list), W8A8 with its whole normalization in the quantized graph."""
    from restv2_edge.calibration.dataset import build_calibration_set

    model = create_model(weights=tiny_checkpoint)
    calib = build_calibration_set(photo_dir, 32, model.preprocessing, seed=0)
    request = ExportRequest(
        precision="int8",
        raw_input=True,
        calibration=calib,
        quantization={"weights_only": weights_only},
    )
    folder, manifest = export_artifact(
        model, "coreml", tmp_path / "a", request, parity_data=photo_dir, parity_limit=8
    )
    assert manifest.parity["status"] == "passed", manifest.parity
    package = read_package(folder / manifest.model_file)
    assert package.is_classifier and package.inputs[0].kind == "image"
