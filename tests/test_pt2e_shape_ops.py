"""Shape ops in the PT2E int8 graph: ``calibration/pt2e.py`` ``share_shape_op_qparams`` and the
checks of the ExecuTorch recipe.

XNNPACK takes ``dequantize -> shape op -> quantize`` as one int8 op and refuses, at load, a
reshape or transpose whose input and output quantization differ. ``ShapeOps``
reaches a consumer linear through each shape op kind; the branches select or replicate values
behind ops XNNPACKQuantizer does not annotate, so the consumer's own input observer sees other
values than the producer's output observer and picks other parameters. The truth the pass is
compared with is the observers' own ``calculate_qparams``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("executorch")
pytest.importorskip("torchao")

from conftest import run_cli
from restv2_edge.calibration.pt2e import (
    calibrate_pt2e,
    require_shared_shape_qparams,
    shape_qparam_violations,
    share_shape_op_qparams,
)

from restv2_edge.artifact import open_artifact
from restv2_edge.errors import ArtifactError, ExportError

#: aten ops each branch must put between the source and its consumer (the prepared graph)
SHAPE_KINDS = {
    "view": {"view"},
    "reshape": {"reshape"},
    "flatten": {"flatten"},
    "unflatten": {"unflatten"},
    "squeeze": {"squeeze"},
    "unsqueeze": {"unsqueeze"},
    "permute": {"permute"},
    "transpose": {"transpose"},
    "repeat": {"repeat"},
    "expand": {"expand"},
    "slice": {"slice"},
    "select": {"select"},
    "narrow": {"narrow"},
    "split": {"split", "getitem"},
    "chunk": {"chunk", "getitem"},
    "clone": {"clone"},
    "contiguous": {"contiguous"},
    "cat": {"cat"},
}


def _grid(y: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4, 4): XNNPACKQuantizer does not annotate unflatten, nothing behind it shares."""
    return y.unflatten(2, (4, 4))


def _row(y: torch.Tensor) -> torch.Tensor:
    """(B, 16): select is not annotated either."""
    return y.select(1, 0)


def _low(y: torch.Tensor) -> torch.Tensor:
    """(B, 4, 8): a slice, which shares the source's quantization."""
    return y[..., :8]


#: each shape op kind applied to the source linear's output y (B, 4, 16)
BRANCHES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "view": lambda y: _row(y).view(-1, 4, 4)[..., :2],
    "reshape": lambda y: _row(y).reshape(-1, 2, 8)[..., :3],
    "flatten": lambda y: _grid(y)[:, :, :2].flatten(2),
    "unflatten": lambda y: _low(y).unflatten(2, (2, 4)),
    "squeeze": lambda y: _grid(y)[:, :, :1].squeeze(2),
    "unsqueeze": lambda y: _low(y).unsqueeze(-1),
    "permute": lambda y: _grid(y).permute(0, 2, 1, 3)[:, :1],
    "transpose": lambda y: _row(y).unflatten(1, (4, 4)).transpose(1, 2)[..., :2],
    "repeat": lambda y: _low(y).repeat(1, 1, 2),
    "expand": lambda y: _low(y)[..., :1].expand(-1, -1, 16),
    "slice": lambda y: _grid(y).flatten(2)[..., :8],
    "select": lambda y: _grid(y).select(2, 1).flatten(2),
    "narrow": lambda y: _low(y).narrow(2, 0, 4),
    "split": lambda y: _row(y).split(8, dim=1)[0],
    "chunk": lambda y: _row(y).chunk(4, dim=1)[1],
    "clone": lambda y: _grid(y).clone()[:, :, 0],
    "contiguous": lambda y: _grid(y).transpose(2, 3).contiguous()[:, 0],
    "cat": lambda y: torch.cat([_low(y)[:, :2], _row(y).unflatten(1, (2, 8))], 1),
}


class ShapeOps(nn.Module):
    """A linear whose output reaches one consumer linear per shape op kind (``kinds``)."""

    def __init__(self, kinds: tuple[str, ...] = tuple(BRANCHES)) -> None:
        super().__init__()
        self.source = nn.Linear(16, 16)
        with torch.no_grad():  # growing feature ranges: a subset has another range than all
            self.source.weight.mul_(torch.linspace(0.1, 3.0, 16).unsqueeze(1))
        zeros = torch.zeros(1, 4, 16)
        self.heads = nn.ModuleDict(
            {kind: nn.Linear(BRANCHES[kind](zeros).shape[-1], 2) for kind in kinds}
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.source(x)
        return tuple(head(BRANCHES[kind](y)) for kind, head in self.heads.items())


@dataclass
class Branch:
    """One head's input as the prepared graph observes it."""

    linear: str  # the head's linear node (same name in the converted graph)
    ops: set[str]  # the aten ops between the two observers
    source: tuple[float, int]  # the producer-side observer's qparams
    consumer: tuple[float, int]  # the head's own input observer's qparams


def _observer_qparams(prepared: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[float, int]:
    scale, zero_point = getattr(prepared, node.target).calculate_qparams()
    return float(scale), int(zero_point)


def _op(node: torch.fx.Node) -> str:
    packet = getattr(node.target, "overloadpacket", None)
    return packet.__name__ if packet is not None else node.target.__name__


def observed_branches(prepared: torch.fx.GraphModule) -> dict[str, Branch]:
    """Every head's branch: walk from its input observer up to the nearest observer."""
    found = {}
    for node in prepared.graph.nodes:
        if node.target is not torch.ops.aten.linear.default or node.args[2].name == "source_bias":
            continue
        name = node.args[2].name.removeprefix("heads_").removesuffix("_bias")
        consumer = node.args[0]
        value, ops = consumer.args[0], set()
        while value.op == "call_function":
            ops.add(_op(value))
            first = value.args[0]
            value = first[0] if isinstance(first, (list, tuple)) else first
        found[name] = Branch(
            node.name,
            ops,
            _observer_qparams(prepared, value),
            _observer_qparams(prepared, consumer),
        )
    return found


def head_input_qparams(converted: torch.fx.GraphModule, linear: str) -> tuple[float, int]:
    """(scale, zero point) of the quantize node feeding head ``linear`` in the converted graph."""
    node = next(n for n in converted.graph.nodes if n.name == linear)
    quantize = node.args[0].args[0]  # linear <- dequantize <- quantize
    assert "quantize_per_tensor" in str(quantize.target), quantize
    return float(quantize.args[1]), int(quantize.args[2])


def _calibration(seed: int = 0, count: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((1, 4, 16)) * rng.uniform(0.5, 4.0)).astype(np.float32)
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def quantized() -> SimpleNamespace:
    """ShapeOps captured, prepared and calibrated as the recipe does, then converted."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    torch.manual_seed(0)
    model = ShapeOps().eval()
    example = torch.randn(1, 4, 16)
    prepared = calibrate_pt2e(model, example, _calibration())
    observed = observed_branches(prepared)
    with torch.no_grad():
        converted = convert_pt2e(prepared)
    return SimpleNamespace(model=model, example=example, branches=observed, converted=converted)


def _shared(quantized: SimpleNamespace) -> torch.fx.GraphModule:
    graph = copy.deepcopy(quantized.converted)
    share_shape_op_qparams(graph)
    return graph


def _node_values(graph: torch.fx.GraphModule, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every node's value when ``graph`` runs on ``x``."""
    values: dict[str, torch.Tensor] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node: torch.fx.Node) -> object:
            values[node.name] = super().run_node(node)
            return values[node.name]

    with torch.no_grad():
        Recorder(graph).run(x)
    return values


def _cat(graph: torch.fx.GraphModule) -> torch.fx.Node:
    return next(n for n in graph.graph.nodes if n.target is torch.ops.aten.cat.default)


def _rescale(node: torch.fx.Node, factor: float) -> None:
    node.args = (node.args[0], node.args[1] * factor, *node.args[2:])


@pytest.fixture(scope="module")
def lowered() -> SimpleNamespace:
    """The unflatten branch alone lowered to XNNPACK, with the pass (good) and without (bad)."""
    from restv2_edge.converters.executorch import lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    torch.manual_seed(0)
    example = torch.randn(1, 4, 16)
    prepared = calibrate_pt2e(ShapeOps(("unflatten",)).eval(), example, _calibration())
    with torch.no_grad():
        bad = convert_pt2e(prepared)
    good = copy.deepcopy(bad)
    assert share_shape_op_qparams(good) == 1
    return SimpleNamespace(good=lower(good, example)[0], bad=lower(bad, example)[0])


def _delegate_violations(program) -> list[str]:
    from restv2_edge.calibration.executorch import delegate_graphs

    graphs = delegate_graphs(program.exported_program())
    assert graphs, "nothing was delegated"
    return [line for graph in graphs for line in shape_qparam_violations(graph)]


class TestExecuTorchShapeOps:
    """The pass, the checks and the load, on ShapeOps (cheap; no ResTv2)."""

    def test_every_shape_op_kind_sits_between_observers_that_disagree(self, quantized) -> None:
        observed = quantized.branches
        assert set(observed) == set(SHAPE_KINDS)
        for name, kinds in SHAPE_KINDS.items():
            assert kinds <= observed[name].ops, (name, observed[name].ops)
        # convert_pt2e quantizes each head's input with its own observer's parameters ...
        for branch in observed.values():
            assert head_input_qparams(quantized.converted, branch.linear) == branch.consumer
        # ... and for every kind but cat (XNNPACKQuantizer shares one observer over a cat's
        # inputs and output) that observer chose other parameters than the source's
        disagreeing = {name for name, b in observed.items() if b.source != b.consumer}
        assert disagreeing == set(SHAPE_KINDS) - {"cat"}

    def test_the_pass_gives_every_shape_op_its_input_quantization(self, quantized) -> None:
        before = shape_qparam_violations(quantized.converted.graph)
        disagreeing = [b for b in quantized.branches.values() if b.source != b.consumer]
        assert len(before) == len(disagreeing)
        graph = copy.deepcopy(quantized.converted)
        assert share_shape_op_qparams(graph) == len(disagreeing)
        for name, branch in quantized.branches.items():
            assert head_input_qparams(graph, branch.linear) == branch.source, name
        for node in graph.graph.nodes:  # every dequantize reads what its quantize wrote
            if "dequantize_per_tensor" in str(node.target) and "quantize" in str(
                node.args[0].target
            ):
                assert node.args[1:] == node.args[0].args[1:], node
        assert shape_qparam_violations(graph.graph) == []
        assert share_shape_op_qparams(graph) == 0

    def test_the_pass_is_exact(self, quantized) -> None:
        """After it, every head reads exactly the source's dequantized values moved by its shape
        ops: they already lie on the source's grid, so quantizing them with its parameters
        changes nothing."""
        graph = _shared(quantized)
        source = next(n for n in graph.graph.nodes if n.name == "linear")
        dequantized = next(iter(next(iter(source.users)).users))  # linear -> quantize -> dequantize
        x = torch.from_numpy(np.concatenate(_calibration(seed=1, count=4)))
        values = _node_values(graph, x)
        moved = {kind: move(values[dequantized.name]) for kind, move in BRANCHES.items()}
        for name, branch in quantized.branches.items():
            head = next(n for n in graph.graph.nodes if n.name == branch.linear)
            assert torch.equal(values[head.args[0].name], moved[name]), name

    def test_a_requantizing_cat_output_gets_its_inputs_quantization(self, quantized) -> None:
        graph = _shared(quantized)
        quantize = next(iter(_cat(graph).users))
        _rescale(quantize, 1.5)
        for user in list(quantize.users):
            _rescale(user, 1.5)
        [line] = shape_qparam_violations(graph.graph)
        assert line.startswith("cat: input scale"), line
        assert share_shape_op_qparams(graph) == 1
        cat = quantized.branches["cat"]
        assert head_input_qparams(graph, cat.linear) == cat.source
        assert shape_qparam_violations(graph.graph) == []

    def test_a_cat_of_differently_quantized_inputs_is_reported(self, quantized) -> None:
        """No exact sharing exists for it: the pass leaves it, the check refuses it in one line."""
        graph = _shared(quantized)
        first = _cat(graph).args[0][0]
        assert "dequantize_per_tensor" in str(first.target)
        _rescale(first, 1.5)
        assert share_shape_op_qparams(graph) == 0
        [line] = shape_qparam_violations(graph.graph)
        assert line.startswith("cat: input scale"), line
        with pytest.raises(ExportError) as info:
            require_shared_shape_qparams([graph.graph], "executorch int8: the quantized graph")
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith("executorch int8: the quantized graph: 1 shape op(s)")
        assert "XNNPACK refuses" in message and "cat" in message

    def test_the_lowered_program_is_checked_and_loads_only_with_the_pass(self, lowered) -> None:
        from restv2_edge.converters.executorch import LOAD_CHECK, load_forward

        assert _delegate_violations(lowered.good) == []
        load_forward(lowered.good.buffer, ExportError, LOAD_CHECK)
        found = _delegate_violations(lowered.bad)
        assert any(line.startswith("view: input scale") for line in found), found
        with pytest.raises(ExportError) as info:
            load_forward(lowered.bad.buffer, ExportError, LOAD_CHECK)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"{LOAD_CHECK}: ExecuTorch load_method forward failed: Runtime")
        assert (
            "runtime log: Failed to create" in message and "xnn_status_invalid_parameter" in message
        )

    def test_a_runner_load_failure_is_one_artifact_error_line(
        self, lowered, tmp_path: Path
    ) -> None:
        from restv2_edge.converters.executorch import CONVERTER

        (tmp_path / "model.pte").write_bytes(lowered.bad.buffer)
        manifest = SimpleNamespace(model_file="model.pte", batch_size=1, export={})
        with pytest.raises(ArtifactError) as info:
            CONVERTER.load(tmp_path, manifest)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(
            f"{tmp_path / 'model.pte'}: ExecuTorch load_method forward failed"
        )
        assert "xnn_status_invalid_parameter" in message
        (tmp_path / "model.pte").write_bytes(lowered.good.buffer)
        runner = CONVERTER.load(tmp_path, manifest)
        outputs = runner.method.execute([torch.zeros(1, 4, 16)])
        assert outputs[0].shape == (1, 4, 2, 2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_t_int8_executorch_exports_for_any_calibration_seed(
    t_checkpoint: Path, photo_dir: Path, tmp_path: Path, seed: int
) -> None:
    """Random-weight official T, 64 calibration photos drawn with ``seed``: exports, loads in
    executorch.runtime and passes its parity gate."""
    calib, out = tmp_path / "calib", tmp_path / "t-int8"
    made = run_cli("calibrate", "--data", photo_dir, "--size", 64, "--seed", seed,
                   "--output", calib)  # fmt: skip
    assert made.returncode == 0, made.stderr
    exported = run_cli("export", "--target", "executorch", "--int8", "--weights", t_checkpoint,
                       "--calib", calib, "--output", out, timeout=3600)  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    assert manifest["parity"]["status"] == "passed", manifest["parity"]
    _, runner = open_artifact(out)
    assert runner(np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 1000)
