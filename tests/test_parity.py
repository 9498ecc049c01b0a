"""`duotune parity`: runs that match are reported as matching, runs that differ are not; 1 process vs 2."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

SHORT = ["max_steps=12", "max_samples=48"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A 12-step parity run of the demo recipe on one process, batch 4."""
    out = tmp_path_factory.mktemp("parity") / "ref"
    proc = run_cli("duotune", "parity", "run", "--device", "cpu", "--output-dir", str(out), *SHORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_parity_run_records_every_step_and_the_adapter(reference):
    rows = [json.loads(line) for line in (reference / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["current_steps"] for r in rows] == list(range(1, 13))
    assert all({"loss", "grad_norm", "learning_rate"} <= set(r) for r in rows)
    assert (reference / "adapter_model.safetensors").is_file()
    info = json.loads((reference / "run_info.json").read_text())
    assert info["precision"] == "fp32" and info["device"] == "cpu" and info["world_size"] == 1


def test_the_demo_matches_the_golden_reference(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("duotune", "parity", "run", "--device", "cpu", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli(
        "duotune", "parity", "compare", str(out), "golden:demo", "--report", str(tmp_path / "report")
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MATCH" in proc.stdout and "120 steps compared (fp32 vs fp32)" in proc.stdout
    for name in ("parity_report.md", "parity.json", "parity_loss.png"):
        assert (tmp_path / "report" / name).is_file()
    result = json.loads((tmp_path / "report" / "parity.json").read_text())
    assert result["ok"] and result["adapter"]["compared"] and result["max_rel_loss_diff"] <= 1e-3


def test_a_different_run_is_reported_as_not_matching(reference, tmp_path):
    out = tmp_path / "lr_x10"
    proc = run_cli(
        "duotune", "parity", "run", "--device", "cpu", "--output-dir", str(out), *SHORT, "learning_rate=5e-2"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("duotune", "parity", "compare", str(out), str(reference))
    assert proc.returncode == 1
    assert "NO MATCH" in proc.stdout
    # warm-up starts at lr 0 for both, so step 1 agrees; the first update at 10x the rate diverges
    assert "losses diverge first at step 3" in proc.stdout
    report = (out / "parity_report.md").read_text()
    assert report.startswith("# Parity: NO MATCH") and "first diverging step: 3" in report


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(reference, tmp_path):
    """The real `train` command with --nproc 2 (torchrun, gloo), 2 examples per process."""
    out = tmp_path / "two"
    proc = run_cli(
        "train", "--device", "cpu", "--nproc", "2", "--output-dir", str(out), *SHORT,
        "per_device_train_batch_size=2", "logging_steps=1", "report_to=none", "deterministic=true",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "launching 2 processes" in proc.stdout
    assert proc.stdout.count("[duotune] done:") == 1  # only rank 0 reports and writes
    info = json.loads((out / "run_info.json").read_text())
    assert info["world_size"] == 2
    proc = run_cli("duotune", "parity", "compare", str(out), str(reference))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compare_refuses_what_is_not_a_run(tmp_path):
    proc = run_cli("duotune", "parity", "compare", str(tmp_path), "golden:demo")
    assert proc.returncode == 2 and "not a run folder" in proc.stderr
    proc = run_cli("duotune", "parity", "compare", "golden:nope", "golden:demo")
    assert proc.returncode == 2 and "golden:demo" in proc.stderr
    proc = run_cli("duotune", "parity", "run", "--device", "cpu")
    assert proc.returncode == 2 and "--output-dir" in proc.stderr


def test_tolerances_follow_the_precisions():
    from duotune.trainer.commands.parity import tolerance_for

    tight, loose = tolerance_for("fp32", "fp32"), tolerance_for("bf16", "fp32")
    assert tight.max_rel_loss < loose.max_rel_loss and tight.adapter_rel < loose.adapter_rel
    assert tolerance_for("fp16", "fp16") == loose


@pytest.mark.parametrize("clip", ["default", "max_grad_norm=0"])
def test_gradient_accumulation_matches_one_big_batch(reference, tmp_path, clip):
    """2 micro-batches of 2 per update = 1 batch of 4: the loss is averaged per token over the whole
    update on both stacks (transformers 4.45 by duotune itself), with and without gradient clipping."""
    extra = [] if clip == "default" else [clip]
    if extra:
        reference = tmp_path / "ref"
        proc = run_cli(
            "duotune", "parity", "run", "--device", "cpu", "--output-dir", str(reference), *SHORT, *extra
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "ga2"
    proc = run_cli(
        "duotune", "parity", "run", "--device", "cpu", "--output-dir", str(out), *SHORT, *extra,
        "per_device_train_batch_size=2", "gradient_accumulation_steps=2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("duotune", "parity", "compare", str(out), str(reference))
    assert proc.returncode == 0, proc.stdout + proc.stderr
