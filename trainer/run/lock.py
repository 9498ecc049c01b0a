"""One run per output_dir: an exclusive lock held for the whole run.

Two ``train`` processes started into the same folder would otherwise both run and leave an adapter from
one next to the ``run_config.yaml`` of the other. The lock is an ``fcntl.flock`` on
``output_dir/.duotune.lock``, which records who holds it (pid, host, start time, command). The kernel
drops a flock when its process dies, however it dies, so a lock file left by a killed run is stale and
simply taken over; there is no timeout to tune and no pid guessing.

Several processes of one run share the lock: ``train --nproc N`` takes it in the launching process and
its torchrun workers inherit it (``DUOTUNE_LOCK_HOLDER`` names the holder's pid); under a torchrun started
by hand, global rank 0 takes it for the run. On a multi-node run only node 0's launcher takes it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from duotune.trainer.common.errors import UserError, first_line

__all__ = ["LOCK_FILE", "LOCK_HOLDER_ENV", "OutputDirLock", "lock_holder", "lock_for_run"]

LOCK_FILE = ".duotune.lock"
#: set by `train --nproc N` for its workers: the pid of the process holding the output_dir lock
LOCK_HOLDER_ENV = "DUOTUNE_LOCK_HOLDER"

try:  # POSIX; on Windows the lock is a no-op (duotune trains on Linux)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def _redact(arg: str) -> str:
    """`hub_token=...` -> `hub_token=***`: the lock file is readable by anyone who can list the folder."""
    from duotune.trainer.recipe import SECRET_KEY_PATTERN

    key, sep, _ = arg.partition("=")
    return f"{key}=***" if sep and SECRET_KEY_PATTERN.search(key) else arg


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(info: dict[str, Any]) -> str:
    parts = [f"pid {info.get('pid', '?')} on {info.get('host', '?')}"]
    if info.get("started"):
        parts.append(f"since {info['started']}")
    if info.get("command"):
        parts.append(f"`{info['command']}`")
    return ", ".join(parts)


def _flock_soon(fd: int, patience: float = 0.5) -> bool:
    """Take an exclusive flock, waiting at most ``patience`` seconds (a UI that peeks at the lock holds a
    shared one for a moment; a run holds it for hours)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


class OutputDirLock:
    """``with OutputDirLock(out):`` holds ``out/.duotune.lock`` exclusively, or raises UserError at once.

    The folder is created if needed. On release the lock file is removed, and so is the folder when this
    lock created it and nothing else was written to it, so a run refused later leaves nothing behind.
    """

    def __init__(self, output_dir: str | Path, command: str | None = None):
        self.out = Path(output_dir)
        self.path = self.out / LOCK_FILE
        if command is None:
            command = " ".join([Path(sys.argv[0]).name, *map(_redact, sys.argv[1:])])
        self.command = command
        self._fd: int | None = None
        self._created_dir = False
        self._created: list[Path] = []
        self.took_over: dict[str, Any] | None = None  # a stale holder's info, when its lock file was left

    def acquire(self) -> OutputDirLock:
        from duotune.trainer.common.files import check_writable

        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"output_dir {self.out} exists and is not a folder; choose another output_dir")
        check_writable(self.out, "output_dir", folder=True)  # below a file, read-only: say so before mkdir
        try:
            if not self.out.exists():
                self._created = [p for p in (self.out, *self.out.parents) if not p.exists()]
                self.out.mkdir(parents=True)
                self._created_dir = True
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                if fcntl is None:
                    break
                if not _flock_soon(fd):
                    os.close(fd)
                    self._undo_mkdir()
                    raise UserError(
                        f"output_dir {self.out} is in use by another run ({_describe(_read_holder(self.path))}); "
                        "wait for it to finish, stop it, or choose another output_dir"
                    ) from None
                # the file may have been removed (its holder finished) between open and flock: retry on
                # the new one, so two runs can never each hold a different inode of the same name
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            previous = _read_holder(self.path)
            if previous.get("pid"):
                self.took_over = previous
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": self.command,
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            self._fd = fd
        except OSError as e:
            self._undo_mkdir()
            raise UserError(
                f"output_dir {self.out} cannot be used ({first_line(e)}); choose a folder you can write to"
            ) from None
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: nobody can lock the old inode
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        self._undo_mkdir()

    def _undo_mkdir(self) -> None:
        if self._created_dir:
            for folder in self._created:  # output_dir, then the parents mkdir made for it; only when empty
                try:
                    folder.rmdir()
                except OSError:
                    break
            self._created_dir = False

    def __enter__(self) -> OutputDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class _Inherited:
    """The lock of a run whose launcher (``train --nproc``) or rank 0 holds it for this process."""

    took_over = None

    def __init__(self, output_dir: str | Path):
        self.out = Path(output_dir)

    def acquire(self) -> _Inherited:
        return self

    def release(self) -> None:
        return None

    def __enter__(self) -> _Inherited:
        return self

    def __exit__(self, *exc) -> None:
        return None


def lock_for_run(output_dir: str | Path) -> OutputDirLock | _Inherited:
    """The lock this process takes for a run into ``output_dir``.

    A torchrun worker of ``train --nproc`` inherits its launcher's lock, after checking that the launcher
    really holds it; under a hand-started torchrun only global rank 0 takes it (the other ranks write
    nothing into output_dir).
    """
    holder = os.environ.get(LOCK_HOLDER_ENV)
    if holder:
        info = lock_holder(output_dir)
        if info is None or str(info.get("pid")) != holder:
            raise UserError(
                f"output_dir {output_dir}: the launching process (pid {holder}) no longer holds its lock; "
                "start the run again"
            )
        return _Inherited(output_dir)
    if int(os.environ.get("RANK", "0")) != 0:
        return _Inherited(output_dir)
    return OutputDirLock(output_dir)


def lock_holder(output_dir: str | Path) -> dict[str, Any] | None:
    """Who holds the lock of ``output_dir`` ({pid, host, started, command}), or None when nobody does."""
    path = Path(output_dir) / LOCK_FILE
    if not path.is_file():
        return None
    if fcntl is None:  # pragma: no cover
        return _read_holder(path) or None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path) or {"pid": None, "host": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # a lock file nobody holds: its run died (it is taken over by the next run)
    finally:
        os.close(fd)
