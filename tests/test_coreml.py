"""Core ML target: export options, program checks, runner choice and parity on real photos.

The runner is Core ML itself where the framework exists (macOS) and the restv2-edge MIL
reference interpreter elsewhere; every parity assertion here holds for both. The macOS
workflow (.github/workflows/coreml-macos.yml) runs this file with RESTV2_EDGE_COREML_RUNNER=coreml
so that there every parity check goes through MLModel.predict.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")

sys.path.insert(0, str(Path(__file__).parent))

from conftest import (  # noqa: E402
    CIFAR10_CLASSES,
    TINY_CONFIG,
    assert_one_line_error,
    oracle_logits,
    oracle_model,
    run_cli,
)
from restv2_edge.converters.base import ExportRequest, get_converter  # noqa: E402
from restv2_edge.converters.coreml import (  # noqa: E402
    RUNNER_ENV,
    coreml_framework_available,
    fold_scalar_dequantize,
)
from restv2_edge.converters.mil import (  # noqa: E402
    MILError,
    Program,
    read_package,
    read_spec,
    tensor_ranks,
)

from restv2_edge.errors import ExportError, RunnerUnavailableError  # noqa: E402
from restv2_edge.export import artifact_model, export_artifact  # noqa: E402
from restv2_edge.factory import create_model  # noqa: E402
from restv2_edge.manifest import Manifest  # noqa: E402
from restv2_edge.parity import compare, load_inputs, measure  # noqa: E402

# coremltools and torch.export internals
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

FRAMEWORK = coreml_framework_available() and os.environ.get(RUNNER_ENV, "auto") != "interpreter"
RUNNER_WORD = "MLModel" if FRAMEWORK else "MIL reference interpreter"


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    return create_model(weights=tiny_checkpoint)


def export(model, out, photo_dir, limit=8, **request):
    return export_artifact(
        model, "coreml", out, ExportRequest(**request), parity_data=photo_dir, parity_limit=limit
    )


@pytest.fixture(scope="module")
def tiny_fp16(tiny_artifact):
    """(folder, manifest) of the tiny fp16 export, ``export(..., precision="fp16")`` with
    parity on 8 photos; exported once per session, shared with tests/test_target_contract.py
    (the manifest, reference-model and reproducibility contract of every target)."""
    return tiny_artifact("coreml", "fp16")


def spec_of(folder: Path):
    return read_spec(folder / "model.mlpackage")


def assert_passed(parity: dict) -> None:
    assert parity["status"] == "passed", parity
    assert RUNNER_WORD in parity["runner"], parity["runner"]
    assert "imagenet-sample" in parity["data"]


# -- export options and the saved program ----------------------------------------------------------


def test_fp16_default_export(tiny_fp16):
    path, manifest = tiny_fp16
    assert_passed(manifest.parity)
    assert get_converter("coreml").default_precision == "fp16"
    spec = spec_of(path)
    fn = spec.mlProgram.functions["main"]
    assert fn.opset == "CoreML7" and spec.specificationVersion == 8  # iOS17
    assert manifest.export["deployment_target"] == "iOS17"
    ops = fn.block_specializations[fn.opset].operations
    assert {"layer_norm", "pixel_shuffle", "matmul"} <= {op.type for op in ops}  # native form
    fp16_outputs = [o for op in ops for o in op.outputs if o.type.tensorType.dataType == 10]
    assert len(fp16_outputs) > 100  # computes in fp16
    (feature,) = spec.description.input
    assert list(feature.type.multiArrayType.shape) == [1, 3, 64, 64]
    assert max(rank for _, rank in tensor_ranks(spec)) <= 4


def test_labels_and_preprocessing_in_metadata(tiny_fp16):
    path, _ = tiny_fp16
    meta = dict(spec_of(path).description.metadata.userDefined)
    assert json.loads(meta["restv2_edge.labels"]) == CIFAR10_CLASSES
    pre = json.loads(meta["restv2_edge.preprocessing"])
    assert pre["image_size"] == 64 and pre["crop_pct"] == 1.0
    assert meta["restv2_edge.precision"] == "fp16"


def test_fp32_export(tiny_artifact):
    path, manifest = tiny_artifact("coreml", "fp32")
    assert_passed(manifest.parity)
    spec = spec_of(path)
    fn = spec.mlProgram.functions["main"]
    types = {o.type.tensorType.dataType for op in fn.block_specializations[fn.opset].operations
             for o in op.outputs if o.type.WhichOneof("type") == "tensorType"}  # fmt: skip
    assert 10 not in types  # no FLOAT16 anywhere


@pytest.mark.parametrize(
    "target, opset, version",
    [("iOS16", "CoreML6", 7), ("ios18", "CoreML8", 9), ("macOS14", "CoreML7", 8)],
)
def test_deployment_target(tmp_path, tiny_model, photo_dir, target, opset, version):
    path, manifest = export(
        tiny_model, tmp_path / "a", photo_dir, 4, precision="fp16",
        options={"deployment_target": target},
    )  # fmt: skip
    assert_passed(manifest.parity)
    spec = spec_of(path)
    assert spec.mlProgram.functions["main"].opset == opset
    assert spec.specificationVersion == version


def test_unknown_deployment_target_is_one_line_error(tmp_path, tiny_checkpoint):
    result = run_cli(
        "export", "--target", "coreml", "--weights", tiny_checkpoint,
        "--deployment-target", "iOS99", "--output", tmp_path / "x",
    )  # fmt: skip
    assert_one_line_error(result, "deployment target", "iOS99")
    assert not (tmp_path / "x").exists()


def test_unknown_compute_units_is_one_line_error(tmp_path, tiny_checkpoint):
    result = run_cli(
        "export", "--target", "coreml", "--weights", tiny_checkpoint,
        "--compute-units", "GPU", "--output", tmp_path / "x",
    )  # fmt: skip
    assert_one_line_error(result, "compute units", "GPU", "CPU_AND_NE")
    assert not (tmp_path / "x").exists()


def test_rank_above_four_is_rejected(tmp_path):
    class FiveD(torch.nn.Module):
        def forward(self, x):
            return (x.reshape(1, 3, 2, 4, 8) * 2.0).sum(dim=2)

    converter = get_converter("coreml")
    example = torch.randn(1, 3, 8, 8)
    with pytest.raises(ExportError, match="rank 5"):
        converter.export(FiveD(), example, tmp_path, ExportRequest(precision="fp32"), print)


# (the --raw-input image classifier: tests/test_coreml_classifier.py)


# -- the interpreter catches conversion bugs -------------------------------------------------------


def _copy(artifact: Path, tmp_path: Path) -> Path:
    target = tmp_path / "broken"
    shutil.copytree(artifact, target)
    return target


def _parity(folder: Path, model, photo_dir) -> dict:
    manifest = Manifest.read(folder)
    runner = get_converter("coreml").load(folder, manifest)
    inputs = load_inputs(manifest.preprocessing(), photo_dir, 8)
    return measure(runner, artifact_model(model, "native", False), inputs, manifest.precision)


def _rewrite_spec(folder: Path, edit) -> None:
    from restv2_edge.converters.mil.package import spec_file

    path = spec_file(folder / "model.mlpackage")
    spec = read_spec(folder / "model.mlpackage")
    edit(spec)
    path.write_bytes(spec.SerializeToString())
    Manifest.read(folder).write(folder)  # re-hash, as a careless converter would


def test_swapped_pixel_shuffle_order_fails_parity(tmp_path, tiny_fp16, tiny_model, photo_dir):
    folder = _copy(tiny_fp16[0], tmp_path)
    assert _parity(folder, tiny_model, photo_dir)["status"] == "passed"  # control

    def swap(spec):
        fn = spec.mlProgram.functions["main"]
        swapped = 0
        for op in fn.block_specializations[fn.opset].operations:
            if op.type == "pixel_shuffle":  # same shapes, DCR instead of CRD channel order
                op.type = "depth_to_space"
                op.inputs["block_size"].CopyFrom(op.inputs["upscale_factor"])
                del op.inputs["upscale_factor"]
                swapped += 1
        assert swapped == 4

    _rewrite_spec(folder, swap)
    record = _parity(folder, tiny_model, photo_dir)
    assert record["status"] == "failed", record["metrics"]


def test_sign_flipped_weight_block_fails_parity(tmp_path, tiny_fp16, tiny_model, photo_dir):
    folder = _copy(tiny_fp16[0], tmp_path)
    spec = spec_of(folder)
    fn = spec.mlProgram.functions["main"]
    blobs = [
        (op.outputs[0].name, op.attributes["val"].blobFileValue.offset)
        for op in fn.block_specializations[fn.opset].operations
        if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue"
    ]
    name, offset = next((n, o) for n, o in blobs if "stage3_0_mlp_fc1_weight" in n)
    weights = next(folder.rglob("weight.bin"))
    data = bytearray(weights.read_bytes())
    sentinel, dtype, size, start = struct.unpack_from("<IIQQ", data, offset)
    assert (sentinel, dtype) == (0xDEADBEEF, 1)  # fp16 blob
    block = np.frombuffer(data, np.uint16, size // 8, start) ^ np.uint16(0x8000)  # first quarter
    data[start : start + block.nbytes] = block.tobytes()
    weights.write_bytes(bytes(data))
    Manifest.read(folder).write(folder)
    record = _parity(folder, tiny_model, photo_dir)
    assert record["status"] == "failed", (name, record["metrics"])


def test_unknown_op_in_artifact_is_one_line_error(tmp_path, tiny_fp16, tiny_checkpoint, photo_dir):
    folder = _copy(tiny_fp16[0], tmp_path)

    def rename(spec):
        fn = spec.mlProgram.functions["main"]
        op = next(o for o in fn.block_specializations[fn.opset].operations if o.type == "sigmoid")
        op.type = "sigmoid_hard"  # a real MIL op the interpreter does not implement

    _rewrite_spec(folder, rename)
    if FRAMEWORK:
        pytest.skip("Core ML itself runs here; the unknown-op error is the interpreter's")
    result = run_cli(
        "parity", folder, "--weights", tiny_checkpoint, "--data", photo_dir, "--limit", "2"
    )
    assert_one_line_error(result, "sigmoid_hard", "not supported")


# -- runner choice ---------------------------------------------------------------------------------


def test_no_runner_records_parity_not_run(tmp_path, tiny_model, photo_dir, monkeypatch):
    if coreml_framework_available():
        pytest.skip("the Core ML framework is available here")
    monkeypatch.setenv(RUNNER_ENV, "coreml")
    path, manifest = export(tiny_model, tmp_path / "a", photo_dir, precision="fp16")
    assert manifest.parity["status"] == "not run"
    assert "macOS" in manifest.parity["reason"]
    assert (path / "manifest.json").is_file()
    with pytest.raises(RunnerUnavailableError):
        get_converter("coreml").load(path, manifest)


def test_interpreter_can_be_forced(tiny_fp16, monkeypatch):
    monkeypatch.setenv(RUNNER_ENV, "interpreter")
    path, manifest = tiny_fp16
    runner = get_converter("coreml").load(path, manifest)
    assert runner.description == (
        "restv2-edge MIL reference interpreter (numpy, fp16 rounding; on the CPU: "
        "compute units ALL not exercised)"
    )


# -- compute units ---------------------------------------------------------------------------------


def test_compute_units_default_by_precision(tiny_fp16, tiny_artifact):
    assert tiny_fp16[1].export["compute_units"] == "ALL"
    assert tiny_artifact("coreml", "fp32")[1].export["compute_units"] == "CPU_ONLY"
    meta = dict(spec_of(tiny_fp16[0]).description.metadata.userDefined)
    assert meta["restv2_edge.compute_units"] == "ALL"


def test_devices_are_the_compute_units(tiny_fp16, monkeypatch):
    monkeypatch.setenv(RUNNER_ENV, "interpreter")
    path, manifest = tiny_fp16
    converter = get_converter("coreml")
    assert converter.available_devices(manifest) == ["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"]
    runner = converter.open_runner(path, manifest, device="cpu_and_gpu")
    assert runner.device == "CPU_AND_GPU"
    assert "compute units CPU_AND_GPU not exercised" in runner.description
    assert converter.open_runner(path, manifest, device="CPU").device == "CPU_ONLY"
    with pytest.raises(RunnerUnavailableError, match="available: ALL, CPU_ONLY"):
        converter.open_runner(path, manifest, device="NPU")


def test_unknown_compute_units_are_refused():
    request = ExportRequest(options={"compute_units": "GPU_ONLY"})
    with pytest.raises(ExportError, match="compute units 'GPU_ONLY'; choose ALL, CPU_ONLY"):
        get_converter("coreml").check_request(request)


# -- batch -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dynamic_fp32(tiny_model, photo_dir, tmp_path_factory):
    """The tiny model, fp32, enumerated dynamic batch, compute units CPU_AND_NE."""
    out = tmp_path_factory.mktemp("dynamic") / "tiny-dynamic"
    return export(
        tiny_model, out, photo_dir, 4, precision="fp32", dynamic_batch=True,
        options={"compute_units": "CPU_AND_NE"},
    )  # fmt: skip


def test_dynamic_batch_is_enumerated(dynamic_fp32):
    path, manifest = dynamic_fp32
    assert_passed(manifest.parity)
    assert manifest.dynamic_batch and manifest.input["shape"] == [1, 3, 64, 64]
    assert manifest.export["batch_sizes"] == [1, 2, 4, 8, 16, 32, 64]
    assert manifest.export["compute_units"] == "CPU_AND_NE"
    (feature,) = read_package(path / "model.mlpackage").inputs
    assert feature.batch_sizes == (1, 2, 4, 8, 16, 32, 64)
    assert feature.shape == (1, 3, 64, 64)  # the default shape: the nominal batch


def test_dynamic_batch_runs_at_1_and_3(dynamic_fp32, tiny_checkpoint, photo_dir):
    """Batch 1 and 3 through the runner (3 is padded to the enumerated 4) against the
    official-structure model; the program itself refuses a batch Core ML would refuse."""
    path, manifest = dynamic_fp32
    runner = get_converter("coreml").load(path, manifest)
    assert runner.dynamic_batch
    x = load_inputs(manifest.preprocessing(), photo_dir, 3).images
    want = oracle_logits(oracle_model(tiny_checkpoint, **TINY_CONFIG), x)
    for count in (1, 3):
        np.testing.assert_allclose(runner(x[:count]), want[:count], atol=1e-3, rtol=0)
    program = Program.load(path / "model.mlpackage")
    four = np.concatenate([x, x[:1]])
    np.testing.assert_allclose(program.run({"input": four})["logits"][:3], want, atol=1e-3)
    with pytest.raises(MILError, match="not one of the model's enumerated shapes"):
        program.run({"input": x})


@pytest.mark.slow
def test_static_batch(tiny_model, tiny_checkpoint, photo_dir, tmp_path):
    path, manifest = export(tiny_model, tmp_path / "b2", photo_dir, 5, precision="fp32",
                            batch_size=2)  # fmt: skip
    assert_passed(manifest.parity)
    assert manifest.input["shape"][0] == manifest.output["shape"][0] == 2
    (feature,) = read_package(path / "model.mlpackage").inputs
    assert feature.shape == (2, 3, 64, 64) and feature.batch_sizes == (2,)
    x = load_inputs(manifest.preprocessing(), photo_dir, 3).images
    want = oracle_logits(oracle_model(tiny_checkpoint, **TINY_CONFIG), x)
    runner = get_converter("coreml").load(path, manifest)  # pads 3 to 2 + 2
    np.testing.assert_allclose(runner(x), want, atol=1e-3, rtol=0)


@pytest.mark.skipif(not coreml_framework_available(), reason="needs the Core ML framework (macOS)")
def test_interpreter_agrees_with_core_ml(tiny_fp16, photo_dir, monkeypatch):
    path, manifest = tiny_fp16
    x = load_inputs(manifest.preprocessing(), photo_dir, 8).images
    monkeypatch.setenv(RUNNER_ENV, "coreml")
    framework = get_converter("coreml").load(path, manifest)
    assert "MLModel" in framework.description
    monkeypatch.setenv(RUNNER_ENV, "interpreter")
    interpreter = get_converter("coreml").load(path, manifest)
    metrics = compare(framework(x), interpreter(x))
    assert metrics["cosine_min"] >= 0.999 and metrics["top1_agreement"] == 1.0, metrics


# -- int8 ------------------------------------------------------------------------------------------


def test_int8_weight_only(tmp_path, tiny_model, photo_dir):
    _, manifest = export(
        tiny_model, tmp_path / "a", photo_dir, precision="int8",
        quantization={"weights_only": True},
    )  # fmt: skip
    assert_passed(manifest.parity)
    assert manifest.quantization["scheme"] == "weights"
    assert manifest.export["op_types"].get("constexpr_affine_dequantize", 0) > 10


def _pt2e(module, example):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True)
    )
    prepared = prepare_pt2e(torch.export.export(module, (example,)).module(), quantizer)
    with torch.no_grad():
        for _ in range(4):
            prepared(torch.randn(example.shape))
    return convert_pt2e(prepared)


def test_w8a8_scalar_constant_is_folded(tmp_path):
    """coremltools 9 folds a dequantized scalar constant in wrapping int8 arithmetic.

    The attention q-scale (x * 0.25) is such a constant under XNNPACKQuantizer; the interpreter
    exposed it (the scale became -0.00098). The converter folds those scalars to floats first.
    """
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 16), _Scale(0.25), torch.nn.Linear(16, 8))
    example = torch.randn(2, 16)

    def core_ml(graph, name):
        program = torch.export.export(graph, (example,)).run_decompositions({})
        model = ct.convert(
            program, inputs=[ct.TensorType(name="x", shape=(2, 16), dtype=np.float32)],
            convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
            compute_precision=ct.precision.FLOAT32,
        )  # fmt: skip
        model.save(str(tmp_path / name))
        loaded = Program.load(tmp_path / name)
        return loaded.run({"x": example.numpy()})[loaded.output_names[0]]

    quantized = _pt2e(module, example)
    with torch.no_grad():
        want = quantized(example).numpy()
    if ct.__version__ == "9.0":  # the bug as found; later versions may have fixed it
        unfolded = core_ml(quantized, "raw.mlpackage")
        assert compare(want, unfolded)["cosine_min"] < 0.9
    assert fold_scalar_dequantize(quantized) == 1
    with torch.no_grad():
        np.testing.assert_allclose(quantized(example).numpy(), want, atol=1e-6)
    folded = core_ml(quantized, "folded.mlpackage")
    assert compare(want, folded)["cosine_min"] > 0.999


class _Scale(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x):
        return x * self.value


# -- the real variant T through the CLI (fp32: slow, pytest -m slow tests/test_coreml.py) ---------


@pytest.fixture(scope="module")
def t_fp16(tmp_path_factory, t_checkpoint, photo_dir):
    out = tmp_path_factory.mktemp("t") / "t-fp16"
    result = run_cli(
        "export", "--target", "coreml", "--variant", "T", "--weights", t_checkpoint,
        "--output", out, "--parity-data", photo_dir, "--parity-limit", "8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def test_t_fp16_export_passes_parity(t_fp16):
    manifest = Manifest.read(t_fp16)
    assert manifest.precision == "fp16" and manifest.variant == "T"
    assert_passed(manifest.parity)
    assert manifest.parity["metrics"]["images"] == 8
    assert manifest.parity["metrics"]["cosine_min"] >= 0.9995


def test_t_parity_command(t_fp16, t_checkpoint, photo_dir):
    result = run_cli(
        "parity", t_fp16, "--weights", t_checkpoint, "--data", photo_dir, "--limit", "4"
    )
    assert result.returncode == 0, result.stderr
    assert "parity" in result.stderr and "passed" in result.stderr


@pytest.mark.slow
def test_t_fp32_export_passes_parity(tmp_path, t_checkpoint, photo_dir):
    out = tmp_path / "t-fp32"
    result = run_cli(
        "export", "--target", "coreml", "--variant", "T", "--weights", t_checkpoint,
        "--precision", "fp32", "--output", out, "--parity-data", photo_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parity = Manifest.read(out).parity
    assert_passed(parity)
    assert parity["metrics"]["max_abs_diff"] <= 1e-3 and parity["metrics"]["top1_agreement"] == 1
