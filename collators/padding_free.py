"""A padding-free collator: a micro-batch becomes one sequence with no padding at all.

The examples are concatenated; ``position_ids`` restart at 0 at every example, and the first label of
every example is set to -100, so the last token of one example is never trained to predict the first
token of the next (in a padded batch that position is never a target either: the loss shifts labels by
one inside each row). Which attention kernel keeps the examples apart decides how their boundaries are
handed over (``boundaries``):

- ``"cu_seqlens"``: cumulative lengths ``cu_seq_lens_q``/``cu_seq_lens_k`` (int32) and the longest
  example ``max_length_q``/``max_length_k``, the keyword arguments transformers passes on to
  FlashAttention-2 varlen and to attention functions registered in its ``AttentionInterface``;
- ``"position_ids"``: nothing more (transformers 4.4x's FlashAttention-2 finds the boundaries where
  ``position_ids`` restart);
- ``"mask4d"``: an additive (1, 1, T, T) block-diagonal causal ``attention_mask`` in ``mask_dtype``, for
  stacks without either (its size grows with the square of the micro-batch's length).

A feature may carry ``seq_lens``: the lengths of the examples packed into it (trainer/data/pack.py).

Example::

    >>> c = PaddingFreeCollator()
    >>> batch = c([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
    ...            {"input_ids": [8, 9], "labels": [8, 9]}])
    >>> batch["input_ids"].tolist()
    [[5, 6, 7, 8, 9]]
    >>> batch["labels"].tolist()
    [[-100, 6, 7, -100, 9]]
    >>> batch["position_ids"].tolist()
    [[0, 1, 2, 0, 1]]
    >>> batch["cu_seq_lens_q"].tolist(), batch["max_length_q"]
    ([0, 3, 5], 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = ["PaddingFreeCollator", "block_diagonal_mask"]

IGNORE_INDEX = -100
BOUNDARIES = ("cu_seqlens", "position_ids", "mask4d")


def block_diagonal_mask(lengths: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1, 1, T, T) additive mask: 0 where a token may attend (itself and earlier tokens of its own
    example), the dtype's most negative value everywhere else."""
    total = int(sum(lengths))
    example = torch.repeat_interleave(torch.arange(len(lengths)), torch.as_tensor(list(lengths)))
    position = torch.arange(total)
    allowed = (example[:, None] == example[None, :]) & (position[:, None] >= position[None, :])
    mask = torch.zeros(total, total, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


@dataclass
class PaddingFreeCollator:
    """Concatenate a micro-batch into one row: ``input_ids``, ``labels`` and ``position_ids`` of shape
    (1, total tokens), plus the example boundaries in the form ``boundaries`` names. Other keys of the
    features are ignored. ``label_pad_token_id`` marks each example's first label."""

    boundaries: Literal["cu_seqlens", "position_ids", "mask4d"] = "cu_seqlens"
    mask_dtype: torch.dtype = torch.float32
    label_pad_token_id: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if self.boundaries not in BOUNDARIES:
            raise ValueError(f"boundaries must be one of {', '.join(BOUNDARIES)}, got {self.boundaries!r}")

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        input_ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        lengths: list[int] = []
        for feature in features:
            ids = list(feature["input_ids"])
            row_labels = list(feature["labels"]) if feature.get("labels") is not None else list(ids)
            seq_lens = list(feature.get("seq_lens") or [len(ids)])
            if sum(seq_lens) != len(ids) or len(row_labels) != len(ids) or min(seq_lens) < 1:
                raise ValueError(
                    f"a feature's seq_lens {seq_lens} do not split its {len(ids)} input_ids / "
                    f"{len(row_labels)} labels into non-empty examples"
                )
            start = 0
            for n in seq_lens:
                input_ids += ids[start : start + n]
                labels += [self.label_pad_token_id] + row_labels[start + 1 : start + n]
                positions += range(n)
                lengths.append(n)
                start += n
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([input_ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
        }
        if self.boundaries == "cu_seqlens":
            cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
            cu[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int32), dim=0)
            batch.update(
                cu_seq_lens_q=cu,
                cu_seq_lens_k=cu.clone(),
                max_length_q=max(lengths),
                max_length_k=max(lengths),
            )
        elif self.boundaries == "mask4d":
            batch["attention_mask"] = block_diagonal_mask(lengths, self.mask_dtype)
        return batch
