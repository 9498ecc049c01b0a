"""The run plan: which backend, device, precision, attention kernel, batch layout, framework and
sharding a recipe gets, each with the reason printed at the start of ``train``. Nothing is loaded or
written here."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duotune.trainer.common.errors import UserError
from duotune.trainer.recipe import Recipe

__all__ = ["Plan", "backend_for", "check_strategy", "deepspeed_config", "make_plan"]


@dataclass
class Plan:
    """What the backend decided for this run, and why (printed at the start of train)."""

    backend: Any
    device: str
    device_why: str
    precision: str
    precision_why: str
    attn_implementation: str
    attn_why: str
    framework: str
    framework_why: str
    deepspeed_config: str | None = None  # resolved path of the DeepSpeed JSON, when the recipe asks for it
    batching: Any = (
        None  # trainer.model.attention.Batching: the layout asked for (confirmed once the model loads)
    )

    def lines(self, framework_desc: str | None = None) -> list[tuple[str, str]]:
        return [
            ("device", f"{self.device} ({self.device_why})"),
            ("framework", f"{framework_desc or self.framework} ({self.framework_why})"),
            ("precision", f"{self.precision} ({self.precision_why})"),
            ("attention", f"{self.attn_implementation} ({self.attn_why})"),
        ]


def backend_for(device: str):
    """The backend a `--device` value selects, and why: (backend, why)."""
    from duotune.backends import BackendError, select_backend

    try:
        return select_backend(device)
    except BackendError as e:
        raise UserError(str(e)) from None


def make_plan(recipe: Recipe, device: str | None = None) -> Plan:
    """Pick the backend and let it decide device, precision and attention; pick the framework."""
    from duotune.trainer.model.attention import choose_attention, plan_batching
    from duotune.trainer.run.framework import resolve_framework

    backend, why = backend_for(device or recipe.device)
    wanted = recipe.requested_precision
    if wanted == "auto":
        precision, precision_why = backend.default_precision()
    else:
        support = backend.supports_precision(wanted)
        if not support.ok:
            raise UserError(f"compute_type {wanted} on {backend.name}: {support.reason}")
        precision, precision_why = wanted, "from the recipe"
    attn, attn_why = choose_attention(recipe.requested_attention, backend, precision)
    ds_config = check_strategy(recipe, backend)
    framework, framework_why = resolve_framework(recipe.framework, backend)
    return Plan(
        backend,
        backend.device(),
        why,
        precision,
        precision_why,
        attn,
        attn_why,
        framework,
        framework_why,
        deepspeed_config=ds_config,
        batching=plan_batching(recipe, backend, attn, precision),
    )


def check_strategy(recipe: Recipe, backend) -> str | None:
    """DeepSpeed and FSDP shard across accelerators; refuse them where they cannot run.

    Returns the DeepSpeed config path when the recipe asks for DeepSpeed."""
    what = "deepspeed" if recipe.deepspeed else "fsdp" if recipe.fsdp else None
    if what is None:
        return None
    if not backend.supports_sharding:
        raise UserError(
            f"{what} needs CUDA GPUs or Ascend NPUs, not {backend.name}; on {backend.name} train several "
            "processes with plain data parallelism instead (train --nproc N)"
        )
    if recipe.deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise UserError(
            "deepspeed is not installed: pip install deepspeed (on Ascend it runs through the Ascend adapter)"
        )
    return deepspeed_config(recipe.deepspeed) if recipe.deepspeed else None


def deepspeed_config(value: str) -> str:
    """`zero2` / `zero3` (shipped in configs/deepspeed/) or a path to a DeepSpeed JSON config."""
    from duotune.trainer.recipe import configs_dir

    path = configs_dir() / "deepspeed" / f"{value}.json" if value in ("zero2", "zero3") else Path(value)
    if not path.is_file():
        raise UserError(f"deepspeed: {value!r} is neither zero2, zero3 nor an existing JSON file")
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"deepspeed config {path} is not valid JSON: {e}; fix the file") from None
    return str(path)
