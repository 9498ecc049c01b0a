"""What a run's output_dir says about it: status, progress, losses, throughput, the last log lines.

Everything is read from files the run writes (``run_status.json``, ``trainer_log.jsonl``,
``train_results.json``, the console log the web runner redirects into ``console.log``, checkpoints) and
from the output_dir lock, so a page opened later, or a restarted web server, shows the same run: the
UI re-attaches to a run by reading its folder. No gradio here.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duotune.trainer.run.lock import lock_holder
from duotune.trainer.run.outputs import read_run_status

__all__ = [
    "CONSOLE_LOG",
    "RunState",
    "console_tail",
    "error_lines",
    "list_runs",
    "lock_holder",
    "read_run",
    "read_run_status",
]

CONSOLE_LOG = "console.log"
# the line the web runner writes into console.log before each command it starts
START_MARK = "[duotune web] "
TERMINAL = ("completed", "interrupted", "failed", "diverged", "died")


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """One look at a run folder."""

    output_dir: Path
    status: str = "none"  # none | starting | running | completed | interrupted | failed | diverged | died
    step: int = 0
    total: int | None = None
    elapsed: str = ""
    remaining: str = ""
    message: str | None = None  # the one-line error the CLI printed
    exit_code: int | None = None
    pid: int | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # trainer_log.jsonl
    tail: list[str] = field(default_factory=list)  # last console lines
    checkpoints: list[Path] = field(default_factory=list)  # complete ones, oldest first
    throughput: dict[str, float] = field(default_factory=dict)
    holder: dict | None = None

    @property
    def percent(self) -> float:
        if self.status == "completed":
            return 100.0
        if not self.total:
            return 0.0
        return max(0.0, min(100.0, 100.0 * self.step / self.total))

    @property
    def active(self) -> bool:
        return self.status in ("starting", "running")

    @property
    def final_loss(self) -> float | None:
        losses = [r["loss"] for r in self.rows if "loss" in r]
        return losses[-1] if losses else None

    @property
    def final_eval_loss(self) -> float | None:
        losses = [r["eval_loss"] for r in self.rows if "eval_loss" in r]
        return losses[-1] if losses else None


def read_trainer_log(output_dir: Path) -> list[dict[str, Any]]:
    """trainer_log.jsonl rows; a line being written (or damaged) is skipped, not fatal."""
    path = output_dir / "trainer_log.jsonl"
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("current_steps"), int):
            rows.append(row)
    return rows


def console_tail(output_dir: Path, lines: int = 40, since_start: bool = True) -> list[str]:
    """The last lines of console.log as a terminal shows them (a \\r-redrawn progress bar shows its
    last state), from the newest command the web runner started."""
    path = output_dir / CONSOLE_LOG
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for raw in data.split("\n"):
        shown = raw.rstrip("\r").split("\r")[-1].rstrip()
        if shown:
            out.append(shown)
    if since_start:
        starts = [i for i, line in enumerate(out) if line.startswith(START_MARK)]
        if starts:
            out = out[starts[-1] :]
    return out[-lines:]


_TRACEBACK_LAST = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")


def error_lines(tail: list[str]) -> str | None:
    """The one-line error the CLI printed (``error: ...`` and the problem lines under it), else the
    last line of a traceback."""
    for i, line in enumerate(tail):
        if line.startswith("error: "):
            block = [line]
            block += [x for x in tail[i + 1 :] if x.startswith("  - ")]
            return "\n".join(block)
    if any(line.startswith("Traceback") for line in tail):
        for line in reversed(tail):
            if _TRACEBACK_LAST.match(line):
                return line
    return None


def _throughput(out: Path, rows: list[dict]) -> dict[str, float]:
    """Throughput and memory figures: the last log line that has them, or train_results.json."""
    keys = ("real_tokens_per_second", "padding_fraction", "peak_memory_gib", "mfu")
    found: dict[str, float] = {}
    for row in reversed(rows):
        for k in keys:
            if k in row and k not in found and isinstance(row[k], (int, float)):
                found[k] = float(row[k])
        if found:
            break
    results = _read_json(out / "train_results.json") or {}
    for k in keys:
        v = results.get(f"train_{k}")
        if isinstance(v, (int, float)):
            found[k] = float(v)
    return found


def read_run(output_dir: str | Path, *, started: float | None = None, exit_code: int | None = None,
             alive: bool | None = None) -> RunState:  # fmt: skip
    """Everything the UI shows about the run in ``output_dir``.

    ``started``/``alive``/``exit_code`` come from a process this web server launched itself (it knows
    more than the files while the process is still starting, and its exit code afterwards).
    """
    from duotune.trainer.run.lifecycle import complete_checkpoints

    out = Path(output_dir)
    st = RunState(out)
    if not out.is_dir():
        return st
    st.rows = read_trainer_log(out)
    st.tail = console_tail(out)
    st.checkpoints = complete_checkpoints(out)
    st.holder = lock_holder(out)
    status = read_run_status(out)
    fresh = status is not None and (started is None or _mtime(out / "run_status.json") >= started - 1)
    if started is not None and _mtime(out / "trainer_log.jsonl") < started - 1:
        st.rows = []  # the previous run's log, until the new run starts its own
    if st.rows:
        last = st.rows[-1]
        st.step, st.total = last["current_steps"], last.get("total_steps")
        st.elapsed, st.remaining = last.get("elapsed_time", ""), last.get("remaining_time", "")
    if fresh:
        st.status = status.get("status", "running")
        st.step = max(st.step, int(status.get("step") or 0))
        st.total = status.get("total_steps") or st.total
        st.message = status.get("message")
        st.exit_code = status.get("exit_code")
        st.pid = status.get("pid")
    if alive:
        if not fresh or st.status in TERMINAL:
            st.status = "running" if st.rows else "starting"
    elif alive is False:
        st.exit_code = exit_code if st.exit_code is None else st.exit_code
        if not fresh or st.status == "running":
            st.status = _status_from_exit(exit_code)
    elif not fresh:
        st.status = _status_from_files(out, st)
    if st.holder and st.status not in ("running", "starting"):
        st.status = "running"  # a live process holds the lock: whatever the files say, it runs
    if st.status in ("failed", "diverged", "died"):
        # the lines exactly as the CLI printed them (`error: ...` and the problems under it), when this
        # UI started the run and has its console; else run_status.json's one line
        st.message = error_lines(st.tail) or st.message
    if st.status == "completed":
        st.remaining = "0:00:00"
        if st.total:
            st.step = st.total
    st.throughput = _throughput(out, st.rows)
    return st


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _status_from_exit(code: int | None) -> str:
    if code == 0:
        return "completed"
    if code == 3:
        return "diverged"
    if code is not None and code > 128:
        return "interrupted"
    if code is not None and code < 0:  # killed by a signal (subprocess's negative codes)
        return "died"
    return "failed"


def _status_from_files(out: Path, st: RunState) -> str:
    """A run without run_status.json (written by older duotune, or started elsewhere): infer."""
    if (out / "adapter_model.safetensors").is_file() and (out / "train_results.json").is_file():
        return "completed"
    if error_lines(st.tail):
        return "failed"
    if st.checkpoints or st.rows:
        return "interrupted"
    return "none"


def list_runs(root: str | Path) -> list[RunState]:
    """The runs in ``root`` (it and its subfolders that hold a run), newest first."""
    base = Path(root)
    if not base.is_dir():
        return []
    markers = ("run_status.json", "run_config.yaml", "trainer_log.jsonl", CONSOLE_LOG)
    folders = [base, *sorted(p for p in base.iterdir() if p.is_dir())]
    found = [p for p in folders if any((p / m).is_file() for m in markers)]
    states = [read_run(p) for p in found]
    return sorted(states, key=lambda s: -_folder_time(s.output_dir))


def _folder_time(out: Path) -> float:
    return max(
        [_mtime(out / n) for n in ("run_status.json", "trainer_log.jsonl", CONSOLE_LOG, "run_config.yaml")]
        or [0.0]
    )


def updated_text(out: Path) -> str:
    t = _folder_time(out)
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else ""


def adapter_folders(root: str | Path) -> list[str]:
    """Trained adapters under ``root``: run folders and their complete checkpoints, newest run first."""
    out: list[str] = []
    for st in list_runs(root):
        if (st.output_dir / "adapter_config.json").is_file():
            out.append(str(st.output_dir))
        out += [str(p) for p in reversed(st.checkpoints) if (p / "adapter_config.json").is_file()]
    return out
