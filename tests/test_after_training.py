"""After training: merge (verified against base + adapter), chat, eval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_jsonl, run_cli


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A demo adapter trained for a few steps (big enough to change the model's outputs)."""
    root = tmp_path_factory.mktemp("after")
    out = root / "adapter"
    proc = run_cli(
        "train", "--device", "cpu", "max_steps=10", "report_to=none", "additional_target=lm_head",
        f"output_dir={out}", cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def merged(adapter) -> Path:
    out = adapter.parent / "merged"
    proc = run_cli(
        "duotune",
        "merge",
        "--adapter",
        str(adapter),
        "--output-dir",
        str(out),
        "--max-shard-size",
        "1MB",
        "--verify",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"[duotune] verified: reloaded from {out}, it reproduces base + adapter" in proc.stdout
    return out


def test_merged_logits_equal_base_plus_adapter(adapter, merged, demo_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[0, 276, 27, 681, 286, 266, 308, 84, 857, 964, 200, 200, 2156]]) % 1000
    base = AutoModelForCausalLM.from_pretrained(str(demo_model_dir)).eval()
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        with_adapter = PeftModel.from_pretrained(base, str(adapter)).eval()(input_ids=ids).logits
    folded = AutoModelForCausalLM.from_pretrained(str(merged)).eval()
    with torch.no_grad():
        got = folded(input_ids=ids).logits
    assert (with_adapter - plain).abs().max() > 1e-2  # the adapter changes the model...
    torch.testing.assert_close(got, with_adapter, rtol=1e-5, atol=1e-5)  # ...and the merge keeps exactly that


def test_merge_verify_catches_a_merge_that_lost_the_adapter(adapter, tmp_path, monkeypatch):
    """--verify compares the saved folder with base + adapter: a merge that dropped the adapter (here
    peft's unload, which removes LoRA without folding it in) fails it, and leaves no model behind."""
    from duotune.trainer.commands.merge import MergeVerificationError, merge_adapter
    from peft.tuners.lora import LoraModel

    monkeypatch.setattr(LoraModel, "merge_and_unload", LoraModel.unload)
    out = tmp_path / "wrong"
    with pytest.raises(
        MergeVerificationError, match=r"^verification failed: the merged model differed from base"
    ):
        merge_adapter(adapter, out, verify=True)
    assert not out.exists()


def test_merged_folder_is_complete_and_loads_with_plain_transformers(merged, adapter, tmp_path):
    shards = sorted(p.name for p in merged.glob("*.safetensors"))
    assert len(shards) > 1 and (merged / "model.safetensors.index.json").is_file()  # sharded at 1MB
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    ):
        assert (merged / name).is_file(), name
    readme = (merged / "README.md").read_text()
    assert "demo://tiny-llama" in readme and str(adapter.resolve()) in readme
    code = (
        "import sys\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(merged)!r})\n"
        f"t = AutoTokenizer.from_pretrained({str(merged)!r})\n"
        "text = t.apply_chat_template([{'role': 'user', 'content': 'hi'}], tokenize=False, add_generation_prompt=True)\n"
        "assert text.endswith('Assistant:'), text\n"
        "ours = [m for m in sys.modules if m.split('.')[0] in ('trainer', 'backends', 'collators', 'peft')]\n"
        "print('LOADED', m.num_parameters(), ours)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOADED" in proc.stdout and proc.stdout.strip().endswith("[]")


def test_merge_refuses_a_quantized_base_and_an_occupied_output(adapter, demo_model_dir, tmp_path):
    import shutil

    qbase = tmp_path / "qbase"
    shutil.copytree(demo_model_dir, qbase)
    cfg = json.loads((qbase / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (qbase / "config.json").write_text(json.dumps(cfg))
    proc = run_cli(
        "duotune",
        "merge",
        "--adapter",
        str(adapter),
        "--base",
        str(qbase),
        "--output-dir",
        str(tmp_path / "m"),
    )
    assert proc.returncode == 2 and "bitsandbytes-quantized" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep me")
    proc = run_cli("duotune", "merge", "--adapter", str(adapter), "--output-dir", str(busy))
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert (busy / "x").read_text() == "keep me"


def test_chat_prompt_answers_once_through_the_console_script(adapter):
    proc = run_cli("duotune", "chat", "--adapter", str(adapter), "--prompt", "I can't sleep before exams.",
                   "--greedy", "--max-new-tokens", "24")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()  # the streamed answer
    again = run_cli("duotune", "chat", "--adapter", str(adapter), "--prompt", "I can't sleep before exams.",
                    "--greedy", "--max-new-tokens", "24")  # fmt: skip
    assert again.stdout == proc.stdout  # greedy decoding is deterministic


def test_chat_compare_shows_base_and_adapter(adapter):
    proc = run_cli("duotune", "chat", "--adapter", str(adapter), "--prompt", "I feel lonely.", "--compare",
                   "--greedy", "--max-new-tokens", "16")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    header = proc.stdout.splitlines()[0]
    assert "base model" in header and "with adapter" in header


def test_interactive_chat_reset_and_exit(adapter):
    proc = run_cli(
        "duotune", "chat", "--adapter", str(adapter), "--greedy", "--max-new-tokens", "8", "--system", "Be kind.",
        input_text="hello\n/reset\nhow are you\nexit\nnever read\n",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("assistant> ") == 2
    assert "(conversation cleared)" in proc.stderr
    proc = run_cli(
        "duotune", "chat", "--adapter", str(adapter), "--max-new-tokens", "4", input_text=""
    )  # Ctrl-D
    assert proc.returncode == 0


def test_eval_matches_an_independent_loss_computation(adapter, tmp_path, demo_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "eval_results.json"
    proc = run_cli("duotune", "eval", "--adapter", str(adapter), "--dataset", "demo://counselling",
                   "--max-samples", "12", "--batch-size", "5", "--output", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["examples"] == 12 and results["adapter"] == str(adapter)
    # the same examples, encoded by `preview`, scored one at a time by the model's own loss (no padding)
    encoded = tmp_path / "enc.jsonl"
    assert run_cli("duotune", "preview", "-n", "0", "max_samples=12", "--jsonl", str(encoded)).returncode == 0
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(demo_model_dir)), str(adapter)
    ).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in read_jsonl(encoded):
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            n = int((labels[0, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    assert results["learned_tokens"] == count
    assert results["loss"] == pytest.approx(total / count, rel=1e-5)
    assert results["perplexity"] == pytest.approx(torch.exp(torch.tensor(total / count)).item(), rel=1e-5)
