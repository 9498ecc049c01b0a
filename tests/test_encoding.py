"""Encoding: literal input_ids / labels for DeepSeek-style and ChatML templates, truncation, caching."""

from __future__ import annotations

import json

import pytest
from conftest import word_tokenizer
from duotune.trainer.common.errors import UserError
from duotune.trainer.data.encode import DROP_NO_LEARNED, IGNORE_INDEX, ChatEncoder, encode_dataset
from duotune.trainer.data.templates import BUILTIN_TEMPLATES

X = IGNORE_INDEX
SYSTEM = [{"role": "system", "content": "calm"}]
TURNS = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello there"},
    {"role": "user", "content": "sad"},
    {"role": "assistant", "content": "I hear you"},
]


def encode(template: str, messages, cutoff_len: int = 1000):
    tok = word_tokenizer(BUILTIN_TEMPLATES[template].jinja)
    return tok, ChatEncoder(tok, cutoff_len).encode(messages)


# --------------------------------------------------------------------------------------------- DeepSeek
# <s>calm\n\nUser: hi\n\nAssistant: hello there</s>User: sad\n\nAssistant: I hear you</s>
# The generation prompt is "Assistant:" (no space): the model produces " hello there</s>".


def test_deepseek_with_system_prompt():
    tok, out = encode("deepseek", SYSTEM + TURNS)
    # <s> calm \n\n User : hi \n\n Assistant : hello there </s> User : sad \n\n Assistant : I hear you </s>
    assert out["input_ids"] == [1, 10, 5, 7, 9, 11, 5, 8, 9, 12, 13, 2, 7, 9, 14, 5, 8, 9, 15, 16, 17, 2]
    assert out["labels"] == [X, X, X, X, X, X, X, X, X, 12, 13, 2, X, X, X, X, X, X, 15, 16, 17, 2]


def test_deepseek_without_system_prompt():
    tok, out = encode("deepseek", TURNS)
    assert out["input_ids"] == [1, 7, 9, 11, 5, 8, 9, 12, 13, 2, 7, 9, 14, 5, 8, 9, 15, 16, 17, 2]
    assert out["labels"] == [X, X, X, X, X, X, X, 12, 13, 2, X, X, X, X, X, X, 15, 16, 17, 2]


# ----------------------------------------------------------------------------------------------- ChatML
# <|im_start|>system\ncalm<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n
# hello there<|im_end|>\n ...: "<|im_end|>" is learned, the "\n" after it (never generated) is not.


def test_chatml_with_system_prompt():
    tok, out = encode("chatml", SYSTEM + TURNS)
    assert out["input_ids"] == [
        3, 24, 6, 10, 4, 6,  # <|im_start|> system \n calm <|im_end|> \n
        3, 22, 6, 18, 4, 6,  # <|im_start|> user \n hi <|im_end|> \n
        3, 23, 6, 19, 13, 4, 6,  # <|im_start|> assistant \n hello there <|im_end|> \n
        3, 22, 6, 20, 4, 6,  # <|im_start|> user \n sad <|im_end|> \n
        3, 23, 6, 21, 16, 17, 4, 6,  # <|im_start|> assistant \n I hear you <|im_end|> \n
    ]  # fmt: skip
    assert out["labels"] == [
        X, X, X, X, X, X,
        X, X, X, X, X, X,
        X, X, X, 19, 13, 4, X,
        X, X, X, X, X, X,
        X, X, X, 21, 16, 17, 4, X,
    ]  # fmt: skip


def test_chatml_without_system_prompt():
    tok, out = encode("chatml", TURNS)
    assert out["input_ids"] == [
        3, 22, 6, 18, 4, 6,
        3, 23, 6, 19, 13, 4, 6,
        3, 22, 6, 20, 4, 6,
        3, 23, 6, 21, 16, 17, 4, 6,
    ]  # fmt: skip
    assert out["labels"] == [
        X, X, X, X, X, X,
        X, X, X, 19, 13, 4, X,
        X, X, X, X, X, X,
        X, X, X, 21, 16, 17, 4, X,
    ]  # fmt: skip


@pytest.mark.parametrize("template", ["deepseek", "chatml", "llama2"])
@pytest.mark.parametrize("with_system", [True, False])
def test_input_ids_equal_apply_chat_template(template, with_system):
    messages = (SYSTEM if with_system else []) + TURNS
    tok, out = encode(template, messages)
    expected = tok.apply_chat_template(messages, tokenize=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert out["input_ids"] == list(expected)


# --------------------------------------------------------------------------- a token across the boundary
# A template whose generation prompt ends with a space ("Assistant: "): whole-conversation tokenization
# glues that space to the reply (" hello"); encoding prompt and reply separately would not.
SPACE_PROMPT = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ 'User: ' + m['content'] + '\n\n' }}"
    "{% else %}{{ 'Assistant: ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)


def test_token_straddling_prompt_and_reply_is_learned():
    tok = word_tokenizer(SPACE_PROMPT)
    messages = TURNS[:2]
    out = ChatEncoder(tok, 1000).encode(messages)
    # <s> User : hi \n\n Assistant : " hello" there </s> -- " hello" starts inside the prompt
    assert out["input_ids"] == [1, 7, 9, 11, 5, 8, 9, 12, 13, 2]
    assert out["labels"] == [X, X, X, X, X, X, X, 12, 13, 2]
    # the naive split encoding produces different tokens at the boundary, which inference never sees
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    naive = (
        tok(prompt, add_special_tokens=False)["input_ids"]
        + tok("hello there</s>", add_special_tokens=False)["input_ids"]
    )
    assert naive != out["input_ids"]


# ---------------------------------------------------------------------------------------------- cutoff


def test_truncation_keeps_the_beginning_and_learns_a_cut_reply_up_to_the_cut():
    tok, out = encode("deepseek", TURNS, cutoff_len=18)
    # cut after " I hear": the second reply is learned up to the cut, its " you</s>" is gone
    assert out["input_ids"] == [1, 7, 9, 11, 5, 8, 9, 12, 13, 2, 7, 9, 14, 5, 8, 9, 15, 16]
    assert out["labels"] == [X, X, X, X, X, X, X, 12, 13, 2, X, X, X, X, X, X, 15, 16]
    assert out["num_tokens_full"] == 20 and out["num_learned"] == 5


def test_example_without_learned_tokens_after_cutoff_has_none():
    tok, out = encode("deepseek", TURNS, cutoff_len=6)
    assert out["input_ids"] == [1, 7, 9, 11, 5, 8]
    assert out["num_learned"] == 0


def _write(path, rows):
    path.write_text(json.dumps(rows), encoding="utf-8")
    return str(path)


def test_dataset_drops_and_counts_examples_left_without_learned_tokens(tmp_path):
    long_user = " ".join(["hi"] * 30)
    rows = [
        {"conversation": [{"input": "hi", "output": "hello"}]},
        {"conversation": [{"input": long_user, "output": "hello"}]},  # the reply lies past the cutoff
        {"conversation": [{"input": "sad", "output": "I hear you"}]},
    ]
    tok = word_tokenizer(BUILTIN_TEMPLATES["deepseek"].jinja)
    data = encode_dataset(
        [_write(tmp_path / "d.json", rows)],
        tok,
        dataset_format="auto",
        cutoff_len=16,
        max_samples=None,
        skip_invalid_rows=False,
        use_cache=False,
    )
    assert data.num_examples == 2
    assert data.dropped == {DROP_NO_LEARNED: 1}
    assert [s.split()[-1] for s in data.dataset["source"]] == ["1", "3"]
    stats = data.stats()
    assert stats["rows_read"] == 3 and stats["examples"] == 2
    assert stats["learned_tokens"] == sum(data.dataset["num_learned"])


def test_second_encoding_of_the_same_data_comes_from_the_cache(tmp_path):
    rows = [{"conversation": [{"input": "hi", "output": "hello there"}]}] * 5
    path = _write(tmp_path / "d.json", rows)
    tok = word_tokenizer(BUILTIN_TEMPLATES["deepseek"].jinja)
    kwargs = dict(dataset_format="auto", cutoff_len=64, max_samples=None, skip_invalid_rows=False)
    first = encode_dataset([path], tok, **kwargs)
    second = encode_dataset([path], tok, **kwargs)
    assert not first.cache_hit and second.cache_hit
    assert second.dataset["input_ids"] == first.dataset["input_ids"]
    assert second.dataset["labels"] == first.dataset["labels"]
    # a different template (or tokenizer, cutoff, file content) is a different cache entry
    tok2 = word_tokenizer(BUILTIN_TEMPLATES["chatml"].jinja)
    assert not encode_dataset([path], tok2, **kwargs).cache_hit
    assert not encode_dataset([path], tok, **{**kwargs, "cutoff_len": 63}).cache_hit


def test_template_that_rewrites_earlier_turns_is_refused(tmp_path):
    # renders the *last* message first: adding a turn changes the text before it
    reversed_template = (
        "{% for m in messages|reverse %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    )
    tok = word_tokenizer(reversed_template)
    rows = [{"messages": TURNS}]
    with pytest.raises(UserError, match="changes earlier turns.*template"):
        encode_dataset(
            [_write(tmp_path / "m.json", rows)],
            tok,
            dataset_format="auto",
            cutoff_len=64,
            max_samples=None,
            skip_invalid_rows=False,
            use_cache=False,
        )


# ------------------------------------------------------------------------------ the demo's real tokenizer


def test_demo_tokenizer_learns_exactly_the_replies(demo_tokenizer):
    """Byte-level BPE on Chinese and English: each learned run decodes to a reply plus EOS, no more."""
    from duotune.trainer.data.load import load_examples

    examples, _ = load_examples(["demo://counselling"])
    encoder = ChatEncoder(demo_tokenizer, 4096)
    eos = demo_tokenizer.eos_token
    for ex in examples[:40]:
        out = encoder.encode(ex["messages"])
        runs, current = [], []
        for tid, lab in zip(out["input_ids"], out["labels"], strict=True):
            if lab != IGNORE_INDEX:
                assert lab == tid
                current.append(tid)
            elif current:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        replies = [m["content"] for m in ex["messages"] if m["role"] == "assistant"]
        assert len(runs) == len(replies)
        for run, reply in zip(runs, replies, strict=True):
            assert demo_tokenizer.decode(run).strip() == reply + eos
        assert out["input_ids"] == list(
            demo_tokenizer.apply_chat_template(ex["messages"], tokenize=True, return_dict=True)["input_ids"]
        )
