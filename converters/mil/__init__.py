"""A numpy reference interpreter for the Core ML (MIL) programs restv2-edge exports.

``Program.load(path)`` reads an .mlpackage (the spec protobuf and its weight blobs) and
``Program.run({"input": x})`` executes the main function; ``fp16=True`` rounds every value the
program types as fp16, like Core ML on GPU / Neural Engine. Unknown ops raise
``UnsupportedOpError`` naming them. Needs numpy and coremltools' protobuf classes only (no
Core ML framework), so Core ML artifacts can be verified on Linux.
"""

from restv2_edge.converters.mil.errors import MILError, UnsupportedOpError
from restv2_edge.converters.mil.interpreter import Program
from restv2_edge.converters.mil.ops import OPS
from restv2_edge.converters.mil.package import (
    ModelPackage,
    op_counts,
    read_package,
    read_spec,
    tensor_ranks,
)

SUPPORTED_OPS = frozenset(OPS) | {"const"}

__all__ = [
    "SUPPORTED_OPS",
    "MILError",
    "ModelPackage",
    "Program",
    "UnsupportedOpError",
    "op_counts",
    "read_package",
    "read_spec",
    "tensor_ranks",
]
