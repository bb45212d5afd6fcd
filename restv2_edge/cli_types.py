"""Click parameter types that refuse bad values at parse time, before any work starts.

click's own ``FloatRange`` lets NaN through (every comparison with NaN is false), so a
``--max-drop nan`` would reach manifest.json, where strict JSON readers reject it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import click


class FiniteFloat(click.ParamType):
    """A finite float within [low, high]; ``low_open`` excludes ``low`` itself."""

    name = "float"

    def __init__(
        self, low: float | None = None, high: float | None = None, low_open: bool = False
    ) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            self.fail(f"{number:g} is not {self._range()}", param, ctx)
        if self.high is not None and number > self.high:
            self.fail(f"{number:g} is not {self._range()}", param, ctx)
        return number

    def _range(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"<= {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


class ImageSize(click.ParamType):
    """An input side the model can take: a multiple of 32 in 64..MAX_IMAGE_SIZE; with
    ``pairs`` also ``HxW`` (height x width, e.g. ``384x640``; ``224x224`` is read as 224)."""

    name = "pixels"

    def __init__(self, pairs: bool = False) -> None:
        self.pairs = pairs
        if pairs:
            self.name = "pixels|HxW"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from restv2_edge.config import canonical_image_size, check_image_size
        from restv2_edge.errors import ConfigError

        if isinstance(value, (int, tuple)):
            return value
        text = str(value).strip().lower()
        try:
            if self.pairs and "x" in text:
                height, width = (int(side) for side in text.split("x"))
                return canonical_image_size(check_image_size((height, width)))
            return check_image_size(int(text))
        except ValueError:
            form = "an integer or HxW (e.g. 384x640)" if self.pairs else "an integer"
            self.fail(f"{value!r} is not {form}", param, ctx)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class FloatTriple(click.ParamType):
    """Three comma-separated finite floats (per-channel mean or std); ``positive`` for std."""

    name = "r,g,b"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, float, float]:
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(float(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not three comma-separated numbers", param, ctx)
        if len(numbers) != 3 or not all(math.isfinite(n) for n in numbers):
            self.fail(f"{value!r} is not three finite comma-separated numbers", param, ctx)
        if self.positive and min(numbers) <= 0:
            self.fail(f"{value!r}: every value must be positive", param, ctx)
        return numbers  # type: ignore[return-value]


class ReportPath(click.Path):
    """A report file to write (``--json``...): checked for writability at parse time."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from restv2_edge.errors import OutputError
        from restv2_edge.publish import check_report_path

        path = super().convert(value, param, ctx)
        try:
            check_report_path(path)
        except OutputError as exc:
            self.fail(str(exc), param, ctx)
        return path


class OutputPath(click.Path):
    """An output folder or file, whose parent must be writable (existence is checked with
    ``--force`` by the command, and again when publishing)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from restv2_edge.errors import OutputError
        from restv2_edge.publish import check_writable_folder

        path = super().convert(value, param, ctx)
        try:
            from pathlib import Path

            check_writable_folder(Path(path).parent)
        except OutputError as exc:
            self.fail(str(exc), param, ctx)
        return path


POSITIVE_INT = click.IntRange(min=1)


class DeviceName(click.ParamType):
    """A device name's spelling (``CPU``, ``GPU.1``, ``AUTO:GPU,CPU``, ``CPUExecutionProvider``).

    Whether the device is there is the artifact's target's question (its runtime answers):
    that is checked when the artifact is opened, before anything is written; importing every
    backend here would make ``--help`` slow.
    """

    name = "device"
    _SPELLING = re.compile(r"[A-Za-z][A-Za-z0-9_.]*(:[A-Za-z0-9_.]+(,[A-Za-z0-9_.]+)*)?")

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = str(value).strip()
        if not self._SPELLING.fullmatch(text):
            self.fail(f"{value!r} is not a device name (e.g. CPU, GPU.1, AUTO)", param, ctx)
        return text


DEVICE_HELP = (
    "Device to run on, as the artifact's runtime names it: OpenVINO CPU, GPU, NPU, AUTO...; "
    "onnxruntime execution providers (CPUExecutionProvider, or CPU); ExecuTorch CPU or the "
    "artifact's backend; LiteRT CPU. Default: the CPU. One that is not here is an error "
    "listing those that are."
)


def device_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--device NAME`` (default None: the target's CPU default)."""
    return click.option("--device", type=DeviceName(), default=None, help=DEVICE_HELP)(command)


class LazyChoice(click.ParamType):
    """A choice whose values come from a function, called only when a value is checked or
    help is shown (the target registry imports the converter modules and numpy: a plain
    ``restv2-edge --help`` should not). click's own Choice reads its values on construction.
    """

    name = "choice"

    def __init__(self, source: Callable[[], list[str]]) -> None:
        self._source = source
        self._values: list[str] | None = None

    @property
    def choices(self) -> list[str]:
        if self._values is None:
            self._values = list(self._source())
        return self._values

    def get_metavar(self, *args: Any, **kwargs: Any) -> str:
        return "[" + "|".join(self.choices) + "]"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        if value in self.choices:
            return value
        self.fail(f"{value!r} is not one of {', '.join(map(repr, self.choices))}.", param, ctx)

    def shell_complete(self, ctx: Any, param: Any, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        return [CompletionItem(c) for c in self.choices if c.startswith(incomplete)]


def target_choice() -> LazyChoice:
    def names() -> list[str]:
        from restv2_edge.converters.base import target_names

        return target_names()

    return LazyChoice(names)


def sensitivity_target_choice() -> LazyChoice:
    def names() -> list[str]:
        from restv2_edge.calibration.recipes import targets_where

        return targets_where(lambda recipe: recipe.sensitivity is not None)

    return LazyChoice(names)
