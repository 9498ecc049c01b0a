"""Multi-process training through torchrun (torch.distributed.run), never a launcher of our own.

``train --nproc N`` (or ``--nproc auto``: one process per visible device of the chosen backend) re-runs
the same command under torchrun. Multi-node runs take the usual variables: ``NNODES``, ``NODE_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``. Each worker finds its device from ``LOCAL_RANK`` and the collective
backend (nccl / hccl / gloo) from its backend.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from duotune.trainer.common.errors import UserError

__all__ = ["under_torchrun", "resolve_nproc", "relaunch"]


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_nproc(value: str | None, device: str) -> int:
    if value in (None, "", "1"):
        return 1
    if value == "auto":
        from duotune.trainer.run.plan import backend_for

        backend = backend_for(device)[0]
        return max(1, backend.device_count())
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"--nproc {value!r}: give a number of processes or `auto`") from None
    if n < 1:
        raise UserError(f"--nproc {n}: must be >= 1")
    return n


def relaunch(nproc: int, argv: list[str], output_dir: str | None = None) -> int:
    """Run ``python -m duotune.trainer.commands.cli <argv>`` in ``nproc`` processes per node under torchrun.

    This process holds the output_dir lock for the whole run (node 0's, on several nodes) and tells the
    workers so, since they cannot take it themselves while it is held."""
    import contextlib

    from duotune.trainer.run.lock import LOCK_HOLDER_ENV, OutputDirLock

    holds_lock = output_dir and os.environ.get("NODE_RANK", "0") == "0"
    lock = OutputDirLock(output_dir) if holds_lock else contextlib.nullcontext()
    with lock:
        env = dict(os.environ, **({LOCK_HOLDER_ENV: str(os.getpid())} if holds_lock else {}))
        return _torchrun(nproc, argv, env)


def _torchrun(nproc: int, argv: list[str], env: dict[str, str]) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    nnodes = int(os.environ.get("NNODES", "1"))
    if nnodes > 1:
        if "MASTER_ADDR" not in os.environ:
            raise UserError(
                "multi-node training needs MASTER_ADDR (and NODE_RANK, MASTER_PORT) in the environment"
            )
        cmd += [
            "--nnodes", str(nnodes),
            "--node_rank", os.environ.get("NODE_RANK", "0"),
            "--master_addr", os.environ["MASTER_ADDR"],
            "--master_port", os.environ.get("MASTER_PORT", "29500"),
        ]  # fmt: skip
    else:
        cmd += ["--standalone"]
    cmd += ["-m", "duotune.trainer.commands.cli", *argv]
    print(f"[duotune] launching {nproc * nnodes} processes: {' '.join(cmd)}", flush=True)
    # torchrun forwards SIGINT/SIGTERM to the workers, which save a checkpoint and stop; this process
    # only waits for them and passes their exit code on. Ctrl-C reaches torchrun through the terminal's
    # process group; a SIGTERM sent to this process alone (a scheduler, the web UI's abort) is passed
    # on to torchrun, instead of killing this process and leaving torchrun behind.
    child: subprocess.Popen | None = None

    def forward(signum, frame):
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, forward)
    try:
        child = subprocess.Popen(cmd, env=env)
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
