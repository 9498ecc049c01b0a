"""The Train tab's form, generated from the Recipe dataclass, and its way back to a `train` command line.

Every recipe key becomes one form field: its component follows the key's type (a checkbox for a bool, a
dropdown for a choice, a number box for an integer, a text box for the rest), its default, choices and
help come from the dataclass, and a key added to the recipe appears in the form with no change here.
Going back, the form's values become the ``KEY=VALUE`` overrides of ``train --config FILE``: only the
keys whose values differ from the loaded recipe file, each written so that the CLI's own parser
(``parse_overrides`` + ``coerce_value``) reads back exactly the value in the form. The UI then validates
and runs that very command line, so what it runs is what the CLI would run.

No gradio here: the mapping is plain Python, tested on every stack.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from duotune.trainer.common.errors import UserError
from duotune.trainer.recipe import (
    LR_SCHEDULERS,
    SECRET_KEY_PATTERN,
    Recipe,
    coerce_value,
    default_recipe_path,
    field_type,
    load_recipe,
    parse_overrides,
    read_recipe_yaml,
    recipe_fields,
)

__all__ = [
    "BASIC_KEYS",
    "FormField",
    "FormError",
    "command_line",
    "default_values",
    "display_path",
    "file_values",
    "form_fields",
    "from_form",
    "override_text",
    "overrides_for",
    "problems_by_key",
    "recipe_from_form",
    "to_form",
    "train_args",
]

# What a LlamaBoard user expects to see without opening an accordion; every other key (and any key
# added to the recipe later) lands in its group's "advanced" accordion.
BASIC_KEYS = frozenset(
    {
        "model_name_or_path", "hub", "revision", "device", "framework", "compute_type",
        "dataset", "dataset_format", "template", "cutoff_len", "max_samples", "val_size",
        "learning_rate", "num_train_epochs", "max_steps", "max_grad_norm", "per_device_train_batch_size",
        "gradient_accumulation_steps", "lr_scheduler_type", "output_dir", "overwrite_output_dir",
        "resume_from_checkpoint", "lora_rank", "lora_alpha", "lora_dropout", "lora_target",
        "padding_free", "packing", "flash_attn", "report_to", "swanlab_mode", "swanlab_project", "experiment_name",
    }
)  # fmt: skip

# Known values offered for free-text keys (any other value can still be typed).
SUGGESTIONS: dict[str, tuple[str, ...]] = {
    "lr_scheduler_type": LR_SCHEDULERS,
    "optim": ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adamw_8bit"),
    "template": ("auto", "deepseek", "chatml", "llama3", "llama2"),
    "resume_from_checkpoint": ("auto",),
    "deepspeed": ("zero2", "zero3"),
    "fsdp": ("full_shard", "shard_grad_op"),
    "model_name_or_path": ("demo://tiny-llama",),
    "dataset": ("demo://counselling",),
}

NONE = type(None)
_UNION_TYPES = (typing.Union, types.UnionType)


@dataclass(frozen=True)
class FormField:
    """One recipe key as a form field."""

    key: str
    kind: str  # "checkbox" | "dropdown" | "number" | "text"
    group: str
    basic: bool
    default: Any  # the recipe's default value (not the form's)
    help: str
    nullable: bool = False
    choices: tuple[Any, ...] = ()  # for dropdowns: the recipe values offered
    suggestions: tuple[str, ...] = ()  # for text fields: values offered, others allowed
    secret: bool = False

    @property
    def choice_labels(self) -> list[str]:
        return [_label(c) for c in self.choices]


def _label(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _members(tp: Any) -> tuple[list[Any], bool]:
    """A type's members with None split off: ([int], True) for ``int | None``."""
    if typing.get_origin(tp) in _UNION_TYPES:
        args = list(typing.get_args(tp))
        return [a for a in args if a is not NONE], NONE in args
    return [tp], False


def _choices_of(members: list[Any]) -> tuple[Any, ...] | None:
    """The finite set of values a type allows (Literals and bools), or None when it is open."""
    values: list[Any] = []
    for m in members:
        if typing.get_origin(m) is Literal:
            values += list(typing.get_args(m))
        elif m is bool:
            values += [True, False]
        else:
            return None
    return tuple(dict.fromkeys(values))


def _field_for(f: dataclasses.Field) -> FormField:
    tp = field_type(f.name)
    members, nullable = _members(tp)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    common = dict(
        key=f.name,
        group=f.metadata.get("group", "other"),
        basic=f.name in BASIC_KEYS,
        default=default,
        help=f.metadata.get("help", ""),
        nullable=nullable,
        secret=bool(SECRET_KEY_PATTERN.search(f.name)),
    )
    if members == [bool] and not nullable:
        return FormField(kind="checkbox", **common)
    choices = _choices_of(members)
    if choices is not None:
        return FormField(kind="dropdown", choices=choices + ((None,) if nullable else ()), **common)
    if members == [int] and not nullable:  # a number box cannot say "null": nullable ints are text
        return FormField(kind="number", **common)
    return FormField(kind="text", suggestions=SUGGESTIONS.get(f.name, ()), **common)


def form_fields() -> list[FormField]:
    """Every recipe key, in the dataclass's order."""
    return [_field_for(f) for f in recipe_fields().values()]


def default_values() -> dict[str, Any]:
    return {f.key: f.default for f in form_fields()}


# ---------------------------------------------------------------------------------------------------
# recipe value <-> form value


def _field(key: str) -> FormField:
    return _FIELDS()[key]


_CACHE: dict[str, FormField] = {}


def _FIELDS() -> dict[str, FormField]:  # noqa: N802 - a cached constant
    if not _CACHE:
        _CACHE.update({f.key: f for f in form_fields()})
    return _CACHE


def _fmt_float(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") and "e" not in text and abs(value) >= 1 else text


def to_form(key: str, value: Any) -> Any:
    """A recipe value as its form component shows it."""
    fld = _field(key)
    if fld.kind == "checkbox":
        return bool(value)
    if fld.kind == "dropdown":
        return _label(value)
    if fld.kind == "number":
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        if all(isinstance(v, str) and v and "," not in v and v == v.strip() for v in value) and value:
            return ", ".join(value)
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return _label(value)
    if isinstance(value, float):
        return _fmt_float(value)
    return str(value)


class FormError(ValueError):
    """A form value that does not fit its key; the message is the CLI's ("expected ..., got ...")."""


def from_form(key: str, value: Any) -> Any:
    """A form component's value as the recipe value it stands for (raises FormError)."""
    fld = _field(key)
    try:
        if fld.kind == "checkbox":
            return coerce_value(key, bool(value))
        if fld.kind == "dropdown":
            for choice in fld.choices:
                if _label(choice) == value or choice == value:
                    return coerce_value(key, choice)
            return coerce_value(key, value)  # the CLI's "expected one of ..." message
        if fld.kind == "number":
            if value is None or (isinstance(value, str) and not value.strip()):
                return coerce_value(key, None)
            if isinstance(value, str):
                value = yaml.safe_load(value)
            return coerce_value(key, value)
        return coerce_value(key, _parse_text(fld, "" if value is None else str(value)))
    except ValueError as e:
        raise FormError(str(e)) from None


def _parse_text(fld: FormField, text: str) -> Any:
    """What a text box holds, read as the CLI would read the same text after `KEY=`."""
    stripped = text.strip()
    members, _ = _members(field_type(fld.key))
    if not stripped:
        if fld.nullable:
            return None
        return [] if members and typing.get_origin(members[0]) is list else ""
    if any(typing.get_origin(m) is list for m in members):
        if stripped.startswith("["):
            try:
                return yaml.safe_load(stripped)
            except yaml.YAMLError:
                return stripped
        return stripped
    if members == [str]:
        return text if not fld.nullable or stripped.lower() not in ("null", "none", "~") else None
    try:  # numbers and anything else: a YAML scalar, as on the command line
        return yaml.safe_load(stripped)
    except yaml.YAMLError:
        return stripped


def override_text(key: str, value: Any) -> str:
    """``KEY=VALUE`` that ``parse_overrides`` + ``coerce_value`` read back as exactly ``value``."""
    return f"{key}={_yaml_scalar(value)}"


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _fmt_float(value)
    if isinstance(value, str):
        if value == "":
            return ""
        return value if _reads_back(value, value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        joined = ",".join(str(v) for v in value)
        simple = all(isinstance(v, str) and v and "," not in v and v == v.strip() for v in value)
        if value and simple and _reads_back(joined, joined):
            return joined
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


def _reads_back(text: str, expected: Any) -> bool:
    try:
        return yaml.safe_load(text) == expected
    except yaml.YAMLError:
        return False


# ---------------------------------------------------------------------------------------------------
# the form as a command line


def file_values(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The values a recipe file gives every key (defaults for the keys it leaves out), and the
    problems the CLI would report for it as it stands (a recipe may be loaded incomplete and finished
    in the form). A missing or unreadable file raises the CLI's UserError."""
    raw = read_recipe_yaml(path)
    values = default_values()
    for key, value in raw.items():
        if key in values:
            try:
                values[key] = coerce_value(key, value)
            except ValueError:
                pass  # reported below, in the CLI's words
    try:
        load_recipe(path)
        problems: list[str] = []
    except UserError as e:
        problems = e.problems
    return values, problems


def recipe_from_form(form: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Form values -> (recipe values, {key: inline error}) for every key of the form."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, raw in form.items():
        try:
            values[key] = from_form(key, raw)
        except FormError as e:
            errors[key] = str(e)
    return values, errors


def overrides_for(base: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """``KEY=VALUE`` for each key whose value differs from the recipe file's, in the recipe's order."""
    out = []
    for key in recipe_fields():
        if key in values and values[key] != base.get(key):
            out.append(override_text(key, values[key]))
    return out


def is_default_recipe(config: str | Path | None) -> bool:
    if not config:
        return True
    try:
        return Path(config).resolve() == default_recipe_path().resolve()
    except UserError:
        return False


def train_args(config: str | Path | None, overrides: list[str], nproc: str | None = None) -> list[str]:
    """The arguments after ``train``: ``--config FILE`` (left out for the bundled demo recipe, which
    `train` uses without it), ``--nproc N`` when more than one, then the overrides."""
    args: list[str] = []
    if not is_default_recipe(config):
        args += ["--config", str(config)]
    if nproc and str(nproc) not in ("", "1"):
        args += ["--nproc", str(nproc)]
    return args + list(overrides)


def command_line(args: list[str], program: str = "train") -> str:
    """The shell line a user would type for ``program args``; the value of a secret-looking key
    (``*token*``, ``*api_key*``, ...) is shown as ``***``, as the output_dir lock records it."""
    return " ".join([program, *(shlex.quote(_masked(a)) for a in args)])


def _masked(arg: str) -> str:
    key, sep, _ = arg.partition("=")
    return f"{key}=***" if sep and SECRET_KEY_PATTERN.search(key) else arg


def display_path(path: str | Path, cwd: Path | None = None) -> str:
    """A path relative to the working directory when it lies below it (how a user would type it)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to((cwd or Path.cwd()).resolve()))
    except ValueError:
        return str(p)


_KEY_IN_PROBLEM = re.compile(r"^\s*-?\s*'([a-z0-9_]+)'")
_ONE_PROBLEM = re.compile(r"^recipe .*?: (?=')")  # the head of a recipe error with a single problem


def problems_by_key(problems: list[str]) -> dict[str, str]:
    """The CLI's problem lines (``  - 'key' ...: msg``, or ``recipe X: 'key' ...: msg`` when it is the only
    one) keyed by recipe key, for inline display."""
    out: dict[str, str] = {}
    for line in problems:
        line = _ONE_PROBLEM.sub("", line)
        m = _KEY_IN_PROBLEM.match(line)
        if m and m.group(1) in recipe_fields():
            text = line.strip().removeprefix("- ")
            out[m.group(1)] = (out[m.group(1)] + "; " if m.group(1) in out else "") + text
    return out


def validate_command(config: str | Path | None, overrides: list[str]) -> Recipe:
    """Load the recipe exactly as ``train`` would for this command line (raises its UserError)."""
    return load_recipe(None if is_default_recipe(config) else config, parse_overrides(overrides))[0]
