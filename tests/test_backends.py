"""The hardware abstraction layer, on CPU: real CPU backend, stand-in torch_npu, patched CUDA checks."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from conftest import run_cli, write_fake_torch_npu
from duotune.backends import BackendError, get_backend, select_backend
from duotune.backends.npu import JIT_ENV
from duotune.trainer.common.errors import UserError
from duotune.trainer.recipe import Recipe
from duotune.trainer.run.framework import openmind_installed
from duotune.trainer.run.plan import make_plan

pytestmark = pytest.mark.usefixtures("no_torch_npu_block", "no_real_gpu")

# The subprocesses of these tests must not see a real GPU either (the tests describe a CPU-only host).
HIDE_GPUS = {"CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture
def no_real_gpu(monkeypatch):
    """These tests describe a machine without CUDA or MPS; on a machine that has one, hide it (tests that
    need a GPU stand one in with `fake_cuda`)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        monkeypatch.setattr(mps, "is_available", lambda: False)


def recipe(**kw) -> Recipe:
    return Recipe(model_name_or_path="m/m", dataset=["d.json"], output_dir="o", **kw)


# --------------------------------------------------------------------------------------------------- CPU


def test_cpu_backend_facts():
    cpu = get_backend("cpu")
    assert cpu.availability().ok and cpu.device() == "cpu" and cpu.dist_backend == "gloo"
    assert cpu.default_precision()[0] == "fp32"
    assert cpu.supports_precision("bf16").ok
    assert not cpu.supports_precision("fp16").ok
    assert cpu.training_args_overrides() == {"use_cpu": True}
    assert cpu.visible_devices_env is None


def test_collective_backend_is_passed_only_to_multi_process_runs(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert get_backend("cpu").training_args_overrides() == {"use_cpu": True, "ddp_backend": "gloo"}
    assert get_backend("npu").training_args_overrides() == {"ddp_backend": "hccl"}
    assert get_backend("cuda").training_args_overrides() == {"ddp_backend": "nccl"}


def test_auto_on_this_machine_is_cpu_and_keeps_torch_npu_out():
    backend, why = select_backend("auto")
    assert backend.name == "cpu"
    assert "not available: npu, cuda" in why
    assert sys.modules["torch_npu"] is None  # find_spec now says no, `import torch_npu` fails cleanly
    import importlib.util

    assert importlib.util.find_spec("torch_npu") is None


# --------------------------------------------------------------------------------------------------- NPU


def test_npu_without_torch_npu_says_what_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch_npu", raising=False)
    with pytest.raises(BackendError) as err:
        select_backend("npu")
    msg = str(err.value)
    base = torch.__version__.split("+")[0]
    assert f'pip install "torch-npu=={base}.*"' in msg
    assert "CANN" in msg and "set_env.sh" in msg
    assert "\n" not in msg


def test_npu_with_torch_npu_that_cannot_load_cann(fake_npu_path):
    fake_npu_path(broken="libhccl.so: cannot open shared object file")
    avail = get_backend("npu").availability()
    assert not avail.ok
    assert "fails to import (OSError: libhccl.so" in avail.reason and "set_env.sh" in avail.reason


def test_npu_with_mismatched_torch_npu(fake_npu_path):
    fake_npu_path(version="2.1.0.post8")
    avail = get_backend("npu").availability()
    assert not avail.ok and "torch_npu 2.1.0.post8 does not match torch" in avail.reason


def test_npu_without_visible_devices(fake_npu_path, monkeypatch):
    fake_npu_path(count=0)
    monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", "6,7")
    avail = get_backend("npu").availability()
    assert not avail.ok and "no Ascend NPU is visible (ASCEND_RT_VISIBLE_DEVICES='6,7')" in avail.reason


def test_npu_facts_with_bf16(fake_npu_path, monkeypatch):
    fake_npu_path(bf16=True, count=8)
    npu = get_backend("npu")
    avail = npu.availability()
    assert avail.ok and "8 x Ascend910B2" in avail.reason and "CANN 8.1.RC1" in avail.reason
    assert npu.dist_backend == "hccl"
    assert npu.device_count() == 8
    assert npu.device(0) == "npu:0"
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert npu.device() == "npu:5"
    assert npu.default_precision()[0] == "bf16"
    assert npu.attn_implementation("bf16")[0] == "sdpa"
    monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", "0,1,2,3")
    assert npu.visible_devices_env == "ASCEND_RT_VISIBLE_DEVICES"
    assert npu.describe()["visible_devices"] == "0,1,2,3"
    assert npu.memory_stats()["peak_allocated_bytes"] == 3 * 2**30


def test_npu_setup_turns_jit_compile_off_by_default_with_a_switch(fake_npu_path, monkeypatch):
    fake_npu_path()
    monkeypatch.delenv(JIT_ENV, raising=False)
    npu = get_backend("npu")
    import torch_npu

    assert any("jit_compile off" in n for n in npu.setup({}))
    assert ("set_compile_mode", (), {"jit_compile": False}) in torch_npu.calls
    assert torch_npu.npu.is_jit_compile_false()
    assert ("set_device", ("npu:0",), {}) in torch_npu.calls
    npu.setup({"npu_jit_compile": True})
    assert torch_npu.calls[-2] == ("set_compile_mode", (), {"jit_compile": True})
    monkeypatch.setenv(JIT_ENV, "0")  # the environment wins over the recipe
    npu.setup({"npu_jit_compile": True})
    assert torch_npu.calls[-2] == ("set_compile_mode", (), {"jit_compile": False})


NPU_SMI_INFO = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 24.1.rc2                 Version: 24.1.rc2                                             |
+---------------------------+---------------+----------------------------------------------------+
| NPU     Name              | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B2               | OK            | 95.4        37                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3400 / 65536         |
+===========================+===============+====================================================+
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
| No running processes found in NPU 0                                                            |
+===========================+===============+====================================================+
| 1       0                 | 4242          | python3                  | 37709                   |
+===========================+===============+====================================================+
| 2       0                 | 4343          |                          | 1200                    |
+===========================+===============+====================================================+
"""


@pytest.fixture
def fake_npu_smi(tmp_path, monkeypatch):
    """An `npu-smi` on PATH that prints a recorded `npu-smi info` with processes on NPU 1 and 2."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "info.txt").write_text(NPU_SMI_INFO)
    script = folder / "npu-smi"
    script.write_text(f'#!/bin/sh\n[ "$1" = info ] && exec cat {folder / "info.txt"}\nexit 1\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_npu_preflight_names_other_processes_on_the_chosen_devices(fake_npu_path, fake_npu_smi, monkeypatch):
    from duotune.backends.npu import npu_processes

    fake_npu_path(count=4)
    assert npu_processes() == [(1, 4242, "python3", 37709), (2, 4343, "", 1200)]
    npu = get_backend("npu")
    monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", "0,1")
    notes = npu.preflight(1)
    assert len(notes) == 1  # NPU 2 is not this run's
    assert notes[0].startswith("NPU 1 is in use by pid 4242 (python3, 37709 MB): ")
    assert "`kill 4242`" in notes[0] and "npu-smi info" in notes[0]
    monkeypatch.delenv("ASCEND_RT_VISIBLE_DEVICES")
    assert [n.split(":")[0] for n in npu.preflight(1)] == ["NPU 1 is in use by pid 4242 (python3, 37709 MB)",
                                                           "NPU 2 is in use by pid 4343 (1200 MB)"]  # fmt: skip


def test_npu_preflight_sets_hccl_timeouts_for_several_processes_only(fake_npu_path, monkeypatch):
    from duotune.backends.npu import HCCL_DEFAULTS

    fake_npu_path(count=2)
    monkeypatch.setenv("PATH", "/nonexistent")  # no npu-smi: nothing to report, nothing fails
    for key in HCCL_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    npu = get_backend("npu")
    assert npu.preflight(1) == [] and not any(k in os.environ for k in HCCL_DEFAULTS)
    monkeypatch.setenv("HCCL_EXEC_TIMEOUT", "600")  # the user's own value is kept
    assert npu.preflight(2) == [
        "HCCL timeouts for a multi-process run: HCCL_CONNECT_TIMEOUT=1200 seconds (set them in the "
        "environment to choose others)"
    ]
    assert os.environ["HCCL_CONNECT_TIMEOUT"] == "1200" and os.environ["HCCL_EXEC_TIMEOUT"] == "600"
    assert 120 <= int(HCCL_DEFAULTS["HCCL_CONNECT_TIMEOUT"]) <= 7200  # CANN's documented range


def test_npu_without_bf16_falls_back_to_fp16_and_refuses_bf16(fake_npu_path):
    fake_npu_path(bf16=False, name="Ascend910A")
    plan = make_plan(recipe(device="npu"))
    assert plan.precision == "fp16" and "no bf16" in plan.precision_why
    assert plan.device == "npu:0"
    with pytest.raises(UserError, match="compute_type bf16 on npu: this Ascend NPU has no bf16"):
        make_plan(recipe(device="npu", compute_type="bf16"))
    with pytest.raises(UserError, match="no bf16"):
        make_plan(recipe(device="npu", bf16=True))


def test_auto_prefers_the_npu(fake_npu_path):
    fake_npu_path()
    plan = make_plan(recipe())
    assert plan.backend.name == "npu" and plan.precision == "bf16"
    if openmind_installed():  # the openMind leg of CI
        assert plan.framework == "openmind" and "NPU with the openMind Library" in plan.framework_why
    else:
        assert plan.framework == "transformers" and "openmind package is not installed" in plan.framework_why


# -------------------------------------------------------------------------------------------------- CUDA


@pytest.fixture
def fake_cuda(monkeypatch):
    """Make this CPU-only torch report CUDA GPUs (the checks the CUDA backend makes)."""

    def install(bf16: bool = True, count: int = 2, name: str = "NVIDIA A100-SXM4-80GB"):
        monkeypatch.setattr(torch.version, "cuda", "12.8")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: name)

    return install


def test_cuda_on_a_cpu_only_torch_says_so(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)  # what a CPU-only build reports
    with pytest.raises(BackendError, match="CPU-only build; install a CUDA build of torch"):
        select_backend("cuda")


def test_cuda_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    avail = get_backend("cuda").availability()
    assert not avail.ok and "no CUDA GPU is visible (CUDA_VISIBLE_DEVICES='')" in avail.reason


def test_cuda_facts(fake_cuda, monkeypatch, tmp_path):
    fake_cuda(bf16=False, name="Tesla V100-SXM2-32GB")
    plan = make_plan(recipe(device="cuda"))
    assert plan.backend.dist_backend == "nccl" and plan.device == "cuda:0"
    assert plan.precision == "fp16" and "no bf16" in plan.precision_why
    assert plan.attn_implementation == "sdpa" and "flash-attn" in plan.attn_why
    with pytest.raises(UserError, match="this GPU has no bf16"):
        make_plan(recipe(device="cuda", compute_type="bf16"))
    fake_cuda(bf16=True)
    (tmp_path / "flash_attn").mkdir()
    (tmp_path / "flash_attn" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    plan = make_plan(recipe(device="cuda"))
    assert plan.precision == "bf16"
    assert plan.attn_implementation == "flash_attention_2"
    assert make_plan(recipe(device="cuda", compute_type="fp32")).attn_implementation == "sdpa"
    assert make_plan(recipe(device="cuda", attn_implementation="eager")).attn_implementation == "eager"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_torch_npu_is_never_imported_when_the_device_is_cpu_or_cuda(
    device, fake_npu_path, fake_cuda, tmp_path
):
    marker = tmp_path / "torch_npu_was_imported"
    fake_npu_path(marker=str(marker))
    fake_cuda()
    plan = make_plan(recipe(device=device))
    assert plan.backend.name == device
    # transformers and accelerate probe for torch_npu on their own; they must find nothing
    from transformers.utils import import_utils

    import_utils.is_torch_npu_available.cache_clear()
    assert not import_utils.is_torch_npu_available()
    assert not marker.exists()


# -------------------------------------------------------------------------------------- the real commands


def test_train_on_a_missing_device_exits_2_before_loading_anything(tmp_path):
    cuda_needle = "CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
    for device, needle in (("npu", "torch-npu=="), ("cuda", cuda_needle)):
        proc = run_cli("train", "--device", device, f"output_dir={tmp_path}/out", cwd=tmp_path, env=HIDE_GPUS)
        assert proc.returncode == 2, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        assert (
            len(errors) == 1 and errors[0].startswith(f"error: --device {device}: ") and needle in errors[0]
        )
        assert "Traceback" not in proc.stderr
        assert "[duotune] model" not in proc.stdout
        assert not (tmp_path / "out").exists()


def test_train_on_cpu_with_torch_npu_installed_never_imports_it(tmp_path):
    marker = tmp_path / "imported"
    root = write_fake_torch_npu(tmp_path / "fake", marker=str(marker))
    proc = run_cli(
        "train",
        "--device",
        "cpu",
        "max_steps=1",
        "max_samples=8",
        "report_to=none",
        f"output_dir={tmp_path}/out",
        cwd=tmp_path,
        env={"PYTHONPATH": str(root)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists()


def test_env_command_with_a_stand_in_npu(tmp_path):
    root = write_fake_torch_npu(tmp_path / "fake", bf16=False, name="Ascend910A", cann="8.0.0")
    env = {"PYTHONPATH": str(root), "ASCEND_RT_VISIBLE_DEVICES": "2,3", **HIDE_GPUS}
    text = run_cli("duotune", "env", cwd=tmp_path, env=env)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "npu   yes  8 x Ascend910A" in out and "[ASCEND_RT_VISIBLE_DEVICES=2,3]" in out
    assert "CANN          8.0.0" in out
    assert "device        npu:0" in out and "precision     fp16" in out
    if openmind_installed():
        assert "framework     openmind (auto: NPU with the openMind Library installed)" in out
    else:
        assert "framework     transformers (auto: the openmind package is not installed)" in out
    proc = run_cli("duotune", "env", "--json", cwd=tmp_path, env=env)
    data = json.loads(proc.stdout)
    assert data["plan"]["backend"] == "npu" and data["plan"]["precision"] == "fp16"
    assert {b["name"]: b["available"] for b in data["backends"]} == {
        "npu": True,
        "cuda": False,
        "mps": False,
        "cpu": True,
    }
    assert data["versions"]["transformers"] and data["versions"]["CANN"] == "8.0.0"


def test_env_command_on_this_machine():
    proc = run_cli("duotune", "env", env=HIDE_GPUS)
    assert proc.returncode == 0
    assert "cpu   yes" in proc.stdout and "npu   no" in proc.stdout
    assert "--device auto would use:" in proc.stdout and "device        cpu" in proc.stdout
    for name in (
        "python",
        "torch",
        "transformers",
        "peft",
        "datasets",
        "openmind",
        "swanlab",
        "torch_npu",
        "CANN",
    ):
        assert f"  {name}" in proc.stdout
