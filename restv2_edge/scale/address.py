"""The ``--ray [ADDRESS]`` option: checked at parse time, before ray is imported.

``auto`` joins the cluster this machine belongs to (``ray start`` ran here, or
RAY_ADDRESS); ``local`` starts a one-machine cluster for the run; ``HOST:PORT`` is a head's
GCS address and ``ray://HOST:PORT`` a Ray Client server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

AUTO, LOCAL = "auto", "local"
_HOST = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)"
_ADDRESS = re.compile(rf"(ray://)?{_HOST}:(?P<port>[0-9]{{1,5}})")


def check_address(text: str) -> str:
    """``text`` as a Ray address, or ValueError saying what is wrong."""
    value = text.strip()
    if value.lower() in (AUTO, LOCAL):
        return value.lower()
    match = _ADDRESS.fullmatch(value)
    if not match:
        hint = "; put --ray last or give it a value (--ray auto)" if Path(value).exists() else ""
        raise ValueError(
            f"{text!r} is not a Ray address (auto, local, HOST:PORT or ray://HOST:PORT){hint}"
        )
    if not 1 <= int(match.group("port")) <= 65535:
        raise ValueError(f"{text!r}: port {match.group('port')} is not in 1..65535")
    return value


class RayAddress(click.ParamType):
    """A Ray cluster address (see the module docstring)."""

    name = "address"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        try:
            return check_address(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def ray_option(help_text: str) -> Any:
    """``--ray [ADDRESS]``: a bare ``--ray`` means ``auto``."""
    return click.option(
        "--ray",
        "ray_address",
        type=RayAddress(),
        is_flag=False,
        flag_value=AUTO,
        default=None,
        metavar="[ADDRESS]",
        help=help_text,
    )
