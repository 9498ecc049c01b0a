"""duotune: one LoRA fine-tuning recipe for NVIDIA CUDA, Huawei Ascend NPU and CPU.

The repository root is the package: installed, ``backends/`` is ``duotune.backends`` (one module per
device), ``collators/`` is ``duotune.collators`` (batching), ``trainer/`` is ``duotune.trainer`` (the
recipe, the data path, the model, the run, the commands), and ``configs/`` ships inside it. Importing
this package imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGE_ROOT", "__version__"]

#: the folder holding backends/, collators/, trainer/ and the shipped configs/ (source or installed)
PACKAGE_ROOT = Path(__file__).resolve().parent


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("duotune")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__version__ = _version()
