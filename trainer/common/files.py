"""Files the user hands us and files we write: reading text and JSON with one-line errors that name the
file, refusing an output path that cannot be written before any work starts, writing so that a crash, a
full disk or a second process never leaves a half-written file that looks complete, and reading
installed package versions."""

from __future__ import annotations

import codecs
import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from duotune.backends.base import dist_version
from duotune.trainer.common.errors import UserError

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
    "decode_text",
    "dist_version",
    "os_problem",
    "package_versions",
    "read_json",
    "read_text",
    "read_yaml_mapping",
    "write_error",
    "yaml_problem",
]

_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def os_problem(e: OSError) -> str:
    """What an OSError means, in lower case ("no space left on device", "read-only file system")."""
    text = e.strerror or (errno.errorcode.get(e.errno, "") if e.errno else "") or type(e).__name__
    return text[:1].lower() + text[1:]


def decode_text(data: bytes, where: str, hint: str = "save it as UTF-8") -> str:
    """UTF-8 text (a BOM is allowed), or a UserError naming ``where`` and saying what the bytes are."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise UserError(f"{where}: {name} text, not UTF-8; {hint}")
    if b"\0" in data:
        raise UserError(f"{where}: not a text file (it holds NUL bytes, so it is binary data); {hint}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{where}: not UTF-8 text (invalid byte at offset {e.start}); {hint}") from None


def read_text(path: str | Path, what: str, hint: str = "save it as UTF-8") -> str:
    """The text of a file the user gave us; ``what`` says what it is ("recipe", "dataset", ...) and
    ``hint`` how to fix it."""
    path = Path(path)
    where = f"{what} {path}" if what else str(path)
    if path.is_dir():
        raise UserError(f"{where} is a folder, not a file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{where} does not exist") from None
    except OSError as e:
        raise UserError(f"{where} cannot be read: {os_problem(e)}") from None
    return decode_text(data, where, hint)


def read_json(
    path: str | Path, what: str = "", *, expect: type | None = dict, hint: str = "fix the file"
) -> Any:
    """A JSON file the user gave us (or a folder they gave us holds), parsed; ``expect`` is the type its
    top level must have."""
    path = Path(path)
    where = f"{what} {path}" if what else str(path)
    text = read_text(path, what, hint)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{where}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg}); {hint}"
        ) from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply to read; {hint}") from None
    if expect is not None and not isinstance(value, expect):
        kind = {dict: "an object", list: "a list"}.get(expect, expect.__name__)
        raise UserError(f"{where}: the top level must be {kind} in JSON, got {type(value).__name__}; {hint}")
    return value


def yaml_problem(e: Exception) -> str:
    """' line N: what' for a YAML error, N being where the broken construct starts (an unclosed
    bracket is reported by PyYAML at the end of the file)."""
    context, problem = getattr(e, "context_mark", None), getattr(e, "problem_mark", None)
    what = getattr(e, "problem", None) or "invalid YAML"
    if context is not None and problem is not None and context.line != problem.line:
        return f" line {context.line + 1}: {getattr(e, 'context', '')}, {what} (line {problem.line + 1})"
    return (f" line {problem.line + 1}" if problem is not None else "") + f": {what}"


def read_yaml_mapping(path: str | Path, what: str, hint: str | None = None) -> dict[str, Any]:
    """A YAML file of key: value pairs the user gave us (a recipe, a run's run_config.yaml); {} if empty."""
    import yaml

    path = Path(path)
    text = read_text(path, what, hint or "save it as UTF-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{what} {path}{yaml_problem(e)}; {hint or 'fix the YAML syntax'}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"{what} {path}: must be a mapping of key: value pairs, got {type(data).__name__}; "
            f"{hint or 'fix the YAML'}"
        )
    return data


def check_writable(target: str | Path, what: str, *, folder: bool) -> None:
    """Refuse, before any work starts, an output that cannot be created or written: a file where a folder
    must go (or the reverse), a path below a file, a read-only or otherwise unwritable place. Nothing is
    created: the check writes and removes a probe file in the nearest existing folder."""
    target = Path(target)
    where = f"{what} {target}"
    if target.exists():
        if folder and not target.is_dir():
            raise UserError(f"{where} is a file, not a folder; choose another path")
        if not folder and target.is_dir():
            raise UserError(f"{where} is a folder; give a file path")
    parent = target if folder and target.is_dir() else target.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{where} cannot be created: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".duotune-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{where} cannot be written: {existing} is not writable ({os_problem(e)})") from None


def write_error(e: OSError, what: str, path: str | Path) -> UserError:
    """The one-line error for a write that failed part-way (the caller has removed what it wrote)."""
    return UserError(
        f"writing {what} {path} failed: {os_problem(e)}; nothing was kept, free space or choose another path"
    )


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    On any error the temporary file is removed and ``path`` is left as it was (absent or the old file).
    """
    path = Path(path)
    created = _missing_ancestors(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = False
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            os.replace(tmp, path)
            done = True
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        if not done:  # leave no folder behind that was made for a file that never came
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _missing_ancestors(folder: Path) -> list[Path]:
    """The folders that do not exist yet on the way to ``folder``, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


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
