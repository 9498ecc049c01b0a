"""CPU: always available; fp32 by default, bf16 on request; gloo for multi-process runs.

LoRA's input dropout gets a faster mask here (``fast_dropout``, backends/dropout.py): PyTorch's CPU
dropout drew its Bernoulli mask at about 6 ns per element on one core on this project's machine, about
a quarter of a LoRA training step.
"""

from __future__ import annotations

from typing import Any

from .base import Availability, Backend

__all__ = ["CpuBackend"]


class CpuBackend(Backend):
    name = "cpu"
    device_type = "cpu"
    dist_backend = "gloo"
    visible_devices_env = None
    is_accelerator = False
    supports_fast_dropout = True

    def availability(self) -> Availability:
        return Availability(True, "always available")

    def device_count(self) -> int:
        return 1

    def device(self, local_rank: int | None = None) -> str:
        return "cpu"

    def supports_precision(self, precision: str) -> Availability:
        if precision == "fp16":
            return Availability(
                False, "fp16 mixed precision needs an accelerator; use compute_type: bf16 or fp32 on CPU"
            )
        return Availability(True, "")

    def default_precision(self) -> tuple[str, str]:
        return "fp32", "CPU trains in fp32 by default"

    def dropout_layer(self, p: float):
        from .dropout import MaskDropout

        return MaskDropout(p)

    def training_args_overrides(self) -> dict[str, Any]:
        return {**super().training_args_overrides(), "use_cpu": True}

    def memory_stats(self) -> dict[str, int]:
        try:
            import resource

            return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
        except Exception:  # not on every platform
            return {}
