"""Packing (``packing: true``): whole examples packed into rows of up to ``cutoff_len`` tokens.

Examples are placed longest first, each into the fullest row that still has room for it (best-fit
decreasing: never more rows than first-fit decreasing needs, usually within a row or two of the
optimum). No example is split or truncated. A row keeps the lengths of its examples (``seq_lens``), so
the padding-free collator restarts position_ids and keeps attention inside every example: packing
changes which examples share a micro-batch, never what any example sees.

What it changes for training: ``per_device_train_batch_size`` counts rows, and a row holds several
examples, so an epoch has about (examples per row) times fewer optimizer updates, each over that many
more tokens. The loss is a mean per learned token either way, so the gradient's scale does not change,
only its noise and the number of steps; keep the learning rate and give the run enough updates
(README: Performance).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PackStats", "best_fit_decreasing", "pack_dataset"]


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of the examples in each row, longest examples first; every index exactly once.

    Rows are kept in buckets by their free space; the bucket with the least space that still fits an
    example is found by bisection over the (at most ``capacity``) distinct free spaces, so packing n
    examples costs O(n log capacity). Ties go to the earliest row and the earliest example, so the
    result depends on nothing but ``lengths``."""
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    too_long = [i for i, n in enumerate(lengths) if n > capacity or n < 1]
    if too_long:
        raise ValueError(f"examples {too_long[:5]} do not fit a row of {capacity} tokens (or are empty)")
    rows: list[list[int]] = []
    free_spaces: list[int] = []  # sorted distinct free spaces that some open row has
    rows_with: dict[int, list[int]] = {}  # free space -> row numbers, earliest first
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[index]
        at = bisect.bisect_left(free_spaces, n)
        if at == len(free_spaces):
            row, space = len(rows), capacity
            rows.append([])
        else:
            space = free_spaces[at]
            bucket = rows_with[space]
            row = bucket.pop(0)
            if not bucket:
                del rows_with[space]
                free_spaces.pop(at)
        rows[row].append(index)
        left = space - n
        if left > 0:
            if left not in rows_with:
                rows_with[left] = []
                bisect.insort(free_spaces, left)
            bisect.insort(rows_with[left], row)
    return rows


@dataclass(frozen=True)
class PackStats:
    examples: int
    rows: int
    tokens: int
    capacity: int

    def describe(self) -> str:
        fill = self.tokens / (self.rows * self.capacity) if self.rows else 0.0
        return (
            f"{self.examples} examples in {self.rows} rows of up to {self.capacity} tokens "
            f"({self.examples / max(self.rows, 1):.1f} per row, rows {100 * fill:.1f}% full)"
        )


def pack_dataset(dataset, capacity: int):
    """(packed datasets.Dataset with input_ids, labels, seq_lens per row, PackStats)."""
    import datasets

    input_ids = dataset["input_ids"]
    labels = dataset["labels"]
    lengths = [len(ids) for ids in input_ids]
    packed: dict[str, list] = {"input_ids": [], "labels": [], "seq_lens": []}
    for row in best_fit_decreasing(lengths, capacity):
        packed["input_ids"].append([t for i in row for t in input_ids[i]])
        packed["labels"].append([t for i in row for t in labels[i]])
        packed["seq_lens"].append([lengths[i] for i in row])
    stats = PackStats(len(lengths), len(packed["seq_lens"]), sum(lengths), capacity)
    return datasets.Dataset.from_dict(packed), stats
