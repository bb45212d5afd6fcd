"""The target registry: one descriptor per target, one import direction, no target-name tests
outside a target's own modules, and ``--max-drop`` labels matched by class name."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from conftest import CIFAR10_CLASSES, TINY_CONFIG, TINY_IMAGE_SIZE
from restv2_edge.calibration.dataset import build_calibration_set, quantization_settings
from restv2_edge.calibration.recipes import (
    W8A8,
    WEIGHTS_ONLY,
    Int8Recipe,
    get_recipe,
    int8_targets,
    supported_precisions,
)
from restv2_edge.calibration.sensitivity import held_back_data
from restv2_edge.converters.base import (
    Converter,
    ExportRequest,
    QuantizationSettings,
    TargetDescriptor,
    get_converter,
    get_descriptor,
    installed_targets,
    target_names,
)

from restv2_edge.errors import DataError, ExportError
from restv2_edge.export import export_artifact
from restv2_edge.factory import create_model
from restv2_edge.model import GraphForm
from restv2_edge.parity import torch_logits

ROOT = Path(__file__).resolve().parent.parent
CONVERTERS = ROOT / "converters"
CALIBRATION = ROOT / "calibration"
FLOAT_PRECISIONS = {"fp32", "fp16", "bf16"}


def _declared(folder: Path, variable: str, field: str) -> dict[str, str]:
    """module name -> the ``field=`` string of its module-level ``VARIABLE = X(...)``, read
    from the source (independent of the discovery under test)."""
    found = {}
    for path in sorted(folder.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
                continue
            if [getattr(t, "id", None) for t in node.targets] != [variable]:
                continue
            for keyword in node.value.keywords:
                if keyword.arg == field and isinstance(keyword.value, ast.Constant):
                    found[path.stem] = keyword.value.value
    return found


# -- the registry ------------------------------------------------------------------------------


def test_target_names_are_the_declared_descriptors_in_order() -> None:
    declared = _declared(CONVERTERS, "DESCRIPTOR", "name")
    assert declared, "no DESCRIPTOR found in converters/"
    assert sorted(target_names()) == sorted(declared.values())
    orders = [get_descriptor(name).order for name in target_names()]
    assert orders == sorted(orders)
    # the order the CLI and the docs have always listed
    assert target_names()[:4] == ["onnx", "openvino", "executorch", "coreml"]


def test_every_target_has_a_complete_descriptor() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for name in target_names():
        descriptor = get_descriptor(name)
        assert isinstance(descriptor, TargetDescriptor)
        assert descriptor.name == name
        assert type(descriptor.converter).__module__ == f"restv2_edge.converters.{name}"
        assert isinstance(descriptor.converter, Converter)
        assert get_converter(name) is descriptor.converter
        assert descriptor.converter.descriptor is descriptor
        assert descriptor.extra in extras, f"{name}: no pip extra {descriptor.extra!r}"
        assert descriptor.packages and all(descriptor.packages)
        assert descriptor.precisions and set(descriptor.precisions) <= FLOAT_PRECISIONS
        assert descriptor.default_precision in descriptor.precisions
        assert descriptor.graph_form in {form.value for form in GraphForm}
        assert descriptor.suffix.startswith(".") and len(descriptor.suffix) > 1
        fields = descriptor.manifest_fields
        assert fields and len(set(fields)) == len(fields) and all(fields)
        assert isinstance(descriptor.order, int)
        assert descriptor.converter.name == name
        assert descriptor.converter.precisions == descriptor.precisions


def test_unknown_target_names_the_choices() -> None:
    with pytest.raises(ExportError, match="unknown target 'nope'") as info:
        get_descriptor("nope")
    assert all(name in str(info.value) for name in target_names())
    with pytest.raises(ExportError, match="unknown target"):
        get_converter("nope")
    assert set(installed_targets()) <= set(target_names())


def test_int8_recipes_are_the_declared_ones() -> None:
    declared = _declared(CALIBRATION, "RECIPE", "target")
    assert sorted(int8_targets()) == sorted(declared.values())
    assert all(module == target for module, target in declared.items())
    assert int8_targets() == [name for name in target_names() if name in declared.values()]
    for name in target_names():
        floats = get_descriptor(name).precisions
        if name in int8_targets():
            recipe = get_recipe(name)
            assert isinstance(recipe, Int8Recipe) and recipe.target == name
            assert callable(recipe.export)
            assert recipe.schemes and set(recipe.schemes) <= {W8A8, WEIGHTS_ONLY}
            assert recipe.max_drop is None or callable(recipe.max_drop)
            assert recipe.sensitivity is None or callable(recipe.sensitivity)
            assert supported_precisions(name) == (*floats, "int8")
        else:
            assert supported_precisions(name) == floats
    with pytest.raises(ExportError, match="no INT8 recipe"):
        get_recipe("nope")


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint: Path):
    return create_model(weights=tiny_checkpoint)


# -- one import direction, one place per target -----------------------------------------------


def _sources(*folders: Path) -> list[Path]:
    return sorted(path for folder in folders for path in folder.rglob("*.py"))


def test_converters_never_import_calibration() -> None:
    offenders = []
    for path in _sources(CONVERTERS):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                modules = [node.value] if "restv2_edge.calibration" in node.value else []
            else:
                continue
            for module in modules:
                if "calibration" in module.split("."):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {module}")
                elif "restv2_edge.calibration" in module:  # importlib.import_module("...")
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {module!r}")
    assert not offenders, offenders


def _names_in(node: ast.AST, names: set[str]) -> list[str]:
    """Target names among the string constants of a comparison operand (or its literal
    tuple/list/set/dict keys)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if node.value in names else []
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [found for element in node.elts for found in _names_in(element, names)]
    if isinstance(node, ast.Dict):
        return [found for key in node.keys if key is not None for found in _names_in(key, names)]
    return []


def test_only_a_target_s_own_modules_compare_against_its_name() -> None:
    """``target == "onnx"``, ``target in ("executorch", "coreml")``, ``case "coreml":`` and the
    like belong in converters/<target>.py or calibration/<target>.py, for that target only;
    everything else reads descriptor and recipe fields."""
    names = set(target_names())
    offenders = []
    for path in _sources(ROOT / "restv2_edge", CONVERTERS, CALIBRATION):
        own = {path.stem} if path.parent in (CONVERTERS, CALIBRATION) else set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
            elif isinstance(node, ast.MatchValue):
                operands = [node.value]
            else:
                continue
            found = {name for operand in operands for name in _names_in(operand, names)} - own
            if found:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(found)}")
    assert not offenders, offenders


def test_no_literal_lists_target_names() -> None:
    """A tuple/list/set/dict literal naming two or more targets is a second registry."""
    names = set(target_names())
    offenders = []
    for path in _sources(ROOT / "restv2_edge", CONVERTERS, CALIBRATION):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                items = node.elts
            elif isinstance(node, ast.Dict):
                items = [*(key for key in node.keys if key is not None), *node.values]
            else:
                continue
            found = {
                item.value
                for item in items
                if isinstance(item, ast.Constant) and isinstance(item.value, str)
            } & names
            if len(found) >= 2:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(found)}")
    assert not offenders, offenders


# -- quantization settings ---------------------------------------------------------------------


def test_quantization_settings_are_a_dataclass_and_dicts_still_read() -> None:
    settings = quantization_settings(
        {"calib": "c", "calib_method": "minmax", "max_drop": 0.5, "accuracy_data": "d"}
    )
    assert settings == QuantizationSettings(method="minmax", max_drop=0.5, accuracy_data="d")
    plain = quantization_settings({"weights_only": True, "accuracy_data": "ignored"})
    assert plain == QuantizationSettings(method="percentile", weights_only=True)
    request = ExportRequest(precision="int8", quantization={"max_drop": 1, "keep_float": ["a"]})
    assert request.quantization == QuantizationSettings(max_drop=1, keep_float=("a",))
    request.quantization = {}
    assert request.quantization == QuantizationSettings()
    assert list(request.quantization.get("keep_float", [])) == []
    with pytest.raises(ExportError, match="unknown quantization setting"):
        ExportRequest(quantization={"sheme": "w8a8"})
    with pytest.raises(ExportError, match="--max-drop must be >= 0"):
        quantization_settings({"calib": "c", "max_drop": -1})


def test_request_carries_the_model_facts(tiny_model) -> None:
    request = ExportRequest().for_model(tiny_model)
    assert request.preprocessing == tiny_model.preprocessing
    assert request.class_names == CIFAR10_CLASSES
    assert request.model_config == tiny_model.config


# -- --max-drop labels: matched by class name ---------------------------------------------------


def _max_drop_request(model, data: Path | None = None, calibration=None) -> ExportRequest:
    settings = {"max_drop": 1.0, **({"accuracy_data": str(data)} if data else {})}
    request = ExportRequest(precision="int8", calibration=calibration, quantization=settings)
    return request.for_model(model)


@pytest.fixture(scope="module")
def fixture_model(fixture_checkpoint: Path):
    return create_model(weights=fixture_checkpoint)


@pytest.fixture(scope="module")
def cifar_images(cifar_test_tar: Path) -> list[tuple[str, bytes]]:
    """(class name, PNG bytes): the first 6 test images of every class."""
    from restv2_edge.data import open_labelled

    source = open_labelled(cifar_test_tar)
    picked: dict[int, list[bytes]] = {}
    for key, label in source.items:
        if len(picked.setdefault(label, [])) < 6:
            picked[label].append(source.read(key))
    return [(source.class_names[label], data) for label in picked for data in picked[label]]


def _image_folder(root: Path, images: list[tuple[str, bytes]]) -> Path:
    for index, (name, data) in enumerate(images):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / f"{index:04d}.png").write_bytes(data)
    return root


def _pairs(images: np.ndarray, labels: np.ndarray) -> dict[bytes, int]:
    return {image.tobytes(): int(label) for image, label in zip(images, labels)}


def test_imagenet_model_has_no_default_accuracy_data(photo_dir, tmp_path) -> None:
    model = create_model(TINY_CONFIG, TINY_IMAGE_SIZE, num_classes=1000)
    assert model.class_names[0] == "tench"  # ImageNet names
    with pytest.raises(DataError, match="--accuracy-data"):
        held_back_data(_max_drop_request(model))
    if "onnx" not in installed_targets():
        return
    with pytest.warns(UserWarning, match="fewer than"):
        calib = build_calibration_set(photo_dir, 4, model.preprocessing)
    request = _max_drop_request(model, calibration=calib)
    with pytest.raises(DataError, match="--accuracy-data"):
        export_artifact(model, "onnx", tmp_path / "out", request, parity_limit=4)
    assert not (tmp_path / "out").exists()


def test_fixture_uses_the_default_data(fixture_model, cifar_test_tar) -> None:
    images, labels = held_back_data(_max_drop_request(fixture_model), limit=40)
    assert len(images) == len(labels) == 40
    assert images.shape[1:] == (3, fixture_model.image_size, fixture_model.image_size)
    assert set(labels.tolist()) <= set(range(len(CIFAR10_CLASSES)))


def test_label_permuted_folder_gives_the_same_accuracy(fixture_model, cifar_images, tmp_path):
    """The same images with the class indices permuted (a classes.tsv in another order):
    the same labels in the model's index space, so the same accuracy."""
    from restv2_edge.data import open_labelled

    ordered = _image_folder(tmp_path / "ordered", cifar_images)
    permuted = tmp_path / "permuted" / "images"
    permuted.mkdir(parents=True)
    order = list(reversed(CIFAR10_CLASSES))
    lines = ["index\tsynset\tname"]
    lines += [f"{index}\tc{index}\t{name}" for index, name in enumerate(order)]
    (permuted.parent / "classes.tsv").write_text("\n".join(lines) + "\n")
    for number, (name, data) in enumerate(cifar_images):
        (permuted / f"c{order.index(name)}_{number:04d}.png").write_bytes(data)
    folder_labels = [label for _, label in open_labelled(permuted).items]
    assert folder_labels != [CIFAR10_CLASSES.index(order[label]) for label in folder_labels]

    first = held_back_data(_max_drop_request(fixture_model, ordered))
    second = held_back_data(_max_drop_request(fixture_model, permuted))
    assert len(first[0]) == len(second[0]) == len(cifar_images)
    assert _pairs(*first) == _pairs(*second)
    accuracy = [
        float((torch_logits(fixture_model, images).argmax(1) == labels).mean())
        for images, labels in (first, second)
    ]
    assert accuracy[0] == accuracy[1] > 0.5


def test_data_with_other_classes_is_a_data_error(fixture_model, cifar_images, tmp_path) -> None:
    images = [("zebra" if name == "horse" else name, data) for name, data in cifar_images]
    folder = _image_folder(tmp_path / "other", images)
    with pytest.raises(DataError, match="zebra"):
        held_back_data(_max_drop_request(fixture_model, folder))


def test_calibration_images_are_held_back(fixture_model, cifar_images, tmp_path) -> None:
    folder = _image_folder(tmp_path / "data", cifar_images)
    with pytest.warns(UserWarning, match="fewer than"):
        calib = build_calibration_set(folder, 10, fixture_model.preprocessing)
    images, _ = held_back_data(_max_drop_request(fixture_model, folder, calib))
    assert len(images) == len(cifar_images) - 10


def test_targets_command_reports_every_descriptor_and_recipe():
    import json

    from click.testing import CliRunner

    from restv2_edge.cli import main

    result = CliRunner().invoke(main, ["targets", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["target"]: row for row in json.loads(result.output)}
    assert list(rows) == target_names()
    for name, row in rows.items():
        descriptor = get_descriptor(name)
        assert row["precisions"] == list(descriptor.precisions)
        assert row["dynamic_batch"] is descriptor.dynamic_batch
        assert row["model_file"] == f"model{descriptor.suffix}"
        assert row["graph_form"] == descriptor.graph_form
        assert set(row["graph_form_by_precision"]) == set(descriptor.precisions)
        assert set(row["graph_form_by_precision"].values()) <= {f.value for f in GraphForm}
        assert set(descriptor.options) <= set(row["options"])
        schemes = list(get_recipe(name).schemes) if name in int8_targets() else []
        assert row["int8_schemes"] == schemes
    forms = rows["openvino"]["graph_form_by_precision"]
    half = {"fp16": "native-depthwise", "bf16": "native-depthwise"}
    assert forms == {"fp32": "native-convtranspose", **half}
    assert rows["onnx"]["graph_form_by_precision"] == {"fp32": "native-pointwise", "fp16": "native"}
    text = CliRunner().invoke(main, ["targets"]).output.splitlines()
    assert [line.split()[0] for line in text] == target_names()
