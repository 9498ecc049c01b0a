"""Huawei Ascend NPU through torch_npu (the Ascend Extension for PyTorch) and CANN.

Facts this module follows (torch_npu's documented API):
- ``import torch_npu`` registers ``torch.npu``; devices are ``npu:{LOCAL_RANK}``; the runtime honours
  ``ASCEND_RT_VISIBLE_DEVICES``; the collective backend is ``hccl``.
- ``torch_npu.npu.set_compile_mode(jit_compile=False)`` selects the precompiled binary kernels, the right
  default for the dynamic shapes of chat data (JIT compilation was reported ~10x slower on a 910A). The
  recipe key ``npu_jit_compile: true`` or ``DUOTUNE_NPU_JIT_COMPILE=1`` switches JIT on.
- bf16 only where ``torch.npu.is_bf16_supported()`` (910B yes; 910A and 310P no): fp16 otherwise.
- torch_npu's version must equal torch's. Importing it where CANN is missing raises arbitrary errors, so
  it is located with ``find_spec`` first, imported inside ``except Exception``, and only ever imported
  when the NPU is requested or probed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from typing import Any

from .base import Availability, Backend, dist_version, torch_base_version

__all__ = ["NpuBackend", "probe_torch_npu", "torch_npu_install_hint", "JIT_ENV", "package_versions"]

JIT_ENV = "DUOTUNE_NPU_JIT_COMPILE"
CANN_HINT = (
    "install the CANN toolkit from https://www.hiascend.com/software/cann and run "
    "`source /usr/local/Ascend/ascend-toolkit/set_env.sh` before training"
)


def torch_npu_install_hint() -> str:
    base = torch_base_version()
    return f'pip install "torch-npu=={base}.*" (torch_npu must match torch {base})'


def probe_torch_npu() -> tuple[Any, str]:
    """Return (torch_npu module or None, reason). Imports torch_npu only if it is installed."""
    if "torch_npu" in sys.modules and sys.modules["torch_npu"] is None:
        return None, "torch_npu is disabled in this process (another device was chosen)"
    if importlib.util.find_spec("torch_npu") is None:
        return None, f"torch_npu is not installed; {torch_npu_install_hint()} and {CANN_HINT}"
    try:
        module = importlib.import_module("torch_npu")
    except Exception as e:  # missing CANN libraries surface as ImportError, OSError, RuntimeError...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, f"torch_npu is installed but fails to import ({type(e).__name__}: {first}); {CANN_HINT}"
    version = str(getattr(module, "__version__", "")).split("+", 1)[0]
    base = torch_base_version()
    release = re.match(r"\d+\.\d+\.\d+", version)
    if release and release.group(0) != base:
        return None, f"torch_npu {version} does not match torch {base}; {torch_npu_install_hint()}"
    return module, f"torch_npu {version or '(unknown version)'}"


class NpuBackend(Backend):
    name = "npu"
    device_type = "npu"
    dist_backend = "hccl"
    visible_devices_env = "ASCEND_RT_VISIBLE_DEVICES"
    supports_sharding = True
    prefers_openmind = True
    prefers_half_precision = True

    def __init__(self) -> None:
        self._module: Any = None
        self._avail: Availability | None = None

    @property
    def torch_npu(self):
        if self._module is None:
            self.availability()
        return self._module

    def availability(self) -> Availability:
        if self._avail is not None:
            return self._avail
        module, reason = probe_torch_npu()
        if module is None:
            self._avail = Availability(False, reason)
            return self._avail
        import torch

        npu = getattr(torch, "npu", None)
        if npu is None or not npu.is_available() or npu.device_count() == 0:
            visible = self.visible_devices()
            hint = f" (ASCEND_RT_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
            self._avail = Availability(
                False, f"{reason} is installed but no Ascend NPU is visible{hint}; check `npu-smi info`"
            )
            return self._avail
        self._module = module
        cann = cann_version(module)
        name = npu.get_device_name(0) if hasattr(npu, "get_device_name") else "Ascend NPU"
        self._avail = Availability(
            True, f"{npu.device_count()} x {name}, {reason}" + (f", CANN {cann}" if cann else "")
        )
        return self._avail

    def device_count(self) -> int:
        import torch

        return torch.npu.device_count() if self.is_available() else 0

    def _bf16(self) -> bool:
        import torch

        return bool(torch.npu.is_bf16_supported())

    def supports_precision(self, precision: str) -> Availability:
        if precision == "bf16" and not self._bf16():
            return Availability(
                False,
                "this Ascend NPU has no bf16 (910A and 310P lack it; 910B has it); use compute_type: fp16 or auto",
            )
        return Availability(True, "")

    def default_precision(self) -> tuple[str, str]:
        if self._bf16():
            return "bf16", "the NPU supports bf16"
        return "fp16", "this NPU has no bf16 (910A/310P), so fp16 with loss scaling"

    def attn_implementation(self, precision: str) -> tuple[str, str]:
        return "sdpa", "PyTorch SDPA on the NPU"

    def jit_compile_wanted(self, options: dict[str, Any] | None) -> bool:
        env = os.environ.get(JIT_ENV, "").strip().lower()
        if env in ("1", "true", "yes", "on"):
            return True
        if env in ("0", "false", "no", "off"):
            return False
        return bool((options or {}).get("npu_jit_compile", False))

    def setup(self, options: dict[str, Any] | None = None) -> list[str]:
        import torch

        module = self.torch_npu
        jit = self.jit_compile_wanted(options)
        module.npu.set_compile_mode(jit_compile=jit)
        torch.npu.set_device(self.device())
        return [
            "jit_compile on (JIT kernel compilation)"
            if jit
            else "jit_compile off (precompiled binary kernels; npu_jit_compile: true switches JIT on)"
        ]

    def memory_stats(self) -> dict[str, int]:
        import torch

        return {
            "peak_allocated_bytes": int(torch.npu.max_memory_allocated()),
            "allocated_bytes": int(torch.npu.memory_allocated()),
            "reserved_bytes": int(torch.npu.memory_reserved()),
        }

    def empty_cache(self) -> None:
        import torch

        torch.npu.empty_cache()


def cann_version(module=None) -> str | None:
    """CANN version when it can be read (torch_npu >= 2.1 with CANN >= 8.1.RC1 reports it)."""
    if module is None:
        module = sys.modules.get("torch_npu")
    if module is None:
        return None
    for path in ("utils.get_cann_version", "npu.utils.get_cann_version"):
        obj: Any = module
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            value = obj(module="CANN")
        except Exception:
            continue
        if value:
            return str(value)
    import torch

    value = getattr(getattr(torch, "version", None), "cann", None)
    return str(value) if value else None


def package_versions() -> dict[str, str | None]:
    """Versions of the Ascend software for `duotune env` (read without importing torch_npu)."""
    return {"torch_npu": dist_version("torch-npu", "torch_npu"), "CANN": cann_version()}
