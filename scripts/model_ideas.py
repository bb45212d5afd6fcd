"""Whole-model graph ideas tried against the chosen form, each a subcommand.

scripts/runtime_ideas.py tries runtime options and rewrites of finished artifacts; this script
builds variants of the PyTorch graph itself (same weights, same function), exports each beside
the form the converter exports, checks that they compute the same logits, and times them
round-robin in one process (``restv2_edge.bench.timing``). Numbers land under "Tried and
dropped" in docs/graph-forms.md.

    python scripts/model_ideas.py tokens-2d --weights W/weights-seed1.pth
    python scripts/model_ideas.py one-head-3d --weights W/weights-seed1.pth \\
        [--litert [--calibration W/calibration/inputs.npy]]
    python scripts/model_ideas.py one-head-batch2 --weights W/weights-seed1.pth \\
        [--litert [--calibration W/calibration/inputs.npy]]
    python scripts/model_ideas.py transpose-maps --weights W/weights-seed1.pth \\
        [--base FORM] [--litert] [--calibration W/calibration/inputs.npy]
    python scripts/model_ideas.py norm-fold --weights W/weights-seed1.pth
    python scripts/model_ideas.py mlp-conv --weights W/weights-seed1.pth \\
        [--calibration W/calibration/inputs.npy] [--litert]
    python scripts/model_ideas.py ov-mlp-conv --weights W/weights-seed1.pth \\
        [--calibration W/calibration/inputs.npy]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from runtime_ideas import (
    SIZE,
    THREADS,
    example,
    machine_line,
    optimized_op_counts,
    ort_call,
    ort_session,
    ov_call,
    report,
    tflite_call,
    worst_cosine,
)
from torch import nn

from restv2_edge.model import (
    Attention,
    Block,
    GraphForm,
    ResTV2,
    map_to_tokens,
    tokens_to_map,
)
from restv2_edge.script_args import OneLineParser, existing_file_arg, timed_runs_arg


class Tokens2dAttention(Attention):
    """EMSAv2 on (B*N, C) tokens: every linear sees a 2-D input (one Gemm, no Reshape
    around it), the batch comes back only where attention and the convs need it."""

    def forward(self, x: Any) -> Any:
        tokens = self.grid[0] * self.grid[1]
        reduced = self.reduced_grid[0] * self.reduced_grid[1]
        q = self.q(x) if self.q_prescaled else self.q(x) * self.scale
        if self.sr_ratio > 1:
            x = tokens_to_map(x.unflatten(0, (-1, tokens)), self.grid)
            x = self.sr_norm(map_to_tokens(self.sr(x)).flatten(0, 1))
        k, v = self.k(x), self.v(x)
        out = self._attend_4d(
            q.unflatten(0, (-1, tokens)),
            k.unflatten(0, (-1, reduced)),
            v.unflatten(0, (-1, reduced)),
        ).flatten(0, 1)
        v_map = tokens_to_map(v.unflatten(0, (-1, reduced)), self.reduced_grid)
        return self.proj(out + self.up_norm(self._upsample(v_map).flatten(0, 1)))


class Tokens2dBlock(Block):
    """A block on (B*N, C) tokens inside: (B, N, C) in and out, flattened once on entry."""

    def forward(self, x: Any) -> Any:
        batch = x.shape[0]
        return super().forward(x.flatten(0, 1)).unflatten(0, (batch, -1))


def tokens_2d_graph(graph: ResTV2) -> ResTV2:
    """A copy of ``graph`` (native form) with 2-D tokens in every block; the same
    parameters."""
    variant = copy.deepcopy(graph)
    for module in variant.modules():
        if type(module) is Attention:
            module.__class__ = Tokens2dAttention
        elif type(module) is Block:
            module.__class__ = Tokens2dBlock
    return variant


class OneHead3dAttention(Attention):
    """EMSAv2 whose one-head attentions (T's stage 1) use 3-D matmuls: no head axis, so
    no transposes around the unit head dimension."""

    def _attend_4d(self, q: Any, k: Any, v: Any) -> Any:
        return self._attend_3d(q, k, v) if self.num_heads == 1 else super()._attend_4d(q, k, v)


def one_head_3d_graph(graph: ResTV2) -> ResTV2:
    """A copy of ``graph`` (native form) whose one-head attentions use 3-D matmuls."""
    variant = copy.deepcopy(graph)
    for module in variant.modules():
        if type(module) is Attention:
            module.__class__ = OneHead3dAttention
    return variant


def one_head_batch2_graph(graph: ResTV2) -> ResTV2:
    """A copy of ``graph`` (native form) whose one-head attentions run as the
    ``native-onehead-batched`` form's batch of two matmuls (``Attention._attend_4d``): the
    form the LiteRT converter exports."""
    variant = copy.deepcopy(graph)
    for module in variant.modules():
        if isinstance(module, Attention):
            module.form = GraphForm.NATIVE_ONEHEAD_BATCHED
    return variant


def transposed_tokens_to_map(x: Any, grid: tuple[int, int]) -> Any:
    """(B, H*W, C) tokens -> (B, C, H, W) map as the model wrote it before: a 3-D transpose,
    then a reshape (which sits between it and a converter's NHWC transpose)."""
    return x.transpose(1, 2).unflatten(2, grid)


def transposed_map_to_tokens(x: Any) -> Any:
    """(B, C, H, W) map -> (B, H*W, C) tokens, a reshape then a 3-D transpose."""
    return x.flatten(2).transpose(1, 2)


class TransposedMaps(nn.Module):
    """``graph`` with every tokens <-> map conversion of ``restv2_edge.model`` written as
    transpose + reshape (the two functions above, swapped in while it runs, which is while
    a converter traces it): the same values, the transposes of the model's earlier form."""

    def __init__(self, graph: ResTV2) -> None:
        super().__init__()
        self.inner = graph  # not ``graph``: torch.export's modules have their own

    def forward(self, x: Any) -> Any:
        from restv2_edge import model

        saved = model.tokens_to_map, model.map_to_tokens
        model.tokens_to_map = transposed_tokens_to_map
        model.map_to_tokens = transposed_map_to_tokens
        try:
            return self.inner(x)
        finally:
            model.tokens_to_map, model.map_to_tokens = saved


def fold_norm_into(norm: Any, linears: list[Any]) -> None:
    """LayerNorm ``norm``'s affine (gamma, beta) moved into the ``linears`` it alone feeds:
    W x_hat * gamma + W beta + b = (W diag(gamma)) x_hat + (W beta + b); ``norm`` keeps only
    its normalization."""
    with torch.no_grad():
        for linear in linears:
            linear.bias.add_(linear.weight @ norm.bias)
            linear.weight.mul_(norm.weight)
    norm.weight, norm.bias = None, None


def norm_fold_graph(graph: ResTV2) -> ResTV2:
    """A copy of ``graph`` (native form) with the affine of every LayerNorm that feeds only
    linears folded into them: each block's ``norm2`` (fc1), each ``sr_norm`` (k, v) and the
    final norm (the head, through the mean pooling)."""
    variant = copy.deepcopy(graph)
    for module in variant.modules():
        if isinstance(module, Block):
            fold_norm_into(module.norm2, [module.mlp.fc1])
        if isinstance(module, Attention) and module.sr_ratio > 1:
            fold_norm_into(module.sr_norm, [module.k, module.v])
    fold_norm_into(variant.norm, [variant.head])
    return variant


def _pointwise(linear: nn.Linear) -> nn.Conv2d:
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None, None])
        conv.bias.copy_(linear.bias)
    return conv


def mlp_conv_graph(graph: ResTV2, grids: set[tuple[int, int]] | None = None) -> ResTV2:
    """A copy of ``graph`` (native or native-convtranspose form) whose block MLPs on ``grids``
    (all when None) run as the ``native-pointwise`` form's two 1x1 convs on the map
    (``Mlp._pointwise``)."""
    variant = copy.deepcopy(graph)
    for module in variant.modules():
        if isinstance(module, Block) and (grids is None or module.attn.grid in grids):
            module.mlp.form = GraphForm.NATIVE_POINTWISE
    return variant


class PointwiseLinear(nn.Module):
    """A token linear as a 1x1 conv on the map, tokens in and out."""

    def __init__(self, linear: nn.Linear, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = grid
        self.conv = _pointwise(linear)

    def forward(self, x: Any) -> Any:
        return map_to_tokens(self.conv(tokens_to_map(x, self.grid)))


def linears_conv_graph(graph: ResTV2) -> ResTV2:
    """:func:`mlp_conv_graph`, and every attention linear (q, k, v, proj) a 1x1 conv too."""
    variant = mlp_conv_graph(graph)
    for attn in variant.modules():
        if isinstance(attn, Attention):
            attn.q = PointwiseLinear(attn.q, attn.grid)
            attn.k = PointwiseLinear(attn.k, attn.reduced_grid)
            attn.v = PointwiseLinear(attn.v, attn.reduced_grid)
            attn.proj = PointwiseLinear(attn.proj, attn.grid)
    return variant


def mlp_conv_ends_graph(graph: ResTV2) -> ResTV2:
    """1x1-conv MLPs on the first and last stages only (56x56 and 7x7 at 224), where the
    pointwise kernels gained most against Gemm on their own."""
    grids = {block.attn.grid for block in graph.modules() if isinstance(block, Block)}
    ordered = sorted(grids, reverse=True)
    return mlp_conv_graph(graph, {ordered[0], ordered[-1]})


def onnx_calls(variants: dict[str, Any], x: Any, folder: Path) -> dict[str, Any]:
    """Each variant exported as the onnx converter does (opset 20, dynamo) and loaded into
    an onnxruntime session: one timing call per variant, and its optimized op counts."""
    calls = {}
    for key, graph in variants.items():
        path = folder / f"{key}.onnx"
        program = torch.onnx.export(
            graph, (torch.from_numpy(x),), dynamo=True, opset_version=20, external_data=False
        )
        program.save(str(path))
        calls[f"onnxruntime {key}"] = ort_call(ort_session(str(path)), x)
        counts = optimized_op_counts(path)
        print(f"{key}: onnxruntime's optimized graph holds {counts.get('Reshape', 0)} Reshape, "
              f"{counts.get('Transpose', 0)} Transpose")  # fmt: skip
    return calls


def onnx_int8_calls(
    variants: dict[str, Any], x: Any, folder: Path, calibration: Path
) -> dict[str, Any]:
    """Each exported variant quantized by the onnx INT8 recipe (calibration/onnx.py) on the
    same calibration images: one timing call each, and the worst cosine to its own fp32."""
    import onnxruntime as ort
    from restv2_edge.calibration import onnx as recipe

    inputs = np.load(calibration)
    batches = [inputs[i : i + 1] for i in range(len(inputs))]
    calls = {}
    for key in variants:
        fp32_path, int8_path = folder / f"{key}.onnx", folder / f"{key}.int8.onnx"
        name = ort.InferenceSession(str(fp32_path)).get_inputs()[0].name
        recipe.quantize_onnx_file(fp32_path, int8_path, batches, name)
        fp32, int8 = ort_session(str(fp32_path)), ort_session(str(int8_path))
        expected = [fp32.run(None, {name: image[None]})[0] for image in inputs[:8]]
        got = [int8.run(None, {name: image[None]})[0] for image in inputs[:8]]
        print(f"{key} int8: worst cosine to its fp32 {worst_cosine(expected, got):.6f}")
        calls[f"onnxruntime int8 {key}"] = ort_call(int8, x)
    return calls


def ov_int8_calls(converted: dict[str, Any], x: Any, calibration: Path) -> dict[str, Any]:
    """Each converted variant quantized with the OpenVINO INT8 recipe's NNCF settings
    (calibration/openvino.py) on the same calibration images, run with float ops at f32: one
    timing call each, and the worst cosine to its own f32 run."""
    import nncf
    import openvino as ov
    from restv2_edge.calibration import openvino as recipe

    inputs = np.load(calibration)
    batches = [inputs[i : i + 1] for i in range(len(inputs))]
    settings, advanced = recipe.nncf_settings(len(batches))
    f32 = {"INFERENCE_NUM_THREADS": THREADS, "INFERENCE_PRECISION_HINT": "f32"}
    calls = {}
    for key, fp32 in converted.items():
        with recipe.snippets_disabled():
            quantized = nncf.quantize(
                fp32, nncf.Dataset(batches), advanced_parameters=advanced, **settings
            )
        reference = ov.Core().compile_model(fp32, "CPU", f32)
        compiled = ov.Core().compile_model(quantized, "CPU", f32)
        expected = [np.asarray(reference(image[None])[0]) for image in inputs[:8]]
        got = [np.asarray(compiled(image[None])[0]) for image in inputs[:8]]
        print(f"{key} int8: worst cosine to its f32 {worst_cosine(expected, got):.6f}")
        calls[f"openvino int8 {key}"] = ov_call(quantized, {"INFERENCE_PRECISION_HINT": "f32"}, x)
    return calls


def litert_calls(variants: dict[str, Any], x: Any, folder: Path) -> dict[str, Any]:
    """Each variant converted as the LiteRT converter does (``convert_float``) and run by the
    Interpreter with its XNNPACK delegate: one timing call each."""
    from restv2_edge.converters.litert import convert_float

    calls = {}
    for key, graph in variants.items():
        path = folder / f"{key}.tflite"
        path.write_bytes(convert_float(graph, torch.from_numpy(x)))
        calls[f"litert {key}"] = tflite_call(str(path), x)
    return calls


def litert_int8_calls(folder: Path, keys: list[str], x: Any, calibration: Path) -> dict[str, Any]:
    """Each converted variant (``litert_calls``'s .tflite) quantized by the LiteRT INT8 recipe
    (calibration/litert.py: the weight ops int8 but the head and the V-upsampling convs) on
    the same calibration images: one timing call each, and the worst cosine to its own fp32."""
    from restv2_edge.calibration.litert import LiteRTQuantizer

    inputs = np.load(calibration)
    batches = [inputs[i : i + 1] for i in range(len(inputs))]
    calls = {}
    for key in keys:
        quantizer = LiteRTQuantizer((folder / f"{key}.tflite").read_bytes(), batches)
        fp32 = tflite_call(str(folder / f"{key}.tflite"), x)
        int8 = tflite_call(quantizer.quantize(quantizer.head), x)
        expected = [fp32(image[None]) for image in inputs[:8]]
        got = [int8(image[None]) for image in inputs[:8]]
        print(f"{key} litert int8: worst cosine to its fp32 {worst_cosine(expected, got):.6f}")
        calls[f"litert int8 {key}"] = int8
    return calls


def compare(
    args: argparse.Namespace,
    makers: dict[str, Any],
    base_form: str = "native",
    onnx: bool = True,
) -> None:
    """``base_form`` (native: what the onnx converter exports) against each of ``makers``
    (name -> variant builder) applied to it, in OpenVINO (f32) and, with ``onnx``, in
    onnxruntime, fp32."""
    import openvino as ov

    from restv2_edge.export import export_graph
    from restv2_edge.factory import create_model

    model = create_model("T", image_size=SIZE, weights=args.weights)
    base = export_graph(model, base_form, raw_input=False)
    variants = {base_form: base, **{name: make(base) for name, make in makers.items()}}
    x = example()
    with torch.no_grad():
        logits = {key: graph(torch.from_numpy(x)) for key, graph in variants.items()}
    for name in makers:
        difference = (logits[base_form] - logits[name]).abs().max().item()
        print(f"max |dlogit| {name} vs {base_form} (eager): {difference:.1e}")
    calls = {}
    with tempfile.TemporaryDirectory(prefix="restv2-model-ideas-") as folder:
        if onnx:
            calls.update(onnx_calls(variants, x, Path(folder)))
        if onnx and args.calibration is not None:
            calls.update(onnx_int8_calls(variants, x, Path(folder), args.calibration))
        if args.litert:
            calls.update(litert_calls(variants, x, Path(folder)))
        if args.litert and args.calibration is not None:
            calls.update(litert_int8_calls(Path(folder), list(variants), x, args.calibration))
    converted = {
        key: ov.convert_model(graph, example_input=torch.from_numpy(x), input=[x.shape])
        for key, graph in variants.items()
    }
    for key, ov_model in converted.items():
        calls[f"openvino {key}"] = ov_call(ov_model, {"INFERENCE_PRECISION_HINT": "f32"}, x)
    if not onnx and args.calibration is not None:
        calls.update(ov_int8_calls(converted, x, args.calibration))
    runtimes = ("onnxruntime int8", "onnxruntime", "openvino int8", "openvino", "litert int8")
    for runtime in (*runtimes, "litert"):
        pair = {key: calls.pop(key) for key in list(calls) if key.startswith(runtime)}
        if pair:
            report(pair, args.runs)


def tokens_2d(args: argparse.Namespace) -> None:
    """Every block on 2-D (B*N, C) tokens against the native form."""
    compare(args, {"tokens-2d": tokens_2d_graph})


def one_head_3d(args: argparse.Namespace) -> None:
    """One-head attentions as 3-D matmuls against the native form."""
    compare(args, {"one-head-3d": one_head_3d_graph})


def one_head_batch2(args: argparse.Namespace) -> None:
    """The one-head attentions as a batch of two matmuls against the native form."""
    compare(args, {"one-head-batch2": one_head_batch2_graph})


def transpose_maps(args: argparse.Namespace) -> None:
    """A form (``--base``, LiteRT's by default) as exported, its tokens <-> map conversions
    a reshape and one 4-D permute, against the same with transpose + reshape (the model's
    earlier writing); with OpenVINO's form, OpenVINO alone (int8 with ``--calibration``)."""
    openvino_only = args.base == "native-convtranspose"
    compare(
        args,
        {"transpose-maps": lambda graph: TransposedMaps(copy.deepcopy(graph))},
        args.base,
        not openvino_only,
    )


def norm_fold(args: argparse.Namespace) -> None:
    """LayerNorm affines folded into the linears they feed against the native form."""
    compare(args, {"norm-fold": norm_fold_graph})


def mlp_conv(args: argparse.Namespace) -> None:
    """Block MLPs as 1x1 convs on the map (every stage; first and last stage), and every
    block linear as one, against the native form."""
    compare(
        args,
        {
            "mlp-conv": mlp_conv_graph,
            "mlp-conv-ends": mlp_conv_ends_graph,
            "linears-conv": linears_conv_graph,
        },
    )


def ov_mlp_conv(args: argparse.Namespace) -> None:
    """OpenVINO's fp32 and int8 form (native-convtranspose) with its block MLPs as 1x1 convs
    too, against that form alone (int8 with ``--calibration``)."""
    compare(args, {"convtranspose+mlp-conv": mlp_conv_graph}, "native-convtranspose", False)


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (
        ("tokens-2d", tokens_2d),
        ("one-head-3d", one_head_3d),
        ("one-head-batch2", one_head_batch2),
        ("transpose-maps", transpose_maps),
        ("norm-fold", norm_fold),
        ("mlp-conv", mlp_conv),
        ("ov-mlp-conv", ov_mlp_conv),
    ):
        command = sub.add_parser(name, help=func.__doc__.splitlines()[0])
        command.set_defaults(func=func)
        command.add_argument(
            "--weights", type=existing_file_arg, required=True, help="a checkpoint (.pth)"
        )
        command.add_argument("--runs", type=timed_runs_arg, default=40)
        command.add_argument(
            "--calibration",
            type=existing_file_arg,
            help="inputs.npy: also time each variant quantized by the onnx INT8 recipe "
            "(ov-mlp-conv: the OpenVINO one; with --litert also the LiteRT one)",
        )
        command.add_argument(
            "--litert", action="store_true", help="also time each variant through LiteRT"
        )
    sub.choices["transpose-maps"].add_argument(
        "--base",
        choices=[form.value for form in GraphForm],
        default=GraphForm.NATIVE_ONEHEAD_BATCHED.value,
        help="the form rewritten and compared against (default: LiteRT's)",
    )
    args = parser.parse_args()
    print(machine_line())
    args.func(args)


if __name__ == "__main__":
    main()
