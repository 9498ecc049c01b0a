"""Fused kernels behind the HAL: the Ascend fused operators (checked against a stand-in torch_npu that
implements them from their documented semantics) give the unpatched model's outputs; Liger goes on only
where it can run; nothing is on where it is not installed."""

from __future__ import annotations

import importlib.util
import types

import pytest
import torch
from conftest import tiny_model
from duotune.backends.cpu import CpuBackend
from duotune.backends.cuda import CudaBackend
from duotune.backends.npu import NpuBackend, undo_fused_rotary
from duotune.trainer.common.errors import UserError
from duotune.trainer.model.kernels import Kernels, apply_fused_ops, plan_liger

pytestmark = pytest.mark.usefixtures("no_torch_npu_block")


def forward_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture
def npu(fake_npu_path):
    fake_npu_path()
    backend = NpuBackend()
    assert backend.is_available()
    yield backend
    undo_fused_rotary()
    # transformers and accelerate cache whether torch_npu imports; the stand-in leaves with this test
    from transformers.utils import import_utils

    import_utils.is_torch_npu_available.cache_clear()
    import accelerate.utils.imports as accelerate_imports

    getattr(accelerate_imports.is_npu_available, "cache_clear", lambda: None)()


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_npu_fused_ops_give_the_unpatched_outputs_and_gradients(npu, model_type):
    import torch_npu

    model = tiny_model("sdpa", head_dim=128, model_type=model_type)
    ids = torch.randint(3, 128, (2, 11), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    logits, grads = forward_and_grads(model, batch)
    used, note = npu.apply_fused_ops(model)
    assert used == ["npu_rms_norm x5", "npu_swiglu x2", "npu_rotary_mul"] and note == ""
    torch_npu.calls.clear()
    fused_logits, fused_grads = forward_and_grads(model, batch)
    names = [c[0] for c in torch_npu.calls]
    # 2 norms per layer + the final one, one MLP per layer, q and k per layer (forward only is recorded)
    assert (names.count("npu_rms_norm"), names.count("npu_swiglu"), names.count("npu_rotary_mul")) == (
        5,
        2,
        4,
    )
    assert torch.allclose(fused_logits, logits, rtol=1e-6, atol=1e-6)
    for name, g in grads.items():
        assert float((fused_grads[name] - g).norm() / g.norm()) <= 1e-5, name


def test_npu_fused_ops_leave_what_they_cannot_do_exactly(npu):
    model = tiny_model("sdpa")  # head_dim 16: outside npu_rotary_mul's documented shapes
    used, note = npu.apply_fused_ops(model)
    assert used == ["npu_rms_norm x5", "npu_swiglu x2"] and "head_dim 128" in note
    mistral = tiny_model("sdpa", model_type="mistral")
    assert npu.apply_fused_ops(mistral) == (
        [],
        "npu_fused_ops covers Llama, Qwen2 and DeepSeek-LLM models, not mistral",
    )
    recipe = types.SimpleNamespace(npu_fused_ops=True)
    with pytest.raises(UserError, match="npu_fused_ops: true: .*not mistral"):
        apply_fused_ops(recipe, npu, mistral)
    # on any other device the key is a no-op, whatever it says (one recipe serves every device)
    assert apply_fused_ops(recipe, CpuBackend(), mistral) == ([], "Ascend only, this is cpu")
    assert apply_fused_ops(types.SimpleNamespace(npu_fused_ops=False), npu, model) == (
        [],
        "npu_fused_ops: false",
    )


def test_liger_is_on_only_where_installed_on_cuda(monkeypatch):
    recipe = types.SimpleNamespace(use_liger_kernel="auto")
    assert plan_liger(recipe, CpuBackend(), "llama") == (False, "CUDA only, this is cpu")
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *a, **kw):
        return None if name == "liger_kernel" else real_find_spec(name, *a, **kw)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert plan_liger(recipe, CudaBackend(), "llama") == (
        False,
        "liger-kernel is not installed (pip install liger-kernel)",
    )
    with pytest.raises(UserError, match="use_liger_kernel: true: liger-kernel is not installed"):
        plan_liger(types.SimpleNamespace(use_liger_kernel=True), CudaBackend(), "llama")
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **kw: object() if name == "liger_kernel" else real_find_spec(name, *a, **kw),
    )
    assert plan_liger(recipe, CudaBackend(), "llama") == (True, "liger-kernel is installed")
    assert plan_liger(types.SimpleNamespace(use_liger_kernel=False), CudaBackend(), "llama")[0] is False


def test_liger_reaches_training_arguments(tmp_path):
    from duotune.trainer.recipe import load_recipe
    from duotune.trainer.run.framework import build_training_args, load_framework

    recipe, _ = load_recipe(None, {"output_dir": str(tmp_path), "group_by_length": True})
    args = build_training_args(
        load_framework(),
        recipe,
        precision="fp32",
        has_eval=False,
        report_to=[],
        extra={"use_cpu": True, "use_liger_kernel": True},
    )
    assert args.use_liger_kernel is True and args.prediction_loss_only is True
    # transformers 5 spells the switch train_sampling_strategy, 4.45 group_by_length
    assert getattr(args, "train_sampling_strategy", None) == "group_by_length" or args.group_by_length is True


def test_the_kernels_line_names_what_is_on_and_why_the_rest_is_off():
    kernels = Kernels(
        liger=False, liger_why="CUDA only, this is cpu", fused_ops_why="Ascend only, this is cpu"
    )
    kernels.learned_logits_only, kernels.learned_logits_why = True, "exact"
    assert kernels.describe() == (
        "on: output head on learned positions only (exact) | off: Liger (CUDA only, this is cpu); "
        "Ascend fused ops (Ascend only, this is cpu)"
    )
