"""Data preparation for a run: encode the recipe's datasets, describe them, split off validation."""

from __future__ import annotations

from duotune.trainer.common.errors import UserError
from duotune.trainer.recipe import Recipe

__all__ = ["describe_data", "examples_fingerprint", "prepare_data", "split_validation"]


def prepare_data(recipe: Recipe, tokenizer):
    """The recipe's datasets, encoded with the tokenizer's chat template (cached between runs)."""
    from duotune.trainer.data.encode import encode_dataset

    return encode_dataset(
        recipe.dataset,
        tokenizer,
        dataset_format=recipe.dataset_format,
        cutoff_len=recipe.cutoff_len,
        max_samples=recipe.max_samples,
        skip_invalid_rows=recipe.skip_invalid_rows,
        num_proc=recipe.preprocessing_num_workers,
    )


def describe_data(data, template_desc: str) -> list[tuple[str, str]]:
    """Console lines: formats and template, counts, length percentiles, drops by reason."""
    st = data.stats()
    dropped = sum(st["dropped"].values())
    pct = st["length_percentiles"]
    rows = [
        ("data", f"{data.formats}; template: {template_desc}" + (" (cached)" if data.cache_hit else "")),
        (
            "examples",
            f"{st['examples']} of {st['rows_read']} rows, {dropped} dropped, {st['truncated']} truncated; "
            f"{st['tokens']:,} tokens, {st['learned_tokens']:,} learned",
        ),
    ]
    if pct:
        rows.append(
            ("lengths", f"p50 {pct['p50']}, p90 {pct['p90']}, p99 {pct['p99']}, max {pct['max']} tokens")
        )
    for reason, n in sorted(st["dropped"].items()):
        rows.append(("dropped", f"{n} x {reason}"))
    return rows


def split_validation(dataset, val_size: float, seed: int):
    """(train, eval or None): hold out ``val_size`` of the examples, at least one, seeded."""
    if not val_size:
        return dataset, None
    n = len(dataset)
    n_val = max(1, round(n * val_size))
    if n - n_val < 1:
        raise UserError(f"val_size {val_size} leaves no training examples out of {n}; lower val_size")
    parts = dataset.train_test_split(test_size=n_val, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def examples_fingerprint(dataset) -> str:
    """A hash of the encoded examples themselves (token ids and labels, in order): equal on two machines
    exactly when both train on the same examples, wherever the files lay and whichever stack encoded
    them. `duotune parity compare` reads it from run_info.json."""
    import hashlib

    h = hashlib.sha256()
    for table in dataset.with_format("arrow").iter(batch_size=4096):
        for name in ("input_ids", "labels"):
            column = table.column(name).combine_chunks()  # flatten() and value_lengths() honour slicing
            h.update(column.value_lengths().to_numpy(zero_copy_only=False).astype("int64").tobytes())
            h.update(column.flatten().to_numpy(zero_copy_only=False).astype("int64").tobytes())
    return h.hexdigest()[:32]
