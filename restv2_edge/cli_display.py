"""What the CLI shows while it works: step spinners, training progress, the parity line, and
the one error line of the CLI's error boundary (``cli.run``).

Library code reports through callbacks and records; these classes turn them into rich
output on stderr, so stdout carries only results.
"""

from __future__ import annotations

import os
import sys
from contextvars import ContextVar
from typing import Any

DEBUG_ENV = "RESTV2_EDGE_DEBUG"
#: set by ``--debug``: unexpected errors show their traceback
DEBUG: ContextVar[bool] = ContextVar("restv2_edge_debug", default=False)

#: the step running now, named in the one-line message of an unexpected error
STEP: ContextVar[str] = ContextVar("restv2_edge_step", default="")


class TrainDisplay:
    """Rich progress for training events, plus one log line per epoch."""

    def __init__(self, out: Any) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.out = out
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=out,
            transient=True,
        )
        self.task = None

    def __enter__(self) -> TrainDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "data":
            skipped = event["skipped"]
            self.out.print(
                f"{event['images']} images, {event['classes']} classes"
                + (f"; skipped {len(skipped)} corrupt: {', '.join(skipped[:3])}" if skipped else "")
            )
        elif kind == "resume":
            self.out.print(f"resuming after epoch {event['epoch']}")
        elif kind == "step":
            if self.task is None or event["step"] == 1:
                if self.task is not None:
                    self.progress.remove_task(self.task)
                self.task = self.progress.add_task(
                    f"epoch {event['epoch'] + 1}", total=event["steps"], stats=""
                )
            stats = (
                f"loss {event['loss']:.3f} acc {event['acc']:.3f} {event['images_per_s']:.0f} img/s"
            )
            self.progress.update(self.task, completed=event["step"], stats=stats)
        elif kind == "epoch":
            line = (
                f"epoch {event['epoch']}: loss {event['loss']:.4f}"
                f" train_acc {event['train_acc']:.4f} {event['seconds']:.0f}s"
            )
            if "val_acc" in event:
                line += f" val_acc {event['val_acc']:.4f}"
            self.out.print(line)


class StepProgress:
    """A spinner per long step, then one line with its duration."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.status = None
        self.step = None
        self.started = 0.0

    def __enter__(self) -> StepProgress:
        return self

    def __call__(self, step: str) -> None:
        import time

        self._finish()
        STEP.set(step)
        self.step, self.started = step, time.perf_counter()
        self.status = self.out.status(f"{step}...")
        self.status.__enter__()

    def _finish(self, ok: bool = True) -> None:
        import time

        if self.status is not None:
            self.status.__exit__(None, None, None)
            mark = "[green]done[/]" if ok else "[red]failed[/]"
            self.out.print(f"  {self.step}: {mark} ({time.perf_counter() - self.started:.1f} s)")
            self.status = None

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self._finish(ok=exc_type is None)


def print_parity(parity: dict[str, Any], out: Any) -> None:
    """The parity line: a classifier's logit metrics, or a features artifact's worst output
    then one line per output; the failures and the synthetic-data warning after it."""
    status = parity.get("status")
    if status == "not run":
        out.print(f"parity: [yellow]not run[/] ({parity.get('reason')})")
        return
    from restv2_edge.parity import SYNTHETIC_WARNING

    m = parity["metrics"]
    color = "green" if status == "passed" else "red"
    head = f"parity [{color}]{status}[/] via {parity['runner']} on {parity.get('data')}: "
    if "outputs" in m:
        out.print(
            head + f"{len(m['outputs'])} outputs, worst max|diff| {m['max_abs_diff']:.2e}, "
            f"cosine min {m['cosine_min']:.6f}",
            highlight=False,
        )
        for name, values in m["outputs"].items():
            out.print(
                f"  {name}: max|diff| {values['max_abs_diff']:.2e} "
                f"(rel {values['max_rel_diff']:.2e}), cosine min {values['cosine_min']:.6f}",
                highlight=False,
            )
    else:
        out.print(
            head + f"max|dlogit| {m['max_abs_diff']:.2e}, cosine min {m['cosine_min']:.6f}, "
            f"top-1 {m['top1_agreement']:.1%}, top-5 {m['top5_agreement']:.1%}",
            highlight=False,
        )
    for failure in parity.get("failures", []):
        out.print(f"  [red]past threshold:[/] {failure}")
    if parity.get("synthetic"):
        out.print(f"[yellow]warning:[/] {SYNTHETIC_WARNING}", highlight=False)


def debugging() -> bool:
    return DEBUG.get() or os.environ.get(DEBUG_ENV, "").lower() in {"1", "true", "yes"}


def one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def unexpected_error_line(exc: BaseException) -> str:
    """``COMMAND (step STEP) failed: Type: message`` for an error no module anticipated."""
    argv = [a for a in sys.argv[1:] if not a.startswith("-")]
    where = argv[0] if argv else "restv2-edge"
    if STEP.get():
        where += f" ({STEP.get()})"
    detail = one_line(str(exc))[:300]
    kind = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return f"{where} failed: {kind} (rerun with --debug for the traceback)"
