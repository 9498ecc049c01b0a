"""A Seq2Seq padding collator of our own (openMind ships none; the tutorial's copy padded labels
with the pad id, so the loss counted padding).

Example::

    >>> c = Seq2SeqCollator(pad_token_id=0, pad_to_multiple_of=4)
    >>> batch = c([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
    ...            {"input_ids": [8], "labels": [8]}])
    >>> batch["input_ids"].tolist()
    [[5, 6, 7, 0], [8, 0, 0, 0]]
    >>> batch["attention_mask"].tolist()
    [[1, 1, 1, 0], [1, 0, 0, 0]]
    >>> batch["labels"].tolist()
    [[-100, 6, 7, -100], [8, -100, -100, -100]]

With ``padding_side="left"`` the padding goes before the tokens instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = ["Seq2SeqCollator", "resolve_pad_token_id"]

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def resolve_pad_token_id(tokenizer) -> tuple[int, str]:
    """The id used to fill padded ``input_ids`` positions, and where it came from.

    Fallback when the tokenizer has no pad token: its unk token, else its eos token, else 0. This is
    safe because a padded position always has ``attention_mask`` 0 and label -100: no real token
    attends to it and the loss never sees it. (Labels are always padded with -100, never with this id.)
    """
    for attr in ("pad_token_id", "unk_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, list):  # some tokenizers/configs list several eos ids
            value = value[0] if value else None
        if value is not None:
            return int(value), attr.removesuffix("_id")
    return 0, "id 0"


def _round_up(n: int, multiple: int | None) -> int:
    if not multiple:
        return n
    return ((n + multiple - 1) // multiple) * multiple


@dataclass
class Seq2SeqCollator:
    """Pad ``input_ids`` with ``pad_token_id``, ``attention_mask`` with 0, ``labels`` with -100.

    Each key is padded to the longest sequence of that key in the batch, rounded up to
    ``pad_to_multiple_of`` when set. A feature without ``attention_mask`` gets ones over its tokens.
    Other keys are ignored. Returns int64 torch tensors.
    """

    pad_token_id: int
    label_pad_token_id: int = IGNORE_INDEX
    pad_to_multiple_of: int | None = None
    padding_side: Literal["right", "left"] = "right"
    return_tensors: Literal["pt"] = "pt"

    def __post_init__(self) -> None:
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}")
        if self.return_tensors != "pt":
            raise ValueError("only return_tensors='pt' is supported")

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs: Any) -> Seq2SeqCollator:
        pad_id, source = resolve_pad_token_id(tokenizer)
        if source != "pad_token":
            log.info(
                "tokenizer has no pad token: padding input_ids with its %s (id %d); labels use -100",
                source,
                pad_id,
            )
        kwargs.setdefault("padding_side", getattr(tokenizer, "padding_side", "right") or "right")
        return cls(pad_token_id=pad_id, **kwargs)

    def _pad(self, rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
        length = _round_up(max(len(r) for r in rows), self.pad_to_multiple_of)
        out = torch.full((len(rows), length), value, dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row)
            if n == 0:
                continue
            values = torch.as_tensor(row, dtype=torch.long)
            if self.padding_side == "right":
                out[i, :n] = values
            else:
                out[i, length - n :] = values
        return out

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        ids = [f["input_ids"] for f in features]
        masks = [
            f["attention_mask"] if "attention_mask" in f else [1] * len(f["input_ids"]) for f in features
        ]
        batch = {
            "input_ids": self._pad(ids, self.pad_token_id),
            "attention_mask": self._pad(masks, 0),
        }
        if "labels" in features[0] and features[0]["labels"] is not None:
            batch["labels"] = self._pad([f["labels"] for f in features], self.label_pad_token_id)
        return batch
