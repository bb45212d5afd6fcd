"""PT2E post-training quantization with ExecuTorch's XNNPACKQuantizer (torchao pt2e flow).

Shared by the ExecuTorch recipe (lowered to XNNPACK) and the Core ML W8A8 recipe (converted
by coremltools): symmetric int8, per-channel weights, per-tensor static activations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from restv2_edge.errors import ExportError, first_line


def quantize_pt2e(
    model: Any, example: Any, batches: list[np.ndarray], keep_float: list[str] | None = None
) -> Any:
    """torch.export -> prepare_pt2e -> calibrate on ``batches`` -> convert_pt2e (a GraphModule),
    with every shape op's output quantized like its input (``share_shape_op_qparams``).

    ``keep_float``: module names (``model.named_modules``) left in float. LayerNorms always
    stay float: in the decomposed form their statistics are linears by a 1/C row, and int8
    per-tensor ranges on ``(x - mean)^2`` wreck the variance (T@224, random weights: logits
    cosine vs fp32 0.960 with them quantized; docs/int8.md).
    """
    import torch

    try:
        with torch.no_grad():
            prepared = calibrate_pt2e(model, example, batches, keep_float)
            converted = _pt2e_api().convert_pt2e(prepared)
        share_shape_op_qparams(converted)
        return converted
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"PT2E quantization failed: {first_line(exc)}") from exc


def calibrate_pt2e(
    model: Any, example: Any, batches: list[np.ndarray], keep_float: list[str] | None = None
) -> Any:
    """The prepared (observed) module after one pass over ``batches``, ready to convert."""
    import torch

    prepared = _pt2e_api().prepare_pt2e(
        export_any_batch(model, example), xnnpack_quantizer(keep_float)
    )
    with torch.no_grad():
        for start in range(0, len(batches), CALIBRATION_BATCH):
            chunk = np.concatenate(batches[start : start + CALIBRATION_BATCH])
            prepared(torch.from_numpy(chunk))
    return prepared


def xnnpack_quantizer(keep_float: list[str] | None = None) -> Any:
    """ExecuTorch's XNNPACKQuantizer as this recipe uses it: symmetric int8, per-channel
    weights, LayerNorms and ``keep_float`` modules left float."""
    from restv2_edge.model import LayerNorm

    api = _pt2e_api()
    quantizer = api.XNNPACKQuantizer()
    quantizer.set_global(api.get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_module_type(LayerNorm, None)
    if keep_float:  # set_module_name(name, None) is "not supported yet": filter the nodes
        kept = [api.get_module_name_filter(name) for name in keep_float]
        quantizer.set_filter_function(lambda node: not any(inside(node) for inside in kept))
    return quantizer


def _pt2e_api() -> Any:
    """The quantizer and pt2e entry points (a namespace), or ExportError naming what is missing."""
    from types import SimpleNamespace

    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import get_module_name_filter
    except ImportError as exc:
        raise ExportError(
            f"INT8 needs ExecuTorch's XNNPACKQuantizer and torchao pt2e: {exc}"
        ) from None
    return SimpleNamespace(
        XNNPACKQuantizer=XNNPACKQuantizer,
        get_symmetric_quantization_config=get_symmetric_quantization_config,
        convert_pt2e=convert_pt2e,
        prepare_pt2e=prepare_pt2e,
        get_module_name_filter=get_module_name_filter,
    )


#: ops that only move, select or replicate values (edge dialect: the same names + "_copy")
SHAPE_OPS = frozenset(
    {
        "view",
        "_unsafe_view",
        "reshape",
        "flatten",
        "unflatten",
        "squeeze",
        "unsqueeze",
        "permute",
        "transpose",
        "t",
        "expand",
        "repeat",
        "slice",
        "select",
        "narrow",
        "clone",
        "contiguous",
        "_clone_dim_order",
        "alias",
        "pixel_shuffle",
        "pixel_unshuffle",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
    }
)
#: multi-input ops with the same rule: every input and the output quantized alike
CONCAT_OPS = frozenset({"cat", "concat", "stack"})

QParams = tuple[Any, ...]


def op_name(node: Any) -> str:
    """The aten op's name of a graph node ("view" for aten.view.default and for the edge
    dialect's aten.view_copy.default), the function's name otherwise, "" for non-calls."""
    if node.op != "call_function":
        return ""
    target = node.target
    if not hasattr(target, "overloadpacket"):  # an EdgeOpOverload wraps the aten op
        target = getattr(target, "_op", target)
    packet = getattr(target, "overloadpacket", None)
    name = getattr(packet, "__name__", None) or getattr(target, "__name__", str(target))
    return name.removesuffix("_copy") if name.endswith("_copy") and name[:-5] in SHAPE_OPS else name


def is_shape_op(node: Any) -> bool:
    """A value-moving op: a SHAPE_OPS or CONCAT_OPS call, or an item of a split."""
    name = op_name(node)
    if name == "getitem":
        return op_name(node.args[0]) in SHAPE_OPS
    return name in SHAPE_OPS or name in CONCAT_OPS


def _is_quantize(node: Any) -> bool:
    return op_name(node) == "quantize_per_tensor"


def _is_dequantize(node: Any) -> bool:
    return op_name(node) == "dequantize_per_tensor"


def _qparams(node: Any) -> QParams:
    """(scale, zero_point, quant_min, quant_max, dtype) of a per-tensor (de)quantize node."""
    return tuple(node.args[1:6])


def _value_inputs(node: Any) -> list[Any]:
    """The tensors a shape op moves: its first argument, every tensor of a concatenation."""
    first = node.args[0]
    return list(first) if op_name(node) in CONCAT_OPS else [first]


def source_dequantizes(node: Any) -> list[Any] | None:
    """The dequantize nodes whose values reach ``node`` through shape ops only (``node``
    itself if it is one); None when some value comes from anything else (a float op)."""
    if not isinstance(node, _fx_node()):
        return None
    if _is_dequantize(node):
        return [node]
    if not is_shape_op(node):
        return None
    found: list[Any] = []
    for value in _value_inputs(node):
        sources = source_dequantizes(value)
        if sources is None:
            return None
        found.extend(sources)
    return found


def share_shape_op_qparams(graph_module: Any) -> int:
    """Quantize the output of every shape op (chain) with its input's parameters.

    XNNPACKQuantizer shares the producer's quantization only through some shape ops (view,
    permute, transpose, slice, ...) and only right behind an annotated producer. Any other
    shape op (unflatten, unsqueeze, repeat, expand, select, ..., or a shared one behind such
    an op) runs between the producer's dequantize and the consumer's own input quantize: two
    observers, equal parameters only when both happen to choose the same range. XNNPACK
    takes ``dequantize -> view/permute -> quantize`` as one int8 reshape/transpose and
    refuses it when the two differ, at load ("Failed to create squeeze node ...
    xnn_status_invalid_parameter"). A shape op only moves, selects or replicates values,
    which already lie on the input's grid, so giving the quantize node (and its dequantize
    users) the input's parameters is exact. A concatenation of inputs quantized differently
    has no exact fix; it is left for ``shape_qparam_violations`` to report. Returns how many
    quantize nodes changed.
    """
    changed = 0
    for node in graph_module.graph.nodes:
        if not _is_quantize(node) or not is_shape_op(node.args[0]):
            continue
        sources = source_dequantizes(node.args[0])
        if not sources or len({_qparams(source) for source in sources}) != 1:
            continue
        params = _qparams(sources[0])
        if _qparams(node) == params:
            continue
        _set_qparams(node, params)
        for user in list(node.users):
            if _is_dequantize(user):
                _set_qparams(user, params)
        changed += 1
    graph_module.recompile()
    return changed


def share_qparams_through_repeat(graph_module: Any) -> int:
    """The repeat case of ``share_shape_op_qparams`` (which it now runs, for every shape op)."""
    return share_shape_op_qparams(graph_module)


def shape_qparam_violations(graph: Any) -> list[str]:
    """One line per shape op (chain) whose output is quantized unlike its input.

    ``graph``: a torch.fx Graph in aten or edge dialect (a converted PT2E graph, or an
    XNNPACK delegate's graph of a lowered program).
    """
    found = []
    for node in graph.nodes:
        if not _is_quantize(node) or not is_shape_op(node.args[0]):
            continue
        for source in source_dequantizes(node.args[0]) or []:
            if _qparams(source) != _qparams(node):
                found.append(
                    f"{_chain(node.args[0])}: input scale {_scale(source)} zero point "
                    f"{source.args[2]}, output scale {_scale(node)} zero point {node.args[2]} "
                    f"({node.name})"
                )
                break
    return found


def require_shared_shape_qparams(graphs: list[Any], where: str) -> None:
    """ExportError (one line) if a shape op of ``graphs`` requantizes its input."""
    found = [line for graph in graphs for line in shape_qparam_violations(graph)]
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ExportError(
            f"{where}: {len(found)} shape op(s) would requantize their input, which XNNPACK "
            f"refuses at load: {found[0]}{more}"
        )


def _set_qparams(node: Any, params: QParams) -> None:
    node.args = (node.args[0], *params, *node.args[6:])


def _chain(node: Any) -> str:
    """``node`` and the shape ops before it, in graph order: "unflatten -> repeat"."""
    names = []
    while isinstance(node, _fx_node()) and is_shape_op(node):
        names.append(op_name(node))
        inputs = _value_inputs(node)
        if len(inputs) != 1:
            break
        node = inputs[0]
    return " -> ".join(reversed(names))


def _scale(node: Any) -> str:
    scale = node.args[1]
    return f"{scale:.6g}" if isinstance(scale, float) else str(scale)


def _fx_node() -> type:
    import torch

    return torch.fx.Node


#: images per calibration forward, about 3x faster on T@224 than one at a time. Weights use
#: min/max observers (unaffected); activations a histogram observer, which sees the same values
#: in fewer updates (its bin edges, and so the chosen ranges, can differ slightly).
CALIBRATION_BATCH = 16


def export_any_batch(model: Any, example: Any) -> Any:
    """``model`` captured by torch.export with a dynamic batch dimension (calibration only:
    the quantized module is exported again, at the artifact's static shape, to lower it)."""
    import torch

    pair = torch.cat([example, example]) if example.shape[0] == 1 else example
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model, (pair,), dynamic_shapes=({0: batch},), strict=False).module()


def regroup(batches: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Single-image arrays regrouped to a static batch (remainder dropped)."""
    if batch_size == 1:
        return batches
    groups = [
        np.concatenate(batches[i : i + batch_size])
        for i in range(0, len(batches) - batch_size + 1, batch_size)
    ]
    if not groups:
        raise ExportError(f"calibration set has fewer images than the batch size {batch_size}")
    return groups
