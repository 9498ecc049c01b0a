"""Console output of duotune itself (progress bars and library logs are left to their owners)."""

from __future__ import annotations

import os
import sys

__all__ = ["echo", "kv", "is_main_process"]


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def echo(message: str) -> None:
    if is_main_process():
        print(f"[duotune] {message}", file=sys.stdout, flush=True)


def kv(key: str, value: str) -> None:
    echo(f"{key:<10} {value}")
