"""The output directory of a run: refusing to mix two runs, clearing a replaced one, recording what ran.

Everything here that checks comes before data preparation and model loading, so a refused run is
refused at once and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import time
from pathlib import Path

from duotune.trainer.common.errors import UserError
from duotune.trainer.common.files import atomic_write_text, check_writable, package_versions
from duotune.trainer.recipe import Recipe

__all__ = [
    "RUN_ARTIFACTS",
    "RUN_CONFIG",
    "RUN_INFO",
    "RUN_STATUS",
    "read_run_status",
    "staged_into",
    "write_run_status",
    "check_output_dir",
    "clear_previous_run",
    "write_run_config",
    "write_run_info",
]

RUN_CONFIG = "run_config.yaml"
RUN_INFO = "run_info.json"
#: how the run stands or ended (running / completed / interrupted / failed / diverged), for UIs and scripts
RUN_STATUS = "run_status.json"
# Files a run writes into output_dir; overwrite_output_dir removes exactly these (and checkpoint-*).
RUN_ARTIFACTS = (
    RUN_CONFIG,
    RUN_INFO,
    RUN_STATUS,
    "trainer_log.jsonl",
    "training_loss.png",
    "training_eval_loss.png",
    "adapter_model.safetensors",
    "adapter_config.json",
    "trainer_state.json",
    "train_results.json",
    "eval_results.json",
    "all_results.json",
    "training_args.bin",
    "README.md",
)


def check_output_dir(recipe: Recipe) -> None:
    """Refuse an output_dir that is a file or already holds a run (unless asked to replace or resume)."""
    out = Path(recipe.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} exists and is not a folder; choose another output_dir")
    check_writable(out, "output_dir", folder=True)
    if not out.is_dir() or recipe.resume_from_checkpoint or recipe.overwrite_output_dir:
        return
    leftovers = [p.name for p in out.iterdir() if p.name in RUN_ARTIFACTS or p.name.startswith("checkpoint-")]
    if leftovers:
        raise UserError(
            f"output_dir {out} already holds a run ({', '.join(sorted(leftovers)[:3])}, ...); set "
            "overwrite_output_dir=true to replace it, resume_from_checkpoint=auto to continue it, or choose "
            "another output_dir"
        )


STAGING = ".staging"


@contextlib.contextmanager
def staged_into(out: Path, enabled: bool = True):
    """Yield a staging folder inside ``out``; on success move each file written there into ``out`` with
    one rename per file, so no file in ``out`` is ever half-written. On failure the staging folder goes.

    With ``enabled`` False (the ranks that write nothing) ``out`` itself is yielded."""
    if not enabled:
        yield out
        return
    stage = out / STAGING
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
        for path in sorted(stage.rglob("*")):
            target = out / path.relative_to(stage)
            if path.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(path, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def clear_previous_run(out: Path) -> None:
    """Remove what an earlier run left (its files and checkpoints), nothing else."""
    for p in out.iterdir():
        if p.name in RUN_ARTIFACTS and p.is_file():
            p.unlink()
        elif (p.name.startswith("checkpoint-") or p.name == "pissa_init") and p.is_dir():
            shutil.rmtree(p)


def write_run_config(out: Path, recipe: Recipe) -> None:
    """The fully resolved recipe, no secrets (what `merge`, `eval` and `parity compare` read back)."""
    atomic_write_text(out / RUN_CONFIG, recipe.to_yaml())


def write_run_info(out: Path, plan, framework, data_fingerprint: str = "") -> None:
    """What ran where, and on which data (read by `duotune parity compare`: its tolerances, and whether
    the two runs trained on the same examples wherever their files lay)."""
    info = {
        "device": plan.device,
        "backend": plan.backend.name,
        "precision": plan.precision,
        "attn_implementation": plan.attn_implementation,
        "framework": framework.describe(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "data_fingerprint": data_fingerprint,
        "python": platform.python_version(),
        "versions": package_versions("torch", "transformers", "peft", "accelerate", "openmind", "torch-npu"),
    }
    atomic_write_text(out / RUN_INFO, json.dumps(info, indent=2) + "\n")


def write_run_status(
    out: Path,
    status: str,
    *,
    step: int = 0,
    total_steps: int | None = None,
    exit_code: int | None = None,
    message: str | None = None,
) -> None:
    """Record how the run stands: ``running`` while it trains, then how it ended."""
    info = {
        "status": status,
        "step": step,
        "total_steps": total_steps,
        "exit_code": exit_code,
        "message": message,
        "pid": os.getpid(),
        "host": platform.node(),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(out / RUN_STATUS, json.dumps(info) + "\n")


def read_run_status(output_dir: str | Path) -> dict | None:
    """run_status.json of a run folder, or None. A run recorded as ``running`` whose process no longer
    holds the output_dir lock died without saying so (kill -9, power loss): it reads as ``died``."""
    from duotune.trainer.run.lock import lock_holder

    path = Path(output_dir) / RUN_STATUS
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    if info.get("status") == "running" and lock_holder(output_dir) is None:
        info["status"] = "died"
    return info
