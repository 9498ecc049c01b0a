"""Reading the three data formats, and one-line errors for malformed rows."""

from __future__ import annotations

import json

import pytest
from duotune.trainer.common.errors import UserError
from duotune.trainer.data.load import load_examples


def write_json(path, rows):
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return str(path)


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return str(path)


CONVERSATION = {
    "conversation": [
        {"system": "Be warm.", "input": "I can't sleep.", "output": "That sounds exhausting."},
        {"input": "Every night.", "output": "Let's look at your evenings."},
    ]
}
ALPACA = {
    "instruction": "Comfort me.",
    "input": "I failed an exam.",
    "output": "One exam does not define you.",
    "system": "Be kind.",
    "history": [["Hello", "Hi, I'm here."]],
}
MESSAGES = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "我很累。"},
        {"role": "assistant", "content": "辛苦了。"},
    ]
}


@pytest.mark.parametrize("writer", [write_json, write_jsonl])
def test_formats_are_detected_and_converted(tmp_path, writer):
    files = [
        writer(tmp_path / "c.json", [CONVERSATION]),
        writer(tmp_path / "a.json", [ALPACA]),
        writer(tmp_path / "m.json", [MESSAGES]),
    ]
    examples, report = load_examples(files)
    assert [s.format for s in report.sources] == ["conversation", "alpaca", "messages"]
    assert all(s.detected for s in report.sources)
    assert examples[0]["messages"] == [
        {"role": "system", "content": "Be warm."},
        {"role": "user", "content": "I can't sleep."},
        {"role": "assistant", "content": "That sounds exhausting."},
        {"role": "user", "content": "Every night."},
        {"role": "assistant", "content": "Let's look at your evenings."},
    ]
    assert examples[1]["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi, I'm here."},
        {"role": "user", "content": "Comfort me.\nI failed an exam."},
        {"role": "assistant", "content": "One exam does not define you."},
    ]
    assert examples[2]["messages"] == MESSAGES["messages"]
    assert "conversation (detected)" in report.describe_formats()


def test_bundled_demo_data_reads_as_conversation_format():
    examples, report = load_examples(["demo://counselling"])
    assert report.sources[0].format == "conversation"
    assert len(examples) == report.sources[0].rows_read > 50
    assert all(ex["messages"][-1]["role"] == "assistant" for ex in examples)


def test_max_samples_limits_each_file(tmp_path):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)]
    f1 = write_jsonl(tmp_path / "1.jsonl", rows)
    f2 = write_jsonl(tmp_path / "2.jsonl", rows)
    examples, _ = load_examples([f1, f2], max_samples=3)
    assert [e["messages"][0]["content"] for e in examples] == ["q0", "q1", "q2"] * 2


@pytest.mark.parametrize(
    "row, fmt, field, problem",
    [
        ({"conversation": [{"input": "hi"}]}, "conversation", "conversation[0].output", "is missing"),
        ({"conversation": []}, "conversation", "conversation", "is empty"),
        (
            {"conversation": [{"input": "hi", "output": 3}]},
            "conversation",
            "conversation[0].output",
            "must be a string",
        ),
        (
            {"conversation": [{"input": "a", "output": "b"}, {"system": "s", "input": "c", "output": "d"}]},
            "conversation",
            "conversation[1].system",
            "only the first turn",
        ),
        ({"instruction": "hi", "output": None}, "alpaca", "output", "must be a string"),
        ({"instruction": "hi", "output": "x", "history": [["q"]]}, "alpaca", "history[0]", "pair"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            "messages",
            "messages[1].role",
            "expected 'assistant' after 'user'",
        ),
        (
            {"messages": [{"role": "assistant", "content": "a"}]},
            "messages",
            "messages[0].role",
            "expected 'user'",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ["x"]}]},
            "messages",
            "messages[1].content",
            "must be a string",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}]},
            "messages",
            "messages",
            "must end with an assistant",
        ),
        (
            {"messages": [{"role": "bot", "content": "a"}]},
            "messages",
            "messages[0].role",
            "must be system, user",
        ),
    ],
)
def test_malformed_row_is_a_one_line_error_naming_file_row_and_field(tmp_path, row, fmt, field, problem):
    good = {
        "conversation": CONVERSATION,
        "alpaca": {"instruction": "q", "output": "a"},
        "messages": MESSAGES,
    }[fmt]
    path = write_json(tmp_path / "bad.json", [good, good, row])
    with pytest.raises(UserError) as err:
        load_examples([path])
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "bad.json") in msg
    assert "row 3" in msg
    assert f"field {field} " in msg
    assert problem in msg
    assert "skip_invalid_rows" in msg


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"instruction": "q", "output": "a"}) + "\n\n" + json.dumps({"instruction": "q"}) + "\n",
        encoding="utf-8",
    )
    with pytest.raises(UserError, match=r"d\.jsonl line 3: field output is missing"):
        load_examples([str(path)])
    path.write_text('{"instruction": "q", "output": "a"}\n{"instruction": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"d\.jsonl line 2: invalid JSON"):
        load_examples([str(path)])


def test_skip_invalid_rows_skips_and_counts(tmp_path):
    rows = [
        {"instruction": "q1", "output": "a1"},
        {"instruction": "q2"},
        {"instruction": "q3", "output": 5},
        {"instruction": "q4"},
        {"instruction": "q5", "output": "a5"},
    ]
    examples, report = load_examples([write_json(tmp_path / "d.json", rows)], skip_invalid_rows=True)
    assert [e["messages"][0]["content"] for e in examples] == ["q1", "q5"]
    assert report.rows_skipped == 3
    assert report.skipped_reasons() == {
        "invalid row: output is missing": 2,
        "invalid row: output must be a string, got int": 1,
    }


def test_unknown_format_and_missing_file_are_clear(tmp_path):
    path = write_json(tmp_path / "odd.json", [{"prompt": "x", "completion": "y"}])
    with pytest.raises(UserError, match=r"cannot tell the data format from keys \['completion', 'prompt'\]"):
        load_examples([path])
    with pytest.raises(UserError, match="does not exist"):
        load_examples([str(tmp_path / "nope.json")])
    with pytest.raises(UserError, match="unknown demo dataset"):
        load_examples(["demo://nope"])


def test_explicit_format_overrides_detection(tmp_path):
    path = write_json(tmp_path / "c.json", [CONVERSATION])
    with pytest.raises(UserError, match=r"field instruction is missing \(alpaca format\)"):
        load_examples([path], "alpaca")
