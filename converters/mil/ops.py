"""numpy implementations of MIL ops, following the coremltools MIL op reference.

Each op takes a ``Call`` (its bound inputs and declared output types) and returns one array
(or a tuple for multi-output ops). Float inputs arrive as float32 arrays; the interpreter
rounds outputs typed fp16 afterwards, so ops compute in float32 (float64 where cheap) like an
fp32 accumulator would. One module because the ops are one table (``OPS``) of small
functions sharing argument helpers; splitting it by op family would scatter that table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided
from restv2_edge.converters.mil.errors import MILError, UnsupportedOpError
from restv2_edge.converters.mil.types import TensorType

_MISSING = object()


@dataclass
class Call:
    """One op invocation: its name, type, bound inputs and declared output types."""

    type: str
    name: str
    args: dict[str, Any]
    outputs: list[TensorType]

    def __getitem__(self, key: str) -> Any:
        if key not in self.args:
            raise MILError(f"MIL op {self.type} ({self.name!r}) lacks its input {key!r}")
        return self.args[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.args.get(key, default)

    def scalar(self, key: str, default: Any = _MISSING) -> Any:
        value = self.args.get(key, default)
        if value is _MISSING:
            raise MILError(f"MIL op {self.type} ({self.name!r}) lacks its input {key!r}")
        return value.item() if isinstance(value, np.ndarray) else value

    def ints(self, key: str, default: Any = _MISSING) -> list[int]:
        value = self.args.get(key, default)
        if value is _MISSING:
            raise MILError(f"MIL op {self.type} ({self.name!r}) lacks its input {key!r}")
        return [int(v) for v in np.asarray(value).reshape(-1)]

    def unsupported(self, detail: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.type, self.name, detail)


OpFunction = Callable[[Call], Any]
OPS: dict[str, OpFunction] = {}
#: op type -> the inputs it understands; any other input is an error, never ignored
ARGS: dict[str, frozenset[str]] = {}


def op(*names: str, args: str = "x") -> Callable[[OpFunction], OpFunction]:
    def register(fn: OpFunction) -> OpFunction:
        for name in names:
            OPS[name] = fn
            ARGS[name] = frozenset(args.split())
        return fn

    return register


def _f32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


# -- elementwise ------------------------------------------------------------------------------

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
}


@op(*_BINARY, args="x y")
def binary(c: Call) -> np.ndarray:
    x, y = np.asarray(c["x"]), np.asarray(c["y"])
    if c.type == "real_div" and (x.dtype.kind in "iu" and y.dtype.kind in "iu"):
        return np.floor_divide(x, y)
    return _BINARY[c.type](x, y)


@op("relu")
def relu(c: Call) -> np.ndarray:
    return np.maximum(c["x"], 0)


@op("relu6")
def relu6(c: Call) -> np.ndarray:
    return np.clip(c["x"], 0, 6)


@op("sigmoid")
def sigmoid(c: Call) -> np.ndarray:
    return _sigmoid(c["x"])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = _f32(x)
    return np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * x))


@op("silu")
def silu(c: Call) -> np.ndarray:
    x = _f32(c["x"])
    return x * _sigmoid(x)


@op("tanh")
def tanh(c: Call) -> np.ndarray:
    return np.tanh(_f32(c["x"]))


@op("exp")
def exp(c: Call) -> np.ndarray:
    return np.exp(_f32(c["x"]))


@op("sqrt")
def sqrt(c: Call) -> np.ndarray:
    return np.sqrt(_f32(c["x"]))


@op("rsqrt", args="x epsilon")
def rsqrt(c: Call) -> np.ndarray:
    # MIL: 1 / sqrt(x + epsilon), epsilon default 1e-12
    return (1.0 / np.sqrt(_f32(c["x"]) + np.float32(c.scalar("epsilon", 1e-12)))).astype(np.float32)


@op("inverse", args="x epsilon")
def inverse(c: Call) -> np.ndarray:
    # MIL: 1 / (x + epsilon), epsilon default 1e-4
    return (1.0 / (_f32(c["x"]) + np.float32(c.scalar("epsilon", 1e-4)))).astype(np.float32)


@op("abs")
def absolute(c: Call) -> np.ndarray:
    return np.abs(c["x"])


@op("square")
def square(c: Call) -> np.ndarray:
    x = _f32(c["x"])
    return x * x


@op("clip", args="x alpha beta")
def clip(c: Call) -> np.ndarray:
    return np.clip(_f32(c["x"]), c.scalar("alpha"), c.scalar("beta"))


@op("erf")
def erf_op(c: Call) -> np.ndarray:
    return erf(c["x"]).astype(np.float32)


def erf(x: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), computed in ``dtype``."""
    x = np.asarray(x, dtype)
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1.0 - poly * np.exp(-a * a))


@op("gelu", args="x mode")
def gelu(c: Call) -> np.ndarray:
    x = _f32(c["x"])
    mode = c.scalar("mode", "EXACT")
    if mode == "EXACT":  # float32 is enough next to the erf approximation's 1.5e-7
        y = 0.5 * x * (1.0 + erf(x * np.float32(1 / np.sqrt(2.0)), np.float32))
    elif mode == "TANH_APPROXIMATION":
        x64 = x.astype(np.float64)
        y = 0.5 * x64 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x64 + 0.044715 * x64**3)))
    elif mode == "SIGMOID_APPROXIMATION":
        y = x * _sigmoid(1.702 * x)
    else:
        raise c.unsupported(f"gelu mode {mode}")
    return y.astype(np.float32)


@op("softmax", args="x axis")
def softmax(c: Call) -> np.ndarray:
    x = _f32(c["x"])
    axis = int(c.scalar("axis", -1))
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


@op("cast", args="x dtype")
def cast(c: Call) -> np.ndarray:
    target = c.scalar("dtype")
    out = c.outputs[0].numpy
    if target not in ("fp16", "fp32", "int32", "bool", "int8", "uint8", "int16", "uint16"):
        raise c.unsupported(f"cast to {target}")
    x = np.asarray(c["x"])
    if target in ("int32", "int8", "uint8", "int16", "uint16") and x.dtype.kind == "f":
        x = np.trunc(x)
    return x.astype(out)


# -- reductions ------------------------------------------------------------------------------

_REDUCE = {
    "reduce_mean": np.mean,
    "reduce_sum": np.sum,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
}


@op(*_REDUCE, args="x axes keep_dims")
def reduce(c: Call) -> np.ndarray:
    x = np.asarray(c["x"])
    axes = c.get("axes")
    axis = None if axes is None else tuple(int(a) for a in np.asarray(axes).reshape(-1))
    keep = bool(c.scalar("keep_dims", False))
    if x.dtype.kind == "f":
        x = x.astype(np.float64)
    return np.asarray(_REDUCE[c.type](x, axis=axis, keepdims=keep)).astype(c.outputs[0].numpy)


# -- linear algebra ------------------------------------------------------------------------------


@op("linear", args="x weight bias")
def linear(c: Call) -> np.ndarray:
    x, weight = _f32(c["x"]), _f32(c["weight"])
    out = x.reshape(-1, x.shape[-1]) @ weight.T
    bias = c.get("bias")
    if bias is not None:
        out += _f32(bias)
    return out.reshape(*x.shape[:-1], weight.shape[0])


@op("matmul", args="x y transpose_x transpose_y")
def matmul(c: Call) -> np.ndarray:
    x, y = _f32(c["x"]), _f32(c["y"])
    if c.scalar("transpose_x", False) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if c.scalar("transpose_y", False) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


# -- normalization ----------------------------------------------------------------------------


@op("layer_norm", args="x axes gamma beta epsilon")
def layer_norm(c: Call) -> np.ndarray:
    x = np.asarray(c["x"], np.float64)
    axes = c.get("axes")
    axis = tuple(range(x.ndim)) if axes is None else tuple(int(a) for a in np.ravel(axes))
    eps = float(c.scalar("epsilon", 1e-5))
    mean = x.mean(axis=axis, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=axis, keepdims=True)
    y = centered / np.sqrt(var + eps)
    norm_shape = [x.shape[a] for a in sorted(a % x.ndim for a in axis)]
    bshape = [x.shape[i] if i in {a % x.ndim for a in axis} else 1 for i in range(x.ndim)]
    gamma, beta = c.get("gamma"), c.get("beta")
    if gamma is not None:
        y = y * np.asarray(gamma, np.float64).reshape(norm_shape).reshape(bshape)
    if beta is not None:
        y = y + np.asarray(beta, np.float64).reshape(norm_shape).reshape(bshape)
    return y.astype(np.float32)


@op("batch_norm", args="x mean variance gamma beta epsilon")
def batch_norm(c: Call) -> np.ndarray:
    x = np.asarray(c["x"], np.float64)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)

    def vec(key: str, default: float) -> np.ndarray:
        value = c.get(key)
        if value is None:
            return np.full(shape, default)
        return np.asarray(value, np.float64).reshape(shape)

    eps = float(c.scalar("epsilon", 1e-5))
    y = (x - vec("mean", 0.0)) / np.sqrt(vec("variance", 1.0) + eps)
    return (y * vec("gamma", 1.0) + vec("beta", 0.0)).astype(np.float32)


# -- convolution ------------------------------------------------------------------------------


def conv_padding(
    pad_type: str,
    pad: list[int] | None,
    size: tuple[int, ...],
    kernel: tuple[int, ...],
    strides: list[int],
    dilations: list[int],
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim, per the MIL ``conv`` pad_type rules."""
    rank = len(size)
    if pad_type == "valid":
        return [(0, 0)] * rank
    if pad_type == "custom":
        pad = pad or [0] * (2 * rank)
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(rank)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for i in range(rank):
            dilated = (kernel[i] - 1) * dilations[i] + 1
            out = -(-size[i] // strides[i])
            total = max((out - 1) * strides[i] + dilated - size[i], 0)
            small, big = total // 2, total - total // 2
            pads.append((big, small) if pad_type == "same_lower" else (small, big))
        return pads
    raise MILError(f"unknown conv pad_type {pad_type!r}")


@op("conv", args="x weight bias strides pad_type pad dilations groups")
def conv(c: Call) -> np.ndarray:
    x, weight = _f32(c["x"]), _f32(c["weight"])
    if x.ndim != 4:
        raise c.unsupported(f"{x.ndim - 2}-D convolution (only 2-D is implemented)")
    kernel = weight.shape[2:]
    strides = c.ints("strides", [1, 1])
    dilations = c.ints("dilations", [1, 1])
    pad = c.ints("pad") if c.get("pad") is not None else None
    pads = conv_padding(c.scalar("pad_type", "valid"), pad, x.shape[2:], kernel, strides, dilations)
    groups = int(c.scalar("groups", 1))
    out = conv2d(x, weight, pads, strides, dilations, groups)
    bias = c.get("bias")
    if bias is not None:
        out += _f32(bias).reshape(1, -1, 1, 1)
    return out


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    pads: list[tuple[int, int]],
    strides: list[int],
    dilations: list[int],
    groups: int,
) -> np.ndarray:
    """NCHW 2-D cross-correlation: shifted multiply-adds for depthwise, im2col + matmul else."""
    n, cin, _, _ = x.shape
    cout, cin_g, kh, kw = weight.shape
    if cin != cin_g * groups or cout % groups:
        raise MILError(f"conv weight {weight.shape} does not fit input {x.shape}, groups {groups}")
    xp = np.pad(x, ((0, 0), (0, 0), *pads)) if any(p != (0, 0) for p in pads) else x
    xp = np.ascontiguousarray(xp)
    (sh, sw), (dh, dw) = strides, dilations
    ho = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    wo = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    if cin_g == 1 and groups == cin:
        mult = cout // cin
        src = np.repeat(xp, mult, axis=1) if mult > 1 else xp
        out = np.zeros((n, cout, ho, wo), np.float32)
        for i in range(kh):
            for j in range(kw):
                patch = src[
                    :,
                    :,
                    i * dh : i * dh + sh * (ho - 1) + 1 : sh,
                    j * dw : j * dw + sw * (wo - 1) + 1 : sw,
                ]
                out += patch * weight[:, 0, i, j].reshape(1, cout, 1, 1)
        return out
    s = xp.strides
    windows = as_strided(
        xp,
        shape=(n, cin, kh, kw, ho, wo),
        strides=(s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw),
        writeable=False,
    )
    cout_g = cout // groups
    outs = []
    for g in range(groups):
        cols = windows[:, g * cin_g : (g + 1) * cin_g].reshape(n, cin_g * kh * kw, ho * wo)
        wmat = weight[g * cout_g : (g + 1) * cout_g].reshape(cout_g, -1)
        outs.append(np.matmul(wmat, cols))
    out = outs[0] if groups == 1 else np.concatenate(outs, axis=1)
    return out.reshape(n, cout, ho, wo)


# -- tensor layout ----------------------------------------------------------------------------


@op("reshape", args="x shape")
def reshape(c: Call) -> np.ndarray:
    x = np.asarray(c["x"])
    shape = c.ints("shape")
    if 0 in shape:
        if len(shape) == x.ndim:
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        else:  # iOS17 rule: zeros match x's dims counted from the right, else 1
            offset = x.ndim - len(shape)
            shape = [
                (x.shape[i + offset] if 0 <= i + offset < x.ndim else 1) if s == 0 else s
                for i, s in enumerate(shape)
            ]
    return x.reshape(shape)


@op("transpose", args="x perm")
def transpose(c: Call) -> np.ndarray:
    x = np.asarray(c["x"])
    return np.transpose(x, [p % x.ndim for p in c.ints("perm")])


@op("squeeze", args="x axes")
def squeeze(c: Call) -> np.ndarray:
    x = np.asarray(c["x"])
    if c.get("axes") is None:
        return np.squeeze(x)
    axes = tuple(a % x.ndim for a in c.ints("axes") if x.shape[a] == 1)
    return np.squeeze(x, axis=axes)


@op("expand_dims", args="x axes")
def expand_dims(c: Call) -> np.ndarray:
    x = np.asarray(c["x"])
    rank = x.ndim + len(c.ints("axes"))
    return np.expand_dims(x, tuple(a % rank for a in c.ints("axes")))


@op("identity")
def identity(c: Call) -> np.ndarray:
    return np.asarray(c["x"])


@op("concat", args="values axis interleave")
def concat(c: Call) -> np.ndarray:
    values = [np.asarray(v) for v in c["values"]]
    axis = int(c.scalar("axis"))
    if c.scalar("interleave", False):
        stacked = np.stack(values, axis=axis + 1 if axis >= 0 else axis)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@op("split", args="x axis num_splits split_sizes")
def split(c: Call) -> tuple[np.ndarray, ...]:
    x = np.asarray(c["x"])
    axis = int(c.scalar("axis")) % x.ndim
    sizes = [t.shape[axis] for t in c.outputs]
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@op("slice_by_index", args="x begin end stride begin_mask end_mask squeeze_mask")
def slice_by_index(c: Call) -> np.ndarray:
    x = np.asarray(c["x"])
    rank = x.ndim
    begin, end = c.ints("begin"), c.ints("end")
    stride = c.ints("stride", [1] * rank)

    def mask(key: str) -> list[bool]:
        value = c.get(key)
        return [False] * rank if value is None else [bool(v) for v in np.ravel(value)]

    begin_mask, end_mask, squeeze_mask = mask("begin_mask"), mask("end_mask"), mask("squeeze_mask")
    index: list[Any] = []
    for i in range(rank):
        if squeeze_mask[i]:
            index.append(begin[i])
            continue
        start = None if begin_mask[i] else begin[i]
        stop = None if end_mask[i] else end[i]
        index.append(slice(start, stop, stride[i]))
    return x[tuple(index)]


@op("pixel_shuffle", args="x upscale_factor")
def pixel_shuffle(c: Call) -> np.ndarray:
    """(n, C*f*f, H, W) -> (n, C, H*f, W*f); input channel c*f*f + i*f + j -> (c, i, j)."""
    x = np.asarray(c["x"])
    f = int(c.scalar("upscale_factor"))
    n, ch, h, w = x.shape
    y = x.reshape(n, ch // (f * f), f, f, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, ch // (f * f), h * f, w * f)


@op("pixel_unshuffle", args="x downscale_factor")
def pixel_unshuffle(c: Call) -> np.ndarray:
    x = np.asarray(c["x"])
    f = int(c.scalar("downscale_factor"))
    n, ch, h, w = x.shape
    y = x.reshape(n, ch, h // f, f, w // f, f).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, ch * f * f, h // f, w // f)


@op("depth_to_space", args="x block_size")
def depth_to_space(c: Call) -> np.ndarray:
    """DCR order (TensorFlow's): input channel (i*b + j)*C + c -> (c, i, j)."""
    x = np.asarray(c["x"])
    b = int(c.scalar("block_size"))
    n, ch, h, w = x.shape
    y = x.reshape(n, b, b, ch // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    return y.reshape(n, ch // (b * b), h * b, w * b)


@op("space_to_depth", args="x block_size")
def space_to_depth(c: Call) -> np.ndarray:
    x = np.asarray(c["x"])
    b = int(c.scalar("block_size"))
    n, ch, h, w = x.shape
    y = x.reshape(n, ch, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, ch * b * b, h // b, w // b)


# -- quantization --------------------------------------------------------------------------------


def _along(value: Any, rank: int, axis: int | None) -> np.ndarray:
    """A scalar or a per-axis vector, broadcastable against a tensor of ``rank``."""
    value = np.asarray(value)
    if value.ndim == 0 or value.size == 1:
        return value.reshape(())
    if axis is None:
        raise MILError("a vector scale/zero_point needs an axis")
    shape = [1] * rank
    shape[axis % rank] = value.size
    return value.reshape(shape)


_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}


@op("quantize", args="input zero_point scale output_dtype axis")
def quantize(c: Call) -> np.ndarray:
    """clip(round(x / scale) + zero_point) (round half to even)."""
    x = np.asarray(c["input"], np.float64)
    axis = c.scalar("axis", None)
    scale = _along(c["scale"], x.ndim, axis).astype(np.float64)
    zero = c.get("zero_point")
    zero = 0 if zero is None else _along(zero, x.ndim, axis).astype(np.float64)
    dtype = c.scalar("output_dtype")
    if dtype not in _INT_RANGE:
        raise c.unsupported(f"output_dtype {dtype}")
    low, high = _INT_RANGE[dtype]
    return np.clip(np.rint(x / scale) + zero, low, high).astype(dtype)


@op("dequantize", args="input zero_point scale axis")
@op("constexpr_affine_dequantize", args="quantized_data zero_point scale axis")
def dequantize(c: Call) -> np.ndarray:
    """scale * (q - zero_point)."""
    q = np.asarray(c["input"] if c.type == "dequantize" else c["quantized_data"])
    axis = c.scalar("axis", None)
    scale = _along(c["scale"], q.ndim, axis).astype(np.float64)
    zero = c.get("zero_point")
    zero = 0 if zero is None else _along(zero, q.ndim, axis).astype(np.float64)
    return (scale * (q.astype(np.float64) - zero)).astype(np.float32)


@op("constexpr_blockwise_shift_scale", args="data scale offset")
def blockwise_shift_scale(c: Call) -> np.ndarray:
    """scale[block] * (data - offset[block]), block size = data.shape / scale.shape."""
    data = np.asarray(c["data"]).astype(np.float64)
    scale = np.asarray(c["scale"], np.float64)
    offset = c.get("offset")
    if scale.ndim != data.ndim:
        raise MILError(f"blockwise scale rank {scale.ndim} != data rank {data.ndim}")

    def expand(values: np.ndarray) -> np.ndarray:
        for axis, (full, part) in enumerate(zip(data.shape, values.shape)):
            if full % part:
                raise MILError(f"blockwise scale shape {scale.shape} does not divide {data.shape}")
            values = np.repeat(values, full // part, axis=axis)
        return values

    if offset is not None:
        data = data - expand(np.asarray(offset, np.float64))
    return (expand(scale) * data).astype(np.float32)


@op("constexpr_cast", args="source_val output_dtype")
def constexpr_cast(c: Call) -> np.ndarray:
    return np.asarray(c["source_val"]).astype(c.outputs[0].numpy)


#: op types evaluated once when the program is loaded (their inputs are all constants)
CONSTEXPR = {"constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "constexpr_cast"}


# -- classifier -------------------------------------------------------------------------------


@op("classify", args="probabilities classes")
def classify(c: Call) -> tuple[Any, dict[Any, float]]:
    """The classifier outputs: the label of the largest probability (the first on ties) and
    the label -> probability dictionary (doubles), one probability per label."""
    probabilities = np.asarray(c["probabilities"], np.float64).reshape(-1)
    classes = [_label(value) for value in c["classes"]]
    if probabilities.size != len(classes):
        raise MILError(
            f"classify ({c.name!r}): {probabilities.size} probabilities for {len(classes)} classes"
        )
    table = {label: float(p) for label, p in zip(classes, probabilities)}
    if len(table) != len(classes):
        raise MILError(f"classify ({c.name!r}): the class labels are not unique")
    return classes[int(np.argmax(probabilities))], table


def _label(value: Any) -> Any:
    """A class label constant: str, or an int64 label as a Python int."""
    item = value.item() if isinstance(value, np.ndarray) else value
    return item if isinstance(item, str) else int(item)
