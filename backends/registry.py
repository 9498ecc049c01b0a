"""Which backends exist, and picking one for a run."""

from __future__ import annotations

from .base import Backend
from .cpu import CpuBackend

__all__ = ["BackendError", "get_backend", "registered_backends", "select_backend", "AUTO_ORDER"]

# `--device auto` tries these in order (NPU before CUDA: torch_npu's transfer_to_npu makes CUDA calls
# look available on an Ascend machine).
AUTO_ORDER = ("npu", "cuda", "mps", "cpu")

_REGISTRY: dict[str, type[Backend]] = {"cpu": CpuBackend}


class BackendError(Exception):
    """The requested device cannot be used; the message says what is missing and how to fix it."""


def registered_backends() -> dict[str, type[Backend]]:
    return dict(_REGISTRY)


def get_backend(name: str) -> Backend:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise BackendError(
            f"device {name!r} is not supported by this version of duotune; use one of: "
            + ", ".join(["auto", *_REGISTRY])
        ) from None


def select_backend(requested: str = "auto") -> tuple[Backend, str]:
    """Return the backend for ``requested`` and a sentence saying why it was chosen."""
    if requested == "auto":
        notes = []
        for name in AUTO_ORDER:
            if name not in _REGISTRY:
                continue
            backend = _REGISTRY[name]()
            avail = backend.availability()
            if avail.ok:
                skipped = f" ({'; '.join(notes)})" if notes else ""
                return backend, f"auto-selected {name}{skipped}"
            notes.append(f"{name}: {avail.reason}")
        raise BackendError("no usable device found: " + "; ".join(notes))
    backend = get_backend(requested)
    avail = backend.availability()
    if not avail.ok:
        raise BackendError(f"--device {requested}: {avail.reason}")
    return backend, f"requested {requested}"
