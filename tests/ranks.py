"""A launcher for tests with real processes: ranks of MLX's ring backend on 127.0.0.1.

Each rank is ``python -m <module> <args>`` in the repository root, with
``MLX_RANK`` and ``MLX_HOSTFILE`` (a JSON list of ``["127.0.0.1:PORT"]``, one
per rank) set, as ``mlx.launch`` would. The ports are picked free for each
launch (two launches on the same ports would connect to each other), each
launch has a hard timeout, and when one rank fails the others are killed: a
rank that dies before ``mx.distributed.init()`` otherwise leaves the others
waiting for it forever.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class RanksFailed(AssertionError):
    """A rank exited with an error, or the launch ran past its timeout; the message holds every rank's output."""


def free_ports(count):
    """``count`` distinct ports the system says are free now (bound to port 0, then released)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def run_ranks(module, world, *args, timeout=60.0):
    """Run ``python -m module *args`` as ``world`` ranks; their standard outputs, by rank.

    Raises RanksFailed if a rank fails (the others are then killed) or the
    launch takes longer than ``timeout`` seconds (all are killed).
    """
    with tempfile.TemporaryDirectory() as folder:
        hostfile = Path(folder) / "hosts.json"
        hostfile.write_text(json.dumps([[f"127.0.0.1:{port}"] for port in free_ports(world)]))
        logs = [(open(Path(folder) / f"{rank}.out", "w+"), open(Path(folder) / f"{rank}.err", "w+"))
                for rank in range(world)]
        environment = {**os.environ, "MLX_HOSTFILE": str(hostfile), "PYTHONPATH": str(ROOT)}
        ranks = [subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                                  env={**environment, "MLX_RANK": str(rank)}, stdout=out, stderr=err)
                 for rank, (out, err) in enumerate(logs)]
        failure = _wait(ranks, timeout)
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
            rank.wait()
        outputs = []
        for out, err in logs:
            out.seek(0)
            err.seek(0)
            outputs.append((out.read(), err.read()))
            out.close()
            err.close()
    if failure:
        report = "\n".join(f"--- rank {r}: exit {p.returncode}\n{out}{err}" for r, (p, (out, err))
                           in enumerate(zip(ranks, outputs)))
        raise RanksFailed(f"{failure}\n{report}")
    return [out for out, _ in outputs]


def _wait(ranks, timeout):
    """None once every rank has exited 0; else what went wrong (the caller kills the rest)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [rank.poll() for rank in ranks]
        failed = [r for r, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            return f"rank {failed[0]} exited with status {codes[failed[0]]}"
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.02)
    return f"the ranks ran past the launch's timeout of {timeout} s"
