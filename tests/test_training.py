"""Training features, in process on the demo model with a few steps each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import read_jsonl
from duotune.trainer.common.errors import UserError
from duotune.trainer.recipe import load_recipe
from duotune.trainer.run.workflow import run_training


def train(tmp_path: Path, **overrides):
    values = {
        "output_dir": str(tmp_path / "out"),
        "report_to": "none",
        "max_samples": 24,
        "max_steps": 3,
        "save_steps": 1000,
        "plot_loss": False,
        **overrides,
    }
    recipe, path = load_recipe(None, values)
    return run_training(recipe, path)


def adapter_tensors(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def test_lora_weights_move_and_the_base_stays_frozen(tmp_path):
    result = train(tmp_path, gradient_checkpointing=True)
    model = result.model
    base = model.base_model.model
    assert (
        base.is_activation_checkpointing
        if hasattr(base, "is_activation_checkpointing")
        else base.is_gradient_checkpointing
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    tensors = adapter_tensors(result.output_dir)
    lora_b = [t for k, t in tensors.items() if "lora_B" in k]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: it was trained
    assert all(t.dtype == torch.float32 for t in tensors.values())
    cfg = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert cfg["r"] == 16 and cfg["lora_alpha"] == 32 and cfg["task_type"] == "CAUSAL_LM"


def test_lora_target_list_rslora_and_additional_target(tmp_path):
    result = train(tmp_path, lora_target="q_proj,v_proj", use_rslora=True, additional_target="lm_head")
    cfg = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) == {"q_proj", "v_proj"}
    assert cfg["use_rslora"] is True
    assert "lm_head" in cfg["modules_to_save"]
    keys = adapter_tensors(result.output_dir).keys()
    assert any("lm_head" in k for k in keys)
    assert not any("k_proj" in k for k in keys)


def test_dora(tmp_path):
    result = train(tmp_path, use_dora=True, lora_target="q_proj")
    cfg = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert cfg["use_dora"] is True
    assert any("lora_magnitude_vector" in k for k in adapter_tensors(result.output_dir))


def test_loraplus_gives_b_matrices_the_higher_learning_rate(tmp_path):
    result = train(tmp_path, loraplus_lr_ratio=16.0, learning_rate=1e-3, lr_scheduler_type="constant")
    optimizer = result.trainer.optimizer
    names = {id(p): n for n, p in result.model.named_parameters()}
    lrs = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            kind = "B" if "lora_B" in names[id(p)] else "A"
            lrs.setdefault(kind, set()).add(round(group.get("initial_lr", group["lr"]), 12))
    assert lrs == {"A": {1e-3}, "B": {16e-3}}


def test_pissa_adapter_is_converted_to_plain_lora_on_the_original_base(tmp_path, demo_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = train(tmp_path, pissa_init=True, lora_target="q_proj,v_proj", lora_rank=4, lora_alpha=4)
    ids = torch.tensor([[0, 300, 301, 302, 303, 304, 305]])
    result.model.eval()
    with torch.no_grad():
        trained = result.model(input_ids=ids).logits
    base = AutoModelForCausalLM.from_pretrained(str(demo_model_dir))
    with torch.no_grad():
        untouched = base(input_ids=ids).logits
    restored = PeftModel.from_pretrained(base, str(result.output_dir)).eval()
    with torch.no_grad():
        converted = restored(input_ids=ids).logits
    cfg = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert cfg["r"] == 8  # the conversion stores the difference as rank 2r
    assert not torch.allclose(trained, untouched, atol=1e-4)  # training changed the model
    torch.testing.assert_close(converted, trained, atol=1e-4, rtol=1e-4)


def test_validation_split_logs_eval_loss_plots_it_and_tracks_it_in_swanlab(tmp_path):
    result = train(
        tmp_path,
        val_size=0.25,
        eval_steps=2,
        max_steps=4,
        plot_loss=True,
        logging_steps=1,
        report_to="swanlab",
    )
    out = result.output_dir
    (swanlab_run,) = (out / "swanlog").glob("run-*/run-*.swanlab")  # offline: no key in the test env
    assert b"eval/loss" in swanlab_run.read_bytes() and b"train/loss" in swanlab_run.read_bytes()
    assert b"train/real_tokens_per_second" in swanlab_run.read_bytes()  # the throughput reaches SwanLab
    rows = read_jsonl(out / "trainer_log.jsonl")
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["current_steps"] for r in evals] == [2, 4]
    assert all(r["eval_loss"] > 0 for r in evals)
    assert (out / "training_loss.png").is_file() and (out / "training_eval_loss.png").is_file()
    assert json.loads((out / "eval_results.json").read_text())["eval_loss"] == pytest.approx(
        evals[-1]["eval_loss"]
    )


def test_neftune_and_bf16_on_cpu(tmp_path):
    result = train(tmp_path, neftune_noise_alpha=5.0, compute_type="bf16")
    assert result.trainer.args.neftune_noise_alpha == 5.0
    assert result.trainer.args.bf16 is True
    assert next(result.model.base_model.model.model.embed_tokens.parameters()).dtype == torch.bfloat16
    assert all(t.dtype == torch.float32 for t in adapter_tensors(result.output_dir).values())


def test_fp16_on_cpu_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(UserError, match="fp16 mixed precision needs an accelerator"):
        train(tmp_path, fp16=True)
    assert not (tmp_path / "out").exists()


def test_bad_optimizer_name_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="adamw_nonsense"):
        train(tmp_path, optim="adamw_nonsense")
    assert not (tmp_path / "out").exists()


def test_builtin_template_without_its_tokens_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"template 'chatml' needs <\|im_start\|>, <\|im_end\|>"):
        train(tmp_path, template="chatml")


def test_resume_from_checkpoint_auto_continues_and_appends_the_log(tmp_path):
    train(tmp_path, max_steps=4, save_steps=2, lr_scheduler_type="constant")
    out = tmp_path / "out"
    assert (out / "checkpoint-4").is_dir()
    result = train(
        tmp_path, max_steps=6, save_steps=2, lr_scheduler_type="constant", resume_from_checkpoint="auto"
    )
    rows = read_jsonl(out / "trainer_log.jsonl")
    assert [r["current_steps"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert result.trainer.state.global_step == 6
