"""Faults a run must survive: a second run into the same output_dir, a diverging loss, a checkpoint or
adapter that cannot be written, a kill at the worst moment of checkpoint rotation, damaged checkpoints.

Faults inside the Trainer are injected with a ``sitecustomize`` module on the PYTHONPATH of the train
process: it wraps the Trainer that duotune builds, so the code under test is the real one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from conftest import BIN, paced, read_jsonl, run_cli
from duotune.trainer.common.errors import UserError
from duotune.trainer.run.lifecycle import (
    COMPLETE_MARKER,
    checkpoint_damage,
    complete_checkpoints,
    last_complete_checkpoint,
    mark_complete,
    usable_checkpoint,
)
from duotune.trainer.run.lock import LOCK_FILE, OutputDirLock, lock_holder
from duotune.trainer.run.outputs import read_run_status

BASE = ["--device", "cpu", "max_samples=32", "logging_steps=1", "report_to=none", "plot_loss=false"]


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def _inject(tmp_path: Path, body: str) -> dict[str, str]:
    """Environment for a train process whose Trainer is wrapped by ``body`` (a function ``patch(t)``)."""
    folder = tmp_path / "inject"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import errno, os
            import duotune.trainer.run.framework as _fw

            _make = _fw.make_trainer

            def make_trainer(*a, **kw):
                t = _make(*a, **kw)
                patch(t)
                return t

            _fw.make_trainer = make_trainer
            """
        )
        + textwrap.dedent(body)
    )
    return {"PYTHONPATH": str(folder)}


# --------------------------------------------------------------------------------------------- lock


def test_the_lock_is_exclusive_and_says_who_holds_it(tmp_path):
    out = tmp_path / "run"
    with OutputDirLock(out, command="train my.yaml"):
        holder = lock_holder(out)
        assert holder["pid"] == os.getpid() and holder["command"] == "train my.yaml"
        with pytest.raises(
            UserError, match=rf"output_dir {out} is in use by another run \(pid {os.getpid()} on"
        ):
            OutputDirLock(out).acquire()
    assert lock_holder(out) is None
    assert not out.exists()  # the lock made the folder, nothing else was written: it is gone again


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "elsewhere", "started": "then"}))
    assert lock_holder(out) is None  # nobody holds the flock: the file is stale
    lock = OutputDirLock(out).acquire()
    try:
        assert lock.took_over["pid"] == 999999
        assert lock_holder(out)["pid"] == os.getpid()
    finally:
        lock.release()
    assert out.is_dir() and not (out / LOCK_FILE).exists()  # the folder existed before: it stays


def test_the_lock_file_never_records_a_secret(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["/x/bin/train", "hub_token=hf_SECRET123", "learning_rate=1"])
    with OutputDirLock(tmp_path / "run"):
        text = (tmp_path / "run" / LOCK_FILE).read_text()
    assert "hf_SECRET123" not in text and "hub_token=*** learning_rate=1" in text


def test_a_second_run_into_the_same_output_dir_is_refused_at_once(tmp_path):
    out = tmp_path / "run"
    hold = tmp_path / "hold"  # the first run waits before each step while this file exists
    hold.touch()
    first = subprocess.Popen(
        [str(BIN / "train"), *BASE, "max_steps=30", f"output_dir={out}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=paced(hold=hold),
    )
    try:
        deadline = time.time() + 120
        while lock_holder(out) is None:
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.05)
        second = run_cli("train", *BASE, "max_steps=2", f"output_dir={out}", "overwrite_output_dir=true")
        assert second.returncode == 2
        line = _one_error_line(second.stderr)
        assert line.startswith(f"error: output_dir {out} is in use by another run (pid {first.pid} on ")
        assert "model" not in second.stdout  # refused before the model or the data were loaded
        assert first.poll() is None  # the first run was still going all along
    finally:
        hold.unlink(missing_ok=True)
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    status = read_run_status(out)
    assert status["status"] == "completed" and status["step"] == 30 and status["exit_code"] == 0
    assert not (out / LOCK_FILE).exists()


def test_a_run_killed_hard_reads_as_died(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [str(BIN / "train"), *BASE, "max_steps=200", f"output_dir={out}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=paced(step_seconds=0.2),
    )
    deadline = time.time() + 120
    while not (out / "trainer_log.jsonl").is_file():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    assert read_run_status(out)["status"] == "running"
    proc.kill()
    proc.wait()
    assert read_run_status(out)["status"] == "died"
    again = run_cli("train", *BASE, "max_steps=2", f"output_dir={out}", "overwrite_output_dir=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "taken over" in again.stdout and read_run_status(out)["status"] == "completed"


# ------------------------------------------------------------------------------------- non-finite loss


def test_a_diverging_run_stops_with_exit_3_and_saves_nothing_broken(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", *BASE, "max_steps=20", "save_steps=2", "learning_rate=1e30", "max_grad_norm=0",
                   f"output_dir={out}")  # fmt: skip
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    assert line.startswith("error: training diverged at step ")
    assert "learning_rate (now 1e+30)" in line and "max_grad_norm: 1.0" in line
    step = int(line.split("step ")[1].split(":")[0])
    assert not (out / "adapter_model.safetensors").exists()
    assert all(int(c.name.split("-")[1]) < step for c in complete_checkpoints(out))
    for checkpoint in complete_checkpoints(out):  # every saved checkpoint holds finite weights
        from safetensors.torch import load_file

        weights = load_file(str(checkpoint / "adapter_model.safetensors"))
        assert all(bool(w.isfinite().all()) for w in weights.values()), checkpoint
    status = read_run_status(out)
    assert status["status"] == "diverged" and status["exit_code"] == 3 and status["message"] == line[7:]
    for row in read_jsonl(out / "trainer_log.jsonl"):  # strict JSON: no bare NaN / Infinity
        json.dumps(row, allow_nan=False)


def test_the_guard_skips_a_non_finite_update_without_touching_the_weights(tmp_path):
    import torch
    from duotune.trainer.run.guard import Diverged, NonFiniteGuard

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()  # the optimizer has momentum now: a zero gradient would still move the weights
    before = [p.detach().clone() for p in model.parameters()]
    guard = NonFiniteGuard(allowed_skips=1, precision="fp32", learning_rate=0.1, max_grad_norm=1.0)
    loss = model(torch.full((1, 3), float("nan"))).sum()
    loss.backward()
    guard.observe_loss(loss)
    assert guard.before_update(model, 7) is False and guard.skipped == [7]
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    model(torch.ones(1, 3)).sum().backward()
    model.weight.grad[0, 0] = float("inf")  # finite loss, infinite gradient
    with pytest.raises(Diverged, match="step 8: the gradient norm is not finite .* after skipping 1 update"):
        guard.before_update(model, 8)
    fp16 = NonFiniteGuard(allowed_skips=0, precision="fp16", learning_rate=0.1, max_grad_norm=1.0)
    assert fp16.before_update(model, 9) is True  # an fp16 overflow alone is GradScaler's to skip


# ---------------------------------------------------------------------------------- checkpoint faults


def test_a_kill_right_after_rotation_keeps_a_complete_checkpoint(tmp_path):
    """The Trainer used to delete the old checkpoint before duotune marked the new one complete."""
    out = tmp_path / "run"
    env = _inject(
        tmp_path,
        """
        def patch(t):
            save = t._save_checkpoint

            def _save_checkpoint(model, trial, *a, **kw):
                save(model, trial, *a, **kw)
                if t.state.global_step == 4:
                    os._exit(137)  # killed after the Trainer's part of the save, before duotune's

            t._save_checkpoint = _save_checkpoint
        """,
    )
    proc = run_cli("train", *BASE, "max_steps=6", "save_steps=2", "save_total_limit=1", f"output_dir={out}",
                   env=env)  # fmt: skip
    assert proc.returncode == 137
    assert [c.name for c in complete_checkpoints(out)] == ["checkpoint-2"]
    resumed = run_cli("train", *BASE, "max_steps=6", "save_steps=2", "save_total_limit=1", f"output_dir={out}",
                      "resume_from_checkpoint=auto")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {out / 'checkpoint-2'}" in resumed.stdout
    assert [c.name for c in complete_checkpoints(out)] == ["checkpoint-6"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]


def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_the_last_one_stays(tmp_path):
    out = tmp_path / "run"
    env = _inject(
        tmp_path,
        """
        def patch(t):
            save = t._save_checkpoint

            def _save_checkpoint(model, trial, *a, **kw):
                if t.state.global_step == 4:
                    folder = os.path.join(t.args.output_dir, "checkpoint-4")
                    os.makedirs(folder, exist_ok=True)
                    with open(os.path.join(folder, "optimizer.pt"), "wb") as f:
                        f.write(b"half")
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(folder, "optimizer.pt"))
                save(model, trial, *a, **kw)

            t._save_checkpoint = _save_checkpoint
        """,
    )
    proc = run_cli("train", *BASE, "max_steps=6", "save_steps=2", f"output_dir={out}", env=env)
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert line.startswith(
        f"error: could not write checkpoint or log at step 4 ({out / 'checkpoint-4'}/optimizer.pt: No space left"
    )
    assert f"the last complete checkpoint is {out / 'checkpoint-2'}" in line
    assert not (out / "checkpoint-4").exists() and not (out / "adapter_model.safetensors").exists()
    status = read_run_status(out)
    assert status["status"] == "failed" and status["exit_code"] == 2 and status["message"] == line[7:]
    resumed = run_cli("train", *BASE, "max_steps=6", "save_steps=2", f"output_dir={out}",
                      "resume_from_checkpoint=auto")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_run_status(out)["status"] == "completed"


def test_a_final_adapter_that_cannot_be_written_leaves_no_partial_file(tmp_path):
    out = tmp_path / "run"
    env = _inject(
        tmp_path,
        """
        def patch(t):
            save = t.save_model

            def save_model(output_dir=None, *a, **kw):
                if output_dir and not os.path.basename(output_dir).startswith("checkpoint-"):
                    path = os.path.join(output_dir, "adapter_model.safetensors")
                    with open(path, "wb") as f:
                        f.write(b"trunc")
                    raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), path)
                return save(output_dir, *a, **kw)

            t.save_model = save_model
        """,
    )
    proc = run_cli("train", *BASE, "max_steps=2", "save_steps=2", f"output_dir={out}", env=env)
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert line.startswith("error: could not write the final adapter (") and "quota exceeded" in line.lower()
    assert not (out / "adapter_model.safetensors").exists() and not (out / ".staging").exists()
    assert [c.name for c in complete_checkpoints(out)] == ["checkpoint-2"]


def _tiny_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return proc.returncode == 0


def test_a_full_disk_during_the_run_is_a_clear_error(tmp_path):
    small = tmp_path / "small"
    if not _tiny_tmpfs(small, "600k"):
        pytest.skip(
            "needs permission to mount a small tmpfs (root); injected write failures are tested above"
        )
    try:
        out = small / "run"
        proc = run_cli("train", *BASE, "max_steps=6", "save_steps=1", f"output_dir={out}")
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = _one_error_line(proc.stderr)
        assert line.startswith("error: could not write ") and "No space left on device" in line
        for checkpoint in complete_checkpoints(out):
            assert checkpoint_damage(checkpoint) is None
        assert not (out / "adapter_model.safetensors").exists() or (out / "adapter_config.json").exists()
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


def test_damaged_checkpoints_are_refused_or_passed_over(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", *BASE, "max_steps=4", "save_steps=2", f"output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    newest = out / "checkpoint-4"
    assert checkpoint_damage(newest) is None
    weights = newest / "adapter_model.safetensors"
    saved = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[:100])  # truncated after it was marked complete
    assert checkpoint_damage(newest) == f"{weights} has 100 bytes, {saved} were saved"

    explicit = run_cli("train", *BASE, "max_steps=6", "save_steps=2", f"output_dir={out}",
                       f"resume_from_checkpoint={newest}")  # fmt: skip
    assert explicit.returncode == 2
    line = _one_error_line(explicit.stderr)
    assert line.startswith(f"error: resume_from_checkpoint {newest} is damaged: {weights} has 100 bytes")

    auto = run_cli("train", *BASE, "max_steps=6", "save_steps=2", f"output_dir={out}",
                   "resume_from_checkpoint=auto")  # fmt: skip
    assert auto.returncode == 0, auto.stderr[-3000:]
    assert f"checkpoint-4 is damaged ({weights} has 100 bytes" in auto.stdout
    assert f"resuming from {out / 'checkpoint-2'}" in auto.stdout
    kept = [c.name for c in complete_checkpoints(out)]
    assert kept == ["checkpoint-4", "checkpoint-6"]  # the demo's save_total_limit is 2
    assert all(checkpoint_damage(c) is None for c in complete_checkpoints(out))  # step 4 saved anew


def test_a_changed_file_is_found_by_its_checksum(tmp_path):
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"0123456789")
    mark_complete(folder, 3)
    assert checkpoint_damage(folder) is None
    (folder / "a.bin").write_bytes(b"0123456780")  # same size, one byte changed
    assert (
        checkpoint_damage(folder) == f"{folder / 'a.bin'} has changed since it was saved (checksum mismatch)"
    )
    (folder / "a.bin").unlink()
    assert checkpoint_damage(folder) == f"{folder / 'a.bin'} is missing"
    assert usable_checkpoint(tmp_path) == (
        None,
        [f"checkpoint-3 is damaged ({folder / 'a.bin'} is missing): not resuming from it"],
    )


def test_kill_9_at_any_moment_leaves_a_resumable_run(tmp_path):
    """Kill the run hard at several moments while it saves a checkpoint every update; each time, the newest
    complete checkpoint is undamaged and the run resumes from it to the end."""
    out = tmp_path / "run"
    args = [*BASE, "max_steps=12", "save_steps=1", "save_total_limit=2", f"output_dir={out}"]
    for delay in (0.0, 0.13, 0.29):
        cmd = [str(BIN / "train"), *args] + (["resume_from_checkpoint=auto"] if out.exists() else [])
        # paced: a fast machine must not finish the 12 steps before each kill lands
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=paced(step_seconds=0.1)
        )
        seen = last_complete_checkpoint(out)
        deadline = time.time() + 180
        while last_complete_checkpoint(out) in (None, seen):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        last, notes = usable_checkpoint(out)
        assert last is not None and notes == []
        assert len(complete_checkpoints(out)) <= 2
    final = run_cli("train", *args, "resume_from_checkpoint=auto")
    assert final.returncode == 0, final.stderr[-3000:]
    steps = [r["current_steps"] for r in read_jsonl(out / "trainer_log.jsonl") if "loss" in r]
    assert steps == list(range(1, 13))
    assert (out / "adapter_model.safetensors").is_file()
    assert all((c / COMPLETE_MARKER).is_file() for c in out.glob("checkpoint-*"))
