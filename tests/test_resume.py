"""Stopping on a signal, resuming exactly, and never trusting a half-saved checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, paced, run_cli
from duotune.trainer.run.lifecycle import COMPLETE_MARKER, complete_checkpoints

ARGS = [
    "--device",
    "cpu",
    "max_steps=40",
    "max_samples=64",
    "save_steps=1000",
    "logging_steps=1",
    "report_to=none",
    "lora_dropout=0.1",  # random masks (fast_dropout's on CPU) that a resumed run must draw again exactly
]


def _start(out: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "train"), *ARGS, f"output_dir={out}"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=paced(step_seconds=0.05),  # the signal must land before a fast machine ends the run
    )


def _wait_for_steps(out: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    log = out / "trainer_log.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError("training ended before the signal: " + proc.stderr.read()[-2000:])
        time.sleep(0.02)
    raise AssertionError("training did not reach the step in time")


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path):
    out = tmp_path / "interrupted"
    proc = _start(out, tmp_path)
    _wait_for_steps(out, 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "resume_from_checkpoint=auto" in stderr
    saved = complete_checkpoints(out)
    assert len(saved) == 1
    stopped_at = int(saved[0].name.split("-")[1])
    assert 3 <= stopped_at < 40
    assert not (out / "adapter_model.safetensors").exists()  # an interrupted run has no final adapter

    resumed = run_cli("train", *ARGS, f"output_dir={out}", "resume_from_checkpoint=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {saved[0]}" in resumed.stdout
    reference = tmp_path / "reference"
    ref = run_cli("train", *ARGS, f"output_dir={reference}", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]

    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["current_steps"] for r in rows] == list(range(1, 41))  # no step twice, none missing
    compare = run_cli("duotune", "parity", "compare", str(out), str(reference))
    assert compare.returncode == 0, compare.stdout
    result = json.loads((out / "parity.json").read_text())
    assert result["max_rel_loss_diff"] == 0.0 and result["adapter"]["max_rel_l2_diff"] == 0.0


def test_a_second_signal_exits_at_once(tmp_path):
    """The second Ctrl-C lands while the first one's update is still running (16 micro-batches per
    update): the process leaves at once, without the checkpoint the first signal would have saved.
    Both signals are sent only after the handler has answered the first, so they cannot merge into one."""
    import queue
    import threading

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [str(BIN / "train"), "--device", "cpu", "max_steps=40", "max_samples=64", "save_steps=1000",
         "logging_steps=1", "report_to=none", "per_device_train_batch_size=1",
         "gradient_accumulation_steps=16", f"output_dir={out}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=paced(step_seconds=0.05),  # 16 micro-batches take 0.8 s at least: the second signal lands in time
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    _wait_for_steps(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    deadline = time.time() + 60
    while True:
        line = lines.get(timeout=max(deadline - time.time(), 0.1))
        if "SIGINT: finishing this update" in line:
            break
    proc.send_signal(signal.SIGINT)
    stderr = proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT
    assert complete_checkpoints(out) == [] and not list(out.glob("checkpoint-*"))
    assert "stopped at step" not in stderr  # the graceful path's last words never came


def test_the_signal_handler_stops_gracefully_once_then_exits(monkeypatch):
    from duotune.trainer.run import lifecycle

    exits = []
    monkeypatch.setattr(lifecycle.os, "_exit", exits.append)
    with lifecycle.GracefulStop() as stop:
        stop._handle(signal.SIGTERM, None)
        assert stop.signum == signal.SIGTERM and exits == []
        stop._handle(signal.SIGTERM, None)
        assert exits == [128 + signal.SIGTERM]


def test_auto_resume_skips_a_checkpoint_that_was_not_completely_saved(tmp_path):
    out = tmp_path / "run"
    first = run_cli("train", *ARGS[:1], "cpu", "max_steps=4", "save_steps=2", "max_samples=16",
                    "report_to=none", f"output_dir={out}", cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]
    # a later checkpoint whose save was cut short: files present, completion marker absent
    broken = out / "checkpoint-6"
    broken.mkdir()
    (broken / "trainer_state.json").write_text("{}")
    explicit = run_cli("train", "--device", "cpu", f"output_dir={out}", f"resume_from_checkpoint={broken}",
                       "max_steps=8", "report_to=none", cwd=tmp_path)  # fmt: skip
    assert explicit.returncode == 2 and "was not completely saved" in explicit.stderr
    again = run_cli("train", "--device", "cpu", "max_steps=6", "save_steps=2", "max_samples=16", "report_to=none",
                    f"output_dir={out}", "resume_from_checkpoint=auto", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from {out / 'checkpoint-4'}" in again.stdout
    assert (out / "checkpoint-6" / COMPLETE_MARKER).is_file()  # the resumed run saved step 6 properly


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["deepspeed=zero2"], "deepspeed needs CUDA GPUs or Ascend NPUs, not cpu"),
        (["fsdp=full_shard"], "fsdp needs CUDA GPUs or Ascend NPUs, not cpu"),
        (["deepspeed=zero3", "fsdp=full_shard"], "choose one way to shard"),
        (["fsdp=everything"], "must be full_shard, shard_grad_op or null"),
    ],
)
def test_unsupported_sharding_is_refused(tmp_path, overrides, message):
    proc = run_cli("train", "--device", "cpu", *overrides, f"output_dir={tmp_path}/out", cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_deepspeed_configs_are_valid(monkeypatch):
    from duotune.trainer.recipe import Recipe, configs_dir
    from duotune.trainer.run.plan import check_strategy, deepspeed_config

    for stage in (2, 3):
        path = Path(deepspeed_config(f"zero{stage}"))
        cfg = json.loads(path.read_text())
        assert cfg["zero_optimization"]["stage"] == stage
        assert cfg["train_micro_batch_size_per_gpu"] == "auto" and cfg["bf16"]["enabled"] == "auto"
        assert path.parent == configs_dir() / "deepspeed"

    class FakeCuda:
        name = "cuda"
        supports_sharding = True

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "deepspeed" else real(n, *a))
    from duotune.trainer.common.errors import UserError

    recipe = Recipe(model_name_or_path="a/b", dataset=["d"], output_dir="o", deepspeed="zero2")
    with pytest.raises(UserError, match="pip install deepspeed"):
        check_strategy(recipe, FakeCuda())


def test_launcher_builds_a_multi_node_torchrun_command(monkeypatch):
    from duotune.trainer.run import launch

    seen = {}

    class FakePopen:
        def __init__(self, cmd, env):
            seen["cmd"] = cmd

        def wait(self):
            return 0

    monkeypatch.setattr(launch.subprocess, "Popen", FakePopen)
    monkeypatch.setenv("NNODES", "2")
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29511")
    launch.relaunch(8, ["train", "--device", "npu"])
    cmd = seen["cmd"]
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    joined = " ".join(cmd)
    for part in (
        "--nproc_per_node 8",
        "--nnodes 2",
        "--node_rank 1",
        "--master_addr 10.0.0.1",
        "--master_port 29511",
    ):
        assert part in joined
    assert cmd[-4:] == ["duotune.trainer.commands.cli", "train", "--device", "npu"]
    assert launch.resolve_nproc("auto", "cpu") == 1
