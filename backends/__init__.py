"""Hardware abstraction layer: one module per device behind :class:`~backends.base.Backend`."""

from __future__ import annotations

from .base import PRECISIONS, Availability, Backend
from .cpu import CpuBackend
from .registry import BackendError, get_backend, registered_backends, select_backend

__all__ = [
    "Availability",
    "Backend",
    "BackendError",
    "CpuBackend",
    "PRECISIONS",
    "get_backend",
    "registered_backends",
    "select_backend",
]
