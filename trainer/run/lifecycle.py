"""Stopping and resuming a run safely.

- The first Ctrl-C (SIGINT) or SIGTERM asks the Trainer to finish the current update, save a checkpoint
  and stop; the second one exits at once.
- A checkpoint counts as complete only once ``.duotune-complete`` is written into it, after the Trainer
  has finished saving it. ``resume_from_checkpoint: auto`` considers complete checkpoints only, so a
  crash in the middle of a save never leaves a checkpoint that looks complete but is not.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from duotune.trainer.common.console import echo
from duotune.trainer.common.errors import UserError

__all__ = [
    "COMPLETE_MARKER",
    "GracefulStop",
    "Interrupted",
    "complete_checkpoints",
    "last_complete_checkpoint",
    "make_lifecycle_callback",
]

COMPLETE_MARKER = ".duotune-complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        super().__init__(f"interrupted by signal {signum} at step {step}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class GracefulStop:
    """Signal handlers for the duration of ``trainer.train()``."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: leave now
            os._exit(128 + signum)
        self.signum = signum
        echo(
            f"{signal.Signals(signum).name}: finishing this update, saving a checkpoint, then stopping "
            "(send it again to exit at once)"
        )


def make_lifecycle_callback(stop: GracefulStop):
    from transformers import TrainerCallback

    class LifecycleCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if _any_rank(stop.signum is not None, args.device):
                control.should_save = True
                control.should_training_stop = True

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    (folder / COMPLETE_MARKER).write_text(json.dumps({"step": state.global_step}) + "\n")

    return LifecycleCallback()


def _any_rank(flag: bool, device) -> bool:
    """True if any process saw the signal, so that all ranks stop after the same update."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    import torch

    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value)  # SUM works on every collective backend (HCCL lacks some other ops)
    return bool(value.item())


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """checkpoint-N folders that finished saving, oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        m = _CHECKPOINT.match(p.name)
        if m and p.is_dir() and (p / COMPLETE_MARKER).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def check_checkpoint(path: Path) -> Path:
    if not (path / "trainer_state.json").is_file():
        raise UserError(
            f"resume_from_checkpoint {path} is not a checkpoint folder (no trainer_state.json); "
            "use a checkpoint-N folder or `auto`"
        )
    if not (path / COMPLETE_MARKER).is_file():
        raise UserError(
            f"resume_from_checkpoint {path} was not completely saved (no {COMPLETE_MARKER}: the run may have "
            "died while saving it); use an earlier checkpoint or `auto`"
        )
    return path
