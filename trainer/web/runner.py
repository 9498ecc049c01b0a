"""Starting and stopping `train` from the web UI: the very command the CLI runs, as its own process.

A run is started as ``python -m duotune.trainer.commands.cli train ARGS`` (the `train` command of the
CLI, argument for argument) in a new session, with its output appended to ``output_dir/console.log``.
Nothing ties it to the browser or to this server: it goes on when the tab or the server closes, and
everything about it is read back from its output_dir (:mod:`.monitor`). Tokens typed in the UI reach it
through its environment only, never its command line (which lands in the lock file and ``ps``) or any
file.

Abort sends SIGTERM (train finishes the update, saves a checkpoint and exits); a second press sends
SIGKILL to the run's whole process group (torchrun workers included).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from duotune.trainer.common.errors import UserError

from .monitor import CONSOLE_LOG, START_MARK, lock_holder, read_run, read_run_status

__all__ = [
    "SECRET_ENV",
    "Launched",
    "abort",
    "check_free",
    "cli_command",
    "last_started",
    "launched",
    "read",
    "remember",
    "start",
    "stream_cli",
    "train_command",
]

# the token fields of the UI and the environment variables they are handed over in
SECRET_ENV = ("HF_TOKEN", "MODELERS_TOKEN", "SWANLAB_API_KEY")


@dataclass
class Launched:
    """A run this server started."""

    output_dir: Path
    popen: subprocess.Popen
    command: str
    started: float = field(default_factory=time.time)
    aborts: int = 0
    exit_code: int | None = None

    @property
    def alive(self) -> bool:
        return self.exit_code is None and self.popen.poll() is None


_LAUNCHED: dict[Path, Launched] = {}
_GUARD = threading.Lock()


def _key(output_dir: str | Path) -> Path:
    return Path(output_dir).expanduser().resolve()


def launched(output_dir: str | Path) -> Launched | None:
    return _LAUNCHED.get(_key(output_dir))


def train_command(args: list[str]) -> list[str]:
    """The process for ``train ARGS``: this interpreter running the CLI's own train command."""
    return [sys.executable, "-m", "duotune.trainer.commands.cli", "train", *args]


def check_free(output_dir: str | Path) -> None:
    """Refuse an output_dir a live run holds, with the CLI's own message (the lock is taken and released
    at once: a held lock refuses it exactly as it refuses a second `train`)."""
    from duotune.trainer.run.lock import OutputDirLock

    mine = launched(output_dir)
    if mine is not None and mine.alive:
        raise UserError(
            f"output_dir {output_dir} is in use by the run this UI started (pid {mine.popen.pid}): "
            "wait for it to finish or abort it"
        )
    with OutputDirLock(output_dir, command="duotune web (checking that output_dir is free)"):
        pass


def start(
    output_dir: str | Path,
    args: list[str],
    command_text: str,
    *,
    secrets: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Launched:
    """Start ``train ARGS`` detached, its output appended to output_dir/console.log.

    ``secrets`` ({HF_TOKEN: ...}) go into the process's environment only. Raises UserError when a run
    already holds output_dir.
    """
    with _GUARD:  # two clicks (or two tabs) at once start one run
        out = Path(cwd or ".") / output_dir if not Path(output_dir).is_absolute() else Path(output_dir)
        check_free(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(
                f"output_dir {output_dir}: cannot create it ({e.strerror}); choose another"
            ) from None
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # the log shows each line as it is printed
        for name, value in (secrets or {}).items():
            if name in SECRET_ENV and value:
                env[name] = value
        log = open(out / CONSOLE_LOG, "ab")  # append: never clobber what another run wrote
        try:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"{START_MARK}{stamp} $ {command_text}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                train_command(args),
                cwd=str(cwd) if cwd else None,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not in this server's process group: survives its Ctrl-C
                close_fds=True,
            )
        finally:
            log.close()
        run = Launched(_key(out), popen, command_text)
        _LAUNCHED[run.output_dir] = run
    threading.Thread(target=_reap, args=(run,), daemon=True).start()
    return run


def _reap(run: Launched) -> None:
    run.exit_code = run.popen.wait()


def read(output_dir: str | Path):
    """The run in output_dir as the UI shows it, with what this server knows of a process it started."""
    mine = launched(output_dir)
    if mine is None:
        return read_run(output_dir)
    st = read_run(output_dir, started=mine.started, exit_code=mine.popen.poll(), alive=mine.alive)
    if mine.aborts and st.status == "died" and (st.exit_code or 0) < 0:
        st.status = "interrupted"  # stopped by this UI's abort before training began: nothing to save
    return st


def abort(output_dir: str | Path) -> str | None:
    """First press: SIGTERM (graceful checkpoint). Next press: SIGKILL the run's process group.

    Returns "term", "kill", or None when no live run was found."""
    mine = launched(output_dir)
    if mine is not None and mine.alive:
        pid = mine.popen.pid
        mine.aborts += 1
        first = mine.aborts == 1
    else:
        pid = _foreign_pid(output_dir)
        if pid is None:
            return None
        first = not _ABORTED.get(_key(output_dir)) == pid
        _ABORTED[_key(output_dir)] = pid
    if first:
        _signal(pid, signal.SIGTERM)
        return "term"
    _kill_group(pid)
    return "kill"


_ABORTED: dict[Path, int] = {}


def _foreign_pid(output_dir: str | Path) -> int | None:
    """The pid of a live run this server did not start (or started before a restart)."""
    holder = lock_holder(output_dir)
    if holder and isinstance(holder.get("pid"), int) and holder.get("host") in (None, _host()):
        return holder["pid"]
    status = read_run_status(output_dir)
    if status and status.get("status") == "running" and status.get("host") in (None, _host()):
        pid = status.get("pid")
        return pid if isinstance(pid, int) else None
    return None


def _host() -> str:
    import socket

    return socket.gethostname()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_group(pid: int) -> None:
    """SIGKILL the run and everything in its process group, never this server's own group."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    if pgid != os.getpgrp():
        try:
            os.killpg(pgid, signal.SIGKILL)
            return
        except ProcessLookupError:
            return
    _signal(pid, signal.SIGKILL)


def cli_command(args: list[str]) -> list[str]:
    """The process for ``duotune ARGS`` (eval, merge): this interpreter running the CLI."""
    return [sys.executable, "-m", "duotune.trainer.commands.cli", *args]


def stream_cli(args: list[str], lines: int = 200):
    """Run ``duotune ARGS`` attached to the request, yielding (last output lines, exit code or None)
    as it goes; the process is stopped if the page goes away (the generator is closed)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        cli_command(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    shown: list[str] = []
    try:
        assert proc.stdout is not None
        buffer = b""
        while True:
            chunk = proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
            if not chunk:
                break
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                text = raw.decode("utf-8", errors="replace").rstrip("\r").split("\r")[-1].rstrip()
                if text:
                    shown.append(text)
            del shown[:-lines]
            yield list(shown), None
        if buffer.strip():
            shown.append(buffer.decode("utf-8", errors="replace").split("\r")[-1].rstrip())
        yield shown[-lines:], proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


# ------------------------------------------------------------------------------------------------
# the last run started from this folder, restored into the form when the page is opened again

WEB_STATE = "web_last_run.json"


def _state_file() -> Path:
    from duotune.trainer.demo import cache_home

    return cache_home() / "web" / WEB_STATE


def remember(config: str | None, overrides: list[str], nproc: str | None) -> None:
    """Record the command of the run just started (never a secret-looking key's value)."""
    from duotune.trainer.common.files import atomic_write_text
    from duotune.trainer.recipe import SECRET_KEY_PATTERN

    data = {
        "cwd": str(Path.cwd()),  # relative paths in the overrides mean something only from here
        "config": str(config) if config else None,
        "overrides": [o for o in overrides if not SECRET_KEY_PATTERN.search(o.partition("=")[0])],
        "nproc": nproc,
        "time": time.time(),
    }
    try:
        atomic_write_text(_state_file(), json.dumps(data) + "\n")
    except OSError:
        pass  # a read-only cache only costs the restore on the next visit


def last_started() -> dict | None:
    """What ``remember`` recorded, when it was recorded from this working directory."""
    try:
        data = json.loads(_state_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("overrides"), list):
        return None
    return data if data.get("cwd") == str(Path.cwd()) else None
