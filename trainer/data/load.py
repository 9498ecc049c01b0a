"""Reading training data: JSON / JSONL files in three row formats, checked row by row.

Every row becomes a list of chat messages ``[{"role": "system"|"user"|"assistant", "content": str}]``
with an optional system message first, then user/assistant turns alternating and ending with the
assistant. A row that cannot be read that way is a one-line error naming the file, the row and the
field, or, with ``skip_invalid_rows``, is skipped and counted.

Formats
  conversation  EmoLLM: ``{"conversation": [{"system"?, "input", "output"}, ...]}``
  alpaca        ``{"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}``
  messages      ``{"messages": [{"role", "content"}, ...]}`` (OpenAI / ms-swift style)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duotune.trainer.common.errors import UserError

__all__ = [
    "FORMATS",
    "DataSource",
    "LoadReport",
    "load_examples",
    "resolve_dataset_path",
    "detect_format",
    "row_to_messages",
    "RowError",
]

FORMATS = ("conversation", "alpaca", "messages")
DEMO_DATASETS = {"counselling": "counselling_demo.json"}


class RowError(Exception):
    """A malformed row: ``field`` is the JSON path of the offending value inside the row."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


@dataclass
class DataSource:
    path: Path
    format: str
    detected: bool  # True when `auto` chose the format
    rows_read: int = 0
    rows_used: int = 0
    skipped: Counter = field(default_factory=Counter)


@dataclass
class LoadReport:
    sources: list[DataSource]

    @property
    def rows_skipped(self) -> int:
        return sum(sum(s.skipped.values()) for s in self.sources)

    def skipped_reasons(self) -> Counter:
        out: Counter = Counter()
        for s in self.sources:
            out.update(s.skipped)
        return out

    def describe_formats(self) -> str:
        parts = []
        for s in self.sources:
            how = "detected" if s.detected else "from recipe"
            parts.append(f"{s.path.name}: {s.format} ({how})")
        return "; ".join(parts)


def resolve_dataset_path(spec: str) -> Path:
    """A recipe's dataset entry -> a file path (``demo://NAME`` is the data shipped with duotune)."""
    if spec.startswith("demo://"):
        name = spec[len("demo://") :]
        if name not in DEMO_DATASETS:
            raise UserError(
                f"dataset {spec!r}: unknown demo dataset; available: "
                + ", ".join(f"demo://{k}" for k in DEMO_DATASETS)
            )
        from duotune.trainer.demo import HERE as DEMO_DIR

        return DEMO_DIR / DEMO_DATASETS[name]
    path = Path(spec).expanduser()
    if path.is_dir():
        raise UserError(f"dataset {spec!r} is a folder; give the JSON/JSONL file(s) inside it")
    if not path.is_file():
        raise UserError(
            f"dataset {spec!r} does not exist (relative paths are read from the current directory)"
        )
    return path


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Reading rows


def _json(text: str, where: str, hint: str = "") -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        at = (
            f"column {e.colno}" if e.lineno == 1 and "\n" not in text else f"line {e.lineno} column {e.colno}"
        )
        raise UserError(f"{where}: invalid JSON at {at}: {e.msg}{hint}") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply to read; a row is an object of texts") from None


def _iter_rows(path: Path):
    """Yield (row label, parsed row). A file whose text starts with ``[`` is one JSON list of rows; any
    other file is JSON Lines, one row per line. A JSON object at the top level is neither."""
    from duotune.trainer.common.files import read_text

    text = read_text(path, "dataset")
    stripped = text.lstrip()
    if stripped.startswith("["):
        rows = _json(text, str(path))
        if not isinstance(rows, list):  # pragma: no cover - text starting with [ parses as a list
            raise UserError(f"{path}: the top level must be a list of rows")
        for i, row in enumerate(rows, start=1):
            yield f"row {i}", row
        return
    if stripped.startswith("{"):
        _refuse_top_level_object(path, text)
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = _json(line, f"{path} line {lineno}", " (JSONL needs one complete JSON object per line)")
        yield f"line {lineno}", row


def _refuse_top_level_object(path: Path, text: str) -> None:
    """A file that is one JSON object is not rows: name it, rather than blame its first line as JSONL.

    One object on one line is a one-row JSONL file, unless it holds a list of row objects."""
    try:
        whole = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return  # not one object: read it as JSON Lines, which names the bad line
    if not isinstance(whole, dict):
        return
    one_line = len([line for line in text.splitlines() if line.strip()]) == 1
    lists = [k for k, v in whole.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
    holds_rows = bool(lists) and detect_format(whole) is None
    if one_line and not holds_rows:
        return  # a one-row JSON Lines file: its row is checked like any other
    where = f" (its list of rows may be under {lists[0]!r})" if holds_rows else ""
    raise UserError(
        f"{path}: the top level is a JSON object{where}, not rows; a .json dataset is a list "
        "[{...}, {...}] of rows, a .jsonl dataset one row object per line"
    )


def detect_format(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    if "conversation" in row:
        return "conversation"
    if "messages" in row:
        return "messages"
    if "instruction" in row and "output" in row:
        return "alpaca"
    return None


# ---------------------------------------------------------------------------------------------------
# Row -> messages


def _text(value: Any, where: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise RowError(where, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RowError(where, "is empty")
    return value


def _require(row: dict, key: str, where: str) -> Any:
    if key not in row:
        raise RowError(f"{where}{key}", "is missing")
    return row[key]


def _conversation(row: dict) -> list[dict]:
    turns = _require(row, "conversation", "")
    if not isinstance(turns, list):
        raise RowError("conversation", f"must be a list of turns, got {type(turns).__name__}")
    if not turns:
        raise RowError("conversation", "is empty")
    messages: list[dict] = []
    for i, turn in enumerate(turns):
        where = f"conversation[{i}]"
        if not isinstance(turn, dict):
            raise RowError(where, f"must be an object with input/output, got {type(turn).__name__}")
        if "system" in turn and turn["system"] is not None:
            system = _text(turn["system"], f"{where}.system", allow_empty=True)
            if i > 0:
                raise RowError(f"{where}.system", "only the first turn may carry a system prompt")
            if system.strip():
                messages.append({"role": "system", "content": system})
        messages.append(
            {"role": "user", "content": _text(_require(turn, "input", f"{where}."), f"{where}.input")}
        )
        messages.append(
            {"role": "assistant", "content": _text(_require(turn, "output", f"{where}."), f"{where}.output")}
        )
    return messages


def _alpaca(row: dict) -> list[dict]:
    messages: list[dict] = []
    system = row.get("system")
    if system is not None and _text(system, "system", allow_empty=True).strip():
        messages.append({"role": "system", "content": system})
    history = row.get("history")
    if history is not None:
        if not isinstance(history, list):
            raise RowError(
                "history", f"must be a list of [question, answer] pairs, got {type(history).__name__}"
            )
        for i, pair in enumerate(history):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise RowError(f"history[{i}]", "must be a [question, answer] pair")
            messages.append({"role": "user", "content": _text(pair[0], f"history[{i}][0]")})
            messages.append({"role": "assistant", "content": _text(pair[1], f"history[{i}][1]")})
    prompt = _text(_require(row, "instruction", ""), "instruction")
    extra = row.get("input")
    if extra is not None and _text(extra, "input", allow_empty=True).strip():
        prompt = f"{prompt}\n{extra}"
    messages.append({"role": "user", "content": prompt})
    messages.append({"role": "assistant", "content": _text(_require(row, "output", ""), "output")})
    return messages


def _messages(row: dict) -> list[dict]:
    raw = _require(row, "messages", "")
    if not isinstance(raw, list):
        raise RowError("messages", f"must be a list, got {type(raw).__name__}")
    if not raw:
        raise RowError("messages", "is empty")
    messages: list[dict] = []
    expected = "user"
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RowError(where, f"must be an object with role and content, got {type(msg).__name__}")
        role = _require(msg, "role", f"{where}.")
        if role not in ("system", "user", "assistant"):
            raise RowError(f"{where}.role", f"must be system, user or assistant, got {role!r}")
        if role == "system":
            if i != 0:
                raise RowError(f"{where}.role", "a system message may only come first")
            content = _text(_require(msg, "content", f"{where}."), f"{where}.content", allow_empty=True)
            if content.strip():
                messages.append({"role": "system", "content": content})
            continue
        if role != expected:
            before = messages[-1]["role"] if messages else "the start"
            raise RowError(f"{where}.role", f"expected {expected!r} after {before!r}, got {role!r}")
        messages.append(
            {"role": role, "content": _text(_require(msg, "content", f"{where}."), f"{where}.content")}
        )
        expected = "assistant" if role == "user" else "user"
    if not messages or messages[-1]["role"] != "assistant":
        raise RowError("messages", "must end with an assistant message (nothing to learn otherwise)")
    return messages


_CONVERTERS = {"conversation": _conversation, "alpaca": _alpaca, "messages": _messages}


def row_to_messages(row: Any, fmt: str) -> list[dict]:
    if not isinstance(row, dict):
        raise RowError("(row)", f"must be a JSON object, got {type(row).__name__}")
    return _CONVERTERS[fmt](row)


# ---------------------------------------------------------------------------------------------------


def load_examples(
    specs: list[str],
    dataset_format: str = "auto",
    *,
    max_samples: int | None = None,
    skip_invalid_rows: bool = False,
) -> tuple[list[dict], LoadReport]:
    """Read every dataset file into ``{"messages": [...], "source": "file row N"}`` examples."""
    examples: list[dict] = []
    sources: list[DataSource] = []
    for spec in specs:
        path = resolve_dataset_path(spec)
        fmt = None if dataset_format == "auto" else dataset_format
        src: DataSource | None = None
        for label, row in _iter_rows(path):
            if src is None:
                if fmt is None:
                    if not isinstance(row, dict):
                        raise UserError(
                            f"{path} {label}: a row must be a JSON object, got {type(row).__name__} "
                            "(a dataset is a list of row objects, or one row object per line)"
                        )
                    fmt = detect_format(row)
                    if fmt is None:
                        raise UserError(
                            f"{path} {label}: cannot tell the data format from keys {sorted(row)}; expected "
                            "'conversation', 'messages', or 'instruction'+'output' (alpaca), or set "
                            "dataset_format in the recipe"
                        )
                src = DataSource(path=path, format=fmt, detected=dataset_format == "auto")
            src.rows_read += 1
            try:
                messages = row_to_messages(row, fmt)
            except RowError as e:
                if not skip_invalid_rows:
                    raise UserError(
                        f"{path} {label}: field {e.field} {e.problem} ({fmt} format); fix the row or set "
                        "skip_invalid_rows: true"
                    ) from None
                field_pattern = re.sub(r"\[\d+\]", "[*]", e.field)
                src.skipped[f"invalid row: {field_pattern} {e.problem}"] += 1
                continue
            examples.append({"messages": messages, "source": f"{path.name} {label}"})
            src.rows_used += 1
            if max_samples is not None and src.rows_used >= max_samples:
                break
        if src is None:
            raise UserError(f"{path}: contains no rows")
        if src.rows_used == 0:
            reasons = "; ".join(f"{n} x {why}" for why, n in src.skipped.most_common(2))
            raise UserError(
                f"{path}: every one of its {src.rows_read} rows is invalid and was skipped by "
                f"skip_invalid_rows ({reasons}); fix the rows or check dataset_format"
            )
        sources.append(src)
    return examples, LoadReport(sources)
