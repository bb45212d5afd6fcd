"""argparse pieces shared by the measurement scripts in scripts/: bad input is one line.

The CLI (click) has its own validators in cli_types.py; the scripts use argparse, and these
keep them to the same rule: one ``error:`` line, exit 2, before anything is built or written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from restv2_edge.bench.timing import BLOCK


class OneLineParser(argparse.ArgumentParser):
    """Bad input is one ``error:`` line and exit 2, before anything is built or written."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def existing_file_arg(value: str) -> Path:
    """An argparse type: a path that is an existing file."""
    if not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"{value} is not a file")
    return Path(value)


def timed_runs_arg(value: str) -> int:
    """An argparse type: timed calls per row, at least one full round-robin block, since
    per-round ratios compare whole blocks."""
    if not value.isdigit() or int(value) < BLOCK:
        raise argparse.ArgumentTypeError(f"{value} is not an integer of at least {BLOCK}")
    return int(value)
