"""What a run reports about its speed, and the recipe keys that change it, end to end in process: the
padding-free default trains the same losses as padded batches, every loss line and train_results.json
carry the throughput, packing and group_by_length run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import read_jsonl
from duotune.trainer.recipe import load_recipe
from duotune.trainer.run.throughput import FlopCounter, ThroughputMeter, batch_tokens
from duotune.trainer.run.workflow import run_training


def train(tmp_path: Path, name: str, **overrides):
    values = {
        "output_dir": str(tmp_path / name),
        "report_to": "none",
        "max_samples": 24,
        "max_steps": 3,
        "logging_steps": 1,
        "save_steps": 1000,
        "plot_loss": False,
        "deterministic": True,
        **overrides,
    }
    recipe, path = load_recipe(None, values)
    return run_training(recipe, path)


def test_token_counts_of_padded_and_flattened_micro_batches():
    padded = {"input_ids": torch.zeros(2, 4), "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])}
    assert batch_tokens(padded) == (5, 8, 3**2 + 2**2)
    flat = {"input_ids": torch.zeros(1, 5), "cu_seq_lens_q": torch.tensor([0, 3, 5], dtype=torch.int32)}
    assert batch_tokens(flat) == (5, 5, 13)
    by_position = {"input_ids": torch.zeros(1, 5), "position_ids": torch.tensor([[0, 1, 2, 0, 1]])}
    assert batch_tokens(by_position) == (5, 5, 13)


def test_the_flop_formula():
    counter = FlopCounter(
        layer_params=10, head_params=3, adapter_params=2, layers=2, attention_width=4, recompute=False
    )
    # 4N per token + 4H per head position + 6A per token + 6 x layers x width x sum(L^2)
    assert counter.flops(tokens=5, head_tokens=4, sum_squared_lengths=13) == 200 + 48 + 60 + 624
    recompute = FlopCounter(10, 3, 2, 2, 4, recompute=True)
    assert recompute.flops(5, 4, 13) == 300 + 48 + 80 + 832


def test_the_meter_counts_training_time_only_and_reports_mfu():
    ticks = iter([0.0, 2.0, 3.0, 13.0, 14.0, 15.0, 16.0, 16.0])
    counter = FlopCounter(10, 3, 2, 2, 4, recompute=False)
    meter = ThroughputMeter(
        flops=counter, peak_flops=100.0, peak_memory=lambda: 3 * 2**30, clock=lambda: next(ticks)
    )
    batch = {"input_ids": torch.zeros(2, 4), "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])}
    meter.add(batch)  # t=0: the clock starts with the first micro-batch
    meter.add(batch)  # t=2
    with meter.excluded():  # t=3 .. 13: evaluation
        pass
    logs = meter.interval_logs()  # t=14: 2 + 1 + 1 seconds of training
    assert logs["real_tokens_per_second"] == 10 / 4
    assert logs["padding_fraction"] == round(1 - 10 / 16, 6)
    assert logs["peak_memory_gib"] == 3.0
    assert logs["mfu"] == round(counter.flops(10, 10, 26) / 4 / 100.0, 6)
    meter.add(batch)  # t=15
    assert meter.interval_logs()["real_tokens_per_second"] == 5 / 2  # t=16: only the new interval
    assert meter.summary()["real_tokens"] == 15
    assert "mfu" not in ThroughputMeter().interval_logs()  # no peak FLOP/s (CPU): no MFU


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The demo recipe, 3 steps: padding-free (the default) and padded."""
    tmp = tmp_path_factory.mktemp("throughput")
    return train(tmp, "free"), train(tmp, "padded", padding_free=False)


def test_padding_free_trains_the_losses_of_padded_batches(two_runs):
    free, padded = (read_jsonl(r.output_dir / "trainer_log.jsonl") for r in two_runs)
    assert [r["current_steps"] for r in free] == [1, 2, 3] == [r["current_steps"] for r in padded]
    for a, b in zip(free, padded, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(b["loss"])
    assert free[0]["padding_fraction"] == 0.0 and padded[0]["padding_fraction"] > 0.05


def test_every_loss_line_and_the_results_carry_the_throughput(two_runs):
    for result in two_runs:
        for line in read_jsonl(result.output_dir / "trainer_log.jsonl"):
            assert line["real_tokens_per_second"] > 0 and line["peak_memory_gib"] > 0
            assert "mfu" not in line  # CPU: no MFU
        results = json.loads((result.output_dir / "train_results.json").read_text())
        assert results["train_real_tokens_per_second"] > 0 and results["train_peak_memory_gib"] > 0
        assert 0.0 <= results["train_padding_fraction"] < 1.0
    free, padded = (json.loads((r.output_dir / "train_results.json").read_text()) for r in two_runs)
    assert free["train_padding_fraction"] == 0.0 < padded["train_padding_fraction"]
    # the same examples (same seed, same order), counted from flattened and from padded batches
    assert free["train_real_tokens"] == padded["train_real_tokens"] > 12 * 100


def test_train_says_how_it_batches_and_what_it_achieved(tmp_path, capsys):
    train(tmp_path, "packed", packing=True, max_steps=2)
    out = capsys.readouterr().out
    assert "[duotune] batching   packed rows of whole examples" in out
    assert "[duotune] packing    24 examples in " in out
    assert "[duotune] schedule   " in out and " train rows / " in out
    line = next(x for x in out.splitlines() if x.startswith("[duotune] throughput "))
    assert line.endswith(" GiB") and "real tokens/s, padding 0.0%, peak " in line
    rows = read_jsonl(tmp_path / "packed" / "trainer_log.jsonl")
    assert [r["current_steps"] for r in rows] == [1, 2] and all(r["padding_fraction"] == 0.0 for r in rows)


def test_group_by_length_reaches_the_padded_path(tmp_path, capsys):
    result = train(tmp_path, "grouped", padding_free=False, group_by_length=True, max_steps=2)
    args = result.trainer.args
    assert getattr(args, "train_sampling_strategy", None) == "group_by_length" or args.group_by_length
    assert "[duotune] batching   padded to the longest example" in capsys.readouterr().out
