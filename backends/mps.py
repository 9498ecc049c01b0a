"""Apple MPS (a cheap extra): fp32 by default; gloo for multi-process runs."""

from __future__ import annotations

from .base import Availability, Backend

__all__ = ["MpsBackend"]


class MpsBackend(Backend):
    name = "mps"
    device_type = "mps"
    dist_backend = "gloo"
    visible_devices_env = None

    def availability(self) -> Availability:
        import torch

        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_built():
            return Availability(False, "this torch was built without MPS (Apple silicon only)")
        if not mps.is_available():
            return Availability(
                False, "MPS is built in but not available (needs macOS 12.3+ on Apple silicon)"
            )
        return Availability(True, "Apple silicon GPU")

    def device(self, local_rank: int | None = None) -> str:
        return "mps"

    def supports_precision(self, precision: str) -> Availability:
        if precision != "fp32":
            return Availability(
                False, "mixed precision training on MPS is not supported by duotune; use fp32"
            )
        return Availability(True, "")

    def default_precision(self) -> tuple[str, str]:
        return "fp32", "MPS trains in fp32"

    def memory_stats(self) -> dict[str, int]:
        import torch

        return {"allocated_bytes": int(torch.mps.current_allocated_memory())}

    def empty_cache(self) -> None:
        import torch

        torch.mps.empty_cache()
