"""Fused kernels behind the HAL: the Ascend fused operators (checked against a stand-in torch_npu that
implements them from their documented semantics) give the unpatched model's outputs; Liger goes on only
where it can run; nothing is on where it is not installed; the CPU's fast LoRA dropout has dropout's
distribution and replays its masks under gradient checkpointing."""

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
from duotune.trainer.model.kernels import Kernels, apply_fast_dropout, apply_fused_ops, plan_liger

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
    kernels.fast_dropout, kernels.fast_dropout_why = False, "lora_dropout is 0"
    assert kernels.describe().endswith("; fast dropout (lora_dropout is 0)")
    kernels.fast_dropout, kernels.fast_dropout_why = True, "masks"
    assert kernels.describe().startswith(
        "on: output head on learned positions only (exact); fast dropout (masks) | off:"
    )


# ---------------------------------------------------------------- fast dropout (CPU)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_mask_dropout_drops_with_probability_p_and_scales_the_rest(p):
    from duotune.backends.dropout import MaskDropout

    layer = MaskDropout(p).train()
    torch.manual_seed(0)
    x = torch.rand(1_999, 1_001) + 0.5  # several blocks, and an odd number of elements
    out = layer(x)
    dropped = out == 0
    kept_scale = out[~dropped] / x[~dropped]
    assert torch.allclose(kept_scale, torch.full_like(kept_scale, 1 / (1 - p)), rtol=1e-6)
    n = x.numel()
    sigma = (p * (1 - p) / (n / 2)) ** 0.5
    flat = dropped.flatten()
    # the even and the odd elements come from the low and the high half of each 64-bit draw: both halves
    # must be uniform (a generator range without the sign bit would never drop the odd ones)
    for half in (flat[0::2], flat[1::2]):
        assert abs(half.float().mean().item() - p) < 6 * sigma
    assert layer.drop_below / 2**32 == pytest.approx(p, abs=2**-32)
    assert layer.eval()(x) is x


def test_mask_dropout_masks_do_not_depend_on_the_number_of_threads(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from duotune.backends import dropout

    shape = torch.Size([3, dropout.BLOCK + 7])  # six blocks, the last one short
    torch.manual_seed(5)
    parallel = dropout.keep_mask(shape, 2**31, 2.0, torch.float32)
    state = torch.get_rng_state()
    torch.manual_seed(5)
    assert torch.equal(dropout.keep_mask(shape, 2**31, 2.0, torch.bfloat16), parallel.bfloat16())
    with ThreadPoolExecutor(1) as one:
        monkeypatch.setattr(dropout, "_threads", lambda: one)
        torch.manual_seed(5)
        serial = dropout.keep_mask(shape, 2**31, 2.0, torch.float32)
        assert torch.equal(torch.get_rng_state(), state)  # one draw per block either way
    assert torch.equal(serial, parallel)
    assert set(parallel.unique().tolist()) == {0.0, 2.0}
    # each block draws from its own stream: no two blocks repeat each other's pattern
    flat = parallel.flatten()
    block = 2 * dropout.BLOCK
    assert not torch.equal(flat[:block], flat[block : 2 * block])


def test_mask_dropout_follows_the_seed_and_gradient_checkpointing_replays_its_masks():
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(
        tiny_model("sdpa"), LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.3)
    )
    for name, param in model.named_parameters():  # B drawn at random so that every LoRA weight learns
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    recipe = types.SimpleNamespace(fast_dropout="auto", lora_dropout=0.3)
    assert apply_fast_dropout(recipe, CpuBackend(), model)[0] is True
    model.train()
    ids = torch.randint(3, 128, (2, 37), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    def loss_and_grads(seed):
        torch.manual_seed(seed)
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    loss, grads = loss_and_grads(0)
    assert loss_and_grads(0)[0] == loss  # the seed fixes the masks
    assert loss_and_grads(1)[0] != loss  # and they are random
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ckpt_loss, ckpt_grads = loss_and_grads(0)
    assert ckpt_loss == pytest.approx(loss, rel=1e-6)
    # the layers run twice under checkpointing; a second, different mask would change every gradient
    assert grads.keys() == ckpt_grads.keys() and len(grads) == 2 * 7 * 2
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_fast_dropout_goes_on_only_on_cpu_with_dropout_and_leaves_the_adapter_alone():
    from duotune.backends.dropout import MaskDropout
    from peft import LoraConfig, get_peft_model

    def lora_model(dropout):
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], lora_dropout=dropout)
        return get_peft_model(tiny_model("sdpa"), config)

    def dropouts(model):
        return [
            type(layer) for m in model.modules() if hasattr(m, "lora_A") for layer in m.lora_dropout.values()
        ]

    model = lora_model(0.1)
    keys = set(model.state_dict())
    recipe = types.SimpleNamespace(fast_dropout="auto", lora_dropout=0.1)
    assert apply_fast_dropout(recipe, CudaBackend(), model) == (False, "CPU only, this is cuda")
    assert dropouts(model) == [torch.nn.Dropout] * 4
    off = types.SimpleNamespace(fast_dropout=False, lora_dropout=0.1)
    assert apply_fast_dropout(off, CpuBackend(), model) == (False, "fast_dropout: false")
    assert dropouts(model) == [torch.nn.Dropout] * 4
    on, why = apply_fast_dropout(recipe, CpuBackend(), model)
    assert on is True and why.startswith("LoRA's dropout masks from 32-bit random integers on 4 layers")
    assert dropouts(model) == [MaskDropout] * 4
    assert [m.p for m in model.modules() if isinstance(m, MaskDropout)] == [0.1] * 4
    assert set(model.state_dict()) == keys  # nothing new is saved with the adapter
    no_dropout = types.SimpleNamespace(fast_dropout=True, lora_dropout=0.0)
    assert apply_fast_dropout(no_dropout, CpuBackend(), lora_model(0.0)) == (False, "lora_dropout is 0")
