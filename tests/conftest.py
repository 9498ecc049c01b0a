"""Shared test set-up: isolated caches, tiny tokenizers built in code, and a runner for the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """Every test (and every CLI it starts) uses caches of this session only and no network."""
    root = tmp_path_factory.mktemp("env")
    shared_cache = os.environ.get("DUOTUNE_TEST_CACHE")  # lets CI reuse one demo build across legs
    values = {
        "DUOTUNE_CACHE": shared_cache or str(root / "duotune-cache"),
        "HF_DATASETS_CACHE": str(root / "datasets-cache"),
        "HF_HOME": str(root / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SWANLAB_ROOT": str(root / "swanlab-home"),
        "MPLBACKEND": "Agg",
    }
    old = {k: os.environ.get(k) for k in [*values, "SWANLAB_API_KEY", "SWANLAB_MODE"]}
    os.environ.update(values)
    os.environ.pop("SWANLAB_API_KEY", None)
    os.environ.pop("SWANLAB_MODE", None)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def run_cli(*args: str, cwd: Path | str | None = None, env: dict | None = None, timeout: int = 600):
    """Run a console script (train / duotune) of this environment in a subprocess."""
    script, *rest = args
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [str(BIN / script), *rest],
        cwd=str(cwd) if cwd else None,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------
# A word-level tokenizer whose ids the tests spell out literally.

WORDS = [
    "<unk>",  # 0
    "<s>",  # 1
    "</s>",  # 2
    "<|im_start|>",  # 3
    "<|im_end|>",  # 4
    "\n\n",  # 5
    "\n",  # 6
    "User",  # 7
    "Assistant",  # 8
    ":",  # 9
    "calm",  # 10
    " hi",  # 11
    " hello",  # 12
    " there",  # 13
    " sad",  # 14
    " I",  # 15
    " hear",  # 16
    " you",  # 17
    "hi",  # 18
    "hello",  # 19
    "sad",  # 20
    "I",  # 21
    "user",  # 22
    "assistant",  # 23
    "system",  # 24
    ": ",  # 25
    " ",  # 26
]
VOCAB = {w: i for i, w in enumerate(WORDS)}


def word_tokenizer(chat_template: str | None = None, *, pad: bool = False):
    """A fast tokenizer over WORDS: a GPT-2-like split (a leading space stays on the word after it)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[A-Za-z]+| ?[^\sA-Za-z]+|\s+"), behavior="isolated")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>" if pad else None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = chat_template
    return fast


@pytest.fixture(scope="session")
def demo_model_dir():
    from trainer.demo import demo_model_path

    return demo_model_path("demo://tiny-llama")


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_model_dir))
