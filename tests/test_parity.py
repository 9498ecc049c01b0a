"""`duotune parity`: runs that match are reported as matching, runs that differ are not; 1 process vs 2."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

SHORT = ["max_steps=12", "max_samples=48"]


def verdict(stdout: str) -> str:
    """The verdict line of `parity compare` (its last line): MATCH or NO MATCH, nothing in between."""
    last = stdout.strip().splitlines()[-1]
    head, sep, _ = last.partition(". Report: ")
    assert sep and head in ("[duotune] MATCH", "[duotune] NO MATCH"), last
    return head.removeprefix("[duotune] ")


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
    assert verdict(proc.stdout) == "MATCH" and "120 steps compared (fp32 vs fp32)" in proc.stdout
    assert "recipe differs" not in proc.stdout
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
    assert verdict(proc.stdout) == "NO MATCH"
    assert "[duotune] recipe differs: learning_rate 0.05 vs 0.005" in proc.stdout.splitlines()
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


def test_compare_names_what_differs_in_the_recipes_before_the_curves(reference, tmp_path):
    """A 1-vs-2-process run at per-device batch 4 trains with twice the global batch: the report says
    so first, instead of a bare NO MATCH."""
    import shutil

    import yaml

    two = tmp_path / "two"
    shutil.copytree(reference, two)
    info = json.loads((two / "run_info.json").read_text())
    (two / "run_info.json").write_text(json.dumps({**info, "world_size": 2}))
    config = yaml.safe_load((two / "run_config.yaml").read_text())
    (two / "run_config.yaml").write_text(yaml.safe_dump({**config, "seed": 7, "cutoff_len": 256}))
    proc = run_cli("duotune", "parity", "compare", str(reference), str(two), "--report", str(tmp_path / "r"))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[:3] == [
        "[duotune] recipe differs: global batch 4 (4 per device x 1 accumulation x 1 process) vs 8 "
        "(4 per device x 1 accumulation x 2 processes)",
        "[duotune] recipe differs: seed 42 vs 7",
        "[duotune] recipe differs: cutoff_len 512 vs 256",
    ]
    assert verdict(proc.stdout) == "NO MATCH"  # the curves are identical: the recipes are not
    report = (tmp_path / "r" / "parity_report.md").read_text()
    assert "- differs: global batch 4 (4 per device x 1 accumulation x 1 process) vs 8" in report
    assert json.loads((tmp_path / "r" / "parity.json").read_text())["max_rel_loss_diff"] == 0.0


def test_the_same_examples_from_another_path_are_the_same_data(reference, tmp_path):
    import shutil

    import yaml

    moved = tmp_path / "moved"
    shutil.copytree(reference, moved)
    config = yaml.safe_load((moved / "run_config.yaml").read_text())
    (moved / "run_config.yaml").write_text(yaml.safe_dump({**config, "dataset": ["/elsewhere/demo.json"]}))
    proc = run_cli("duotune", "parity", "compare", str(reference), str(moved))
    assert proc.returncode == 0 and verdict(proc.stdout) == "MATCH", proc.stdout
    info = json.loads((moved / "run_info.json").read_text())
    assert len(info["data_fingerprint"]) == 32
    (moved / "run_info.json").write_text(json.dumps({**info, "data_fingerprint": "0" * 32}))
    proc = run_cli("duotune", "parity", "compare", str(reference), str(moved))
    assert proc.returncode == 1 and verdict(proc.stdout) == "NO MATCH"
    assert "[duotune] recipe differs: data: the encoded examples differ (dataset ['demo://counselling'] vs " \
           "['/elsewhere/demo.json'])" in proc.stdout.splitlines()  # fmt: skip
