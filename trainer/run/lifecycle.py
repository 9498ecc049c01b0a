"""Stopping and resuming a run safely.

- The first Ctrl-C (SIGINT) or SIGTERM asks the Trainer to finish the current update, save a checkpoint
  and stop; the second one exits at once.
- A checkpoint counts as complete only once ``.duotune-complete`` is written into it, after the Trainer
  has finished saving it and its files are flushed to disk. The marker lists every file with its size
  and CRC-32, so a checkpoint damaged later is recognised before resuming from it.
  ``resume_from_checkpoint: auto`` considers complete, undamaged checkpoints only, so a crash in the
  middle of a save never leaves a checkpoint that looks complete but is not.
- ``save_total_limit`` is applied here, not by the Trainer: old checkpoints are deleted only after the
  new one is complete (the Trainer deletes them before, so a kill at that moment could leave none).
- A checkpoint that cannot be written (disk full, read-only, quota) stops the run with an error naming
  the path; the half-written folder is removed and the last complete checkpoint stays resumable.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import zlib
from pathlib import Path

from duotune.trainer.common.console import echo
from duotune.trainer.common.errors import UserError, first_line

__all__ = [
    "COMPLETE_MARKER",
    "GracefulStop",
    "Interrupted",
    "WriteFailed",
    "check_checkpoint",
    "checkpoint_damage",
    "complete_checkpoints",
    "last_complete_checkpoint",
    "make_lifecycle_callback",
    "mark_complete",
    "remove_incomplete_checkpoints",
    "unmark_damaged",
    "write_failure",
    "usable_checkpoint",
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


class WriteFailed(UserError):
    """output_dir could not be written during the run (disk full, read-only, quota, permissions)."""


# errors of the file system, not of duotune: reported as one line naming the path
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


# what libraries say instead of raising an OSError when the disk fills up under them
_WRITE_MESSAGES = (
    "No space left on device",
    "Disk quota exceeded",
    "Read-only file system",
    "Permission denied",
)
_TORCH_WRITER = ("PytorchStreamWriter failed writing", "inline_container", "file write failed")


def write_failure(e: BaseException, out: Path, what: str) -> WriteFailed | None:
    """A WriteFailed when ``e`` is the file system refusing a write of ``what`` (a full disk, a quota,
    a read-only or forbidden folder), else None: anything else is a bug and keeps its traceback.

    torch.save and safetensors report a full disk in their own words (torch: "unexpected pos N vs M"),
    so those are recognised too, and a full disk is confirmed by measuring the free space."""
    text = str(e)
    if isinstance(e, UserError):
        return None
    if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
        reason, where = os.strerror(e.errno), e.filename or out
    elif not isinstance(e, Exception):
        return None
    elif any(m in text for m in _WRITE_MESSAGES):
        reason, where = next(m for m in _WRITE_MESSAGES if m in text), out
    elif any(m in text for m in _TORCH_WRITER):
        where = out
        reason = (
            os.strerror(errno.ENOSPC) if _nearly_full(out) else f"torch could not write it: {first_line(e)}"
        )
    else:
        return None
    last = last_complete_checkpoint(out)
    resume = (
        f"; the last complete checkpoint is {last} (resume_from_checkpoint=auto continues from it)"
        if last
        else ""
    )
    return WriteFailed(
        f"could not write {what} ({where}: {reason}); free space or fix permissions there, or choose "
        f"another output_dir{resume}"
    )


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 16 * 2**20
    except OSError:
        return False


def make_lifecycle_callback(stop: GracefulStop, save_total_limit: int | None = None):
    """Graceful stop on a signal; completion markers and rotation of checkpoints (rank 0)."""
    from transformers import TrainerCallback

    class LifecycleCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if _any_rank(stop.signum is not None, args.device):
                control.should_save = True
                control.should_training_stop = True

        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not folder.is_dir():
                return
            mark_complete(folder, state.global_step)
            if save_total_limit:
                for old in complete_checkpoints(args.output_dir)[:-save_total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
                for stale in _incomplete_checkpoints(args.output_dir, before=state.global_step):
                    shutil.rmtree(stale, ignore_errors=True)

    return LifecycleCallback()


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def mark_complete(folder: Path, step: int) -> None:
    """Flush a saved checkpoint to disk, then mark it complete with the size and CRC-32 of every file."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "crc32": _file_crc(path)}
    _fsync_dir(folder)
    marker = folder / f".{COMPLETE_MARKER}.tmp"
    with open(marker, "w", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "files": files}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(marker, folder / COMPLETE_MARKER)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory
        pass
    finally:
        os.close(fd)


def checkpoint_damage(folder: Path) -> str | None:
    """What is wrong with a checkpoint marked complete (a file missing, truncated or changed), or None."""
    try:
        manifest = json.loads((folder / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{folder / COMPLETE_MARKER} is unreadable"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return None  # marked by an older duotune that recorded no file list: nothing to check against
    for name, expected in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != expected.get("size"):
            return f"{path} has {path.stat().st_size} bytes, {expected.get('size')} were saved"
        if _file_crc(path) != expected.get("crc32"):
            return f"{path} has changed since it was saved (checksum mismatch)"
    return None


def _any_rank(flag: bool, device) -> bool:
    """True if any process saw the signal, so that all ranks stop after the same update."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    import torch

    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value)  # SUM works on every collective backend (HCCL lacks some other ops)
    return bool(value.item())


def _incomplete_checkpoints(output_dir: str | Path, before: int) -> list[Path]:
    """checkpoint-N folders (N < before) whose save never finished: a crashed run's leftovers."""
    out = Path(output_dir)
    found = []
    for p in out.iterdir():
        m = _CHECKPOINT.match(p.name)
        if m and int(m.group(1)) < before and p.is_dir() and not (p / COMPLETE_MARKER).is_file():
            found.append(p)
    return found


def remove_incomplete_checkpoints(output_dir: str | Path) -> None:
    """Remove the half-written checkpoints newer than the last complete one (after a failed save)."""
    last = last_complete_checkpoint(output_dir)
    newest = int(_CHECKPOINT.match(last.name).group(1)) if last else -1
    for folder in _incomplete_checkpoints(output_dir, before=2**62):
        if int(_CHECKPOINT.match(folder.name).group(1)) > newest:
            shutil.rmtree(folder, ignore_errors=True)


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


def usable_checkpoint(output_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint that is undamaged, and a note for each newer one passed over."""
    notes = []
    for folder in reversed(complete_checkpoints(output_dir)):
        damage = checkpoint_damage(folder)
        if damage is None:
            return folder, notes
        notes.append(f"{folder.name} is damaged ({damage}): not resuming from it")
    return None, notes


def unmark_damaged(output_dir: str | Path, until: Path | None) -> None:
    """Withdraw the completion marker of the damaged checkpoints newer than ``until`` (rank 0), so the
    resumed run, which saves into the same folder names again, never passes them for complete."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    newest_ok = int(_CHECKPOINT.match(until.name).group(1)) if until else -1
    for folder in complete_checkpoints(output_dir):
        if int(_CHECKPOINT.match(folder.name).group(1)) > newest_ok:
            (folder / COMPLETE_MARKER).unlink(missing_ok=True)


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
    damage = checkpoint_damage(path)
    if damage:
        raise UserError(
            f"resume_from_checkpoint {path} is damaged: {damage}; use an earlier checkpoint or `auto` "
            "(which passes over damaged ones)"
        )
    return path
