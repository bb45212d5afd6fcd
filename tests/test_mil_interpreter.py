"""The MIL reference interpreter, op by op, against independent references.

Each test builds a small ML program with coremltools' MIL builder (no graph passes, so the op
under test is what gets saved), saves it as an .mlpackage, runs it through the interpreter and
compares with a reference written from the MIL op definitions (numpy, or PyTorch where the
semantics are the same). On macOS with the Core ML framework the same programs also run through
MLModel.predict (test_matches_core_ml_framework).
"""

from __future__ import annotations

import platform
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ct = pytest.importorskip("coremltools")

from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402
from restv2_edge.converters.mil import (  # noqa: E402
    MILError,
    Program,
    UnsupportedOpError,
    read_spec,
    tensor_ranks,
)
from restv2_edge.converters.mil.blob import SENTINEL  # noqa: E402

from restv2_edge.errors import ArtifactError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # coremltools internals

RNG = np.random.default_rng(0)


def save(tmp_path, program, target=None, name="p") -> str:
    """Convert a MIL builder program with no graph passes and save it; returns the path."""
    model = ct.convert(
        program,
        convert_to="mlprogram",
        pass_pipeline=ct.PassPipeline.EMPTY,
        minimum_deployment_target=target or ct.target.iOS17,
    )
    path = tmp_path / f"{name}.mlpackage"
    model.save(str(path))
    return str(path)


def run_one(tmp_path, fn, x, *, op, target=None, fp16=True, dtype=types.fp32):
    """Build ``fn`` over one input shaped like ``x``, check ``op`` is in it, run it."""
    target = target or ct.target.iOS17
    spec = [mb.TensorSpec(shape=x.shape, dtype=dtype)]
    program = mb.program(input_specs=spec, opset_version=target)(fn)
    loaded = Program.load(save(tmp_path, program, target))
    assert op in loaded.op_types(), loaded.op_types()
    (name,) = loaded.inputs
    outputs = loaded.run({name: x}, fp16=fp16)
    return outputs[loaded.output_names[0]]


def torch_ref(fn, *arrays):
    with torch.no_grad():
        return fn(*[torch.from_numpy(np.asarray(a, np.float32)) for a in arrays]).numpy()


# -- convolution -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pad_type, pad, torch_pad, strides, dilations, groups, cout",
    [
        # MIL pad = [top, bottom, left, right]; F.pad = (left, right, top, bottom)
        ("custom", [1, 2, 0, 3], (0, 3, 1, 2), [2, 1], [1, 2], 1, 6),
        ("valid", None, (0, 0, 0, 0), [1, 1], [1, 1], 2, 6),
        # kernel 4, stride 1, size 9: total padding 3; "same" puts the extra row/col after
        ("same", None, (1, 2, 1, 2), [1, 1], [1, 1], 1, 5),
        # ... and "same_lower" before (top/left)
        ("same_lower", None, (2, 1, 2, 1), [1, 1], [1, 1], 1, 5),
        # depthwise with channel multiplier 3 (the V-upsampling conv's shape)
        ("custom", [1, 1, 1, 1], (1, 1, 1, 1), [1, 1], [1, 1], 4, 12),
        # strided depthwise, kernel larger than stride (the K/V reduction conv's shape)
        ("custom", [2, 2, 2, 2], (2, 2, 2, 2), [4, 4], [1, 1], 4, 4),
    ],
)
def test_conv(tmp_path, pad_type, pad, torch_pad, strides, dilations, groups, cout):
    cin = 4
    kernel = 5 if strides == [4, 4] else (4 if pad_type.startswith("same") else 3)
    x = RNG.standard_normal((2, cin, 9, 9)).astype(np.float32)
    w = RNG.standard_normal((cout, cin // groups, kernel, kernel)).astype(np.float32)
    b = RNG.standard_normal(cout).astype(np.float32)

    def fn(x):
        kwargs = {"pad": pad} if pad is not None else {}
        return mb.conv(
            x=x, weight=w, bias=b, pad_type=pad_type, strides=strides, dilations=dilations,
            groups=groups, **kwargs,
        )  # fmt: skip

    got = run_one(tmp_path, fn, x, op="conv")
    want = torch_ref(
        lambda x, w, b: F.conv2d(
            F.pad(x, torch_pad), w, b, stride=strides, dilation=dilations, groups=groups
        ),
        x, w, b,
    )  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- normalization, activations, linear algebra ----------------------------------------------------


def test_layer_norm_uses_mil_epsilon_and_population_variance(tmp_path):
    x = RNG.standard_normal((2, 5, 6)).astype(np.float32)
    gamma = RNG.standard_normal((5, 6)).astype(np.float32)
    beta = RNG.standard_normal((5, 6)).astype(np.float32)
    got = run_one(
        tmp_path,
        lambda x: mb.layer_norm(x=x, axes=[1, 2], gamma=gamma, beta=beta, epsilon=0.5),
        x,
        op="layer_norm",
    )
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got, gamma * (x - mean) / np.sqrt(var + 0.5) + beta, atol=1e-5)


def test_batch_norm(tmp_path):
    x = RNG.standard_normal((1, 3, 4, 4)).astype(np.float32)
    mean, var, gamma, beta = (RNG.random(3).astype(np.float32) + 0.5 for _ in range(4))
    got = run_one(
        tmp_path,
        lambda x: mb.batch_norm(x=x, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=0.1),
        x,
        op="batch_norm",
    )
    want = torch_ref(lambda x: F.batch_norm(x, *map(torch.from_numpy, (mean, var, gamma, beta)),
                                            eps=0.1), x)  # fmt: skip
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(
    "mode, reference",
    [
        ("EXACT", lambda x: F.gelu(x)),
        ("TANH_APPROXIMATION", lambda x: F.gelu(x, approximate="tanh")),
        ("SIGMOID_APPROXIMATION", lambda x: x * torch.sigmoid(1.702 * x)),
    ],
)
def test_gelu_modes(tmp_path, mode, reference):
    x = np.linspace(-6, 6, 97, dtype=np.float32).reshape(1, 97)
    got = run_one(tmp_path, lambda x: mb.gelu(x=x, mode=mode), x, op="gelu")
    np.testing.assert_allclose(got, torch_ref(reference, x), atol=2e-6)


def test_softmax_sigmoid_relu(tmp_path):
    x = (RNG.standard_normal((2, 3, 4)) * 4).astype(np.float32)

    def fn(x):
        return mb.add(x=mb.softmax(x=x, axis=1), y=mb.mul(x=mb.sigmoid(x=x), y=mb.relu(x=x)))

    got = run_one(tmp_path, fn, x, op="softmax")
    want = torch_ref(lambda x: torch.softmax(x, 1) + torch.sigmoid(x) * torch.relu(x), x)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_linear_matmul_reduce_mean(tmp_path):
    x = RNG.standard_normal((2, 3, 5)).astype(np.float32)
    w = RNG.standard_normal((4, 5)).astype(np.float32)
    b = RNG.standard_normal(4).astype(np.float32)
    y = RNG.standard_normal((1, 4, 4)).astype(np.float32)

    def fn(x):
        h = mb.linear(x=x, weight=w, bias=b)  # (2, 3, 4)
        h = mb.matmul(x=h, y=y, transpose_y=True)  # broadcast batch
        return mb.reduce_mean(x=h, axes=[-1], keep_dims=True)

    got = run_one(tmp_path, fn, x, op="matmul")
    want = ((x @ w.T + b) @ np.swapaxes(y, -1, -2)).mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- layout ops ------------------------------------------------------------------------------------


def test_pixel_shuffle_is_torch_order(tmp_path):
    x = RNG.standard_normal((1, 12, 2, 3)).astype(np.float32)
    got = run_one(
        tmp_path, lambda x: mb.pixel_shuffle(x=x, upscale_factor=2), x, op="pixel_shuffle"
    )
    np.testing.assert_array_equal(got, torch_ref(lambda x: F.pixel_shuffle(x, 2), x))


def test_depth_to_space_is_dcr_order(tmp_path):
    """depth_to_space (TensorFlow's DCR order) differs from pixel_shuffle (CRD)."""
    b, c, h, w = 2, 3, 2, 2
    x = RNG.standard_normal((1, b * b * c, h, w)).astype(np.float32)
    got = run_one(tmp_path, lambda x: mb.depth_to_space(x=x, block_size=b), x, op="depth_to_space")
    want = np.empty((1, c, h * b, w * b), np.float32)
    for ch in range(c):
        for i in range(b):
            for j in range(b):
                want[0, ch, i::b, j::b] = x[0, (i * b + j) * c + ch]
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, torch_ref(lambda x: F.pixel_shuffle(x, b), x))


def test_reshape_transpose_slice_concat(tmp_path):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)

    def fn(x):
        r = mb.reshape(x=x, shape=[0, -1, 2])  # iOS17: 0 keeps x's matching dim
        t = mb.transpose(x=r, perm=[-1, 0, 1])  # (2, 2, 6)
        s = mb.slice_by_index(
            x=t, begin=[0, 1, 5], end=[1, 2, 0], stride=[1, 1, -2],
            end_mask=[False, False, True], squeeze_mask=[True, False, False],
        )  # fmt: skip
        return mb.concat(values=[s, s], axis=0, interleave=True)

    got = run_one(tmp_path, fn, x, op="slice_by_index")
    s = x.reshape(2, 6, 2).transpose(2, 0, 1)[0, 1:2, 5::-2]
    want = np.stack([s, s], axis=1).reshape(2, 3)
    np.testing.assert_array_equal(got, want)


# -- quantization ----------------------------------------------------------------------------------


def test_quantize_dequantize_per_channel(tmp_path):
    # values chosen away from rounding ties; some saturate
    x = (RNG.integers(-300, 300, (1, 3, 2, 5)) + 0.3).astype(np.float32) / 100
    scale = np.array([0.01, 0.02, 0.04], np.float32)
    zero = np.array([3, -5, 0], np.int8)

    def fn(x):
        q = mb.quantize(input=x, scale=scale, zero_point=zero, output_dtype="int8", axis=1)
        return mb.dequantize(input=q, scale=scale, zero_point=zero, axis=1)

    got = run_one(tmp_path, fn, x, op="quantize")
    s, z = scale.reshape(1, 3, 1, 1), zero.reshape(1, 3, 1, 1).astype(np.float32)
    q = np.clip(np.round(x / s) + z, -128, 127)
    np.testing.assert_allclose(got, s * (q - z), rtol=1e-6)
    assert (q == 127).any() and (q == -128).any()


def test_quantize_uint8_without_zero_point(tmp_path):
    x = np.array([[-1.0, 0.013, 0.5, 3.0]], np.float32)
    got = run_one(
        tmp_path,
        lambda x: mb.dequantize(
            input=mb.quantize(input=x, scale=np.float32(0.01), output_dtype="uint8"),
            scale=np.float32(0.01),
        ),
        x,
        op="dequantize",
    )
    np.testing.assert_allclose(got, [[0.0, 0.01, 0.5, 2.55]], rtol=1e-6)


def test_constexpr_affine_dequantize(tmp_path):
    data = RNG.integers(-128, 128, (3, 4)).astype(np.int8)
    scale = np.array([0.5, 0.25, 2.0], np.float32)
    zero = np.array([1, 0, -2], np.int8)
    x = np.zeros((3, 4), np.float32)

    def fn(x):
        w = mb.constexpr_affine_dequantize(
            quantized_data=data, zero_point=zero, scale=scale, axis=0
        )
        return mb.add(x=x, y=w)

    got = run_one(tmp_path, fn, x, op="add", target=ct.target.iOS16)
    want = scale[:, None] * (data.astype(np.float32) - zero[:, None])
    np.testing.assert_allclose(got, want)


def test_constexpr_blockwise_shift_scale(tmp_path):
    data = RNG.integers(-128, 128, (4, 6)).astype(np.int8)
    scale = RNG.random((2, 3)).astype(np.float32)
    offset = RNG.integers(-3, 3, (2, 3)).astype(np.int8)
    x = np.zeros((4, 6), np.float32)

    def fn(x):
        w = mb.constexpr_blockwise_shift_scale(data=data, scale=scale, offset=offset)
        return mb.add(x=x, y=w)

    got = run_one(tmp_path, fn, x, op="add", target=ct.target.iOS18)
    # block sizes (4/2, 6/3) = (2, 2)
    want = np.repeat(np.repeat(scale, 2, 0), 2, 1) * (
        data - np.repeat(np.repeat(offset, 2, 0), 2, 1).astype(np.float32)
    )
    np.testing.assert_allclose(got, want, rtol=1e-6)


# -- fp16 semantics --------------------------------------------------------------------------------


def test_fp16_mode_rounds_after_every_op(tmp_path):
    x = (RNG.standard_normal((1, 64)) * 3).astype(np.float16)
    third = np.float16(1 / 3)

    def fn(x):
        return mb.add(x=mb.mul(x=x, y=third), y=x)

    args = dict(op="mul", dtype=types.fp16)
    got16 = run_one(tmp_path, fn, x.astype(np.float32), **args)
    got32 = run_one(tmp_path, fn, x.astype(np.float32), fp16=False, **args)
    want16 = (x * third) + x  # numpy float16 arithmetic rounds after each op
    np.testing.assert_array_equal(got16, want16.astype(np.float32))
    want32 = x.astype(np.float32) * np.float32(third) + x.astype(np.float32)
    np.testing.assert_allclose(got32, want32, rtol=1e-7)
    assert not np.array_equal(got16, got32)


def test_fp16_mode_overflows_like_fp16(tmp_path):
    x = np.array([[300.0, -2.0]], np.float32)
    big = np.float16(300.0)
    got16 = run_one(tmp_path, lambda x: mb.mul(x=x, y=big), x, op="mul", dtype=types.fp16)
    got32 = run_one(
        tmp_path, lambda x: mb.mul(x=x, y=big), x, op="mul", dtype=types.fp16, fp16=False
    )
    assert np.isposinf(got16[0, 0]) and got16[0, 1] == -600.0
    assert got32[0, 0] == 90000.0


# -- package reading and errors --------------------------------------------------------------------


def _conv_package(tmp_path):
    w = RNG.standard_normal((8, 2, 3, 3)).astype(np.float16)
    spec = [mb.TensorSpec(shape=(1, 2, 5, 5), dtype=types.fp16)]

    def fn(x):
        return mb.conv(x=x, weight=w, pad_type="valid")

    program = mb.program(input_specs=spec, opset_version=ct.target.iOS17)(fn)
    return save(tmp_path, program), w


def test_weights_come_from_the_blob_file(tmp_path):
    path, w = _conv_package(tmp_path)
    program = Program.load(path)
    blobs = [v for v in program.constants.values() if getattr(v, "shape", ()) == w.shape]
    assert len(blobs) == 1
    np.testing.assert_array_equal(blobs[0], w.astype(np.float32))
    assert dict(tensor_ranks(read_spec(path)))["x"] == 4


def test_corrupt_weight_file_is_an_error(tmp_path):
    path, _ = _conv_package(tmp_path)
    weights = next((tmp_path / "p.mlpackage").rglob("weight.bin"))
    data = bytearray(weights.read_bytes())
    offset = 64  # the first blob's metadata
    assert struct.unpack_from("<I", data, offset)[0] == SENTINEL
    struct.pack_into("<I", data, offset, 0)
    weights.write_bytes(bytes(data))
    with pytest.raises(MILError, match="sentinel"):
        Program.load(path)


def test_unknown_op_is_a_clear_error(tmp_path):
    spec = [mb.TensorSpec(shape=(2, 3))]
    program = mb.program(input_specs=spec, opset_version=ct.target.iOS17)(lambda x: mb.argsort(x=x))
    path = save(tmp_path, program)
    with pytest.raises(UnsupportedOpError, match="'argsort'") as info:
        Program.load(path)
    assert isinstance(info.value, ArtifactError)
    assert info.value.op_type == "argsort"


def test_unknown_op_input_is_an_error_not_ignored(tmp_path):
    path, _ = _conv_package(tmp_path)
    spec_path = next((tmp_path / "p.mlpackage").rglob("model.mlmodel"))
    spec = read_spec(path)
    fn = spec.mlProgram.functions["main"]
    conv = next(op for op in fn.block_specializations[fn.opset].operations if op.type == "conv")
    conv.inputs["output_shape"].CopyFrom(conv.inputs["strides"])  # conv_transpose's input
    spec_path.write_bytes(spec.SerializeToString())
    with pytest.raises(UnsupportedOpError, match=r"unknown input.*output_shape"):
        Program.load(path)


# -- classifier outputs and flexible batches ----------------------------------------------------


def _convert_torch(tmp_path, module, shape, name, dynamic=None, **kwargs) -> str:
    """torch.export + ct.convert (fp32) of a small (N, 4) module; the saved package's path.
    A dynamic batch is traced at 2 (torch.export specializes a dimension traced at 1)."""
    example = torch.from_numpy(RNG.standard_normal((2 if dynamic else 1, 4)).astype(np.float32))
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=dynamic)
    model = ct.convert(
        program.run_decompositions({}),
        inputs=[ct.TensorType(name="x", shape=shape, dtype=np.float32)],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT32,
        **kwargs,
    )
    path = tmp_path / f"{name}.mlpackage"
    model.save(str(path))
    return str(path)


class _Softmax(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.softmax(self.fc(x), dim=-1)


def test_classify_gives_the_label_and_the_probability_dictionary(tmp_path):
    """MIL classify: label of the largest probability, {label: probability} as doubles."""
    labels = ["cat", "dog", "ship"]
    config = ct.ClassifierConfig(labels)
    path = _convert_torch(tmp_path, _Softmax(), (1, 4), "c", classifier_config=config)
    program = Program.load(path)
    assert "classify" in program.op_types()
    for _ in range(3):
        x = RNG.standard_normal((1, 4)).astype(np.float32) * 3
        out = program.run({"x": x}, fp16=False)
        want = torch_ref(_Softmax(), x)[0]
        got = out["classLabel_probs"]
        assert list(got) == labels and all(isinstance(v, float) for v in got.values())
        np.testing.assert_allclose([got[k] for k in labels], want, rtol=1e-5, atol=1e-6)
        assert out["classLabel"] == labels[int(np.argmax(want))]


def test_enumerated_batch_runs_at_listed_sizes_only(tmp_path):
    """An enumerated batch leaves the program's batch unknown; the model description lists the
    sizes, and the interpreter refuses another one, as Core ML does."""
    shapes = ct.EnumeratedShapes(shapes=[(1, 4), (4, 4)], default=(1, 4))
    batch = {0: torch.export.Dim("batch", min=1, max=4)}
    path = _convert_torch(tmp_path, _Softmax(), shapes, "e", dynamic=({**batch},))
    program = Program.load(path)
    assert program.inputs["x"].shape == (None, 4)
    for count in (1, 4):
        x = RNG.standard_normal((count, 4)).astype(np.float32)
        (out,) = program.run({"x": x}, fp16=False).values()
        np.testing.assert_allclose(out, torch_ref(_Softmax(), x), rtol=1e-5, atol=1e-6)
    with pytest.raises(MILError, match="enumerated shapes"):
        program.run({"x": np.zeros((3, 4), np.float32)})


def test_ranged_batch_runs_inside_its_bounds(tmp_path):
    shape = ct.Shape((ct.RangeDim(1, 5, default=1), 4))
    batch = {0: torch.export.Dim("batch", min=1, max=5)}
    path = _convert_torch(tmp_path, _Softmax(), shape, "r", dynamic=({**batch},))
    program = Program.load(path)
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    (out,) = program.run({"x": x}, fp16=False).values()
    np.testing.assert_allclose(out, torch_ref(_Softmax(), x), rtol=1e-5, atol=1e-6)
    with pytest.raises(MILError, match="outside"):
        program.run({"x": np.zeros((6, 4), np.float32)})


# -- the real framework (macOS only) ---------------------------------------------------------------


def _framework() -> bool:
    from restv2_edge.converters.coreml import coreml_framework_available

    return coreml_framework_available()


@pytest.mark.skipif(platform.system() != "Darwin", reason="needs the Core ML framework (macOS)")
def test_matches_core_ml_framework(tmp_path):
    """The interpreter agrees with Core ML itself on a program of the ops restv2-edge uses."""
    if not _framework():
        pytest.fail("macOS but coremltools has no Core ML bindings (libcoremlpython)")
    x = RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)
    w = (RNG.standard_normal((16, 1, 3, 3)) * 0.3).astype(np.float32)
    g = RNG.standard_normal(8).astype(np.float32)

    def fn(x):
        h = mb.conv(x=x, weight=w, pad_type="same", groups=4)  # (1, 16, 8, 8)
        h = mb.pixel_shuffle(x=h, upscale_factor=2)  # (1, 4, 16, 16)
        h = mb.reshape(x=h, shape=[1, 4, 32, 8])
        h = mb.layer_norm(x=h, axes=[-1], gamma=g, epsilon=1e-6)
        h = mb.gelu(x=h, mode="EXACT")
        return mb.softmax(x=mb.matmul(x=h, y=h, transpose_y=True), axis=-1)

    spec = [mb.TensorSpec(shape=x.shape)]
    program = mb.program(input_specs=spec, opset_version=ct.target.iOS17)(fn)
    path = save(tmp_path, program)
    ours = Program.load(path).run({"x": x}, fp16=False)
    model = ct.models.MLModel(path, compute_units=ct.ComputeUnit.CPU_ONLY)
    (name,) = ours
    theirs = model.predict({"x": x})[name]
    np.testing.assert_allclose(ours[name], theirs, atol=1e-4)
