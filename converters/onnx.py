"""ONNX: torch.onnx (dynamo exporter) -> model.onnx, run in onnxruntime.

Static input shape, opset 20, every weight inside the one file (no external data), checked
with ``onnx.checker.check_model(full_check=True)``. fp16 converts weights and activations
with onnx's float16 converter, keeping float32 graph inputs/outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.converters.base import (
    Converter,
    ExportRequest,
    ExportResult,
    Progress,
    Runner,
    TargetDescriptor,
    half_precision,
)

from restv2_edge.errors import ExportError, first_line

# 20, not 18: from opset 20 GELU is one ONNX op; at 18 it is exported as Div/Erf/Add/Mul/Mul,
# which onnxruntime 1.32 does not fuse back (docs/graph-forms.md).
OPSET = 20
MODEL_FILE = "model.onnx"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class OnnxRunner(Runner):
    def __init__(self, path: Path, batch_size: int, threads: int | None = None) -> None:
        import onnxruntime as ort

        super().__init__(batch_size)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.description = f"onnxruntime {ort.__version__} (CPUExecutionProvider)"

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class OnnxConverter(Converter):
    def export(
        self, model: Any, example: Any, workdir: Path, request: ExportRequest, progress: Progress
    ) -> ExportResult:
        import onnx
        import torch

        path = workdir / MODEL_FILE
        if request.precision == "fp16":
            model = half_precision(model)
        try:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                external_data=False,
                verbose=False,
            )
        except Exception as exc:
            raise ExportError(f"torch.onnx export failed: {first_line(exc)}") from exc
        progress("convert")
        proto = program.model_proto
        proto.producer_name = "restv2-edge"
        onnx.checker.check_model(proto, full_check=True)
        check_static(proto)
        onnx.save_model(proto, str(path))
        return ExportResult(
            model_file=MODEL_FILE,
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            versions=_versions(),
            info={"opset": OPSET, "nodes": len(proto.graph.node)},
        )

    def load(self, folder: Path, manifest: Any, threads: int | None = None) -> Runner:
        self.check_installed()
        return OnnxRunner(folder / manifest.model_file, manifest.batch_size, threads)


def check_static(proto: Any) -> None:
    """No dynamic-shape ops and no value of rank > 4 (shape inference on the saved graph)."""
    import onnx

    dynamic = {"Shape", "ConstantOfShape", "NonZero", "Range", "Expand"}
    found = sorted({node.op_type for node in proto.graph.node if node.op_type in dynamic})
    if found:
        raise ExportError(f"ONNX graph has dynamic-shape ops: {', '.join(found)}")
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    values = (
        list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    )
    for value in values:
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 4:
            raise ExportError(f"ONNX value {value.name} has rank {len(dims)} > 4")
        if any(not dim.HasField("dim_value") for dim in dims):
            raise ExportError(f"ONNX value {value.name} has a symbolic dimension")


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript

    return {
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


CONVERTER = OnnxConverter()
DESCRIPTOR = TargetDescriptor(
    name="onnx",
    extra="onnx",
    packages=("onnx", "onnxruntime", "onnxscript"),
    precisions=("fp32", "fp16"),
    default_precision="fp32",
    # onnxruntime fuses native LayerNorm and 4-D MatMul (docs/graph-forms.md)
    graph_form="native",
    suffix=".onnx",
    converter=CONVERTER,
    manifest_fields=("opset", "nodes"),
    order=10,
)
