"""The form's command, checked as `train` checks it before anything starts: the recipe through the CLI's
own parser and validation, then the device, the model folder or hub id, the dataset files, the
checkpoint to resume from and the output_dir, each with the CLI's message. No gradio here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from duotune.trainer.common.errors import UserError
from duotune.trainer.recipe import default_recipe_path, recipe_fields

from .form import (
    command_line,
    display_path,
    file_values,
    overrides_for,
    problems_by_key,
    recipe_from_form,
    train_args,
    validate_command,
)

__all__ = ["Invalid", "check_paths", "prepare_run", "save_recipe"]


def _key_of(line: str) -> str | None:
    """The recipe key a CLI error line is about (``output_dir x ...``, ``--device y: ...``, ``'key' ...``)."""
    word = line.strip().lstrip("-").strip().split(" ", 1)[0].strip("'\":").replace("-", "_")
    return word if word in recipe_fields() else None


def check_paths(recipe) -> list[str]:
    """What `train` checks before it loads anything, in its own words: the device and precision, the
    model source, the dataset files, the checkpoint to resume from, the output_dir."""
    from duotune.trainer.data.load import resolve_dataset_path
    from duotune.trainer.model.hub import check_model_folder, parse_model_spec
    from duotune.trainer.run.lifecycle import check_checkpoint
    from duotune.trainer.run.outputs import check_output_dir
    from duotune.trainer.run.plan import make_plan

    problems: list[str] = []

    def attempt(fn) -> None:
        try:
            fn()
        except UserError as e:
            problems.extend(e.problems or [str(e)])

    attempt(lambda: make_plan(recipe))

    def model() -> None:
        ref = parse_model_spec(recipe.model_name_or_path, None if recipe.hub == "auto" else recipe.hub)
        if ref.kind == "local":
            check_model_folder(
                ref.path, recipe.model_name_or_path, allow_pickle_weights=recipe.allow_pickle_weights
            )

    attempt(model)
    for spec in recipe.dataset:
        attempt(lambda spec=spec: resolve_dataset_path(spec))
    if recipe.resume_from_checkpoint and recipe.resume_from_checkpoint != "auto":
        attempt(lambda: check_checkpoint(Path(recipe.resume_from_checkpoint)))
    attempt(lambda: check_output_dir(recipe))
    return problems


def prepare_run(config: str | None, nproc: str | None, form: dict[str, Any], *, for_start: bool):
    """Form values -> (the arguments after `train`, the command line, the recipe as YAML, the Recipe), or
    Invalid. ``for_start`` adds what `train` checks before it loads anything (device, paths, output_dir)."""
    values, errors = recipe_from_form(form)
    base, _ = file_values(config or default_recipe_path())
    # a value that does not fit its key goes on the command line as typed, so the CLI's own parser
    # says what is wrong with it, in its own words
    typed = {k: f"{k}={'' if form[k] is None else form[k]}" for k in errors}
    overrides = [o for k in recipe_fields() for o in _override_of(k, base, values, typed)]
    args = train_args(display_path(config) if config else None, overrides, nproc)
    cmd = command_line(args)
    try:
        recipe = validate_command(config, overrides)
    except UserError as e:
        raise Invalid({**errors, **problems_by_key(e.problems)}, e.problems, cmd) from None
    if errors:  # the form refused what the CLI accepts: never start on a value the form did not read
        raise Invalid(errors, [f"'{k}': {v}" for k, v in errors.items()], cmd)
    if for_start:
        problems = check_paths(recipe)
        if problems:
            keyed = {k: line for line in problems if (k := _key_of(line))}
            raise Invalid(keyed, problems, cmd)
    return args, cmd, recipe.to_yaml(), recipe


def _override_of(key: str, base: dict, values: dict, typed: dict) -> list[str]:
    if key in typed:
        return [typed[key]]
    return overrides_for({key: base.get(key)}, {key: values[key]}) if key in values else []


class Invalid(Exception):
    """The form does not make a run: ``errors`` by recipe key (shown on the fields), ``lines`` as the CLI
    prints them, ``command`` the line that would fail."""

    def __init__(self, errors: dict[str, str], lines: list[str], command: str = ""):
        self.errors, self.lines, self.command = errors, lines, command


def save_recipe(form: dict[str, Any], path: str | Path | None) -> Path:
    """Write every key of the form to a YAML recipe (``train --config`` runs it as the form stands).
    Secret-looking keys never reach the file; tokens are not recipe keys at all."""
    from duotune.trainer.common.files import atomic_write_text
    from duotune.trainer.recipe import Recipe

    values, errors = recipe_from_form(form)
    if errors:
        raise Invalid(errors, [f"'{k}': {v}" for k, v in errors.items()])
    text = str(path or "").strip()
    if not text:
        raise UserError("give a file name to save the recipe to (for example my-recipe.yaml)")
    target = Path(text).expanduser()
    if target.is_dir():
        raise UserError(f"{target} is a folder; give the path of a .yaml file")
    try:
        atomic_write_text(
            target,
            f"# saved by duotune web; run it with: train --config {target}\n" + Recipe(**values).to_yaml(),
        )
    except OSError as e:
        raise UserError(f"cannot write {target} ({e.strerror}); choose another path") from None
    return target
