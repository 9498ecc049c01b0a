"""The openMind stack (openmind 1.0.0 + transformers 4.45.2): containment and parity.

These run in the virtualenv made by scripts/setup_openmind_env.sh (the second leg of .ci/run); in
the main environment they are skipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, read_jsonl, run_cli

pytestmark = pytest.mark.openmind

GOLDEN_STEPS = read_jsonl(REPO / "tests" / "golden" / "demo" / "trainer_log.jsonl")[:10]


def test_importing_openmind_through_duotune_leaves_transformers_as_it_was():
    import transformers
    from duotune.trainer.run.framework import load_framework
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from transformers.utils import logging as hf_logging

    before = {
        "model": PreTrainedModel.__dict__["from_pretrained"],
        "tokenizer": PreTrainedTokenizerBase.__dict__["from_pretrained"],
        "attn": PreTrainedModel.__dict__.get("_autoset_attn_implementation"),
        "get_logger": hf_logging.get_logger,
        "remote": transformers.dynamic_module_utils.get_class_in_module,
    }
    had_limit = hasattr(sys, "tracebacklimit")
    om = load_framework("openmind")
    assert om.name == "openmind" and om.version == "1.0.0"
    assert issubclass(om.Trainer, transformers.Trainer) and om.Trainer is not transformers.Trainer
    assert issubclass(om.TrainingArguments, transformers.TrainingArguments)
    assert PreTrainedModel.__dict__["from_pretrained"] is before["model"]
    assert PreTrainedTokenizerBase.__dict__["from_pretrained"] is before["tokenizer"]
    assert PreTrainedModel.__dict__.get("_autoset_attn_implementation") is before["attn"]
    assert hf_logging.get_logger is before["get_logger"]
    assert transformers.dynamic_module_utils.get_class_in_module is before["remote"]
    assert hasattr(sys, "tracebacklimit") == had_limit
    assert "openmind" in sys.modules  # it really was imported


def _train(tmp_path: Path, name: str, *args: str, env: dict | None = None):
    out = tmp_path / name
    proc = run_cli(
        "train", "--device", "cpu", "report_to=none", *args, f"output_dir={out}", cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(out / "trainer_log.jsonl") if "loss" in r]


def test_openmind_and_transformers_trainers_agree_in_the_same_environment(tmp_path):
    """CPU, fp32, seed 42: per-step losses and the adapter within 1e-5 relative over 10 steps."""
    import torch
    from safetensors.torch import load_file

    om, proc = _train(tmp_path, "openmind", "framework=openmind", "max_steps=10")
    assert "framework  openmind 1.0.0 Trainer (transformers 4.45.2)" in proc.stdout
    hf, proc = _train(tmp_path, "transformers", "framework=transformers", "max_steps=10")
    assert "framework  transformers 4.45.2 Trainer" in proc.stdout
    a, b = _losses(om), _losses(hf)
    assert len(a) == len(b) == 10
    for step, (x, y) in enumerate(zip(a, b, strict=True), start=1):
        assert abs(x - y) <= 1e-5 * abs(y), (step, x, y)
    ta, tb = (
        load_file(str(om / "adapter_model.safetensors")),
        load_file(str(hf / "adapter_model.safetensors")),
    )
    assert ta.keys() == tb.keys()
    for key in ta:
        torch.testing.assert_close(ta[key], tb[key], rtol=1e-5, atol=1e-8)


def test_openmind_stack_reproduces_the_current_stacks_losses(tmp_path):
    """The golden losses were made with transformers 5.x (scripts/make_golden.py); the openMind Trainer
    on transformers 4.45.2 gives the same per-step losses within 1e-4 relative."""
    out, _ = _train(tmp_path, "golden", "framework=openmind")
    got = _losses(out)[: len(GOLDEN_STEPS)]
    assert len(got) == len(GOLDEN_STEPS) == 10
    for row, loss in zip(GOLDEN_STEPS, got, strict=True):
        assert abs(loss - row["loss"]) <= 1e-4 * abs(row["loss"]), (row["current_steps"], loss, row["loss"])


def test_swanlab_runs_on_the_openmind_stack(tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        "train",
        "framework=openmind",
        "max_steps=2",
        "max_samples=8",
        f"output_dir={out}",
        cwd=tmp_path,
        env={"SWANLAB_API_KEY": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[duotune] swanlab    offline" in proc.stdout
    runs = list((out / "swanlog").glob("run-*"))
    assert len(runs) == 1
    config = yaml.safe_load((runs[0] / "files" / "config.yaml").read_text())
    assert config["framework"]["value"] == "openmind" and config["lora_rank"]["value"] == 16


def test_parity_compare_finds_the_two_frameworks_matching(tmp_path):
    """`duotune parity` across frameworks, as a user would check it."""
    runs = {}
    for name in ("openmind", "transformers"):
        out = tmp_path / name
        proc = run_cli(
            "duotune", "parity", "run", "--device", "cpu", "--framework", name, "--output-dir", str(out),
            "max_steps=12", "max_samples=48", cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = out
    proc = run_cli("duotune", "parity", "compare", str(runs["openmind"]), str(runs["transformers"]))
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("[duotune] MATCH. Report: ")
    info = json.loads((runs["openmind"] / "run_info.json").read_text())
    assert info["framework"].startswith("openmind 1.0.0")
