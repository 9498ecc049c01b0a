"""The interface every device backend implements.

A backend answers questions about one kind of device (is it usable and if not why, which device string
this process uses, which precision and attention implementation fit it, which collective backend
multi-process training needs) and does any process-wide setup before the model loads. Nothing outside
``backends/`` talks to ``torch.cuda``, ``torch.npu`` or ``torch_npu`` directly.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Backend",
    "Availability",
    "PEAK_TFLOPS_ENV",
    "PRECISIONS",
    "VarlenKernel",
    "dist_version",
    "torch_base_version",
]

PRECISIONS = ("fp32", "bf16", "fp16")
#: dense bf16/fp16 peak of one device in TFLOP/s, for MFU where the backend's table does not know the device
PEAK_TFLOPS_ENV = "DUOTUNE_PEAK_TFLOPS"


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str  # what was found, or why not and how to fix it, in words a user can act on


@dataclass(frozen=True)
class VarlenKernel:
    """A device's own attention kernel for padding-free micro-batches: the examples of a micro-batch
    concatenated into one sequence, their boundaries given as cumulative lengths ``cu_seqlens``.

    ``function(query, key, value, cu_seqlens, scale, dropout)`` takes query, key and value as
    (1, heads, tokens, head_dim) (key/value may have fewer heads: grouped-query attention), returns the
    causal attention output as (1, tokens, heads, head_dim), every token attending only to earlier tokens
    of its own example. ``function`` is None where transformers' own implementation of
    ``attn_implementation`` already does this (FlashAttention-2 varlen)."""

    name: str
    function: Callable | None = None


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
    #: Liger's Triton kernels run here (`use_liger_kernel`)
    supports_liger: bool = False
    #: apply_fused_ops has fused operators for some models here (`npu_fused_ops`)
    supports_fused_ops: bool = False
    #: dropout_layer has a faster dropout for LoRA's inputs here (`fast_dropout`)
    supports_fast_dropout: bool = False

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

    def flash_attention(self, precision: str) -> tuple[str | None, str]:
        """(attn_implementation that `flash_attn: fa2` loads, why), or (None, why it is unavailable)."""
        return None, (
            f"FlashAttention-2 needs a CUDA GPU with flash-attn installed, or an Ascend NPU; {self.name} has "
            "neither (use flash_attn: auto or sdpa)"
        )

    def varlen_kernel(self, attn_implementation: str) -> VarlenKernel | None:
        """This device's kernel for padding-free batches under ``attn_implementation``, or None when the
        generic one (per-example SDPA / eager, trainer/model/attention.py) serves."""
        return None

    def liger_kernel(self) -> Availability:
        """Whether Liger's fused Triton kernels can run here (transformers' `use_liger_kernel`)."""
        return Availability(False, f"liger-kernel's Triton kernels need a CUDA GPU, not {self.name}")

    def apply_fused_ops(self, model) -> tuple[list[str], str]:
        """Swap exact fused operators of this device into ``model`` (before LoRA is attached).

        Returns (names of the operators now in use, a note on why any were left out)."""
        return [], f"no fused operators for {self.name}"

    def dropout_layer(self, p: float):
        """A module that does LoRA's input dropout faster here than ``torch.nn.Dropout(p)`` (same
        distribution). Called only where ``supports_fast_dropout``; elsewhere PyTorch's own serves."""
        raise NotImplementedError(f"{self.name} has no faster dropout (supports_fast_dropout is False)")

    def peak_flops(self, precision: str) -> tuple[float | None, str]:
        """Dense peak FLOP/s of one device at ``precision`` (for MFU), and where the figure came from."""
        env = os.environ.get(PEAK_TFLOPS_ENV, "").strip()
        if env:
            try:
                value = float(env)
            except ValueError:
                return None, f"{PEAK_TFLOPS_ENV}={env!r} is not a number"
            if value > 0:
                return value * 1e12, f"{PEAK_TFLOPS_ENV}"
        return None, f"peak FLOP/s of this device unknown (set {PEAK_TFLOPS_ENV} to its dense bf16 TFLOP/s)"

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
