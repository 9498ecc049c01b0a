"""Framework choice and the containment of openMind's import side effects (with a stand-in openmind)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import run_cli
from duotune.trainer.common.errors import UserError
from duotune.trainer.run import framework as fw

# What openmind 1.0.0 does on import, in miniature: hide tracebacks, send from_pretrained to its hub.
FAKE_OPENMIND = """
import sys
import transformers
from transformers import PreTrainedModel, PreTrainedTokenizerBase

__version__ = "1.0.0"


def _to_modelers(cls, name, *args, **kwargs):
    raise RuntimeError("downloading " + str(name) + " from Modelers")


PreTrainedModel.from_pretrained = classmethod(_to_modelers)
PreTrainedTokenizerBase.from_pretrained = classmethod(_to_modelers)
sys.tracebacklimit = 0


class TrainingArguments(transformers.TrainingArguments):
    pass


class Trainer(transformers.Trainer):
    pass
"""


@pytest.fixture
def fake_openmind(tmp_path, monkeypatch):
    pkg = tmp_path / "om" / "openmind"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_OPENMIND)
    monkeypatch.syspath_prepend(str(tmp_path / "om"))
    monkeypatch.delitem(sys.modules, "openmind", raising=False)
    yield tmp_path / "om"
    sys.modules.pop("openmind", None)


def test_framework_resolution(monkeypatch):
    from duotune.backends import get_backend

    monkeypatch.setattr(fw, "openmind_installed", lambda: True)
    assert fw.resolve_framework("auto", get_backend("npu"))[0] == "openmind"
    assert fw.resolve_framework("auto", get_backend("cuda"))[0] == "transformers"
    assert fw.resolve_framework("auto", get_backend("cpu"))[0] == "transformers"
    assert fw.resolve_framework("transformers", get_backend("npu")) == ("transformers", "from the recipe")
    assert fw.resolve_framework("openmind", get_backend("cpu")) == ("openmind", "from the recipe")
    monkeypatch.setattr(fw, "openmind_installed", lambda: False)
    assert fw.resolve_framework("auto", get_backend("npu")) == (
        "transformers",
        "auto: the openmind package is not installed",
    )
    with pytest.raises(UserError, match="setup_openmind_env.sh"):
        fw.resolve_framework("openmind", get_backend("npu"))


def test_openmind_import_side_effects_are_undone(fake_openmind):
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    model_fp = PreTrainedModel.__dict__["from_pretrained"]
    tok_fp = PreTrainedTokenizerBase.__dict__["from_pretrained"]
    had_limit = hasattr(sys, "tracebacklimit")
    om = fw.load_framework("openmind")
    assert om.name == "openmind" and om.version == "1.0.0"
    assert om.Trainer.__name__ == "Trainer" and om.Trainer.__module__ == "openmind"
    assert PreTrainedModel.__dict__["from_pretrained"] is model_fp
    assert PreTrainedTokenizerBase.__dict__["from_pretrained"] is tok_fp
    assert hasattr(sys, "tracebacklimit") == had_limit


def test_a_crash_after_importing_openmind_keeps_its_traceback(fake_openmind):
    code = (
        "from duotune.trainer.run.framework import import_openmind\n"
        "import_openmind()\n"
        "def deep():\n"
        "    raise ValueError('a genuine bug')\n"
        "deep()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(fake_openmind)},
    )
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "in deep" in proc.stderr and "a genuine bug" in proc.stderr


def test_train_through_the_openmind_trainer_class(fake_openmind, tmp_path):
    proc = run_cli(
        "train",
        "framework=openmind",
        "max_steps=2",
        "max_samples=8",
        "report_to=none",
        f"output_dir={tmp_path}/out",
        cwd=tmp_path,
        env={"PYTHONPATH": str(fake_openmind)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[duotune] framework  openmind 1.0.0 Trainer" in proc.stdout
    # the demo model loaded from its local folder although openmind re-pointed from_pretrained
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    ("version", "overrides", "world", "micro_batches", "expected"),
    [
        ("5.23.0", {"gradient_accumulation_steps": 3}, 2, 10, None),  # newer versions average per token
        ("4.45.2", {}, 1, 10, None),  # one process, no accumulation: nothing to average over
        ("4.45.2", {"gradient_accumulation_steps": 2}, 2, 10, None),  # duotune averages per token itself
        ("4.45.2", {"gradient_accumulation_steps": 3, "max_steps": 3}, 1, 10, None),  # within one epoch
        ("4.45.2", {"gradient_accumulation_steps": 3, "max_steps": 4}, 1, 10, "carries an epoch's last"),
        (
            "4.45.2",
            {"gradient_accumulation_steps": 3, "max_steps": -1, "num_train_epochs": 2},
            1,
            10,
            "carries",
        ),
        ("4.45.2", {"gradient_accumulation_steps": 2, "max_steps": -1, "num_train_epochs": 2}, 1, 10, None),
        ("4.45.2", {"deepspeed": "zero2"}, 2, 10, "under DeepSpeed averages the loss per micro-batch"),
        ("4.45.2", {"fsdp": "full_shard", "gradient_accumulation_steps": 2}, 1, 10, "under FSDP"),
    ],
)
def test_the_loss_average_note_says_where_the_openmind_stack_differs(
    version, overrides, world, micro_batches, expected
):
    from duotune.trainer.recipe import load_recipe
    from duotune.trainer.run.workflow import loss_average_note

    recipe, _ = load_recipe(None, overrides)
    framework = fw.Framework("transformers", version, object, object, version)
    note = loss_average_note(framework, recipe, world, micro_batches)
    assert (note is None) if expected is None else (expected in note), note
