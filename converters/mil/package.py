"""Reading an .mlpackage: the Model spec (protobuf), its weight folder, IO and metadata."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restv2_edge.converters.mil.errors import MILError

SPEC_NAME = "model.mlmodel"


@dataclass
class Feature:
    """One model input or output as the Model description declares it.

    ``shape`` is the default shape; ``shapes`` the enumerated shapes of a flexible
    multi-array input (empty: only ``shape``, or a range: ``ranges``, (lower, upper) per
    dimension, upper -1 for unbounded).
    """

    name: str
    kind: str  # "tensor", "image", "string", "dictionary", ...
    shape: tuple[int, ...] = ()
    dtype: str = ""
    color_space: str = ""
    shapes: tuple[tuple[int, ...], ...] = ()
    ranges: tuple[tuple[int, int], ...] = ()

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The batch sizes a multi-array input takes (its enumerated first dimensions, or
        its default one); empty for a ranged batch."""
        if self.shapes:
            return tuple(sorted({shape[0] for shape in self.shapes}))
        if self.ranges:
            return ()
        return (self.shape[0],) if self.shape else ()

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """MILError unless Core ML would accept an input of ``shape`` for this feature."""
        if self.kind != "tensor":
            return
        if self.shapes:
            if shape not in self.shapes:
                raise MILError(
                    f"input {self.name!r}: shape {shape} is not one of the model's enumerated "
                    f"shapes {', '.join(map(str, self.shapes))}"
                )
        elif self.ranges:
            fits = len(shape) == len(self.ranges) and all(
                low <= n and (high < 0 or n <= high) for n, (low, high) in zip(shape, self.ranges)
            )
            if not fits:
                raise MILError(f"input {self.name!r}: shape {shape} is outside {self.ranges}")
        elif shape != self.shape:
            raise MILError(f"input {self.name!r}: shape {shape}, the model takes {self.shape}")


@dataclass
class ModelPackage:
    path: Path
    spec: Any  # coremltools.proto.Model_pb2.Model
    model_dir: Path  # folder holding model.mlmodel (blob paths are relative to it)
    inputs: list[Feature] = field(default_factory=list)
    outputs: list[Feature] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    #: a classifier's label and probability-dictionary outputs (empty strings otherwise)
    predicted_feature: str = ""
    predicted_probabilities: str = ""

    @property
    def is_ml_program(self) -> bool:
        return self.spec.WhichOneof("Type") == "mlProgram"

    @property
    def is_classifier(self) -> bool:
        return bool(self.predicted_feature)


def spec_file(package: Path) -> Path:
    """The root model spec inside an .mlpackage (via its Manifest.json)."""
    package = Path(package)
    if package.is_file():
        return package
    manifest = package / "Manifest.json"
    try:
        data = json.loads(manifest.read_text())
        entry = data["itemInfoEntries"][data["rootModelIdentifier"]]
        path = package / "Data" / entry["path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MILError(f"{package}: not a readable .mlpackage ({exc})") from None
    if not path.is_file():
        raise MILError(f"{package}: model spec {entry['path']} is missing")
    return path


def read_spec(package: Path) -> Any:
    """The Model protobuf of an .mlpackage (or of a bare .mlmodel file)."""
    from coremltools.proto import Model_pb2

    path = spec_file(package)
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(path.read_bytes())
    except Exception as exc:
        raise MILError(f"{path}: not a Core ML model spec ({exc})") from None
    return spec


def read_package(package: str | Path) -> ModelPackage:
    package = Path(package)
    spec = read_spec(package)
    description = spec.description
    return ModelPackage(
        path=package,
        spec=spec,
        model_dir=spec_file(package).parent,
        inputs=[_feature(f) for f in description.input],
        outputs=[_feature(f) for f in description.output],
        metadata=dict(description.metadata.userDefined),
        predicted_feature=description.predictedFeatureName,
        predicted_probabilities=description.predictedProbabilitiesName,
    )


def _feature(feature: Any) -> Feature:
    from coremltools.proto import FeatureTypes_pb2

    kind = feature.type.WhichOneof("Type")
    if kind == "imageType":
        image = feature.type.imageType
        space = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)
        return Feature(feature.name, "image", (image.height, image.width), "uint8", space)
    if kind == "multiArrayType":
        array = feature.type.multiArrayType
        dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
        flexible = array.WhichOneof("ShapeFlexibility")
        shapes: tuple[tuple[int, ...], ...] = ()
        ranges: tuple[tuple[int, int], ...] = ()
        if flexible == "enumeratedShapes":
            shapes = tuple(tuple(s.shape) for s in array.enumeratedShapes.shapes)
        elif flexible == "shapeRange":
            ranges = tuple((r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges)
        return Feature(
            feature.name, "tensor", tuple(array.shape), dtype.lower(), shapes=shapes, ranges=ranges
        )
    names = {"stringType": "string", "dictionaryType": "dictionary", "int64Type": "int64"}
    return Feature(feature.name, names.get(kind, kind or "unknown"))


# -- static checks on the program ---------------------------------------------------------------


def iter_operations(block: Any) -> Iterator[Any]:
    """Every operation of a block, nested blocks included."""
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from iter_operations(inner)


def main_block(spec: Any, function: str = "main") -> tuple[str, Any]:
    if spec.WhichOneof("Type") != "mlProgram":
        raise MILError("the model is not an ML program (convert_to='mlprogram')")
    functions = spec.mlProgram.functions
    if function not in functions:
        raise MILError(f"the ML program has no function {function!r}")
    fn = functions[function]
    return fn.opset, fn.block_specializations[fn.opset]


def tensor_ranks(spec: Any) -> Iterator[tuple[str, int]]:
    """(name, rank) of every function input and every op output of the program."""
    for fn in spec.mlProgram.functions.values():
        for value in fn.inputs:
            yield value.name, _rank(value.type)
        for block in fn.block_specializations.values():
            for op in iter_operations(block):
                for out in op.outputs:
                    yield out.name, _rank(out.type)


def _rank(value_type: Any) -> int:
    if value_type.WhichOneof("type") != "tensorType":
        return 0
    return int(value_type.tensorType.rank)


def op_counts(spec: Any) -> dict[str, int]:
    """How many ops of each type the main function has (const included)."""
    _, block = main_block(spec)
    counts: dict[str, int] = {}
    for op in iter_operations(block):
        counts[op.type] = counts.get(op.type, 0) + 1
    return dict(sorted(counts.items()))
