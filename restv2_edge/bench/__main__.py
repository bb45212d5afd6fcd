"""``python -m restv2_edge.bench --peak-memory FOLDER``: the memory probe's fresh process."""

from __future__ import annotations

import argparse
import json
import sys

from restv2_edge.bench.memory import memory_child
from restv2_edge.errors import RestV2EdgeError


def main(argv: list[str] | None = None) -> int:
    """Run the probe; one JSON line on stdout, or one ``error:`` line on stderr."""
    parser = argparse.ArgumentParser(prog="python -m restv2_edge.bench")
    parser.add_argument("--peak-memory", required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    try:
        result = memory_child(args.peak_memory, args.threads, args.batch, args.calls, args.device)
    except RestV2EdgeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
