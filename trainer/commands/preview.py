"""``duotune preview``: the dataset as training sees it, learned tokens marked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from duotune.trainer.common.console import kv
from duotune.trainer.common.files import atomic_path, check_writable, write_error
from duotune.trainer.data.encode import IGNORE_INDEX
from duotune.trainer.recipe import Recipe

__all__ = ["run_preview", "learned_runs", "mark_learned", "OPEN", "CLOSE"]

OPEN, CLOSE = "[[", "]]"


def learned_runs(tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """An example decoded as runs of text, each with whether its tokens are learned (the web UI
    highlights them, the console marks them)."""
    runs: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(input_ids) + 1):
        if i == len(input_ids) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            text = tokenizer.decode(
                input_ids[start:i], skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            runs.append((text, labels[start] != IGNORE_INDEX))
            start = i
    return runs


def mark_learned(tokenizer, input_ids: list[int], labels: list[int], color: bool = False) -> str:
    """Decode an example with every run of learned tokens wrapped in [[ ]] (and green when colored)."""
    pieces: list[str] = []
    for text, learned in learned_runs(tokenizer, input_ids, labels):
        if learned:
            text = OPEN + text + CLOSE
            if color:
                text = click.style(text, fg="green", bold=True)
        pieces.append(text)
    return "".join(pieces)


def _write_jsonl(path: Path, dataset) -> None:
    """All kept examples, written to a temporary file first so a failure leaves no partial file."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in dataset.select_columns(["input_ids", "labels"]):
            f.write(json.dumps({"input_ids": row["input_ids"], "labels": row["labels"]}) + "\n")


def run_preview(
    recipe: Recipe, recipe_path: Path, *, num: int, jsonl: Path | None, color: bool | None
) -> None:
    from duotune.trainer.data.prepare import describe_data, prepare_data
    from duotune.trainer.data.templates import apply_template_choice
    from duotune.trainer.model.load import load_tokenizer, resolve_model

    if jsonl is not None:
        check_writable(jsonl, "--jsonl", folder=False)
    if color is None:
        color = sys.stdout.isatty()
    source = resolve_model(recipe)
    tokenizer = load_tokenizer(source, recipe)
    template_desc = apply_template_choice(tokenizer, recipe.template, recipe.model_name_or_path)
    data = prepare_data(recipe, tokenizer)

    kv("recipe", str(recipe_path))
    kv("model", source.description)
    kv("cutoff", f"{recipe.cutoff_len} tokens")
    for key, value in describe_data(data, template_desc):
        kv(key, value)

    ds = data.dataset
    for i in range(min(num, len(ds))):
        row = ds[i]
        click.echo("")
        click.echo(
            f"--- example {i + 1}: {row['source']} | {row['length']} tokens"
            + (f" (cut from {row['num_tokens_full']})" if row["num_tokens_full"] > row["length"] else "")
            + f", {row['num_learned']} learned {OPEN}marked{CLOSE} ---"
        )
        click.echo(mark_learned(tokenizer, row["input_ids"], row["labels"], color=color))
    if jsonl is not None:
        try:
            _write_jsonl(jsonl, ds)
        except OSError as e:
            raise write_error(e, "--jsonl", jsonl) from None
        click.echo("")
        kv("jsonl", f"{len(ds)} encoded examples written to {jsonl}")
