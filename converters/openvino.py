"""OpenVINO: ``ov.convert_model`` on the PyTorch module -> IR (model.xml + model.bin) for CPU.

Static input shape. fp32 keeps float32 weights (``compress_to_fp16=False``); fp16 stores the
weights as float16 (OpenVINO's weight compression on save), activations stay the plugin's.

Runtime precision: the CPU plugin runs bf16 by default on CPUs with AVX-512 BF16 / AMX, which
moves logits by ~1e-2. fp32 artifacts therefore compile with ``INFERENCE_PRECISION_HINT=f32``;
fp16 artifacts compile with the hint recorded in their manifest (``export.inference_precision``).

Reproducibility: OpenVINO names unnamed nodes from a process-wide counter
(``Multiply_17907``), so two exports in one process would differ; every such name is
rewritten from the node's position in the graph before saving, which makes the files
byte-identical for identical weights.
"""

from __future__ import annotations

import re
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
)

from restv2_edge.errors import ArtifactError, ExportError, first_line

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MODEL_NAME = "restv2_edge"
#: inference precision hint per artifact precision. fp16 runs with f32 activations: the
#: CPU default (bf16 here) misses the fp16 parity gate (cosine >= 0.9995) on ResTv2-T.
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f32"}
_AUTO_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*_\d+$")


class OpenVinoRunner(Runner):
    def __init__(
        self, path: Path, batch_size: int, hint: str | None, threads: int | None = None
    ) -> None:
        import openvino as ov

        super().__init__(batch_size)
        config: dict[str, Any] = {}
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.description = (
            f"OpenVINO {ov.__version__.split('-')[0]} (CPU, INFERENCE_PRECISION_HINT={actual})"
        )

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: x})
        return np.array(result[self.compiled.output(0)], dtype=np.float32)


class OpenVinoConverter(Converter):
    def export(
        self, model: Any, example: Any, workdir: Path, request: ExportRequest, progress: Progress
    ) -> ExportResult:
        import openvino as ov
        import torch

        shape = [int(d) for d in example.shape]
        try:
            with torch.no_grad():
                converted = ov.convert_model(model, example_input=example, input=[shape])
        except Exception as exc:
            raise ExportError(f"openvino convert_model failed: {first_line(exc)}") from exc
        progress("convert")
        if len(converted.inputs) != 1 or len(converted.outputs) != 1:
            raise ExportError("openvino model must have exactly one input and one output")
        if converted.inputs[0].get_partial_shape().is_dynamic:
            raise ExportError("openvino model has a dynamic input shape")
        converted.inputs[0].get_tensor().set_names({INPUT_NAME})
        converted.outputs[0].get_tensor().set_names({OUTPUT_NAME})
        canonical_names(converted)
        compress = request.precision == "fp16"
        ov.save_model(converted, str(workdir / MODEL_FILE), compress_to_fp16=compress)
        ops: dict[str, int] = {}
        for op in converted.get_ordered_ops():
            ops[op.get_type_name()] = ops.get(op.get_type_name(), 0) + 1
        return ExportResult(
            model_file=MODEL_FILE,
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            versions={"openvino": ov.__version__.split("-")[0]},
            info={
                "weights_file": WEIGHTS_FILE,
                "weights": "float16" if compress else "float32",
                "inference_precision": INFERENCE_PRECISION[request.precision],
                "device": "CPU",
                "nodes": sum(ops.values()),
            },
        )

    def load(self, folder: Path, manifest: Any, threads: int | None = None) -> Runner:
        self.check_installed()
        path = folder / manifest.model_file
        if not (path.is_file() and path.with_suffix(".bin").is_file()):
            raise ArtifactError(f"{folder}: OpenVINO IR needs {path.name} and its .bin")
        hint = manifest.export.get("inference_precision", INFERENCE_PRECISION["fp32"])
        return OpenVinoRunner(path, manifest.batch_size, hint, threads)


def canonical_names(model: Any) -> None:
    """Replace counter-generated node names (``Multiply_17907``) by graph positions."""
    model.set_friendly_name(MODEL_NAME)
    for index, op in enumerate(model.get_ordered_ops()):
        if _AUTO_NAME.match(op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_{index}")


CONVERTER = OpenVinoConverter()
DESCRIPTOR = TargetDescriptor(
    name="openvino",
    extra="openvino",
    packages=("openvino", "nncf"),
    precisions=("fp32", "fp16"),
    default_precision="fp32",
    # Measured (docs/graph-forms.md): OpenVINO fuses native LayerNorm (MVN) and 4-D MatMul.
    graph_form="native",
    suffix=".xml",
    converter=CONVERTER,
    manifest_fields=("weights_file", "weights", "inference_precision", "device", "nodes"),
    order=20,
)
