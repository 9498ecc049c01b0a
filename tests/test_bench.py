"""`duotune bench`: the synthetic data is deterministic and spread out, every pipeline runs and is
measured the same way, and the report compares each run with the plain run of its repeat."""

from __future__ import annotations

import json
import statistics

import pytest
from conftest import run_cli
from duotune.trainer.commands.bench import BenchConfig, format_table, run_bench, summarise
from duotune.trainer.demo.bench_data import synthetic_conversations


def test_the_synthetic_conversations_are_deterministic_multi_turn_and_spread_out(demo_tokenizer):
    from duotune.trainer.data.encode import ChatEncoder
    from duotune.trainer.data.load import row_to_messages

    rows = synthetic_conversations(200, seed=1)
    assert rows == synthetic_conversations(200, seed=1) != synthetic_conversations(200, seed=2)
    turns = [len(r["conversation"]) for r in rows]
    assert min(turns) == 1 and max(turns) == 8
    encoded = ChatEncoder(demo_tokenizer, 4096).encode_texts(
        [row_to_messages(r, "conversation") for r in rows]
    )
    lengths = sorted(e["length"] for e in encoded)
    assert lengths[0] < 100 and lengths[-1] > 1000 and 350 < statistics.median(lengths) < 700
    assert all(e["num_learned"] > 0 for e in encoded)


def test_summary_pairs_each_run_with_the_plain_run_of_its_repeat():
    def run(pipeline, repeat, tps, wall, loss):
        padding = 0.4 if pipeline == "plain" else 0.0
        return {
            "pipeline": pipeline, "repeat": repeat, "wall_s": wall, "train_s": wall - 1, "real_tokens_per_s": tps,
            "real_tokens_per_cpu_s": tps / 2, "padding": padding, "peak_gib": 1.0, "eval_loss": loss,
        }  # fmt: skip

    runs = [
        run("plain", 0, 100, 10, 2.0),
        run("duotune", 0, 250, 4, 2.02),
        run("plain", 1, 50, 20, 2.0),
        run("duotune", 1, 150, 9, 1.98),
    ]
    summary = summarise(runs)
    ratios = summary["duotune"]["vs_plain"]
    assert ratios["real_tokens_per_s"] == {"median": 2.75, "min": 2.5, "max": 3.0}
    assert ratios["real_tokens_per_cpu_s"] == ratios["real_tokens_per_s"]
    assert ratios["wall_s"] == pytest.approx({"median": 0.425, "min": 0.4, "max": 0.45})
    losses = ratios["eval_loss"]
    assert losses["median"] == pytest.approx(0.0) and losses["max"] == pytest.approx(0.01)
    assert "vs_plain" not in summary["plain"]
    table = format_table({"summary": summary})
    row = "| duotune | 6.5 | 5.5 | 200 | 100 | 0.0% | 1.00 | 2.0000 | 2.75x [2.50 - 3.00] | 2.75x [2.50 - 3.00] | 0.43x"
    assert row in table


def test_every_pipeline_runs_and_is_measured(tmp_path):
    """A minute-sized benchmark in this process: the tiny model, a few conversations, one step."""
    config = BenchConfig(
        output_dir=str(tmp_path / "bench"), device="cpu", steps=1, batch_size=2, cutoff_len=128,
        conversations=20, repeats=1,
    )  # fmt: skip
    report = run_bench(config, isolate=False)
    runs = {r["pipeline"]: r for r in report["runs"]}
    assert list(runs) == ["plain", "duotune", "packing"]
    assert runs["plain"]["padding"] > 0 and runs["duotune"]["padding"] == 0 == runs["packing"]["padding"]
    # one step of 2 examples (or 2 packed rows) of at most 128 tokens
    assert all(0 < r["real_tokens"] <= 2 * 128 for r in runs.values())
    for r in runs.values():
        assert r["real_tokens_per_s"] > 0 and r["wall_s"] >= r["train_s"] > 0 and r["peak_gib"] > 0
        assert r["train_cpu_s"] > 0 and r["real_tokens_per_cpu_s"] > 0
        assert 5.0 < r["eval_loss"] < 8.0  # about log(1024) for a random model
    saved = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert saved["setup"]["shape"] == "tiny" and saved["summary"]["duotune"]["vs_plain"]
    assert (tmp_path / "bench" / "bench.md").read_text().startswith("| pipeline |")


def test_each_run_gets_a_process_of_its_own_and_its_failure_reaches_the_parent():
    import os

    from duotune.trainer.commands.bench import _call

    assert _call(os.getpid, isolate=True) != os.getpid()
    with pytest.raises(RuntimeError, match="ValueError: invalid literal"):
        _call(int, "not a number", isolate=True)


def test_the_command_refuses_an_unknown_pipeline(tmp_path):
    bad = run_cli("duotune", "bench", "--pipelines", "plain,fast", cwd=tmp_path)
    assert bad.returncode == 2 and "--pipelines" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "saves").exists()


def test_a_users_mistake_in_a_benchmark_child_comes_back_as_its_one_line():
    """A run's UserError in its child process reaches the parent as that UserError (exit 2, one line at
    the console), not as a traceback; any other exception stays a failure with its traceback."""
    from duotune.trainer.commands.bench import KNOWN_PIPELINES, _call, check_overrides
    from duotune.trainer.common.errors import UserError

    check_overrides(BenchConfig(pipelines=KNOWN_PIPELINES, extra={"flash_attn": "sdpa", "lora_dropout": 0}))

    with pytest.raises(UserError) as caught:
        _call(check_overrides, BenchConfig(extra={"lora_rnk": 3}), isolate=True)
    assert caught.value.problems == ["bench: unknown key 'lora_rnk' (KEY=VALUE); did you mean 'lora_rank'?"]
    with pytest.raises(RuntimeError, match=r"(?s)failed in its process:\n.*Traceback.*ZeroDivisionError"):
        _call(divmod, 1, 0, isolate=True)
