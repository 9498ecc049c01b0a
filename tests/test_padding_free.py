"""Padding-free batches and packing are exact: the same loss and LoRA gradients as padded batches (fp32,
CPU, relative difference <= 1e-5), and no token ever sees another example, on every kernel path this
stack has (per-example SDPA / eager / the NPU stand-in on transformers >= 5; the block-diagonal 4-D mask
on transformers 4.45)."""

from __future__ import annotations

import types

import pytest
import torch
from conftest import LENGTHS, assert_same, examples, loss_and_grads, tiny_model, with_lora
from duotune.backends.cpu import CpuBackend
from duotune.collators import PaddingFreeCollator, Seq2SeqCollator
from duotune.trainer.data.pack import best_fit_decreasing, pack_dataset
from duotune.trainer.model.attention import enable_batching, has_attention_interface, plan_batching
from duotune.trainer.model.kernels import learned_logits_supported, learned_positions_only

NEW_STACK = has_attention_interface()


def recipe(**overrides):
    values = dict(
        padding_free="auto",
        packing=False,
        neftune_noise_alpha=None,
        per_device_train_batch_size=4,
        cutoff_len=64,
    )
    values.update(overrides)
    return types.SimpleNamespace(**values)


def padded(features):
    return Seq2SeqCollator(pad_token_id=0)(features)


def padding_free_model(attn: str, backend=None, **recipe_overrides):
    """The model as `train` sets it up for padding-free batches on this stack, and its collator."""
    model = tiny_model(attn)
    batching = plan_batching(recipe(**recipe_overrides), backend or CpuBackend(), attn, "fp32")
    assert batching.padding_free
    batching = enable_batching(model, batching, recipe(**recipe_overrides))
    assert batching.padding_free
    return with_lora(model), PaddingFreeCollator(boundaries=batching.boundaries), batching


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_flattened_micro_batch_trains_exactly_like_the_padded_one(attn):
    reference_model = with_lora(tiny_model(attn))
    reference = loss_and_grads(reference_model, padded(examples()))
    model, collator, batching = padding_free_model(attn)
    expected = "cu_seqlens" if NEW_STACK else "mask4d"
    assert batching.boundaries == expected
    result = loss_and_grads(model, collator(examples()))
    assert len(result[1]) == 2 * 7 * 2  # A and B of seven projections in two layers
    assert_same(reference, result)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_no_token_attends_to_another_example(attn):
    model, collator, _ = padding_free_model(attn)
    model.eval()
    features = examples()
    with torch.no_grad():
        flat = model(**{k: v for k, v in collator(features).items() if k != "labels"}).logits[0]
        # each example alone, unpadded: the flattened logits are its logits
        start = 0
        for feature in features:
            n = len(feature["input_ids"])
            alone = model(input_ids=torch.tensor([feature["input_ids"]])).logits[0]
            assert torch.allclose(flat[start : start + n], alone, atol=1e-5, rtol=1e-5)
            start += n
        # changing the first example leaves every other example's logits exactly as they were
        changed = [
            dict(features[0], input_ids=[(t + 7) % 128 for t in features[0]["input_ids"]]),
            *features[1:],
        ]
        flat_changed = model(**{k: v for k, v in collator(changed).items() if k != "labels"}).logits[0]
        first = LENGTHS[0]
        assert (flat_changed[:first] - flat[:first]).abs().max() > 1e-3
        assert torch.equal(flat_changed[first:], flat[first:])
        # ...which a flattened row without the boundaries would not do (the check can fail)
        plain = with_lora(tiny_model(attn))
        plain.eval()
        ids = collator(features)["input_ids"]
        ids_changed = collator(changed)["input_ids"]
        a = plain(input_ids=ids).logits[0, first:]
        b = plain(input_ids=ids_changed).logits[0, first:]
        assert (a - b).abs().max() > 1e-3


@pytest.mark.skipif(not NEW_STACK, reason="transformers 4.45 passes no keyword arguments to attention")
def test_examples_stay_apart_when_a_forward_drops_the_cu_seqlens():
    """Should some patched forward (an older kernel library's) not pass cu_seq_lens on, the per-example
    attention finds the examples where position_ids restart instead of attending across them."""
    model, collator, _ = padding_free_model("sdpa")
    model.eval()
    batch = collator(examples())
    ids, positions = batch["input_ids"], batch["position_ids"]
    bounds = {"cu_seq_lens_q": batch["cu_seq_lens_q"], "cu_seq_lens_k": batch["cu_seq_lens_k"]}
    with torch.no_grad():
        full = model(input_ids=ids, position_ids=positions, **bounds).logits
        dropped = model(input_ids=ids, position_ids=positions).logits
        whole = model(input_ids=ids).logits  # one sequence: plain causal attention
    assert torch.equal(full, dropped)
    assert (whole[0, LENGTHS[0] :] - full[0, LENGTHS[0] :]).abs().max() > 1e-3


@pytest.mark.skipif(
    not NEW_STACK, reason="transformers 4.45 has no AttentionInterface: the NPU path there is the 4-D mask"
)
def test_the_npu_varlen_kernel_is_exact_against_the_stand_in(fake_npu_path):
    """npu_fusion_attention (TND, actual_seq_qlen) from backends/npu.py, the stand-in implementing it in
    plain torch from its documented semantics."""
    from duotune.backends.npu import NpuBackend

    fake_npu_path()
    backend = NpuBackend()
    assert backend.is_available()
    import torch_npu

    reference = loss_and_grads(with_lora(tiny_model("sdpa")), padded(examples()))
    model, collator, batching = padding_free_model("sdpa", backend)
    assert batching.kernel.startswith("torch_npu.npu_fusion_attention")
    torch_npu.calls.clear()
    assert_same(reference, loss_and_grads(model, collator(examples())))
    calls = [c for c in torch_npu.calls if c[0] == "npu_fusion_attention"]
    assert len(calls) == 2  # one per layer
    ends = [5, 22, 31, 61]
    assert all(c[2]["actual_seq_qlen"] == ends and c[2]["actual_seq_kvlen"] == ends for c in calls)


@pytest.mark.skipif(not NEW_STACK, reason="transformers 4.45's models take no logits_to_keep positions")
def test_the_output_head_on_learned_positions_only_is_exact():
    model, collator, _ = padding_free_model("sdpa")
    assert learned_logits_supported(model, liger=False)[0]
    for batch in (collator(examples()), padded(examples())):
        reference = loss_and_grads(model, batch)
        selected = learned_positions_only(batch)
        assert selected["logits_to_keep"].numel() < batch["input_ids"].shape[-1]  # really fewer positions
        assert_same(reference, loss_and_grads(model, selected))
        with torch.no_grad():
            assert model(**selected).logits.shape[-2] == selected["logits_to_keep"].numel()


def test_packed_rows_train_exactly_like_the_padded_examples():
    features = examples([5, 17, 9, 30, 12, 3, 20])
    reference = loss_and_grads(with_lora(tiny_model("sdpa")), padded(features))
    import datasets

    packed, stats = pack_dataset(datasets.Dataset.from_list(features), 32)
    assert (stats.rows, stats.examples, stats.tokens) == (4, 7, 96)
    assert packed["seq_lens"] == [[30], [20, 12], [17, 9, 5], [3]]
    model, collator, _ = padding_free_model("sdpa", packing=True)
    rows = [packed[i] for i in range(len(packed))]
    assert all(sum(r["seq_lens"]) == len(r["input_ids"]) <= 32 for r in rows)
    assert_same(reference, loss_and_grads(model, collator(rows)))


def test_best_fit_decreasing_packs_longest_first_into_the_fullest_row_that_fits():
    assert best_fit_decreasing([5, 3, 7, 2, 4, 1], 8) == [[2, 5], [0, 1], [4, 3]]
    assert best_fit_decreasing([], 8) == []
    with pytest.raises(ValueError, match="do not fit"):
        best_fit_decreasing([3, 9], 8)


def test_best_fit_decreasing_never_needs_more_rows_than_first_fit_decreasing():
    import random

    rng = random.Random(0)
    for _ in range(30):
        capacity = rng.choice([16, 64, 100])
        lengths = [rng.randint(1, capacity) for _ in range(rng.randint(1, 80))]
        rows = best_fit_decreasing(lengths, capacity)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in row) <= capacity for row in rows)
        first_fit: list[int] = []  # free space per row
        for n in sorted(lengths, reverse=True):
            spot = next((r for r, free in enumerate(first_fit) if free >= n), None)
            if spot is None:
                first_fit.append(capacity - n)
            else:
                first_fit[spot] -= n
        assert len(rows) <= len(first_fit)


def test_the_collator_output_literally():
    c = PaddingFreeCollator()
    batch = c([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5] and batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["max_length_q"] == batch["max_length_k"] == 3
    packed = PaddingFreeCollator(boundaries="position_ids")(
        [
            {"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4], "seq_lens": [1, 3]},
            {"input_ids": [5], "labels": [5]},
        ]
    )
    assert set(packed) == {"input_ids", "labels", "position_ids"}
    assert packed["labels"].tolist() == [[-100, -100, 3, 4, -100]]
    assert packed["position_ids"].tolist() == [[0, 0, 1, 2, 0]]
    mask = PaddingFreeCollator(boundaries="mask4d")(
        [{"input_ids": [1, 2], "labels": [1, 2], "seq_lens": [1, 1]}]
    )
    low = torch.finfo(torch.float32).min
    assert mask["attention_mask"].tolist() == [[[[0.0, low], [low, 0.0]]]]
    with pytest.raises(ValueError, match="seq_lens"):
        c([{"input_ids": [1, 2, 3], "labels": [1, 2, 3], "seq_lens": [1, 1]}])


def test_a_model_that_cannot_keep_examples_apart_is_trained_padded_or_refused(monkeypatch):
    from duotune.trainer.common.errors import UserError

    model = tiny_model("sdpa")
    if NEW_STACK:
        monkeypatch.setattr(type(model), "_supports_attention_backend", False)
        fallback = enable_batching(model, plan_batching(recipe(), CpuBackend(), "sdpa", "fp32"), recipe())
        assert not fallback.padding_free and "does not pass example boundaries" in fallback.why
        forced = plan_batching(recipe(padding_free=True), CpuBackend(), "sdpa", "fp32")
        with pytest.raises(UserError, match="padding_free: true: .* attend to each other"):
            enable_batching(model, forced, recipe(padding_free=True))
    remote = types.SimpleNamespace(config=types.SimpleNamespace(model_type="gpt_custom"))
    auto = enable_batching(remote, plan_batching(recipe(), CpuBackend(), "sdpa", "fp32"), recipe())
    assert not auto.padding_free
    packing = plan_batching(recipe(packing=True), CpuBackend(), "sdpa", "fp32")
    with pytest.raises(UserError, match="packing: true"):
        enable_batching(remote, packing, recipe(packing=True))


def test_neftune_and_padding_free_false_keep_padded_batches():
    assert not plan_batching(recipe(padding_free=False), CpuBackend(), "sdpa", "fp32").padding_free
    neftune = plan_batching(recipe(neftune_noise_alpha=5.0), CpuBackend(), "sdpa", "fp32")
    assert not neftune.padding_free and "NEFTune" in neftune.why
    assert plan_batching(
        recipe(neftune_noise_alpha=5.0, padding_free=True), CpuBackend(), "sdpa", "fp32"
    ).padding_free
