"""Recipes: every shipped YAML validates; overrides parse as YAML scalars; problems come all at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from duotune.trainer.common.errors import UserError
from duotune.trainer.recipe import Recipe, configs_dir, load_recipe, parse_overrides, recipe_fields

CONFIGS = sorted(Path(__file__).resolve().parent.parent.joinpath("configs").rglob("*.yaml"))
RECIPES = [p for p in CONFIGS if "deepspeed" not in p.parts]


def test_configs_exist():
    names = {p.name for p in RECIPES}
    assert {"demo.yaml", "deepseek-7b-chat-lora.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads_and_validates(path):
    raw = yaml.safe_load(path.read_text())
    recipe, src = load_recipe(path)
    assert src == path
    for key, value in raw.items():
        got = getattr(recipe, key)
        if isinstance(got, list) and not isinstance(value, list):
            value = [v.strip() for v in str(value).split(",")] if value not in ("none",) else []
        if isinstance(got, float):
            value = float(value)
        assert got == value, key


def test_reference_recipe_matches_the_tutorial():
    recipe, _ = load_recipe(configs_dir() / "deepseek-7b-chat-lora.yaml")
    assert recipe.model_name_or_path == "deepseek-ai/deepseek-llm-7b-chat"
    assert (recipe.lora_rank, recipe.lora_alpha, recipe.lora_dropout) == (64, 32, 0.05)
    assert recipe.lora_target == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (recipe.per_device_train_batch_size, recipe.gradient_accumulation_steps) == (2, 8)
    assert recipe.gradient_checkpointing and recipe.seed == 42 and recipe.optim == "adamw_torch"
    header = (configs_dir() / "deepseek-7b-chat-lora.yaml").read_text().split("\n\n")[0]
    assert "--device cuda" in header and "--device npu" in header


def test_demo_recipe_is_the_default():
    recipe, src = load_recipe(None)
    assert src.name == "demo.yaml"
    assert recipe.model_name_or_path == "demo://tiny-llama"


def test_overrides_are_yaml_scalars():
    values = parse_overrides(
        [
            "learning_rate=1e-3",
            "max_steps=5",
            "lora_target=q_proj,v_proj",
            "use_dora=true",
            "max_samples=null",
        ]
    )
    recipe, _ = load_recipe(None, values)
    assert recipe.learning_rate == pytest.approx(1e-3)
    assert recipe.max_steps == 5
    assert recipe.lora_target == ["q_proj", "v_proj"]
    assert recipe.use_dora is True
    assert recipe.max_samples is None


def test_override_without_equals_sign_is_refused():
    with pytest.raises(UserError, match="not KEY=VALUE"):
        parse_overrides(["learning_rate"])


def test_all_problems_are_reported_together_with_suggestions(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "model_name_or_path: x/y\n"
        "dataset: d.json\n"
        "output_dir: out\n"
        "lora_rnk: 8\n"  # typo
        "lora_rank: -4\n"  # impossible
        "val_size: 1.5\n"  # out of range
        "learning_rate: fast\n"  # wrong type
        "bf16: true\n"
        "fp16: true\n"  # both
    )
    with pytest.raises(UserError) as err:
        load_recipe(path)
    lines = err.value.problems
    text = "\n".join(lines)
    assert lines[0] == f"recipe {path}: 5 problems (fix them and run again)"
    assert "unknown key 'lora_rnk'" in text and "did you mean 'lora_rank'?" in text
    assert "'learning_rate'" in text and "expected a finite number" in text
    assert "'lora_rank': must be > 0, got -4" in text
    assert "'val_size': must be in [0, 1), got 1.5" in text
    assert "'bf16' and 'fp16' are both true" in text


@pytest.mark.parametrize(
    "override, message",
    [
        ({"warmup_ratio": 0.1, "warmup_steps": 5}, "both set"),
        ({"eval_steps": 10}, "val_size"),
        ({"lora_target": "all,q_proj"}, "cannot be combined"),
        ({"compute_type": "fp32", "bf16": True}, "contradicts"),
        ({"compute_type": "int4"}, "one of auto, bf16, fp16, fp32"),
        ({"lr_scheduler_type": "cosinus"}, "lr_scheduler_type"),
        ({"pissa_init": True, "use_dora": True}, "pissa_init"),
        ({"model_name_or_path": ""}, "model_name_or_path"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
    ],
)
def test_impossible_values(override, message):
    with pytest.raises(UserError, match=message):
        load_recipe(None, override)


def test_public_dict_and_yaml_drop_secret_looking_keys():
    import dataclasses

    @dataclasses.dataclass
    class WithToken(Recipe):
        hub_token: str | None = None

    recipe = WithToken(model_name_or_path="a/b", dataset=["x.json"], output_dir="o", hub_token="hf_SECRET")
    assert "hub_token" not in recipe.public_dict()
    assert "hf_SECRET" not in recipe.to_yaml()
    plain, _ = load_recipe(None)
    assert set(plain.public_dict()) == set(recipe_fields())  # nothing else is dropped


def test_float_fields_accept_yaml_strings_like_1e_minus_4(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model_name_or_path: a/b\ndataset: [x.json]\noutput_dir: o\nlearning_rate: 1e-4\n")
    recipe, _ = load_recipe(path)
    assert recipe.learning_rate == pytest.approx(1e-4)


def test_missing_and_broken_recipe_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="line"):
        load_recipe(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="mapping"):
        load_recipe(bad)
