"""The interface every device backend implements.

A backend answers questions about one kind of device (is it usable and if not why, which device string
this process uses, which precision and attention implementation fit it, which collective backend
multi-process training needs) and does any process-wide setup before the model loads. Nothing outside
``backends/`` talks to ``torch.cuda``, ``torch.npu`` or ``torch_npu`` directly.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

__all__ = ["Backend", "Availability", "PRECISIONS", "dist_version", "torch_base_version"]

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str  # what was found, or why not and how to fix it, in words a user can act on


def torch_base_version() -> str:
    """torch's version without the local build tag: 2.13.0+cpu -> 2.13.0."""
    import torch

    return torch.__version__.split("+", 1)[0]


def dist_version(*dists: str) -> str | None:
    """Installed version of the first of ``dists`` (alternative spellings of one distribution), read
    from its metadata without importing it; None when none is installed."""
    from importlib import metadata

    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


class Backend(ABC):
    #: short name used on the command line and in recipes
    name: str = ""
    #: torch device type
    device_type: str = ""
    #: torch.distributed backend for multi-process training
    dist_backend: str = ""
    #: environment variable that restricts which devices this process sees
    visible_devices_env: str | None = None
    #: a separate accelerator (False for the CPU, which accelerate then drives with cpu=True)
    is_accelerator: bool = True
    #: DeepSpeed and FSDP can shard a model across devices of this kind
    supports_sharding: bool = False
    #: `framework: auto` picks openMind's Trainer here when the openmind package is installed
    prefers_openmind: bool = False
    #: bf16/fp16 is this device's natural dtype: `--dtype auto` loads models for inference in it
    prefers_half_precision: bool = False

    @abstractmethod
    def availability(self) -> Availability: ...

    def is_available(self) -> bool:
        return self.availability().ok

    def device_count(self) -> int:
        return 1

    def device(self, local_rank: int | None = None) -> str:
        """Device string for this process (``npu:{LOCAL_RANK}`` and so on)."""
        if local_rank is None:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return f"{self.device_type}:{local_rank}"

    @abstractmethod
    def supports_precision(self, precision: str) -> Availability: ...

    @abstractmethod
    def default_precision(self) -> tuple[str, str]:
        """(precision, why)."""

    def attn_implementation(self, precision: str) -> tuple[str, str]:
        """(attn_implementation for from_pretrained, why)."""
        return "sdpa", "PyTorch scaled-dot-product attention"

    def setup(self, options: dict[str, Any] | None = None) -> list[str]:
        """Process-wide setup needed before the model loads; returns notes for the console."""
        return []

    def preflight(self, world_size: int) -> list[str]:
        """Checks and process-wide settings before anything touches the device or the collective
        backend (called once per process at the start of a run); returns notes for the console."""
        return []

    def memory_stats(self) -> dict[str, int]:
        return {}

    def empty_cache(self) -> None:
        return None

    def training_args_overrides(self) -> dict[str, Any]:
        """Extra TrainingArguments this device needs (use_cpu on CPU; the collective backend when the
        run has several processes)."""
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return {"ddp_backend": self.dist_backend}
        return {}

    def visible_devices(self) -> str | None:
        return os.environ.get(self.visible_devices_env) if self.visible_devices_env else None

    def describe(self) -> dict[str, Any]:
        """Everything `duotune env` shows about this backend."""
        avail = self.availability()
        info: dict[str, Any] = {
            "name": self.name,
            "available": avail.ok,
            "reason": avail.reason,
            "dist_backend": self.dist_backend,
            "visible_devices_env": self.visible_devices_env,
            "visible_devices": self.visible_devices(),
        }
        if avail.ok:
            info["device_count"] = self.device_count()
            info["default_precision"] = self.default_precision()[0]
        return info
