"""Our Seq2Seq collator: literal batches, and equality with transformers' DataCollatorForSeq2Seq."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import word_tokenizer
from duotune.collators import Seq2SeqCollator, resolve_pad_token_id


def test_literal_right_padding_to_a_multiple():
    c = Seq2SeqCollator(pad_token_id=0, pad_to_multiple_of=4)
    batch = c([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100], [8, -100, -100, -100]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_literal_left_padding_to_the_longest():
    c = Seq2SeqCollator(pad_token_id=9, padding_side="left")
    batch = c([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [9, 9, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, 8]]


def test_existing_attention_mask_is_kept_and_features_without_labels_work():
    c = Seq2SeqCollator(pad_token_id=0)
    batch = c([{"input_ids": [1, 2], "attention_mask": [0, 1]}, {"input_ids": [3]}])
    assert batch["attention_mask"].tolist() == [[0, 1], [1, 0]]
    assert "labels" not in batch


def test_pad_token_fallback_never_puts_a_real_id_into_labels():
    tok = word_tokenizer(None)  # no pad token
    assert tok.pad_token_id is None
    pad_id, source = resolve_pad_token_id(tok)
    assert (pad_id, source) == (tok.unk_token_id, "unk_token")
    c = Seq2SeqCollator.from_tokenizer(tok)
    batch = c([{"input_ids": [7, 9, 11], "labels": [-100, 9, 11]}, {"input_ids": [7], "labels": [7]}])
    assert batch["labels"].tolist() == [[-100, 9, 11], [7, -100, -100]]
    assert batch["input_ids"].tolist() == [[7, 9, 11], [7, pad_id, pad_id]]

    class NoPadNoUnk:
        pad_token_id = None
        unk_token_id = None
        eos_token_id = 2

    assert resolve_pad_token_id(NoPadNoUnk()) == (2, "eos_token")


def _random_features(rng: random.Random, n: int, max_len: int, with_mask: bool):
    feats = []
    for _ in range(n):
        length = rng.randint(1, max_len)
        ids = [rng.randint(5, 25) for _ in range(length)]
        labels = [t if rng.random() < 0.6 else -100 for t in ids]
        f = {"input_ids": ids, "labels": labels}
        if with_mask:
            f["attention_mask"] = [1] * length
        feats.append(f)
    return feats


@pytest.mark.parametrize("batch_size, max_len", [(1, 5), (2, 7), (4, 13), (8, 33)])
@pytest.mark.parametrize("multiple", [None, 8])
@pytest.mark.parametrize("side", ["right", "left"])
def test_batches_equal_transformers_data_collator_for_seq2seq(batch_size, max_len, multiple, side):
    from transformers import DataCollatorForSeq2Seq

    tok = word_tokenizer(None, pad=True)
    tok.padding_side = side
    rng = random.Random(batch_size * 100 + max_len)
    ours = Seq2SeqCollator.from_tokenizer(tok, pad_to_multiple_of=multiple)
    theirs = DataCollatorForSeq2Seq(
        tok, pad_to_multiple_of=multiple, label_pad_token_id=-100, return_tensors="pt"
    )
    for trial in range(5):
        feats = _random_features(rng, batch_size, max_len, with_mask=trial % 2 == 0)
        a = ours([dict(f) for f in feats])
        b = theirs([dict(f) for f in feats])
        assert set(a) == set(b) == {"input_ids", "attention_mask", "labels"}
        for key in a:
            assert a[key].dtype == b[key].dtype
            assert torch.equal(a[key], b[key]), key
