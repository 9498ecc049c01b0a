"""Which backends exist, and picking one for a run."""

from __future__ import annotations

import sys

from .base import Backend
from .cpu import CpuBackend
from .cuda import CudaBackend
from .mps import MpsBackend
from .npu import NpuBackend

__all__ = [
    "AUTO_ORDER",
    "DEVICE_CHOICES",
    "HOST_DEVICE",
    "BackendError",
    "get_backend",
    "keep_torch_npu_out",
    "registered_backends",
    "select_backend",
]

# `--device auto` tries these in order. NPU comes before CUDA: torch_npu's transfer_to_npu makes CUDA
# calls look available on an Ascend machine.
AUTO_ORDER = ("npu", "cuda", "mps", "cpu")
#: what `--device` and the recipe key `device` accept
DEVICE_CHOICES = ("auto", *AUTO_ORDER)
#: the device that is always there (where `duotune merge` works by default)
HOST_DEVICE = "cpu"

_REGISTRY: dict[str, type[Backend]] = {
    "npu": NpuBackend,
    "cuda": CudaBackend,
    "mps": MpsBackend,
    "cpu": CpuBackend,
}


class BackendError(Exception):
    """The requested device cannot be used; the message says what is missing and how to fix it."""


def registered_backends() -> dict[str, type[Backend]]:
    return dict(_REGISTRY)


def get_backend(name: str) -> Backend:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise BackendError(
            f"unknown device {name!r}; use one of: " + ", ".join(["auto", *_REGISTRY])
        ) from None


def keep_torch_npu_out() -> None:
    """Make torch_npu unimportable in this process once another device was chosen.

    transformers and accelerate import torch_npu whenever it is installed; on a machine without CANN
    that import fails in arbitrary ways. ``sys.modules["torch_npu"] = None`` makes ``find_spec`` answer
    None and ``import torch_npu`` raise ImportError, so both libraries simply see no NPU.
    """
    if "torch_npu" not in sys.modules:
        sys.modules["torch_npu"] = None  # type: ignore[assignment]


def select_backend(requested: str = "auto") -> tuple[Backend, str]:
    """Return the backend for ``requested`` and a sentence saying why it was chosen."""
    if requested == "auto":
        notes: list[str] = []
        reasons: list[str] = []
        for name in AUTO_ORDER:
            backend = _REGISTRY[name]()
            avail = backend.availability()
            if avail.ok:
                if name != "npu":
                    keep_torch_npu_out()
                skipped = f"; not available: {', '.join(notes)}" if notes else ""
                return backend, f"auto-selected; {avail.reason}{skipped}"
            notes.append(name)
            reasons.append(f"{name}: {avail.reason}")
        raise BackendError("no usable device found: " + "; ".join(reasons))
    backend = get_backend(requested)
    avail = backend.availability()
    if not avail.ok:
        raise BackendError(f"--device {requested}: {avail.reason}")
    if requested != "npu":
        keep_torch_npu_out()
    return backend, f"requested; {avail.reason}"
