"""argparse pieces shared by the measurement scripts in scripts/: bad input is one line.

The CLI (click) has its own validators in cli_types.py; the scripts use argparse, and these
keep them to the same rule: one ``error:`` line, exit 2, before anything is built or written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """Bad input is one ``error:`` line and exit 2, before anything is built or written."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def existing_file_arg(value: str) -> Path:
    """An argparse type: a path that is an existing file."""
    if not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"{value} is not a file")
    return Path(value)


def positive_int_arg(value: str) -> int:
    """An argparse type: an integer of at least 1."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return int(value)
