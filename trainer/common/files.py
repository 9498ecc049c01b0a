"""Writing files so that a crash, a full disk or a second process never leaves a half-written file that
looks complete, and reading installed package versions."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from duotune.backends.base import dist_version

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "dist_version", "package_versions"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    On any error the temporary file is removed and ``path`` is left as it was (absent or the old file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def package_versions(*dists: str) -> dict[str, str]:
    """{distribution: version} for those of ``dists`` that are installed."""
    found = {}
    for dist in dists:
        version = dist_version(dist)
        if version is not None:
            found[dist] = version
    return found
