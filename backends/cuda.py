"""NVIDIA CUDA: bf16 where the GPU has it (Ampere and newer), else fp16; FlashAttention-2 when the
flash-attn package is installed (its varlen kernel also serves padding-free batches), else PyTorch SDPA;
Liger's fused kernels when liger-kernel is installed; NCCL for multi-process runs."""

from __future__ import annotations

import importlib.util

from .base import Availability, Backend, VarlenKernel, torch_base_version

__all__ = ["CudaBackend", "PEAK_TFLOPS"]

# Dense (no sparsity) bf16/fp16 tensor-core peak in TFLOP/s from NVIDIA's datasheets, matched against
# torch.cuda.get_device_name(); the first matching entry wins, so more specific names come first.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("H800", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("A10", 125.0),
    ("L4", 121.0),
)


class CudaBackend(Backend):
    name = "cuda"
    device_type = "cuda"
    dist_backend = "nccl"
    visible_devices_env = "CUDA_VISIBLE_DEVICES"
    supports_sharding = True
    prefers_half_precision = True
    supports_liger = True

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

    def flash_attention(self, precision: str) -> tuple[str | None, str]:
        if importlib.util.find_spec("flash_attn") is None:
            return (
                None,
                "flash_attn: fa2 needs the flash-attn package (pip install flash-attn --no-build-isolation)",
            )
        if precision == "fp32":
            return (
                None,
                "FlashAttention-2 runs in bf16/fp16 only; set compute_type: bf16 (or fp16), or flash_attn: sdpa",
            )
        return "flash_attention_2", "flash-attn is installed"

    def varlen_kernel(self, attn_implementation: str) -> VarlenKernel | None:
        if attn_implementation == "flash_attention_2":
            # transformers passes cu_seqlens (or restarting position_ids) to flash_attn_varlen_func itself
            return VarlenKernel("FlashAttention-2 varlen (flash_attn_varlen_func)")
        return None

    def liger_kernel(self) -> Availability:
        if importlib.util.find_spec("liger_kernel") is None:
            return Availability(False, "liger-kernel is not installed (pip install liger-kernel)")
        return Availability(True, "liger-kernel is installed")

    def peak_flops(self, precision: str) -> tuple[float | None, str]:
        value, source = super().peak_flops(precision)
        if value is not None or precision == "fp32":
            return value, source if value is not None else "MFU is reported for bf16/fp16 runs"
        import torch

        name = torch.cuda.get_device_name()
        for key, tflops in PEAK_TFLOPS:
            if key in name:
                return tflops * 1e12, f"{name}: {tflops:g} TFLOP/s dense bf16 (datasheet)"
        return None, f"peak FLOP/s of {name} unknown; set DUOTUNE_PEAK_TFLOPS to its dense bf16 TFLOP/s"

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
