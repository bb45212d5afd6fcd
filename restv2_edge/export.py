"""The export pipeline shared by every target: convert, write manifest, verify, publish.

Everything is written into a work folder beside the output and published
(``restv2_edge.publish``) only when the artifact passed its parity gate (or ``verify=False``),
so an interrupted or failed export never leaves anything under the output name, and an output
that exists is replaced only with ``force``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from restv2_edge import __version__
from restv2_edge.config import variant_name
from restv2_edge.converters.base import ExportRequest, get_converter
from restv2_edge.errors import (
    ExportError,
    ParityError,
    RestV2EdgeError,
    RunnerUnavailableError,
    first_line,
)
from restv2_edge.factory import with_form
from restv2_edge.manifest import STRETCH, Manifest, verify_files
from restv2_edge.model import RawInput, ResTV2, fold_attention_scale
from restv2_edge.parity import manifest_inputs, measure
from restv2_edge.preprocess import Preprocessing
from restv2_edge.publish import staged_dir

Progress = Callable[[str], None]


def artifact_model(model: ResTV2, form: str, raw_input: bool) -> torch.nn.Module:
    """The graph a converter exports: the model in ``form``, optionally taking raw RGB."""
    graph = with_form(model, form) if model.form != form else model
    if raw_input:
        pre = normalization(model)
        graph = RawInput(graph, pre.mean, pre.std)
    return graph.eval()


def normalization(model: ResTV2) -> Preprocessing:
    """The model's preprocessing; for a non-square size (which has none: no square crop)
    the default mean, std and scale with the height as ``image_size``."""
    return model.preprocessing or Preprocessing(image_size=model.input_hw[0])


def export_graph(model: ResTV2, form: str, raw_input: bool) -> torch.nn.Module:
    """What the converters receive: ``artifact_model`` with the attention scale folded into
    the q linears (``fold_attention_scale``); parity compares it to the unfolded model."""
    return fold_attention_scale(artifact_model(model, form, raw_input))


def build_manifest(
    model: ResTV2, target: str, request: ExportRequest, result: Any, form: str
) -> Manifest:
    pre = normalization(model)
    pre = pre.raw() if request.raw_input else pre
    height, width = model.input_hw
    square = height == width
    features = model.head_type == "features"
    specs = [spec.to_dict() for spec in model.output_specs(request.batch_size)]
    load = getattr(model, "load_result", None)
    return Manifest(
        target=target,
        precision=request.precision,
        image_size=height if square else [height, width],
        num_classes=None if features else model.config.num_classes,
        model_file=result.model_file,
        variant=variant_name(model.config),
        config=model.config.to_dict(),
        graph_form=form,
        input={
            "name": result.input_name,
            "shape": [request.batch_size, 3, height, width],
            "dynamic_batch": request.dynamic_batch,
            "dtype": "float32",
            "layout": result.layout,
            "scale": pre.scale,
            "mean": list(pre.mean),
            "std": list(pre.std),
            "crop_pct": pre.crop_pct if square else 1.0,
            "interpolation": pre.interpolation,
            "resize_size": pre.resize_size() if square else [height, width],
            **({} if square else {"resize": STRETCH}),
        },
        output=None if features else {"name": result.output_name, "shape": specs[0]["shape"]},
        labels=list(request.class_names or []),
        head=model.head_type,
        outputs=specs,
        output_norms=model.output_norms,
        checkpoint_layout=getattr(load, "layout", None),
        versions={"restv2_edge": __version__, "torch": torch.__version__, **result.versions},
        export={**result.info, "options": request.options},
        quantization=result.quantization,
    )


def export_artifact(
    model: ResTV2,
    target: str,
    output: str | os.PathLike[str],
    request: ExportRequest,
    *,
    force: bool = False,
    verify: bool = True,
    parity_data: str | Path | None = None,
    parity_limit: int | None = 16,
    progress: Progress = lambda step: None,
) -> tuple[Path, Manifest]:
    """Export ``model`` (native form, fp32) to ``target`` as an artifact folder at ``output``."""
    converter = get_converter(target)
    converter.check_installed()
    converter.check_request(request)
    request = request.for_model(model)  # what recipes and converters record about the model
    if request.precision == "int8" and request.calibration is not None:
        # a non-square model has no center crop: its set must be stretched to its size
        request.calibration.check_matches(normalization(model), model.input_hw)
    output = Path(output)
    with staged_dir(output, force) as work:
        form = converter.graph_form_for(request)
        progress("export")
        graph = export_graph(model, form, request.raw_input)
        reference = artifact_model(model, "native", request.raw_input)
        example = _example_input(model, request)
        with backend_errors(f"{target} {request.precision} conversion"):
            if request.precision == "int8":
                from restv2_edge.calibration.recipes import export_int8

                result = export_int8(converter.name, graph, example, work, request, progress)
            else:
                result = converter.export(graph, example, work, request, progress)
        progress("write")
        manifest = build_manifest(model, target, request, result, form)
        manifest.write(work)
        progress("verify")
        manifest.parity = _verify(
            converter, work, manifest, reference, request, parity_data, parity_limit
        )
        manifest.write(work)
        if verify and manifest.parity["status"] == "failed":
            raise ParityError(
                f"{target} {request.precision} artifact failed parity: "
                + "; ".join(manifest.parity["failures"])
            )
    return output, manifest


def _verify(
    converter: Any,
    work: Path,
    manifest: Manifest,
    reference: torch.nn.Module,
    request: ExportRequest,
    data: Any,
    limit: int | None,
) -> dict[str, Any]:
    verify_files(work, manifest)
    try:
        with backend_errors(f"loading the new {manifest.target} artifact in its runtime"):
            runner = converter.load(work, manifest)
    except RunnerUnavailableError as exc:
        return {"status": "not run", "reason": str(exc)}
    inputs = manifest_inputs(manifest, data, limit)
    return measure(runner, reference, inputs, request.precision)


@contextlib.contextmanager
def backend_errors(step: str) -> Iterator[None]:
    """The converter boundary: a backend's own exception becomes one ExportError line."""
    try:
        yield
    except (RestV2EdgeError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        raise ExportError(f"{step} failed: {type(exc).__name__}: {first_line(exc)[:300]}") from exc


def _example_input(model: ResTV2, request: ExportRequest) -> torch.Tensor:
    """The tracing input: the request's batch, and at least 2 for a dynamic batch (torch.export
    specializes a dimension whose example size is 1, which would make it static again)."""
    generator = torch.Generator().manual_seed(0)
    batch = max(request.batch_size, 2) if request.dynamic_batch else request.batch_size
    x = torch.randn(batch, 3, *model.input_hw, generator=generator)
    return (x * 60 + 120).clamp(0, 255) if request.raw_input else x
