"""A Ray head of its own on 127.0.0.1, for the tests and the throughput script.

``ray start --head`` runs in a new process group with its own temp folder, no dashboard and
no usage stats; ``stop`` ends exactly that group's processes and the workers they started
(never ``ray stop``, which would end every Ray process of the machine).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from restv2_edge.errors import ClusterError

#: the environment a loopback-only, quiet head and its drivers need, set before ray is
#: imported (it reads them once): no usage stats, no token auth, bound to 127.0.0.1
LOOPBACK_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LocalHead:
    """A running head: its GCS address and what ``stop`` cleans up."""

    address: str
    pgid: int
    temp: Path

    def stop(self) -> None:
        end_process_group(self.pgid)
        shutil.rmtree(self.temp, ignore_errors=True)


def start_head(cpus: int, timeout: float = 180) -> LocalHead:
    """``ray start --head`` on 127.0.0.1 with ``cpus`` CPUs; ClusterError if it fails."""
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: unix socket paths
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head",
               "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", str(cpus),
               "--include-dashboard", "false", "--disable-usage-stats",
               "--temp-dir", str(temp)]  # fmt: skip
    env = {**os.environ, **LOOPBACK_ENV}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env=env)  # fmt: skip
    head = LocalHead(f"127.0.0.1:{port}", proc.pid, temp)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        head.stop()
        raise ClusterError(f"ray start did not finish in {timeout:g} s") from None
    if proc.returncode != 0:
        head.stop()
        last = out.strip().splitlines()[-1] if out.strip() else "no output"
        raise ClusterError(f"ray start failed: {last}")
    return head


def end_process_group(pgid: int) -> None:
    """Kill the processes of group ``pgid`` and their children, and wait for them."""
    import psutil

    group = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                group.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    victims = set(group)
    for proc in group:
        try:
            victims.update(proc.children(recursive=True))
        except psutil.Error:
            continue
    for proc in victims:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(list(victims), timeout=10)
