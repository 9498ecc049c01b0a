"""What ``duotune bench`` trains on, built in code (nothing is downloaded): multi-turn conversations with
a wide spread of lengths, recombined deterministically from the sentences of the bundled counselling
data, and random-weight models of a given shape (tiny for CPU, 7B-shaped for accelerators) that carry
the demo tokenizer."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

from duotune.trainer.demo import DEMO_DATA_FILE, demo_model_path

__all__ = ["MODEL_SHAPES", "build_bench_model", "synthetic_conversations"]

# Decoder shapes: "tiny" is the CPU benchmark's model; the 7B shapes are the published configs of
# Llama-2-7B and Qwen2.5-7B (vocabulary sizes included), initialised at random.
MODEL_SHAPES: dict[str, dict] = {
    "tiny": {
        "model_type": "llama",
        "hidden_size": 384,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "num_key_value_heads": 6,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "vocab_size": None,  # the tokenizer's own (the demo tokenizer: 1,024)
    },
    "llama2-7b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": 32000,
    },
    "qwen2.5-7b": {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "vocab_size": 152064,
    },
}

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


def _sentences() -> dict[tuple[str, str], list[str]]:
    """The demo data's sentences by (language, role): role is system, user or assistant."""
    pools: dict[tuple[str, str], list[str]] = {}
    for row in json.loads(DEMO_DATA_FILE.read_text(encoding="utf-8")):
        turns = row["conversation"]
        language = "zh" if re.search(r"[\u4e00-\u9fff]", turns[0]["input"]) else "en"
        for turn in turns:
            for key, role in (("system", "system"), ("input", "user"), ("output", "assistant")):
                for sentence in _SENTENCE_END.split(turn.get(key) or ""):
                    if sentence.strip():
                        pools.setdefault((language, role), []).append(sentence.strip())
    return pools


def synthetic_conversations(n: int, seed: int = 0, max_turns: int = 8) -> list[dict]:
    """``n`` conversations in the EmoLLM multi-turn format: one to ``max_turns`` turns (a system prompt
    on the first in 60% of them), one to three sentences per question and one to six per reply. With 8
    turns at most their lengths spread evenly from a few dozen to about a thousand tokens of the demo
    tokenizer (41% of a batch of 8 is padding). The same arguments always give the same conversations."""
    rng = random.Random(seed)
    pools = _sentences()

    def message(language: str, role: str, most: int) -> str:
        joiner = "" if language == "zh" else " "
        return joiner.join(rng.choice(pools[(language, role)]) for _ in range(rng.randint(1, most)))

    out = []
    for _ in range(n):
        language = rng.choice(("en", "zh"))
        conversation = []
        for t in range(rng.randint(1, max_turns)):
            turn = {"input": message(language, "user", 3), "output": message(language, "assistant", 6)}
            if t == 0 and rng.random() < 0.6:
                turn = {"system": message(language, "system", 2), **turn}
            conversation.append(turn)
        out.append({"conversation": conversation})
    return out


def build_bench_model(
    shape: str, out: Path, *, dtype: str = "float32", device: str = "cpu", seed: int = 0
) -> Path:
    """A random-weight causal LM of ``shape`` saved in ``out`` with the demo tokenizer and its chat
    template (transformers' own initialisation, seeded, on ``device``: a 7B model initialises in
    seconds on an accelerator and in minutes on a CPU); returns ``out``."""
    import torch
    from duotune.trainer.model.load import dtype_kwarg
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = dict(MODEL_SHAPES[shape])
    demo = demo_model_path()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(demo / name, out / name)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    model_type = spec.pop("model_type")
    spec["vocab_size"] = spec["vocab_size"] or len(tokenizer)
    config = AutoConfig.for_model(
        model_type,
        **spec,
        hidden_act="silu",
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, **dtype_kwarg(getattr(torch, dtype)))
    model.save_pretrained(str(out), safe_serialization=True)
    return out
