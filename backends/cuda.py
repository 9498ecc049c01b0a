"""NVIDIA CUDA: bf16 where the GPU has it (Ampere and newer), else fp16; FlashAttention-2 when the
flash-attn package is installed, else PyTorch SDPA; NCCL for multi-process runs."""

from __future__ import annotations

import importlib.util

from .base import Availability, Backend, torch_base_version

__all__ = ["CudaBackend"]


class CudaBackend(Backend):
    name = "cuda"
    device_type = "cuda"
    dist_backend = "nccl"
    visible_devices_env = "CUDA_VISIBLE_DEVICES"
    supports_sharding = True
    prefers_half_precision = True

    def availability(self) -> Availability:
        import torch

        if torch.version.cuda is None:
            return Availability(
                False,
                f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build of torch "
                f"{torch_base_version()} for your driver (https://pytorch.org/get-started/locally/)",
            )
        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            visible = self.visible_devices()
            hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
            return Availability(
                False, f"no CUDA GPU is visible{hint}; check `nvidia-smi` and the NVIDIA driver"
            )
        name = torch.cuda.get_device_name(0)
        return Availability(True, f"{torch.cuda.device_count()} x {name}, CUDA {torch.version.cuda}")

    def device_count(self) -> int:
        import torch

        return torch.cuda.device_count()

    def _bf16(self) -> bool:
        import torch

        return bool(torch.cuda.is_bf16_supported())

    def supports_precision(self, precision: str) -> Availability:
        if precision == "bf16" and not self._bf16():
            return Availability(
                False, "this GPU has no bf16 (needs Ampere or newer); use compute_type: fp16 or auto"
            )
        return Availability(True, "")

    def default_precision(self) -> tuple[str, str]:
        if self._bf16():
            return "bf16", "the GPU supports bf16"
        return "fp16", "the GPU has no bf16 (pre-Ampere), so fp16 with loss scaling"

    def attn_implementation(self, precision: str) -> tuple[str, str]:
        if importlib.util.find_spec("flash_attn") is None:
            return "sdpa", "PyTorch SDPA (pip install flash-attn for FlashAttention-2)"
        if precision == "fp32":
            return "sdpa", "FlashAttention-2 needs bf16/fp16; PyTorch SDPA for fp32"
        return "flash_attention_2", "flash-attn is installed"

    def setup(self, options=None) -> list[str]:
        import torch

        torch.cuda.set_device(self.device())
        return []

    def memory_stats(self) -> dict[str, int]:
        import torch

        return {
            "peak_allocated_bytes": int(torch.cuda.max_memory_allocated()),
            "allocated_bytes": int(torch.cuda.memory_allocated()),
            "reserved_bytes": int(torch.cuda.memory_reserved()),
        }

    def empty_cache(self) -> None:
        import torch

        torch.cuda.empty_cache()
