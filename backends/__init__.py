"""Hardware abstraction layer: one module per device behind :class:`~backends.base.Backend`.

``select_backend("auto" | "cpu" | "cuda" | "npu" | "mps")`` returns the backend a run uses and why.
"""

from __future__ import annotations

from .base import PRECISIONS, Availability, Backend
from .registry import (
    AUTO_ORDER,
    DEVICE_CHOICES,
    HOST_DEVICE,
    BackendError,
    get_backend,
    keep_torch_npu_out,
    registered_backends,
    select_backend,
)

__all__ = [
    "AUTO_ORDER",
    "DEVICE_CHOICES",
    "HOST_DEVICE",
    "Availability",
    "Backend",
    "BackendError",
    "PRECISIONS",
    "get_backend",
    "keep_torch_npu_out",
    "registered_backends",
    "select_backend",
]
