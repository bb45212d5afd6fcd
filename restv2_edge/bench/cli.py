"""``restv2-edge bench``: artifacts (the default command), ``bench matrix`` and ``bench gpu``.

``bench ARTIFACT_DIR...`` is ``bench run ARTIFACT_DIR...``. A leading ``--matrix`` or
``--device`` is the older spelling of ``bench matrix`` / ``bench gpu`` and routes there.
Report paths (``--json``, ``--markdown``, ``--plot``) are checked while the command line is
parsed, so a bad path fails before minutes of exporting and timing; reports are written
atomically (``restv2_edge.publish``). Heavy imports happen inside the commands, so
``restv2-edge --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import click

from restv2_edge.bench.gpu import DEFAULTS as GPU_DEFAULTS
from restv2_edge.bench.gpu import DTYPES
from restv2_edge.cli_types import ImageSize, device_option
from restv2_edge.scale.address import ray_option
from restv2_edge.scale.cluster import DEFAULT_RETRIES


class BenchGroup(click.Group):
    """A group whose first token picks the command; anything else goes to ``run``."""

    default_command = "run"
    #: older spellings, as the first token: flag -> (command, whether the flag is dropped)
    aliases: ClassVar[dict[str, tuple[str, bool]]] = {
        "--matrix": ("matrix", True),
        "--device": ("gpu", False),
    }

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self.route(ctx, list(args)))

    def route(self, ctx: click.Context, args: list[str]) -> list[str]:
        """``args`` with the command to run first (the default, or an alias's command)."""
        first = args[0] if args else ""
        if first in self.commands or first in ctx.help_option_names:
            return args
        flag = "--device" if first.startswith("--device=") else first
        if flag in self.aliases:
            command, drop = self.aliases[flag]
            return [command, *(args[1:] if drop else args)]
        return [self.default_command, *args]


class ListOptionCommand(click.Command):
    """A command whose ``multiple`` options also take space-separated values.

    ``--batch 1 64 256`` is read as ``--batch 1 --batch 64 --batch 256`` (the spelling of
    the argparse entry ``python -m restv2_edge.bench.gpu``).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = {
            name
            for param in self.params
            if isinstance(param, click.Option) and param.multiple
            for name in param.opts
        }
        return super().parse_args(ctx, expand_lists(list(args), names))


def expand_lists(args: list[str], names: set[str]) -> list[str]:
    """Repeat a list option's name before each of its values after the first."""
    out: list[str] = []
    current, first_pending = None, False
    for index, token in enumerate(args):
        if token == "--":
            return out + args[index:]
        if token.startswith("-"):
            name, equals, _ = token.partition("=")
            current = name if name in names else None
            first_pending = current is not None and not equals
            out.append(token)
        elif current is not None and not first_pending:
            out += [current, token]
        else:
            out.append(token)
            first_pending = False
    return out


# -- shared pieces ---------------------------------------------------------------------------


def _report_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse an unwritable report path now, not after the measuring (OutputError)."""
    if value is not None:
        from restv2_edge.publish import check_report_path

        check_report_path(value)
    return value


def _plot_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    value = _report_path(ctx, param, value)
    if value is not None:
        from restv2_edge.bench.report import check_matplotlib

        check_matplotlib()
    return value


def _timing_options(
    command: Callable[..., Any] | None = None, *, artifact_batch: bool = False
) -> Any:
    """--threads, --warmup, --runs, --batch, --json: the options every CPU bench takes.

    ``artifact_batch``: --batch defaults to each artifact's own exported batch (bench run).
    """
    if command is None:
        return lambda function: _timing_options(function, artifact_batch=artifact_batch)
    batch = (
        {"default": None, "help": "Images per call (default: each artifact's exported batch)."}
        if artifact_batch
        else {"default": 1, "show_default": True, "help": "Images per call."}
    )
    options = [
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            default=None,
            help="Threads per runtime (default: all usable cores).",
        ),
        click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True),
        click.option(
            "--runs",
            type=click.IntRange(min=1),
            default=20,
            show_default=True,
            help="Timed calls per row.",
        ),
        click.option("--batch", type=click.IntRange(min=1), **batch),
        click.option(
            "--json",
            "json_file",
            type=click.Path(),
            default=None,
            callback=_report_path,
            help="Write the report here (JSON).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _console() -> Any:
    """The CLI's progress console (stderr), shared with every other command."""
    from restv2_edge.cli import console

    return console()


def _table_console() -> Any:
    """Tables go to stdout; piped output is not squeezed to 80 columns."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


@contextlib.contextmanager
def _spinner(out: Any) -> Iterator[Callable[[str], None]]:
    with out.status("bench...") as status:
        yield lambda step: status.update(f"{step}...")


@contextlib.contextmanager
def _cluster(o: dict[str, Any]) -> Iterator[Any]:
    """The matrix's cells on Ray (``--ray``), or None for a local run; ray is imported only
    with --ray."""
    if o["ray_address"] is None:
        yield None
        return
    from restv2_edge.scale.cluster import connected
    from restv2_edge.scale.executor import MatrixCells
    from restv2_edge.scale.payload import BYTES, SHARED

    ship = SHARED if o["shared_storage"] else BYTES
    with connected(o["ray_address"]) as ray:
        yield MatrixCells(ray, o["ray_address"], ship, o["retries"])


def _write(path: str | None, text: str, out: Any) -> None:
    if path:
        from restv2_edge.publish import write_report

        write_report(path, text)
        out.print(f"wrote {path}")


# -- commands --------------------------------------------------------------------------------


@click.group(cls=BenchGroup, subcommand_metavar="[ARTIFACT_DIR]... | COMMAND [ARGS]...")
def bench() -> None:
    """Latency, throughput, size and peak memory of artifacts; the export matrix; the GPU.

    \b
    restv2-edge bench ARTIFACT_DIR...   is bench run ARTIFACT_DIR...  (--device: run's)
    restv2-edge bench --matrix ...      is bench matrix ...   (older spelling)
    restv2-edge bench --device cuda ... is bench gpu --device cuda ...   (older spelling)
    """


@bench.command("run")
@click.argument("artifact_dir", nargs=-1, type=click.Path())
@_timing_options(artifact_batch=True)
@device_option
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory subprocess per artifact.")
def run_command(
    artifact_dir: tuple[str, ...],
    json_file: str | None,
    no_memory: bool,
    device: str | None,
    **timing: Any,
) -> None:
    """Artifact folders, interleaved: latency, throughput, size, peak memory (the default)."""
    if not artifact_dir:
        raise click.UsageError("give ARTIFACT_DIR(s), or use bench matrix / bench gpu")
    from restv2_edge.bench.artifacts import bench_artifacts
    from restv2_edge.bench.report import render_artifacts

    out = _console()
    with _spinner(out) as progress:
        report = bench_artifacts(
            list(artifact_dir),
            timing["threads"],
            timing["warmup"],
            timing["runs"],
            timing["batch"],
            not no_memory,
            progress,
            device,
        )
    render_artifacts(report, _table_console())
    _write(json_file, json.dumps(report, indent=2) + "\n", out)


@bench.command("matrix")
@click.option(
    "--variant", default=None, help="T, S, B, L or a JSON config (default T or the checkpoint's)."
)
@click.option(
    "--image-size", type=ImageSize(), default=None, help="Default: the checkpoint's, else 224."
)
@click.option("--weights", type=click.Path(), default=None, help="Checkpoint (default: random).")
@click.option("--int8", is_flag=True, help="Add int8 rows where the target has a recipe.")
@click.option(
    "--targets",
    default=None,
    help="Comma-separated subset of the installed targets (default: all installed).",
)
@_timing_options
@click.option("--calib", type=click.Path(), default=None, help="int8: a saved calibration set.")
@click.option(
    "--calib-data",
    type=click.Path(),
    default=None,
    help="int8: calibration images (default: the shared ImageNet sample).",
)
@click.option("--calib-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--output",
    type=click.Path(),
    default="exports/bench",
    show_default=True,
    help="Where the artifacts are written.",
)
@click.option("--parity-data", type=click.Path(), default=None, help="Photos for parity.")
@click.option("--parity-limit", type=int, default=16, show_default=True)
@click.option(
    "--accuracy-data",
    type=click.Path(),
    default=None,
    help="Labelled data for the accuracy column (default: CIFAR-10 test for the "
    "committed fixture checkpoint).",
)
@click.option("--accuracy-split", default=None)
@click.option("--accuracy-limit", type=int, default=500, show_default=True)
@click.option(
    "--plot",
    type=click.Path(),
    default=None,
    callback=_plot_path,
    help="PNG: latency vs parity/accuracy.",
)
@click.option(
    "--markdown",
    type=click.Path(),
    default=None,
    callback=_report_path,
    help="Write the matrix as a doc (docs/benchmarks/cpu.md).",
)
@ray_option(
    "Run each export + parity + accuracy cell as a Ray task on the cluster at ADDRESS "
    "(auto, local or HOST:PORT); the timing stays on this machine."
)
@click.option(
    "--shared-storage",
    is_flag=True,
    help="--ray: --output is on storage every node mounts; workers write there.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=DEFAULT_RETRIES,
    show_default=True,
    help="--ray: times a cell whose worker died is run again.",
)
def matrix_command(**o: Any) -> None:
    """Export --variant to every installed target and precision, then measure them all."""
    import shlex

    from restv2_edge.bench import report as render
    from restv2_edge.bench.matrix import run_matrix
    from restv2_edge.cli import parse_variant

    out = _console()
    reports = ("json_file", "plot", "markdown")
    cluster_options = ("ray_address", "shared_storage", "retries")
    if o["ray_address"] is None and (o["shared_storage"] or o["retries"] != DEFAULT_RETRIES):
        raise click.UsageError("--shared-storage and --retries do nothing without --ray")
    settings = {n: v for n, v in o.items() if n not in reports + cluster_options}
    settings["variant"] = parse_variant(o["variant"])
    if o["targets"]:
        settings["targets"] = [t.strip() for t in o["targets"].split(",")]
    with _spinner(out) as progress, _cluster(o) as cluster:
        report = run_matrix(**settings, progress=progress, cluster=cluster)
    if o["weights"] is None:
        out.print("[yellow]random weights: parity is meaningful, accuracy is not[/]")
    render.render_matrix(report, _table_console())
    for note in report["notes"]:
        out.print(note)
    _write(o["json_file"], json.dumps(report, indent=2) + "\n", out)
    command = "restv2-edge bench " + shlex.join(sys.argv[2:])
    _write(o["markdown"], render.matrix_doc(report, command), out)
    if o["plot"]:
        out.print(f"wrote {render.plot_matrix(report, o['plot'])}")


@bench.command("gpu", cls=ListOptionCommand)
@click.option(
    "--device",
    default=GPU_DEFAULTS["device"],
    show_default=True,
    help="cuda, cuda:N, or cpu (a smoke run, not a reference).",
)
@click.option(
    "--variant",
    multiple=True,
    default=GPU_DEFAULTS["variant"],
    show_default=True,
    help="One or more of T S B L, or JSON configs.",
)
@click.option(
    "--image-size",
    multiple=True,
    type=ImageSize(),
    default=GPU_DEFAULTS["image_size"],
    show_default=True,
    help="One or more.",
)
@click.option(
    "--batch",
    multiple=True,
    type=click.IntRange(min=1),
    default=GPU_DEFAULTS["batch"],
    show_default=True,
    help="One or more.",
)
@click.option(
    "--dtype",
    multiple=True,
    type=click.Choice(DTYPES),
    default=GPU_DEFAULTS["dtype"],
    show_default=True,
    help="One or more.",
)
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model.")
@click.option(
    "--warmup", type=click.IntRange(min=0), default=GPU_DEFAULTS["warmup"], show_default=True
)
@click.option("--runs", type=click.IntRange(min=1), default=GPU_DEFAULTS["runs"], show_default=True)
@click.option(
    "--matmul-size",
    type=click.IntRange(min=1),
    default=GPU_DEFAULTS["matmul_size"],
    show_default=True,
    help="Side of the square matmul behind the floors.",
)
@click.option(
    "--json",
    "json_file",
    type=click.Path(),
    default=None,
    callback=_report_path,
    help="Write the report here (JSON).",
)
def gpu_command(**o: Any) -> None:
    """PyTorch throughput and latency on a CUDA GPU, beside the paper's V100 figures.

    Options marked "one or more" take space-separated lists: --batch 1 64 256.
    """
    from restv2_edge.bench import gpu

    report = gpu.run(
        variants=list(o["variant"]),
        image_sizes=list(o["image_size"]),
        batches=list(o["batch"]),
        dtypes=list(o["dtype"]),
        device=o["device"],
        compile_model=o["compile_model"],
        warmup=o["warmup"],
        runs=o["runs"],
        matmul_size=o["matmul_size"],
    )
    click.echo(gpu.format_table(report))
    _write(o["json_file"], json.dumps(report, indent=2) + "\n", _console())
