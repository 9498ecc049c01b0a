"""What a run leaves behind to read: trainer_log.jsonl, loss plots, SwanLab.

``trainer_log.jsonl`` has one line per logging step with the keys LLaMA-Factory users already read
(current_steps, total_steps, loss, learning_rate, epoch, percentage, elapsed_time, remaining_time) plus
grad_norm and the interval's throughput (real_tokens_per_second, padding_fraction, peak_memory_gib, and
mfu on accelerators: trainer/run/throughput.py), and one line per evaluation with eval_loss. Losses are
written at full precision so runs on different backends can be compared exactly.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from duotune.trainer.recipe import Recipe
from duotune.trainer.run.throughput import THROUGHPUT_KEYS

__all__ = [
    "TRAINER_LOG",
    "make_log_callback",
    "read_trainer_log",
    "plot_losses",
    "swanlab_key_configured",
    "resolve_swanlab_mode",
    "start_swanlab",
]

TRAINER_LOG = "trainer_log.jsonl"


def _number(value) -> float | None:
    """A float for the log, or None for NaN / inf: strict JSON readers reject bare NaN and Infinity,
    and a missing value is what a non-finite one is to a plot or a comparison."""
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt_duration(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


def make_log_callback(output_dir: str | Path):
    """A TrainerCallback (from whichever transformers is installed) writing trainer_log.jsonl."""
    from transformers import TrainerCallback

    class TrainerLogCallback(TrainerCallback):
        def __init__(self) -> None:
            self.path = Path(output_dir) / TRAINER_LOG
            self.start_time = time.time()
            self.start_step = 0
            self.step_lr: float | None = None

        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            # The rate this update runs at. transformers 5 logs that; 4.x logs the next one (after the
            # scheduler stepped), so reading it here keeps both stacks' logs comparable.
            if optimizer is not None and optimizer.param_groups:
                self.step_lr = float(optimizer.param_groups[0]["lr"])

        def on_train_begin(self, args, state, control, **kwargs):
            self.start_time = time.time()
            self.start_step = state.global_step
            if not state.is_world_process_zero or not self.path.exists():
                return
            if state.global_step == 0:
                self.path.unlink()  # a fresh run starts a fresh log
                return
            # a resumed run appends, after dropping what the interrupted run logged past the checkpoint
            kept = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["current_steps"] <= state.global_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            if "loss" not in logs and "eval_loss" not in logs:
                return  # the end-of-training summary (train_runtime, ...) is not a step
            step, total = state.global_step, state.max_steps
            elapsed = time.time() - self.start_time
            done = max(step - self.start_step, 1)
            remaining = elapsed / done * max(total - step, 0)
            line: dict[str, Any] = {"current_steps": step, "total_steps": total}
            if "loss" in logs:
                line["loss"] = _number(logs["loss"])
                if logs.get("grad_norm") is not None:
                    line["grad_norm"] = _number(logs["grad_norm"])
                lr = self.step_lr if self.step_lr is not None else logs.get("learning_rate", 0.0)
                line["learning_rate"] = _number(lr)
                line.update({k: _number(logs[k]) for k in THROUGHPUT_KEYS if k in logs})
            if "eval_loss" in logs:
                line["eval_loss"] = _number(logs["eval_loss"])
            line.update(
                {
                    "epoch": float(state.epoch or 0.0),
                    "percentage": round(100.0 * step / total, 2) if total else 0.0,
                    "elapsed_time": _fmt_duration(elapsed),
                    "remaining_time": _fmt_duration(remaining),
                }
            )
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, allow_nan=False) + "\n")

    return TrainerLogCallback()


def read_trainer_log(output_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(output_dir) / TRAINER_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _smooth(values: list[float], weight: float) -> list[float]:
    out, last = [], values[0] if values else 0.0
    for v in values:
        last = last * weight + (1 - weight) * v
        out.append(last)
    return out


def plot_losses(output_dir: str | Path) -> list[Path]:
    """training_loss.png (and training_eval_loss.png when there was evaluation); returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_trainer_log(output_dir)
    written: list[Path] = []
    for key, name, title in (
        ("loss", "training_loss.png", "training loss"),
        ("eval_loss", "training_eval_loss.png", "evaluation loss"),
    ):
        points = [(r["current_steps"], r[key]) for r in rows if r.get(key) is not None]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(steps, values, color="#1f77b4", alpha=0.35 if len(values) > 10 else 1.0, label="original")
        if len(values) > 10:
            ax.plot(steps, _smooth(list(values), 0.8), color="#1f77b4", label="smoothed")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(f"{title} of {Path(output_dir).name}")
        ax.legend()
        fig.tight_layout()
        path = Path(output_dir) / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------------
# SwanLab


def swanlab_key_configured() -> bool:
    """True when SwanLab has an API key (SWANLAB_API_KEY or a saved `swanlab login`)."""
    if os.environ.get("SWANLAB_API_KEY"):
        return True
    try:
        from swanlab.sdk.internal.settings import create_settings

        return bool(create_settings().api_key)
    except Exception:  # older/newer swanlab layouts: fall back to the documented file
        return (Path.home() / ".swanlab" / ".netrc").is_file()


def _swanlab_host_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    host = "api.swanlab.cn"
    try:
        from swanlab.sdk.internal.settings import create_settings

        api = str(create_settings().api_host or "")
        if "://" in api:
            host = api.split("://", 1)[1].split("/", 1)[0]
    except Exception:
        pass
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or 443)), timeout=timeout):
            return True, host
    except OSError:
        return False, host


def resolve_swanlab_mode(recipe: Recipe) -> tuple[str, str]:
    """(mode, why). Never a mode that would prompt for a login."""
    if recipe.swanlab_mode != "auto":
        return recipe.swanlab_mode, "from the recipe"
    env = os.environ.get("SWANLAB_MODE")
    if env in ("online", "offline", "local", "disabled"):
        if env == "online" and not swanlab_key_configured():
            return "offline", "SWANLAB_MODE=online but no SwanLab API key is configured"
        return env, "from SWANLAB_MODE"
    if swanlab_key_configured():
        return "online", "a SwanLab API key is configured"
    return "offline", "no SwanLab API key configured (run `swanlab login` to upload runs)"


def start_swanlab(recipe: Recipe, output_dir: str | Path) -> tuple[str, str]:
    """Start the SwanLab run for this process (rank 0). Returns (mode, note); never raises for network."""
    import swanlab

    mode, why = resolve_swanlab_mode(recipe)
    if mode == "disabled":
        return mode, why
    log_dir = Path(output_dir) / "swanlog"
    if mode == "online":
        ok, host = _swanlab_host_reachable()
        if not ok:
            mode, why = "offline", f"{host} is unreachable; upload later with `swanlab sync {log_dir}/run-*`"
    kwargs = dict(
        project=recipe.swanlab_project or os.environ.get("SWANLAB_PROJECT") or "duotune",
        workspace=recipe.swanlab_workspace,
        name=recipe.experiment_name,
        description=recipe.description,
        config=recipe.public_dict(),
        log_dir=str(log_dir),
        settings=swanlab.Settings(interactive=False) if hasattr(swanlab, "Settings") else None,
    )
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        swanlab.init(mode=mode, **kwargs)
    except Exception as e:  # a tracker must never cost the user their run
        if mode != "online":
            return "disabled", f"SwanLab could not start ({type(e).__name__}: {e}); continuing without it"
        swanlab.init(mode="offline", **kwargs)
        mode, why = "offline", f"online start failed ({type(e).__name__}); logging offline to {log_dir}"
    return mode, why
