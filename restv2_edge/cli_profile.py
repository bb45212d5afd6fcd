"""``restv2-edge profile``: where an artifact's (or the eager model's) time goes, per op type.

Every option is checked while the command line is parsed; a runtime without a per-op
profiler is one ``error:`` line (ProfileError) through the CLI's error boundary.
"""

from __future__ import annotations

import json
from typing import Any

import click

from restv2_edge.cli_types import POSITIVE_INT, ImageSize, device_option


def _print(report: dict[str, Any], out: Any) -> None:
    """The report as text; names from profilers (``[vdso]``, ``x[0]``) are not rich markup."""

    def say(text: str) -> None:
        out.print(text, markup=False)

    check = report["sum"]
    e2e = report["end_to_end"]
    source = report["artifact"] or f"eager ResTv2-{report['variant']}"
    say(f"{source}: {report['runner']}")
    say(f"profiler: {report['profiler']} ({report['runs']} runs, {report['input']})")
    unit = report["unit"]
    for row in report["op_types"]:
        say(f"  {row['ms']:9.3f} ms {row['share']:6.1%}  {row['op_type']} ({row['count']} {unit}s)")
    say("top ops:")
    for op in report["top_ops"]:
        say(f"  {op['ms']:9.3f} ms  {op['name']} ({op['op_type']})")
    share = report["delegation"]
    if share:
        say(
            f"delegated {unit}s {share['delegated']} ({share['delegated_ms']:.2f} ms), fallback "
            f"{share['fallback']} ({share['fallback_ms']:.2f} ms)"
        )
    for note in report["notes"]:
        say(f"note: {note}")
    line = (
        f"sum {check['sum_ms']:.2f} ms vs end-to-end {e2e['median_ms']:.2f} ms (median of "
        f"{e2e['runs']} normal calls): ratio {check['ratio']:.2f}"
    )
    if check.get("round_ratios"):
        line += f" (median over {len(check['round_ratios'])} rounds of the round's ratio)"
    if check["within"]:
        say(f"{line}, within +-{check['tolerance']:.0%}")
    else:
        out.print(f"[yellow]{line}: OUTSIDE +-{check['tolerance']:.0%}[/]")
    if report["synthetic"]:
        out.print("[yellow]profiled on seeded synthetic images (no photos found)[/]")


@click.command(name="profile")
@click.argument("artifact", type=click.Path(), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--runs", type=POSITIVE_INT, default=20, show_default=True,
              help="Profiled runs, and timed end-to-end calls.")  # fmt: skip
@click.option("--top", type=POSITIVE_INT, default=10, show_default=True, help="Slowest ops shown.")
@device_option
@click.option("--threads", type=POSITIVE_INT, default=None, help="Default: all usable cores.")
@click.option("--data", type=click.Path(exists=True), default=None,
              help="Photos to profile on (default: the shared ImageNet sample).")  # fmt: skip
@click.option("--eager", is_flag=True, help="Profile the PyTorch eager model (torch.profiler).")
@click.option("--variant", default=None, help="--eager: T, S, B, L or a JSON config.")
@click.option("--image-size", type=ImageSize(), default=None, help="--eager: default 224.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="--eager: checkpoint (default: random).")  # fmt: skip
def profile(artifact: str | None, as_json: bool, eager: bool, **o: Any) -> None:
    """Time per op type and the top ops from the runtime's own profiler, with the sum beside
    the end-to-end latency; --eager profiles the PyTorch model instead of ARTIFACT."""
    from restv2_edge.cli import console, parse_variant, refuse_unused

    if eager and artifact:
        raise click.UsageError("give ARTIFACT or --eager, not both")
    if not eager and not artifact:
        raise click.UsageError("give ARTIFACT (an artifact folder) or --eager")
    if eager:
        refuse_unused(["device"], "with --eager")
    else:
        refuse_unused(["variant", "image_size", "weights"], "without --eager")
    variant = parse_variant(o["variant"]) if eager else None
    out = console()
    with out.status("profile...") as status:
        progress = lambda step: status.update(f"{step}...")  # noqa: E731
        if eager:
            from restv2_edge.profile import profile_eager

            report = profile_eager(
                variant, o["image_size"], o["weights"], o["runs"], o["top"],
                o["threads"], o["data"], progress,
            )  # fmt: skip
        else:
            from restv2_edge.profile import profile_artifact

            report = profile_artifact(
                artifact, o["runs"], o["top"], o["device"], o["threads"], o["data"], progress
            )
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        from rich.console import Console

        _print(report, Console(soft_wrap=True, highlight=False))
