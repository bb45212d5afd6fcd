"""ONNX: torch.onnx (dynamo exporter) -> model.onnx, run in onnxruntime.

Static input shape (or, with ``dynamic_batch``, a symbolic batch dimension named ``batch`` and
every other dimension static), opset 20, every weight inside the one file (no external data),
checked with ``onnx.checker.check_model(full_check=True)``. fp16 converts weights and
activations with onnx's float16 converter, keeping float32 graph inputs/outputs.

Devices are onnxruntime execution providers, spelled as ``onnxruntime.get_available_providers()``
reports them (``CPUExecutionProvider``; the short form ``CPU`` is read as the same). A provider
other than the CPU one runs with the CPU provider behind it for the nodes it does not take.
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
#: the symbolic batch dimension of a dynamic-batch export
BATCH_DIM = "batch"
CPU_PROVIDER = "CPUExecutionProvider"
#: reported by onnxruntime's default build but calls a remote endpoint: not a local device
NOT_DEVICES = {"AzureExecutionProvider"}
PROVIDER_SUFFIX = "ExecutionProvider"


class OnnxRunner(Runner):
    def __init__(
        self,
        path: Path,
        batch_size: int,
        threads: int | None = None,
        dynamic_batch: bool = False,
        provider: str = CPU_PROVIDER,
    ) -> None:
        import onnxruntime as ort

        super().__init__(batch_size, dynamic_batch)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = [provider] + ([CPU_PROVIDER] if provider != CPU_PROVIDER else [])
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.device = provider
        used = ", ".join(self.session.get_providers())
        self.description = f"onnxruntime {ort.__version__} ({used})"

    def run_batch(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The logits; a features artifact: every output, in the graph's order."""
        outputs = self.session.run(None, {self.input_name: x})
        return outputs[0] if len(outputs) == 1 else outputs


class OnnxConverter(Converter):
    def export(
        self, model: Any, example: Any, workdir: Path, request: ExportRequest, progress: Progress
    ) -> ExportResult:
        import onnx
        import torch

        path = workdir / MODEL_FILE
        if request.precision == "fp16":
            model = half_precision(model)
        dynamic = {"dynamic_shapes": ({0: torch.export.Dim(BATCH_DIM)},)}
        try:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=list(request.output_names),
                external_data=False,
                verbose=False,
                **(dynamic if request.dynamic_batch else {}),
            )
        except Exception as exc:
            raise ExportError(f"torch.onnx export failed: {first_line(exc)}") from exc
        progress("convert")
        proto = program.model_proto
        proto.producer_name = "restv2-edge"
        onnx.checker.check_model(proto, full_check=True)
        check_static(proto, request.dynamic_batch)
        onnx.save_model(proto, str(path))
        return ExportResult(
            model_file=MODEL_FILE,
            input_name=INPUT_NAME,
            output_name=request.output_names[0],
            output_names=list(request.output_names),
            versions=_versions(),
            info={"opset": OPSET, "nodes": len(proto.graph.node)},
        )

    def load(
        self, folder: Path, manifest: Any, threads: int | None = None, device: str | None = None
    ) -> Runner:
        self.check_installed()
        provider = self.check_device(device, manifest)
        return OnnxRunner(
            folder / manifest.model_file,
            manifest.batch_size,
            threads,
            manifest.dynamic_batch,
            provider,
        )

    def available_devices(self, manifest: Any = None) -> list[str]:
        """onnxruntime's execution providers in this install, the CPU provider first."""
        self.check_installed()
        import onnxruntime as ort

        found = [p for p in ort.get_available_providers() if p not in NOT_DEVICES]
        return [CPU_PROVIDER] + [p for p in found if p != CPU_PROVIDER]

    def match_device(self, device: str, available: list[str]) -> str | None:
        """A provider name, or its short form without ``ExecutionProvider`` (any case)."""
        wanted = device.lower().removesuffix(PROVIDER_SUFFIX.lower())
        return next(
            (p for p in available if p.lower().removesuffix(PROVIDER_SUFFIX.lower()) == wanted),
            None,
        )


def check_static(proto: Any, dynamic_batch: bool = False) -> None:
    """No dynamic-shape ops, no value of rank > 4, and every dimension static (shape inference
    on the saved graph) but, for a dynamic-batch export, the leading ``batch`` dimension."""
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
        for index, dim in enumerate(dims):
            if dim.HasField("dim_value"):
                continue
            if not (dynamic_batch and index == 0 and dim.dim_param == BATCH_DIM):
                raise ExportError(f"ONNX value {value.name} has a symbolic dimension")
    if dynamic_batch:
        for value in (*inferred.graph.input, *inferred.graph.output):
            first = value.type.tensor_type.shape.dim[0]
            if first.dim_param != BATCH_DIM:
                raise ExportError(f"ONNX {value.name}: the batch dimension is not symbolic")


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
    dynamic_batch=True,
)
