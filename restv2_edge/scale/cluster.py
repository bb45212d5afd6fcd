"""The one module that imports ray: connect to a cluster, submit tasks with Ray's retries,
collect results as they finish.

Faults: a task whose worker process dies (killed, out of memory, node lost) is resubmitted
by Ray up to ``retries`` times (``max_retries``); an exception the task raises itself (a
tampered artifact, unreadable data) is not retried (``retry_exceptions=False``: it would
fail the same way) and ends the run with that error. Results are handed on by the caller's
id, so a shard is never counted twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from restv2_edge.errors import BackendMissingError, ClusterError, RestV2EdgeError, first_line
from restv2_edge.scale.address import LOCAL

DEFAULT_RETRIES = 3
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: workers' output stays in the cluster's logs; the driver's console shows ray's warnings only
QUIET = {"log_to_driver": False, "logging_level": logging.WARNING}


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BackendMissingError("ray", "ray") from None
    return ray


@contextlib.contextmanager
def connected(address: str) -> Iterator[Any]:
    """``ray`` connected to ``address`` for the block (``local``: a one-machine cluster started
    for the run, bound to the loopback interface). A connection made here is closed after."""
    if address == LOCAL:
        # before ray is imported: a one-machine cluster listens on 127.0.0.1 only
        os.environ.setdefault(LOOPBACK_ENV, "0")
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if address == LOCAL:
            ray.init(address=LOCAL, include_dashboard=False, **QUIET)
        else:
            ray.init(address=address, **QUIET)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach a Ray cluster at {address}: {first_line(exc)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus(ray: Any) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@dataclass
class Submission:
    """One task to run: its id, how to submit it (returns an ObjectRef), and what to do
    with its result."""

    ident: str
    submit: Callable[[], Any]
    done: Callable[[Any], None]


def run_all(
    ray: Any,
    submissions: list[Submission],
    window: int,
    on_failed: Callable[[str, str], None] = lambda ident, why: None,
    poll_s: float = 0.5,
) -> list[tuple[str, str]]:
    """Run ``submissions`` with at most ``window`` in flight; return (id, reason) of those that
    failed after Ray's retries. An error a task raised on purpose (RestV2EdgeError) is
    raised here; on any exception (Ctrl-C included) the tasks in flight are cancelled."""
    from ray.exceptions import RayError, RayTaskError

    queue = list(reversed(submissions))
    pending: dict[Any, Submission] = {}
    failed: list[tuple[str, str]] = []
    try:
        while queue or pending:
            while queue and len(pending) < window:
                item = queue.pop()
                pending[item.submit()] = item
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s)
            for ref in ready:
                item = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except RayTaskError as exc:
                    if isinstance(exc.cause, RestV2EdgeError):
                        raise exc.cause from None
                    failed.append((item.ident, first_line(exc.cause or exc)))
                    on_failed(*failed[-1])
                except RayError as exc:  # the worker died more often than the retries allow
                    failed.append((item.ident, f"{type(exc).__name__}: {first_line(exc)}"))
                    on_failed(*failed[-1])
                else:
                    item.done(result)
    except BaseException:
        for ref in pending:  # not force: the workers stay up (a resumed run reuses them)
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        raise
    return failed


def raise_failures(failed: list[tuple[str, str]], total: int, retries: int) -> None:
    """One line for tasks that failed after their retries; the finished ones are kept."""
    if failed:
        ident, why = failed[0]
        raise ClusterError(
            f"{len(failed)} of {total} tasks failed after {retries} retries (first: {ident}: "
            f"{why}); finished shards are kept: rerun with --resume"
        )
