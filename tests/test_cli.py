"""The real console scripts, end to end, in subprocesses."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO, assert_secret_nowhere, read_jsonl, run_cli

GOLDEN_STEPS = read_jsonl(REPO / "tests" / "golden" / "demo" / "trainer_log.jsonl")[:10]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`train` exactly as a new user runs it: no arguments, in an empty folder."""
    cwd = tmp_path_factory.mktemp("demo-run")
    proc = run_cli("train", cwd=cwd, env={"SWANLAB_API_KEY": ""})
    return cwd, proc


def test_train_without_arguments_trains_the_demo(demo_run):
    cwd, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = cwd / "saves" / "demo"
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "run_config.yaml",
        "trainer_log.jsonl",
        "training_loss.png",
    ):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-100", "checkpoint-120"]
    # the start block and the final line
    assert "[duotune] device     cpu" in proc.stdout
    assert "conversation (detected)" in proc.stdout and "the tokenizer's own chat_template" in proc.stdout
    assert "[duotune] done:" in proc.stdout.strip().splitlines()[-1]
    assert str(out.resolve()) in proc.stdout.strip().splitlines()[-1]
    # HF's progress bar stays visible
    assert "120/120" in proc.stderr


def test_trainer_log_lines_have_llamafactory_keys_and_the_loss_falls(demo_run):
    cwd, _ = demo_run
    rows = read_jsonl(cwd / "saves" / "demo" / "trainer_log.jsonl")
    assert len(rows) == 120
    keys = {
        "current_steps",
        "total_steps",
        "loss",
        "learning_rate",
        "epoch",
        "percentage",
        "elapsed_time",
        "remaining_time",
    }
    assert all(keys <= set(r) for r in rows)
    assert [r["current_steps"] for r in rows] == list(range(1, 121))
    assert rows[-1]["percentage"] == 100.0 and rows[0]["total_steps"] == 120
    first = sum(r["loss"] for r in rows[:10]) / 10
    last = sum(r["loss"] for r in rows[-10:]) / 10
    assert last < first - 1.0, (first, last)


def test_golden_losses_of_the_demo_recipe(demo_run):
    """CPU, fp32, seed 42: the first steps reproduce the checked-in values (scripts/make_golden.py)."""
    cwd, _ = demo_run
    rows = [r for r in read_jsonl(cwd / "saves" / "demo" / "trainer_log.jsonl") if "loss" in r]
    assert len(GOLDEN_STEPS) == 10
    for got, want in zip(rows[: len(GOLDEN_STEPS)], GOLDEN_STEPS, strict=True):
        assert got["current_steps"] == want["current_steps"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5), got["current_steps"]
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4), got["current_steps"]
        assert got["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-9, abs=1e-12)


def test_run_config_is_the_resolved_recipe(demo_run):
    cwd, _ = demo_run
    config = yaml.safe_load((cwd / "saves" / "demo" / "run_config.yaml").read_text())
    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    assert config["model_name_or_path"] == demo["model_name_or_path"]
    assert config["dataset"] == ["demo://counselling"]
    assert config["lora_alpha"] == 32 and config["learning_rate"] == pytest.approx(5e-3)
    assert "cutoff_len" in config and "seed" in config  # every key, defaults included


def test_swanlab_runs_offline_by_default_with_the_recipe_as_config(demo_run):
    cwd, proc = demo_run
    assert "[duotune] swanlab    offline" in proc.stdout
    runs = list((cwd / "saves" / "demo" / "swanlog").glob("run-*"))
    assert len(runs) == 1
    config = yaml.safe_load((runs[0] / "files" / "config.yaml").read_text())
    assert config["lora_rank"]["value"] == 16
    assert config["experiment_name"]["value"] == "demo-tiny-llama"


def test_secrets_never_reach_disk(tmp_path):
    """A SwanLab key in the environment: SwanLab cannot reach its cloud here and falls back to
    offline; the key appears in no file the run wrote and in no output line."""
    secret = "sk-duotune-test-0123456789abcdef"
    proc = run_cli(
        "train",
        f"output_dir={tmp_path}/out",
        "max_steps=2",
        "save_steps=1",
        cwd=tmp_path,
        env={"SWANLAB_API_KEY": secret, "HF_TOKEN": "hf_secret_token_value"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "swanlab    offline" in proc.stdout
    assert_secret_nowhere(secret, tmp_path / "out", proc.stdout, proc.stderr)
    assert_secret_nowhere("hf_secret_token_value", tmp_path / "out", proc.stdout, proc.stderr)


def test_preview_marks_learned_tokens_and_writes_jsonl(tmp_path, demo_tokenizer):
    jsonl = tmp_path / "enc.jsonl"
    proc = run_cli("duotune", "preview", "-n", "2", "--jsonl", str(jsonl), "--no-color", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "conversation (detected)" in out and "template: the tokenizer's own chat_template" in out
    assert "96 of 96 rows, 0 dropped" in out and "p50" in out and "p90" in out and "max" in out
    assert out.count("--- example") == 2
    # every reply is wrapped, the user turns are not
    assert "Assistant:[[ That sounds really overwhelming" in out
    assert "[[User:" not in out
    rows = read_jsonl(jsonl)
    assert len(rows) == 96
    assert set(rows[0]) == {"input_ids", "labels"}
    assert len(rows[0]["input_ids"]) == len(rows[0]["labels"])
    learned = [t for t, lab in zip(rows[0]["input_ids"], rows[0]["labels"], strict=True) if lab != -100]
    assert demo_tokenizer.decode(learned).startswith(" That sounds really overwhelming")


def test_preview_counts_drops_and_truncation(tmp_path, demo_tokenizer):
    """The counts agree with the demo conversations measured here with the tokenizer alone: longer than
    the cutoff = truncated, unless even the first reply starts beyond it = dropped."""
    import json
    import re

    cutoff = 40
    rows = json.loads((REPO / "trainer" / "demo" / "counselling_demo.json").read_text(encoding="utf-8"))
    too_long = dropped = 0
    for row in rows:
        messages = []
        for turn in row["conversation"]:
            if turn.get("system"):
                messages.append({"role": "system", "content": turn["system"]})
            messages += [
                {"role": "user", "content": turn["input"]},
                {"role": "assistant", "content": turn["output"]},
            ]
        full = demo_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        first_prompt = demo_tokenizer.apply_chat_template(
            messages[: next(i for i, m in enumerate(messages) if m["role"] == "assistant")],
            tokenize=True, add_generation_prompt=True, return_dict=True,
        )["input_ids"]  # fmt: skip
        too_long += len(full) > cutoff
        dropped += len(first_prompt) >= cutoff
    assert 0 < dropped < too_long  # the cutoff exercises both cases
    proc = run_cli("duotune", "preview", "-n", "0", f"cutoff_len={cutoff}", "--no-color", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = re.search(r"examples +(\d+) of (\d+) rows, (\d+) dropped, (\d+) truncated", proc.stdout)
    assert counts, proc.stdout
    assert [int(g) for g in counts.groups()] == [len(rows) - dropped, len(rows), dropped, too_long - dropped]
    assert f"dropped    {dropped} x no learned token within cutoff_len" in proc.stdout


def test_help_lists_every_option():
    for script, options in (
        ("train", ["--config", "--device", "--model", "--output-dir", "KEY=VALUE"]),
        ("duotune", ["train", "preview"]),
    ):
        proc = run_cli(script, "--help")
        assert proc.returncode == 0
        for opt in options:
            assert opt in proc.stdout, (script, opt)
    proc = run_cli("duotune", "preview", "--help")
    for opt in ("--config", "-n", "--jsonl", "KEY=VALUE"):
        assert opt in proc.stdout
    proc = run_cli("duotune", "train", "--help")
    assert "--output-dir" in proc.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["lora_rnk=8", "lora_rank=-2"], "did you mean 'lora_rank'"),
        (["--config", "/nonexistent/recipe.yaml"], "does not exist"),
        (["--model", "/nonexistent/model"], "no such folder (and not a hub id"),
        (["learning_rate"], "not KEY=VALUE"),
    ],
)
def test_user_mistakes_exit_2_with_one_clear_message_and_no_traceback(tmp_path, args, needle):
    proc = run_cli("train", *args, f"output_dir={tmp_path}/out", cwd=tmp_path)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_malformed_data_exits_2_before_touching_output_dir(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"conversation": [{"input": "hi", "output": "hello"}]}\n{"conversation": [{"input": "x"}]}\n'
    )
    proc = run_cli("train", f"dataset={data}", f"output_dir={tmp_path}/out", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert err == [
        f"error: {data} line 2: field conversation[0].output is missing (conversation format); "
        "fix the row or set skip_invalid_rows: true"
    ]
    assert not (tmp_path / "out").exists()


def test_existing_run_is_not_overwritten_by_accident(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "trainer_log.jsonl").write_text("{}\n")
    proc = run_cli("train", f"output_dir={out}", "overwrite_output_dir=false", cwd=tmp_path)
    assert proc.returncode == 2
    assert "already holds a run" in proc.stderr and "overwrite_output_dir" in proc.stderr
    assert (out / "trainer_log.jsonl").read_text() == "{}\n"
