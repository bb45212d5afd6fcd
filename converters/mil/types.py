"""MIL data types, and decoding of the values (immediate and blob) an ML program holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.converters.mil.blob import BlobFile, blob_code
from restv2_edge.converters.mil.errors import MILError

#: MIL DataType name -> (short name, numpy dtype the interpreter holds values in).
#: fp16 values are held in float32 arrays (rounded to fp16 where the program computes fp16).
DTYPES: dict[str, tuple[str, Any]] = {
    "BOOL": ("bool", np.bool_),
    "STRING": ("string", object),
    "FLOAT16": ("fp16", np.float32),
    "FLOAT32": ("fp32", np.float32),
    "FLOAT64": ("fp64", np.float64),
    "BFLOAT16": ("bf16", np.float32),
    "INT8": ("int8", np.int8),
    "INT16": ("int16", np.int16),
    "INT32": ("int32", np.int32),
    "INT64": ("int64", np.int64),
    "UINT8": ("uint8", np.uint8),
    "UINT16": ("uint16", np.uint16),
    "UINT32": ("uint32", np.uint32),
    "UINT64": ("uint64", np.uint64),
}
STORED = {"fp16": np.float16, "int8": np.int8, "uint8": np.uint8}


@dataclass(frozen=True)
class TensorType:
    """A value's declared type: short dtype name (fp16, int8, ...) and shape.

    ``shape`` is None for values that are not tensors (lists, dictionaries); a dimension is
    None where the program leaves it unknown (a flexible batch: enumerated or ranged input
    shapes, checked against the model description when the program runs).
    """

    dtype: str
    shape: tuple[int | None, ...] | None

    def matches(self, shape: tuple[int, ...]) -> bool:
        """Whether a computed ``shape`` fits this type (unknown dimensions fit any size)."""
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape)
        )

    @property
    def numpy(self) -> Any:
        for short, numpy in DTYPES.values():
            if short == self.dtype:
                return numpy
        raise MILError(f"MIL dtype {self.dtype} is not supported by the interpreter")


def dtype_name(code: int) -> str:
    from coremltools.proto import MIL_pb2

    name = MIL_pb2.DataType.Name(code)
    if name not in DTYPES:
        raise MILError(f"MIL dtype {name} is not supported by the interpreter")
    return DTYPES[name][0]


def value_type(proto_type: Any) -> TensorType:
    """TensorType of a MIL ValueType proto (unknown dimensions are None)."""
    kind = proto_type.WhichOneof("type")
    if kind != "tensorType":
        return TensorType(kind or "none", None)
    tensor = proto_type.tensorType
    dims: list[int | None] = []
    for dim in tensor.dimensions:
        known = dim.WhichOneof("dimension") == "constant"
        dims.append(int(dim.constant.size) if known else None)
    if len(dims) != tensor.rank:
        raise MILError("the ML program declares a tensor of unknown shape")
    return TensorType(dtype_name(tensor.dataType), tuple(dims))


def round_fp16(x: np.ndarray) -> np.ndarray:
    """Round float values to the nearest float16 (overflow -> inf), held as float32."""
    with np.errstate(over="ignore"):
        return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def decode_value(value: Any, blobs: BlobCache) -> Any:
    """A MIL Value proto -> numpy array (rank >= 0), str, or list of them."""
    kind = value.WhichOneof("value")
    vtype = value_type(value.type)
    if vtype.dtype == "listType" and kind == "immediateValue":
        # e.g. the class labels of a classify op
        if value.immediateValue.WhichOneof("value") != "list":
            raise MILError("list constant without a list value")
        return [decode_value(item, blobs) for item in value.immediateValue.list.values]
    if vtype.shape is None:
        raise MILError(f"constant of type {vtype.dtype} is not supported")
    if None in vtype.shape:
        raise MILError("constant of unknown shape")
    if kind == "blobFileValue":
        ref = value.blobFileValue
        count = int(np.prod(vtype.shape, dtype=np.int64))
        stored = "bf16" if vtype.dtype == "bf16" else vtype.dtype
        raw = blobs.get(ref.fileName).read(int(ref.offset), blob_code(stored), count)
        return _finish(raw, vtype)
    if kind != "immediateValue":
        raise MILError("constant without a value")
    imm = value.immediateValue
    if imm.WhichOneof("value") != "tensor":
        raise MILError(f"immediate {imm.WhichOneof('value')} values are not supported")
    tensor = imm.tensor
    field = tensor.WhichOneof("value")
    if field == "strings":
        items = list(tensor.strings.values)
        return items[0] if vtype.shape == () else np.array(items, dtype=object)
    if field == "bytes":
        if vtype.dtype not in STORED:
            raise MILError(f"immediate {vtype.dtype} bytes are not supported")
        raw = np.frombuffer(tensor.bytes.values, STORED[vtype.dtype])
    elif field in ("floats", "ints", "bools", "longInts", "doubles"):
        raw = np.array(list(getattr(tensor, field).values))
    else:
        raise MILError(f"immediate tensor field {field} is not supported")
    return _finish(raw, vtype)


def _finish(raw: np.ndarray, vtype: TensorType) -> np.ndarray:
    if vtype.dtype == "bf16":
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    count = int(np.prod(vtype.shape, dtype=np.int64))
    if raw.size != count:
        raise MILError(f"constant has {raw.size} elements, its type says {count}")
    return np.asarray(raw).astype(vtype.numpy).reshape(vtype.shape)


class BlobCache:
    """Weight files of one package, by the path the program names (``@model_path/...``)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        self.files: dict[str, BlobFile] = {}

    def get(self, name: str) -> BlobFile:
        if name not in self.files:
            prefix = "@model_path/"
            if not name.startswith(prefix):
                raise MILError(f"weight file reference {name!r} is not under @model_path")
            path = (self.model_dir / name[len(prefix) :]).resolve()
            if self.model_dir.resolve() not in path.parents:
                raise MILError(f"weight file reference {name!r} points outside the package")
            self.files[name] = BlobFile(path)
        return self.files[name]
