"""Executing the main function of an ML program with numpy.

Loading resolves every ``const`` (immediate or blob) and evaluates the ``constexpr_*`` ops
once, checks that every remaining op is implemented (``UnsupportedOpError`` names the first
that is not), and keeps a flat list of steps. ``run`` executes them in program order and checks
each result against the shape and dtype the program declares.

fp16 semantics: a value typed fp16 in the program is rounded to float16 after the op that
produces it (``fp16=True``, the default). That models a Core ML fp16 program on GPU / Neural
Engine: every op's result is stored in fp16, while the op itself accumulates in higher
precision. ``fp16=False`` keeps float32 everywhere (the ideal of the same program).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.converters.mil.errors import MILError, UnsupportedOpError
from restv2_edge.converters.mil.ops import ARGS, CONSTEXPR, OPS, Call
from restv2_edge.converters.mil.package import ModelPackage, main_block, read_package
from restv2_edge.converters.mil.types import (
    BlobCache,
    TensorType,
    decode_value,
    round_fp16,
    value_type,
)


@dataclass
class Step:
    type: str
    name: str
    #: input name -> variable name(s) (str, or list for tuple inputs) or a constant value
    bindings: dict[str, Any]
    outputs: list[tuple[str, TensorType]]


class _Const:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Program:
    """The main function of an ML program, ready to run."""

    def __init__(self, package: ModelPackage, function: str = "main") -> None:
        self.package = package
        self.opset, block = main_block(package.spec, function)
        fn = package.spec.mlProgram.functions[function]
        self.inputs = {value.name: value_type(value.type) for value in fn.inputs}
        self.output_names = list(block.outputs)
        self.constants: dict[str, Any] = {}
        self.steps: list[Step] = []
        self.types: dict[str, TensorType] = dict(self.inputs)
        blobs = BlobCache(package.model_dir)
        for proto in block.operations:
            self._add(proto, blobs)
        missing = [n for n in self.output_names if n not in self.types]
        if missing:
            raise MILError(f"the program's outputs {missing} are never computed")

    @classmethod
    def load(cls, path: str | Path, function: str = "main") -> Program:
        """Read an .mlpackage (spec + weights) and prepare its main function."""
        return cls(read_package(path), function)

    # -- loading -------------------------------------------------------------------------------

    def _add(self, proto: Any, blobs: BlobCache) -> None:
        name = _op_name(proto)
        if proto.blocks:
            raise UnsupportedOpError(proto.type, name, "ops with nested blocks (control flow)")
        outputs = [(out.name, value_type(out.type)) for out in proto.outputs]
        for out_name, out_type in outputs:
            self.types[out_name] = out_type
        if proto.type == "const":
            if "val" not in proto.attributes:
                raise MILError(f"const {name!r} has no value")
            self.constants[outputs[0][0]] = decode_value(proto.attributes["val"], blobs)
            return
        if proto.type not in OPS:
            raise UnsupportedOpError(proto.type, name)
        bindings = {}
        for key, argument in proto.inputs.items():
            items = []
            for binding in argument.arguments:
                if binding.WhichOneof("binding") == "name":
                    if binding.name not in self.types:
                        raise MILError(f"op {name!r} reads {binding.name!r} before it is defined")
                    items.append(binding.name)
                else:
                    items.append(_Const(decode_value(binding.value, blobs)))
            bindings[key] = items
        for key, value in proto.attributes.items():
            # constexpr ops carry their (constant) operands as attributes
            if key != "name" and key not in bindings:
                bindings[key] = [_Const(decode_value(value, blobs))]
        unknown = sorted(set(bindings) - ARGS[proto.type])
        if unknown:
            raise UnsupportedOpError(proto.type, name, f"unknown input(s) {', '.join(unknown)}")
        step = Step(proto.type, name, bindings, outputs)
        if proto.type in CONSTEXPR:
            values = self._execute(step, self.constants, fp16=True)
            self.constants.update(values)
        else:
            self.steps.append(step)

    # -- running --------------------------------------------------------------------------------

    def op_types(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for step in self.steps:
            counts[step.type] = counts.get(step.type, 0) + 1
        return counts

    def run(
        self,
        inputs: dict[str, np.ndarray],
        fp16: bool = True,
        trace: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Feed ``inputs`` (by name), return the program outputs (float32 for float types).

        ``trace``: a dict that receives every intermediate value by name (for debugging).
        """
        env: dict[str, Any] = dict(self.constants)
        features = {feature.name: feature for feature in self.package.inputs}
        for name, vtype in self.inputs.items():
            if name not in inputs:
                raise MILError(f"missing program input {name!r}")
            value = np.asarray(inputs[name])
            if name in features:
                features[name].check_shape(tuple(value.shape))
            env[name] = _store(value, vtype, name, fp16)
        for step in self.steps:
            env.update(self._execute(step, env, fp16))
        if trace is not None:
            trace.update((k, v) for k, v in env.items() if k not in self.constants)
        return {name: _output(env[name]) for name in self.output_names}

    def _execute(self, step: Step, env: dict[str, Any], fp16: bool) -> dict[str, Any]:
        args = {}
        for key, items in step.bindings.items():
            values = [item.value if isinstance(item, _Const) else env[item] for item in items]
            args[key] = values[0] if len(values) == 1 and key != "values" else values
        call = Call(step.type, step.name, args, [t for _, t in step.outputs])
        result = OPS[step.type](call)
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(step.outputs):
            raise MILError(f"op {step.name!r} produced {len(results)} outputs")
        return {
            out_name: _store(value, out_type, step.name, fp16)
            for (out_name, out_type), value in zip(step.outputs, results)
        }


def _store(value: Any, vtype: TensorType, where: str, fp16: bool) -> Any:
    """Check a value against its declared type and hold it the way that type is stored
    (values that are not tensors, e.g. a classifier's dictionary, are kept as they are)."""
    if vtype.shape is None:
        return value
    value = np.asarray(value)
    if not vtype.matches(tuple(value.shape)):
        raise MILError(
            f"{where!r}: computed shape {tuple(value.shape)}, the program declares "
            f"{_dims(vtype.shape)}"
        )
    if vtype.dtype == "fp16":
        return round_fp16(value) if fp16 else value.astype(np.float32, copy=False)
    if vtype.dtype == "string":
        return value
    return value.astype(vtype.numpy, copy=False)


def _output(value: Any) -> Any:
    """A program output: an array, or a classifier's label (str or int) and dictionary."""
    if isinstance(value, (dict, str)):
        return value
    value = np.asarray(value)
    return value.item() if value.dtype.kind in "OU" and value.ndim == 0 else value


def _dims(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _op_name(proto: Any) -> str:
    attr = proto.attributes.get("name")
    if attr is not None and attr.immediateValue.tensor.strings.values:
        return attr.immediateValue.tensor.strings.values[0]
    return proto.outputs[0].name if proto.outputs else ""
