"""The bad-input corpus: every case is a command line plus the files it reads, and what its one-line error
must name (the file, row or key to fix).

A case's ``args`` and ``culprit`` may use ``{root}`` (the case's own folder, also its current directory),
``{model}`` (the good demo model, shared and never modified), ``{adapter}`` (a good adapter of it) and
``{run}`` (a good parity run); ``setup`` writes the case's bad files into ``{root}`` and may return a
mapping of more placeholders. ``inject`` (a fault such as a read-only or full file system) is installed
for the duration of an in-process case only.

Add a case here whenever a new bad input is found; test_bad_inputs.py runs them all.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GOOD_ROWS = [
    {"conversation": [{"system": "calm", "input": "I can't sleep.", "output": "I hear you."}]},
    {"conversation": [{"input": "hi", "output": "hello"}, {"input": "sad", "output": "I hear you."}]},
    {"conversation": [{"input": "hello there", "output": "hi"}]},
]


@dataclass
class Ctx:
    """What a case's setup gets: its folder and the shared good inputs to copy and damage."""

    root: Path
    model: Path
    adapter: Path
    run: Path

    def write(self, name: str, content: str | bytes | Any) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(json.dumps(content), encoding="utf-8")
        return path

    def data(self, name: str = "data.jsonl", rows: list | None = None) -> Path:
        return self.write(name, "".join(json.dumps(r) + "\n" for r in (rows or GOOD_ROWS)))

    def copy_model(self, name: str = "model") -> Path:
        return Path(shutil.copytree(self.model, self.root / name))

    def copy_adapter(self, name: str = "adapter") -> Path:
        return Path(shutil.copytree(self.adapter, self.root / name))

    def copy_run(self, name: str = "run") -> Path:
        return Path(shutil.copytree(self.run, self.root / name))


@dataclass
class Case:
    id: str
    args: list[str]
    culprit: list[str]  # substrings the error line must contain (the file / row / key / option)
    setup: Callable[[Ctx], Any] | None = None
    env: dict[str, str] = field(default_factory=dict)
    inject: str | None = None  # "readonly:<placeholder path>" or "diskfull:<placeholder path>"
    usage: bool = False  # a click usage error (Usage: / Try / Error: lines) rather than ours
    skip_if: Callable[[], str | None] | None = None  # why this machine or stack accepts the input, if it does


CASES: list[Case] = []


def device_present(name: str) -> Callable[[], str | None]:
    """A case about an absent device says nothing on a machine that has it."""

    def reason() -> str | None:
        from duotune.backends import get_backend

        return f"this machine has {name}" if get_backend(name).describe()["available"] else None

    return reason


def transformers_5() -> str | None:
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return "transformers >= 5 loads tokenizer.json whatever tokenizer_class says" if major >= 5 else None


def case(id: str, args: list[str], culprit: str | list[str], setup=None, **kw) -> None:
    CASES.append(Case(id, args, [culprit] if isinstance(culprit, str) else culprit, setup, **kw))


# ------------------------------------------------------------------------------------ helpers for setups


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    """A well-formed safetensors file of zeros: {name: (dtype, shape)} (dtype F32 only)."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"\0" * offset


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def edit_json(path: Path, fn: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(fn(json.loads(path.read_text(encoding="utf-8")))), encoding="utf-8")


def rename_keys(path: Path, fn: Callable[[str], str | None], reshape: Callable | None = None) -> None:
    """Rewrite a safetensors file with keys renamed (None drops a key) and tensors optionally reshaped."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    out = {}
    for k, v in tensors.items():
        new = fn(k)
        if new is not None:
            out[new] = reshape(k, v) if reshape else v
    save_file(out, str(path), metadata={"format": "pt"})


def model_with(ctx: Ctx, fn: Callable[[Path], Any]) -> dict:
    folder = ctx.copy_model()
    fn(folder)
    return {"bad": str(folder)}


def adapter_with(ctx: Ctx, fn: Callable[[Path], Any]) -> dict:
    folder = ctx.copy_adapter()
    fn(folder)
    return {"bad": str(folder)}


def run_with(ctx: Ctx, fn: Callable[[Path], Any]) -> dict:
    folder = ctx.copy_run()
    fn(folder)
    return {"bad": str(folder)}


TRAIN = ["train", "--device", "cpu", "report_to=none", "output_dir={root}/out"]
PREVIEW = ["preview", "--device", "cpu", "-n", "0", "--no-color", "output_dir={root}/out"]
PARITY_RUN = ["parity", "run", "--device", "cpu", "--output-dir", "{root}/out"]


def EVAL(adapter: str = "{adapter}", data: str = "demo://counselling", output: str = "{root}/eval.json"):
    return ["eval", "--device", "cpu", "--adapter", adapter, "--dataset", data, "--max-samples", "2",
            "--output", output]  # fmt: skip


def CHAT(adapter: str = "{adapter}", *extra: str):
    return ["chat", "--device", "cpu", "--adapter", adapter, "--prompt", "hi", "--max-new-tokens", "2",
            "--greedy", *extra]  # fmt: skip


def MERGE(adapter: str = "{adapter}", output: str = "{root}/merged", *extra: str):
    return ["merge", "--device", "cpu", "--adapter", adapter, "--output-dir", output, *extra]


def COMPARE(a: str = "{bad}", b: str = "golden:demo", *extra: str):
    return ["parity", "compare", a, b, "--report", "{root}/report", *extra]


# ===================================================================================== recipe files


def _recipe(content: str | bytes):
    return lambda ctx: ctx.write("recipe.yaml", content)


MINIMAL = "model_name_or_path: demo://tiny-llama\ndataset: demo://counselling\n"


case("recipe-latin1", ["train", "--config", "{root}/recipe.yaml"], ["recipe.yaml", "UTF-8"],
     _recipe("description: caf\xe9\n".encode("latin-1")))  # fmt: skip
case("recipe-utf16", ["train", "--config", "{root}/recipe.yaml"], ["recipe.yaml", "UTF-8"],
     _recipe("learning_rate: 1e-4\n".encode("utf-16")))  # fmt: skip
case("recipe-binary-png", ["train", "--config", "{root}/recipe.yaml"], ["recipe.yaml", "not a text"],
     _recipe(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10"))  # fmt: skip
case("recipe-nul-bytes", ["train", "--config", "{root}/recipe.yaml"], ["recipe.yaml", "not a text"],
     _recipe(b"learning_rate: 1\0\0\0\n"))  # fmt: skip
case("recipe-gzip", ["preview", "--config", "{root}/recipe.yaml"], ["recipe.yaml"],
     _recipe(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xcb\x48\xcd\xc9\xc9\x07\x00"))  # fmt: skip
case("recipe-missing", ["train", "--config", "{root}/nope.yaml"], ["nope.yaml", "does not exist"])
case("recipe-is-folder", ["train", "--config", "{root}"], ["--config"], usage=True)
case("recipe-yaml-syntax", ["train", "--config", "{root}/recipe.yaml"], ["recipe.yaml", "line 2"],
     _recipe("learning_rate: 1e-4\nlora_rank: [8\n"))  # fmt: skip
case("recipe-tab-indent", ["train", "--config", "{root}/recipe.yaml"], ["recipe.yaml"],
     _recipe("lora_rank:\n\t- 8\n"))  # fmt: skip
case("recipe-is-a-list", ["train", "--config", "{root}/recipe.yaml"], ["recipe.yaml", "mapping"],
     _recipe("- learning_rate: 1e-4\n"))  # fmt: skip
case("recipe-is-a-scalar", ["preview", "--config", "{root}/recipe.yaml"], ["recipe.yaml", "mapping"],
     _recipe("just some words\n"))  # fmt: skip
case("recipe-value-is-mapping", ["train", "--config", "{root}/recipe.yaml", "output_dir={root}/out"],
     ["recipe.yaml", "'learning_rate'"], _recipe(MINIMAL + "learning_rate: {peak: 1}\n"))  # fmt: skip
case("recipe-file-inf", ["train", "--config", "{root}/recipe.yaml", "output_dir={root}/out"],
     ["recipe.yaml", "'learning_rate'"], _recipe(MINIMAL + "learning_rate: .inf\n"))  # fmt: skip
case("recipe-file-seed-negative", ["train", "--config", "{root}/recipe.yaml", "output_dir={root}/out"],
     ["recipe.yaml", "'seed'"], _recipe(MINIMAL + "seed: -1\n"))  # fmt: skip
case("recipe-unknown-key", [*TRAIN, "lora_rnk=8"], ["lora_rnk", "lora_rank"])
case("recipe-not-key-value", [*TRAIN, "learning_rate"], ["learning_rate", "KEY=VALUE"])
case("recipe-empty-key", [*TRAIN, "=3"], ["'=3'", "KEY=VALUE"])

# =================================================================== numbers: every numeric recipe key

NUMBERS = [
    ("learning_rate", ".inf"), ("learning_rate", ".nan"), ("learning_rate", "-.inf"), ("learning_rate", "inf"),
    ("learning_rate", "nan"), ("learning_rate", "0"), ("learning_rate", "-1e-4"), ("learning_rate", "fast"),
    ("num_train_epochs", ".inf"), ("num_train_epochs", ".nan"), ("num_train_epochs", "0"),
    ("max_grad_norm", ".inf"), ("max_grad_norm", ".nan"), ("max_grad_norm", "-1"),
    ("weight_decay", ".nan"), ("weight_decay", ".inf"), ("weight_decay", "-0.1"),
    ("warmup_ratio", ".nan"), ("warmup_ratio", "1.5"), ("warmup_steps", "-1"),
    ("val_size", ".nan"), ("val_size", "1.0"), ("lora_dropout", ".nan"), ("lora_dropout", "1"),
    ("loraplus_lr_ratio", ".inf"), ("loraplus_lr_ratio", "0"), ("neftune_noise_alpha", ".inf"),
    ("neftune_noise_alpha", "-5"), ("seed", "-1"), ("seed", "4294967296"), ("seed", "1.5"),
    ("cutoff_len", "0"), ("cutoff_len", ".inf"), ("cutoff_len", "-8"), ("max_samples", "0"),
    ("lora_rank", "0"), ("lora_rank", "2.5"), ("lora_alpha", "0"), ("lora_alpha", "-16"), ("pissa_iter", "0"),
    ("per_device_train_batch_size", "0"), ("per_device_eval_batch_size", "0"),
    ("gradient_accumulation_steps", "0"), ("max_steps", "0"), ("max_steps", "-2"), ("max_steps", ".inf"),
    ("pad_to_multiple_of", "0"), ("logging_steps", "0"), ("save_steps", "0"), ("save_total_limit", "0"),
    ("dataloader_num_workers", "-1"), ("preprocessing_num_workers", "0"),
]  # fmt: skip
for key, value in NUMBERS:
    case(f"number-{key}={value}", [*TRAIN, f"{key}={value}"], [f"'{key}'"])
case("number-eval_steps-0", [*TRAIN, "eval_steps=0", "val_size=0.1"], ["'eval_steps'"])
case("number-skip_nonfinite_steps-negative", [*TRAIN, "skip_nonfinite_steps=-1"], ["'skip_nonfinite_steps'"])

# speed keys (issue 13) and `duotune bench`, whose KEY=VALUE pairs are checked before anything is built
case("speed-padding_free-not-a-choice", [*TRAIN, "padding_free=maybe"], ["'padding_free'", "auto"])
case(
    "speed-packing-without-padding-free",
    [*TRAIN, "packing=true", "padding_free=false"],
    ["packing", "padding_free"],
)
case("speed-flash_attn-unknown", [*TRAIN, "flash_attn=fa3"], ["'flash_attn'", "fa2"])
case(
    "speed-flash_attn-contradicts-attn_implementation",
    [*TRAIN, "flash_attn=sdpa", "attn_implementation=eager"],
    ["flash_attn", "attn_implementation"],
)
case("speed-use_liger_kernel-number", [*TRAIN, "use_liger_kernel=2"], ["'use_liger_kernel'"])
case("speed-npu_fused_ops-word", [*TRAIN, "npu_fused_ops=sometimes"], ["'npu_fused_ops'"])
case("speed-group_by_length-word", [*TRAIN, "group_by_length=often"], ["'group_by_length'"])
case("speed-fast_dropout-word", [*TRAIN, "fast_dropout=quick"], ["'fast_dropout'"])
BENCH = ["bench", "--steps", "1", "--repeats", "1", "--conversations", "20", "--output-dir", "{root}/bench"]
case("bench-unknown-key", [*BENCH, "lora_rnk=3"], ["lora_rnk", "lora_rank"])
case("bench-bad-value", [*BENCH, "padding_free=maybe"], ["'padding_free'"])
case("bench-key-contradicts-a-pipeline", [*BENCH, "padding_free=false"], ["packing", "padding_free"])
case("bench-negative-max_steps", [*BENCH, "max_steps=-3"], ["'max_steps'"])
case("bench-unknown-pipeline", [*BENCH, "--pipelines", "plain,turbo"], ["--pipelines"], usage=True)
case("bench-steps-0", ["bench", "--steps", "0"], ["--steps"], usage=True)


def _numeric_keys() -> dict[str, type]:
    """Every int or float recipe key (None allowed or not), read from the Recipe dataclass, so a key added
    later is in the corpus at once."""
    import typing

    from duotune.trainer.recipe import Recipe

    found = {}
    for name, tp in typing.get_type_hints(Recipe).items():
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if len(args) == 1 and args[0] in (int, float):
            found[name] = args[0]
    return found


# every numeric key refuses a value that is not a finite number of its kind
for key, kind in _numeric_keys().items():
    case(f"number-every-key-{key}=.nan", [*TRAIN, f"{key}=.nan"], [f"'{key}'", "nan"])
    if kind is int:
        case(f"number-every-key-{key}=2.5", [*TRAIN, f"{key}=2.5"], [f"'{key}'", "integer"])
    else:
        case(f"number-every-key-{key}=-.inf", [*TRAIN, f"{key}=-.inf"], [f"'{key}'", "finite"])
case("number-preview-seed", [*PREVIEW, "seed=-1"], ["'seed'"])
case("number-parity-run-lr-inf", [*PARITY_RUN, "learning_rate=.inf"], ["'learning_rate'"])

# ============================================================= numbers: every numeric command-line option

case("option-preview-n-negative", ["preview", "-n", "-1"], ["-n"], usage=True)
case("option-eval-batch-size-0", [*EVAL(), "--batch-size", "0"], ["--batch-size"], usage=True)
case("option-eval-cutoff-len-0", [*EVAL(), "--cutoff-len", "0"], ["--cutoff-len"], usage=True)
case("option-eval-max-samples-0", [*EVAL(), "--max-samples", "0"], ["--max-samples"], usage=True)
case("option-eval-batch-size-word", [*EVAL(), "--batch-size", "four"], ["--batch-size"], usage=True)
case("option-chat-max-new-tokens-0", [*CHAT(), "--max-new-tokens", "0"], ["--max-new-tokens"], usage=True)
case("option-chat-temperature-0", [*CHAT(), "--temperature", "0"], ["--temperature"], usage=True)
case("option-chat-temperature-nan", [*CHAT(), "--temperature", "nan"], ["--temperature"], usage=True)
case("option-chat-temperature-inf", [*CHAT(), "--temperature", "inf"], ["--temperature"], usage=True)
case("option-chat-top-p-nan", [*CHAT(), "--top-p", "nan"], ["--top-p"], usage=True)
case("option-chat-top-p-1.5", [*CHAT(), "--top-p", "1.5"], ["--top-p"], usage=True)
case("option-chat-repetition-penalty-inf", [*CHAT(), "--repetition-penalty", "inf"], ["--repetition-penalty"],
     usage=True)  # fmt: skip
case("option-chat-repetition-penalty-nan", [*CHAT(), "--repetition-penalty", "nan"], ["--repetition-penalty"],
     usage=True)  # fmt: skip
case("option-chat-seed-negative", [*CHAT(), "--seed", "-1"], ["--seed"], usage=True)
case("option-chat-seed-huge", [*CHAT(), "--seed", "99999999999"], ["--seed"], usage=True)
case("option-train-nproc-0", [*TRAIN, "--nproc", "0"], ["--nproc"])
case("option-train-nproc-word", [*TRAIN, "--nproc", "many"], ["--nproc"])
case("option-train-nproc-negative", [*TRAIN, "--nproc", "-2"], ["--nproc"])
case("option-parity-run-nproc-0", [*PARITY_RUN, "--nproc", "0"], ["--nproc"])
case("option-merge-max-shard-size-word", MERGE("{adapter}", "{root}/merged", "--max-shard-size", "big"),
     ["--max-shard-size"])  # fmt: skip
case("option-merge-max-shard-size-0", MERGE("{adapter}", "{root}/merged", "--max-shard-size", "0"),
     ["--max-shard-size"])  # fmt: skip
case("option-merge-max-shard-size-negative", MERGE("{adapter}", "{root}/merged", "--max-shard-size", "-1GB"),
     ["--max-shard-size"])  # fmt: skip

# ========================================================= flags and overrides that disagree or are invalid

case("conflict-device-flag-vs-override", ["train", "--device", "cpu", "device=tpu", "output_dir={root}/out"],
     ["device"])  # fmt: skip
case("conflict-device-flag-vs-valid-override", ["train", "--device", "cpu", "device=auto",
     "output_dir={root}/out"], ["--device", "device=auto"])  # fmt: skip
case("conflict-model-flag-vs-override", [*TRAIN, "--model", "{model}", "model_name_or_path=demo://tiny-llama"],
     ["--model", "model_name_or_path"])  # fmt: skip
case("conflict-output-dir-flag-vs-override", ["train", "--output-dir", "{root}/a", "output_dir={root}/b"],
     ["--output-dir", "output_dir"])  # fmt: skip
case("invalid-device-override", ["train", "device=tpu", "output_dir={root}/out"], ["'device'", "tpu"])
case("invalid-device-flag", ["train", "--device", "tpu"], ["--device"], usage=True)
case("invalid-hub", [*TRAIN, "hub=github"], ["'hub'"])
case("invalid-compute-type-on-cpu", [*TRAIN, "compute_type=fp16"], ["compute_type", "fp16"])
case("invalid-bf16-and-fp16", [*TRAIN, "bf16=true", "fp16=true"], ["'bf16'", "'fp16'"])
case("invalid-deepspeed-on-cpu", [*TRAIN, "deepspeed=zero2"], ["deepspeed"])
case("invalid-fsdp-on-cpu", [*TRAIN, "fsdp=full_shard"], ["fsdp"])
case("invalid-fsdp-value", [*TRAIN, "fsdp=everything"], ["'fsdp'"])
case("invalid-lr-scheduler", [*TRAIN, "lr_scheduler_type=zigzag"], ["'lr_scheduler_type'"])
case("invalid-optim", [*TRAIN, "optim=sgd_turbo"], ["'optim'", "sgd_turbo"])
case("invalid-lora-target-all-and-names", [*TRAIN, "lora_target=all,q_proj"], ["'lora_target'"])
case("invalid-lora-target-module", [*TRAIN, "lora_target=no_such_proj", "max_steps=1"],
     ["lora_target", "no_such_proj"])  # fmt: skip
case("invalid-template-name", [*TRAIN, "template=alpaca9"], ["template", "alpaca9"])
case("invalid-template-lacks-tokens", [*TRAIN, "template=chatml"], ["template", "chatml", "<|im_start|>"])
case("invalid-resume-missing", [*TRAIN, "resume_from_checkpoint={root}/nope"],
     ["resume_from_checkpoint", "nope"])  # fmt: skip
case("invalid-resume-incomplete", [*TRAIN, "resume_from_checkpoint={root}/ckpt"],
     ["resume_from_checkpoint", "ckpt"], lambda ctx: ctx.write("ckpt/trainer_state.json", "{}"))  # fmt: skip
case("invalid-report-to-none-and-more", [*TRAIN, "report_to=none,swanlab"], ["'report_to'"])
case("invalid-swanlab-mode", [*TRAIN, "swanlab_mode=cloudy"], ["'swanlab_mode'"])
case("invalid-gradient-checkpointing-word", [*TRAIN, "gradient_checkpointing=maybe"],
     ["'gradient_checkpointing'"])  # fmt: skip
case("invalid-eval-steps-without-val", [*TRAIN, "eval_steps=5"], ["'eval_steps'", "val_size"])
case("invalid-warmup-both", [*TRAIN, "warmup_ratio=0.1", "warmup_steps=5"], ["warmup_ratio", "warmup_steps"])
case("invalid-pissa-and-dora", [*TRAIN, "pissa_init=true", "use_dora=true"], ["pissa_init", "use_dora"])
case("invalid-val-size-leaves-nothing", [*TRAIN, "dataset={root}/data.jsonl", "val_size=0.9"], ["val_size"],
     lambda ctx: ctx.data(rows=GOOD_ROWS[:2]))  # fmt: skip
case("invalid-cutoff-drops-everything", [*TRAIN, "cutoff_len=1"], ["cutoff_len"])

# ================================================================================== datasets


def _data(name: str, content):
    return lambda ctx: ctx.write(name, content)


DATA_CASES = [
    # (id, file name, content, culprit)
    ("json-top-level-object", "d.json", json.dumps({"data": GOOD_ROWS}, indent=2), ["d.json", "object"]),
    ("json-top-level-object-one-line", "d.json", json.dumps({"data": GOOD_ROWS}), ["d.json", "object"]),
    ("json-one-pretty-row", "d.json", json.dumps(GOOD_ROWS[0], indent=2), ["d.json", "object"]),
    ("json-list-of-numbers", "d.json", "[1, 2, 3]", ["d.json", "row 1", "object"]),
    ("json-scalar", "d.json", '"hello"', ["d.json", "object"]),
    ("json-truncated", "d.json", json.dumps(GOOD_ROWS)[:40], ["d.json", "column 39"]),
    ("jsonl-bad-line", "d.jsonl", json.dumps(GOOD_ROWS[0]) + "\n{oops\n", ["d.jsonl", "line 2"]),
    ("jsonl-not-utf8", "d.jsonl", '{"conversation": [{"input": "caf\xe9", "output": "x"}]}\n'.encode("latin-1"),
     ["d.jsonl", "UTF-8"]),
    ("jsonl-binary", "d.jsonl", b"\x1f\x8b\x08\x00\xff\xfe\x00\x00binary", ["d.jsonl"]),
    ("jsonl-empty", "d.jsonl", "", ["d.jsonl", "no rows"]),
    ("json-empty-list", "d.json", "[]", ["d.json", "no rows"]),
    ("jsonl-missing-output", "d.jsonl", json.dumps(GOOD_ROWS[0]) + '\n{"conversation": [{"input": "x"}]}\n',
     ["d.jsonl", "line 2", "conversation[0].output"]),
    ("jsonl-output-not-text", "d.jsonl", '{"conversation": [{"input": "x", "output": 5}]}\n',
     ["d.jsonl", "line 1", "conversation[0].output"]),
    ("jsonl-unknown-format", "d.jsonl", '{"question": "x", "answer": "y"}\n', ["d.jsonl", "line 1", "question"]),
    ("messages-wrong-order", "d.jsonl",
     '{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}\n',
     ["d.jsonl", "line 1", "messages[0].role"]),
    ("json-deeply-nested", "d.json", "[" * 100000 + "]" * 100000, ["d.json"]),
    ("jsonl-nan-output", "d.jsonl", '{"conversation": [{"input": "x", "output": NaN}]}\n',
     ["d.jsonl", "line 1", "conversation[0].output"]),
]  # fmt: skip
for cid, name, content, culprit in DATA_CASES:
    case(f"data-train-{cid}", [*TRAIN, f"dataset={{root}}/{name}"], culprit, _data(name, content))
for cid in ("json-top-level-object", "jsonl-not-utf8", "json-deeply-nested", "jsonl-missing-output"):
    _, name, content, culprit = next(d for d in DATA_CASES if d[0] == cid)
    case(f"data-preview-{cid}", [*PREVIEW, f"dataset={{root}}/{name}"], culprit, _data(name, content))
for cid in ("json-top-level-object", "jsonl-not-utf8", "jsonl-bad-line"):
    _, name, content, culprit = next(d for d in DATA_CASES if d[0] == cid)
    case(f"data-eval-{cid}", EVAL(data=f"{{root}}/{name}"), culprit, _data(name, content))

case(
    "data-folder",
    [*TRAIN, "dataset={root}/data"],
    ["data", "folder"],
    lambda ctx: (ctx.root / "data").mkdir(),
)
case("data-folder-preview", [*PREVIEW, "dataset={root}/data.jsonl"], ["data.jsonl", "folder"],
     lambda ctx: (ctx.root / "data.jsonl").mkdir())  # fmt: skip
case(
    "data-folder-eval", EVAL(data="{root}/data"), ["data", "folder"], lambda ctx: (ctx.root / "data").mkdir()
)
case("data-missing", [*TRAIN, "dataset={root}/nope.jsonl"], ["nope.jsonl", "does not exist"])
case("data-missing-eval", EVAL(data="{root}/nope.jsonl"), ["nope.jsonl", "does not exist"])
case("data-unknown-demo", [*TRAIN, "dataset=demo://recipes"], ["demo://recipes"])
case("data-format-mismatch", [*TRAIN, "dataset={root}/data.jsonl", "dataset_format=alpaca"],
     ["data.jsonl", "line 1", "instruction"], lambda ctx: ctx.data())  # fmt: skip
case("data-every-row-invalid-skipped", [*TRAIN, "dataset={root}/d.jsonl", "skip_invalid_rows=true"],
     ["d.jsonl", "skip_invalid_rows"],
     _data("d.jsonl", '{"conversation": [{"input": "x"}]}\n{"conversation": []}\n'))  # fmt: skip
case("data-every-row-invalid-skipped-preview", [*PREVIEW, "dataset={root}/d.jsonl", "skip_invalid_rows=true"],
     ["d.jsonl", "skip_invalid_rows"], _data("d.jsonl", '{"conversation": [{"input": "x"}]}\n'))  # fmt: skip

# ========================================================================= model folders


def _bad_model_train(cid: str, fn, culprit, *extra: str) -> None:
    case(f"model-train-{cid}", [*TRAIN, "--model", "{bad}", "max_steps=1", *extra], culprit,
         lambda ctx: model_with(ctx, fn))  # fmt: skip


def _embed_of_another_vocab(key, tensor):
    import torch

    return torch.zeros(tensor.shape[0] // 2, tensor.shape[1]) if "embed_tokens" in key else tensor


def _drop_layer_1(key: str) -> str | None:
    return None if "layers.1." in key else key


def _gpt2_names(key: str) -> str:
    return key.replace("model.layers.", "transformer.h.").replace("model.embed_tokens", "transformer.wte")


def _extra_key(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    tensors["value_head.weight"] = torch.zeros(1, 4)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _shard(folder: Path, weight_map) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def _shard_truncated(folder: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    _shard(folder, {k: "model-00001-of-00001.safetensors" for k in keys})
    truncate(folder / "model-00001-of-00001.safetensors", 0.6)


MODEL_CASES = [
    ("config-not-json", lambda f: (f / "config.json").write_text("{model_type: llama"), ["config.json", "JSON"]),
    ("config-not-utf8", lambda f: (f / "config.json").write_bytes(b'{"model_type": "ll\xe1ma"}'),
     ["config.json"]),
    ("config-a-list", lambda f: (f / "config.json").write_text("[]"), ["config.json", "object"]),
    ("config-unknown-model-type", lambda f: edit_json(f / "config.json", lambda c: {**c, "model_type": "llama9"}),
     ["config.json", "llama9"]),
    ("config-vocab-mismatch", lambda f: edit_json(f / "config.json", lambda c: {**c, "vocab_size": 2048}),
     ["model.safetensors", "embed_tokens"]),
    ("weights-truncated", lambda f: truncate(f / "model.safetensors"), ["model.safetensors"]),
    ("weights-garbage", lambda f: (f / "model.safetensors").write_bytes(b"not safetensors at all" * 10),
     ["model.safetensors"]),
    ("weights-empty", lambda f: (f / "model.safetensors").write_bytes(b""), ["model.safetensors"]),
    ("weights-header-too-long", lambda f: (f / "model.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}"),
     ["model.safetensors"]),
    ("weights-header-not-json", lambda f: (f / "model.safetensors").write_bytes(struct.pack("<Q", 8) + b"{oops!!}"),
     ["model.safetensors"]),
    ("weights-wrong-shape", lambda f: rename_keys(f / "model.safetensors", lambda k: k, _embed_of_another_vocab),
     ["model.safetensors", "embed_tokens"]),
    ("weights-of-another-model", lambda f: rename_keys(f / "model.safetensors", _gpt2_names),
     ["model.safetensors", "missing", "model.layers.0"]),
    ("weights-missing-layer", lambda f: rename_keys(f / "model.safetensors", _drop_layer_1),
     ["model.safetensors", "missing", "model.layers.1"]),
    ("weights-unexpected-key", _extra_key, ["model.safetensors", "value_head.weight"]),
    ("weights-is-folder", lambda f: ((f / "model.safetensors").unlink(), (f / "model.safetensors").mkdir()),
     ["model.safetensors"]),
    ("no-weights", lambda f: (f / "model.safetensors").unlink(), ["no weights"]),
    ("pickle-weights-only", lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"),
     ["pytorch_model.bin", "allow_pickle_weights"]),
    ("index-not-json", lambda f: _shard(f, None) or (f / "model.safetensors.index.json").write_text("{"),
     ["model.safetensors.index.json"]),
    ("index-map-is-list", lambda f: _shard(f, ["model-00001-of-00001.safetensors"]),
     ["model.safetensors.index.json"]),
    ("index-shard-missing", lambda f: _shard(f, {"lm_head.weight": "model-00002-of-00002.safetensors"}),
     ["model-00002-of-00002.safetensors"]),
    ("index-shard-truncated", _shard_truncated, ["model-00001-of-00001.safetensors"]),
    ("tokenizer-json-corrupt", lambda f: truncate(f / "tokenizer.json", 0.3), ["tokenizer.json"]),
    ("tokenizer-json-empty-object", lambda f: (f / "tokenizer.json").write_text("{}"), ["tokenizer.json"]),
    ("tokenizer-json-not-utf8", lambda f: (f / "tokenizer.json").write_bytes(b'{"model": "\xff\xfe"}'),
     ["tokenizer.json"]),
    ("tokenizer-config-corrupt", lambda f: (f / "tokenizer_config.json").write_text('{"tokenizer_class": '),
     ["tokenizer_config.json"]),
    ("tokenizer-class-unknown",
     lambda f: edit_json(f / "tokenizer_config.json", lambda c: {**c, "tokenizer_class": "NoSuchTokenizer"}),
     ["tokenizer_config.json", "NoSuchTokenizer"]),
    ("tokenizer-files-missing", lambda f: [(f / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json",
     "special_tokens_map.json")], ["tokenizer"]),
    ("chat-template-syntax-error",
     lambda f: edit_json(f / "tokenizer_config.json", lambda c: {**c, "chat_template": "{% for m in messages %}"}),
     ["chat template"]),
    ("config-not-a-causal-lm", lambda f: edit_json(f / "config.json", lambda c: {**c, "model_type": "bert"}),
     ["config.json", "missing"]),  # a BERT config over Llama weights: no BERT weight is there
    ("config-hidden-size-word", lambda f: edit_json(f / "config.json", lambda c: {**c, "hidden_size": "wide"}),
     ["config.json", "hidden_size"]),
    ("config-vocab-size-negative", lambda f: edit_json(f / "config.json", lambda c: {**c, "vocab_size": -5}),
     ["config.json", "vocab_size"]),
    ("config-no-model-type", lambda f: edit_json(f / "config.json",
     lambda c: {k: v for k, v in c.items() if k != "model_type"}), ["config.json", "model_type"]),
    ("weights-offsets-wrong", lambda f: (f / "model.safetensors").write_bytes(
     safetensors_bytes({"lm_head.weight": ("F32", [4, 4])})[:-16] + b"\0" * 8), ["model.safetensors"]),
    ("weights-header-bad-entry", lambda f: (f / "model.safetensors").write_bytes(
     struct.pack("<Q", 16) + b'{"a": {"x": 1}} '), ["model.safetensors", "'a'"]),
    ("special-tokens-map-corrupt", lambda f: (f / "special_tokens_map.json").write_text("{bos"),
     ["special_tokens_map.json"]),
    ("chat-template-not-text",
     lambda f: edit_json(f / "tokenizer_config.json", lambda c: {**c, "chat_template": 42}), ["chat_template"]),
    ("generation-config-corrupt", lambda f: (f / "generation_config.json").write_text("{"),
     ["generation_config.json"]),
    ("chat-template-missing",
     lambda f: edit_json(f / "tokenizer_config.json", lambda c: {k: v for k, v in c.items() if k != "chat_template"}),
     ["chat_template", "template"]),
]  # fmt: skip
for cid, fn, culprit in MODEL_CASES:
    _bad_model_train(cid, fn, culprit)
CASES[
    -len(MODEL_CASES) + [m[0] for m in MODEL_CASES].index("tokenizer-class-unknown")
].skip_if = transformers_5
case("model-train-missing-folder", [*TRAIN, "--model", "{root}/nope"], ["nope", "no such folder"])
case("model-train-is-a-file", [*TRAIN, "--model", "{root}/model.bin"], ["model.bin", "not a folder"],
     _data("model.bin", b"\0" * 16))  # fmt: skip
case("model-train-no-config", [*TRAIN, "--model", "{root}"], ["config.json"])
case(
    "model-train-bad-repo-id", [*TRAIN, "model_name_or_path=hf://bad id!"], ["model_name_or_path", "bad id!"]
)
case("model-train-not-cached-offline", [*TRAIN, "model_name_or_path=nobody/nothing-7b"],
     ["nobody/nothing-7b", "HF_HUB_OFFLINE"])  # fmt: skip
case("model-train-unknown-demo", [*TRAIN, "model_name_or_path=demo://huge-llama"], ["demo://huge-llama"])
for cid in ("config-not-json", "tokenizer-json-corrupt", "tokenizer-config-corrupt", "config-a-list",
            "chat-template-syntax-error"):  # fmt: skip
    fn, culprit = next((m[1], m[2]) for m in MODEL_CASES if m[0] == cid)
    case(
        f"model-preview-{cid}",
        [*PREVIEW, "--model", "{bad}"],
        culprit,
        lambda ctx, fn=fn: model_with(ctx, fn),
    )
for cid in ("weights-truncated", "weights-of-another-model", "tokenizer-json-corrupt", "config-not-json"):
    fn, culprit = next((m[1], m[2]) for m in MODEL_CASES if m[0] == cid)
    case(f"model-eval-{cid}", ["eval", "--device", "cpu", "--model", "{bad}", "--dataset", "demo://counselling",
         "--output", "{root}/eval.json"], culprit, lambda ctx, fn=fn: model_with(ctx, fn))  # fmt: skip
for cid in ("weights-garbage", "weights-wrong-shape", "chat-template-syntax-error", "chat-template-missing",
            "generation-config-corrupt", "chat-template-not-text"):  # fmt: skip
    fn, culprit = next((m[1], m[2]) for m in MODEL_CASES if m[0] == cid)
    case(f"model-chat-{cid}", ["chat", "--device", "cpu", "--model", "{bad}", "--prompt", "hi"], culprit,
         lambda ctx, fn=fn: model_with(ctx, fn))  # fmt: skip
for cid in ("weights-missing-layer", "config-unknown-model-type", "index-shard-truncated"):
    fn, culprit = next((m[1], m[2]) for m in MODEL_CASES if m[0] == cid)
    case(f"model-merge-{cid}", MERGE("{adapter}", "{root}/merged", "--base", "{bad}"), culprit,
         lambda ctx, fn=fn: model_with(ctx, fn))  # fmt: skip

# ============================================================================== adapters


def _adapter_key_rename(folder: Path) -> None:
    rename_keys(folder / "adapter_model.safetensors", lambda k: k.replace("q_proj", "o_proj"))


def _adapter_rank_mismatch(folder: Path) -> None:
    import torch

    rename_keys(folder / "adapter_model.safetensors", lambda k: k,
                lambda k, v: torch.zeros(v.shape[0] * 2, v.shape[1]) if "lora_A" in k else v)  # fmt: skip


def _adapter_other_base(folder: Path) -> None:
    import torch

    rename_keys(folder / "adapter_model.safetensors", lambda k: k,
                lambda k, v: torch.zeros(v.shape[0], 64) if "lora_A" in k else v)  # fmt: skip


ADAPTER_CASES = [
    ("config-not-json", lambda f: (f / "adapter_config.json").write_text('{"peft_type": "LORA", r: 8'),
     ["adapter_config.json", "JSON"]),
    ("config-a-list", lambda f: (f / "adapter_config.json").write_text("[1, 2]"), ["adapter_config.json"]),
    ("config-not-utf8", lambda f: (f / "adapter_config.json").write_bytes(b'{"peft_type": "\xff"}'),
     ["adapter_config.json"]),
    ("config-no-peft-type", lambda f: edit_json(f / "adapter_config.json",
     lambda c: {k: v for k, v in c.items() if k != "peft_type"}), ["adapter_config.json", "peft_type"]),
    ("config-prefix-tuning", lambda f: edit_json(f / "adapter_config.json",
     lambda c: {**c, "peft_type": "PREFIX_TUNING"}), ["adapter_config.json", "PREFIX_TUNING"]),
    ("config-rank-zero", lambda f: edit_json(f / "adapter_config.json", lambda c: {**c, "r": 0}),
     ["adapter_config.json", "'r'"]),
    ("config-rank-word", lambda f: edit_json(f / "adapter_config.json", lambda c: {**c, "r": "eight"}),
     ["adapter_config.json", "'r'"]),
    ("config-no-targets", lambda f: edit_json(f / "adapter_config.json", lambda c: {**c, "target_modules": None}),
     ["adapter_config.json", "target_modules"]),
    ("config-targets-not-in-base", lambda f: edit_json(f / "adapter_config.json",
     lambda c: {**c, "target_modules": ["c_attn"]}), ["c_attn"]),
    ("weights-missing", lambda f: (f / "adapter_model.safetensors").unlink(), ["adapter_model.safetensors"]),
    ("weights-truncated", lambda f: truncate(f / "adapter_model.safetensors"), ["adapter_model.safetensors"]),
    ("weights-garbage", lambda f: (f / "adapter_model.safetensors").write_bytes(b"\0" * 100),
     ["adapter_model.safetensors"]),
    ("weights-rank-mismatch", _adapter_rank_mismatch, ["adapter_model.safetensors", "lora_A"]),
    ("weights-of-another-base", _adapter_other_base, ["adapter_model.safetensors", "lora_A"]),
    ("weights-for-other-modules", _adapter_key_rename, ["adapter_model.safetensors", "q_proj"]),
    ("run-config-not-yaml", lambda f: (f / "run_config.yaml").write_text("model_name_or_path: [oops\n"),
     ["run_config.yaml"]),
    ("run-config-a-list", lambda f: (f / "run_config.yaml").write_text("- a\n- b\n"), ["run_config.yaml"]),
    ("run-config-base-gone", lambda f: (f / "run_config.yaml").write_text("model_name_or_path: /nonexistent/base\n"),
     ["/nonexistent/base", "run_config.yaml", "--base"]),
    ("tokenizer-config-corrupt", lambda f: (f / "tokenizer_config.json").write_text("{"),
     ["tokenizer_config.json"]),
]  # fmt: skip
for cid, fn, culprit in ADAPTER_CASES:
    case(f"adapter-merge-{cid}", MERGE("{bad}"), culprit, lambda ctx, fn=fn: adapter_with(ctx, fn))
for cid in ("config-not-json", "config-a-list", "weights-truncated", "weights-missing", "weights-for-other-modules",
            "run-config-not-yaml", "config-no-peft-type"):  # fmt: skip
    fn, culprit = next((a[1], a[2]) for a in ADAPTER_CASES if a[0] == cid)
    case(f"adapter-chat-{cid}", CHAT("{bad}"), culprit, lambda ctx, fn=fn: adapter_with(ctx, fn))
for cid in (
    "config-not-json",
    "weights-garbage",
    "weights-rank-mismatch",
    "run-config-a-list",
    "config-rank-zero",
):
    fn, culprit = next((a[1], a[2]) for a in ADAPTER_CASES if a[0] == cid)
    case(f"adapter-eval-{cid}", EVAL("{bad}"), culprit, lambda ctx, fn=fn: adapter_with(ctx, fn))
case("adapter-eval-run-config-cutoff-word", EVAL("{bad}"), ["run_config.yaml", "cutoff_len"],
     lambda ctx: adapter_with(ctx, lambda f: (f / "run_config.yaml").open("a").write("cutoff_len: long\n")))  # fmt: skip
case("adapter-merge-missing-folder", MERGE("{root}/nope"), ["nope"])
case("adapter-merge-base-not-cached", MERGE("{adapter}", "{root}/merged", "--base", "hf://nobody/nothing-7b"),
     ["nobody/nothing-7b", "HF_HUB_OFFLINE"])  # fmt: skip
case("adapter-eval-cutoff-drops-everything", [*EVAL(), "--cutoff-len", "1"], ["cutoff"])
case("adapter-merge-is-a-file", MERGE("{root}/adapter.bin"), ["adapter.bin"], _data("adapter.bin", b"x"))
case("adapter-merge-not-an-adapter", MERGE("{root}"), ["adapter_config.json"])
case("adapter-chat-compare-without-adapter", ["chat", "--device", "cpu", "--model", "{model}", "--compare",
     "--prompt", "hi"], ["--compare", "--adapter"])  # fmt: skip
case("adapter-chat-nothing-given", ["chat", "--device", "cpu", "--prompt", "hi"], ["--model", "--adapter"])
case("adapter-eval-nothing-given", ["eval", "--device", "cpu", "--dataset", "demo://counselling"],
     ["--model", "--adapter"])  # fmt: skip

# =========================================================================== outputs


def _file(name: str):
    return _data(name, "a file\n")


case("output-train-is-a-file", [*TRAIN[:-1], "output_dir={root}/out"], ["out", "not a folder"], _file("out"))
case("output-train-under-a-file", [*TRAIN[:-1], "output_dir={root}/f/out"], ["f/out", "file"], _file("f"))
case("output-train-read-only", [*TRAIN[:-1], "output_dir={root}/ro/out"], ["ro/out", "read-only"],
     lambda ctx: (ctx.root / "ro").mkdir(), inject="readonly:{root}/ro")  # fmt: skip
case("output-train-nested-new-folders", [*TRAIN[:-1], "output_dir={root}/new/deeper/out", "dataset={root}/nope.jsonl"],
     ["nope.jsonl"])  # fmt: skip
case("output-train-nested-new-folders-bad-weights", [*TRAIN[:-1], "output_dir={root}/new/deeper/out", "--model", "{bad}"],
     ["model.safetensors"], lambda ctx: model_with(ctx, lambda f: truncate(f / "model.safetensors")))  # fmt: skip
case("output-train-holds-a-run", [*TRAIN[:-1], "output_dir={root}/out", "overwrite_output_dir=false"], ["out", "overwrite_output_dir"],
     _data("out/trainer_log.jsonl", "{}\n"))  # fmt: skip
case("output-parity-run-under-a-file", ["parity", "run", "--device", "cpu", "--output-dir", "{root}/f/out"],
     ["f/out", "file"], _file("f"))  # fmt: skip
case("output-parity-run-missing", ["parity", "run", "--device", "cpu"], ["--output-dir"])
case("output-merge-is-a-file", MERGE("{adapter}", "{root}/merged"), ["merged", "is a file"], _file("merged"))
case("output-merge-not-empty", MERGE("{adapter}", "{root}/merged"), ["merged", "not empty"],
     _file("merged/keep.txt"))  # fmt: skip
case("output-merge-under-a-file", MERGE("{adapter}", "{root}/f/merged"), ["f/merged", "file"], _file("f"))
case("output-merge-read-only", MERGE("{adapter}", "{root}/ro/merged"), ["ro/merged", "read-only"],
     lambda ctx: (ctx.root / "ro").mkdir(), inject="readonly:{root}/ro")  # fmt: skip
case("output-merge-disk-full", MERGE("{adapter}", "{root}/merged"), ["merged", "no space left"],
     inject="diskfull:{root}")  # fmt: skip
case("output-eval-is-a-folder", EVAL(output="{root}/results"), ["results", "folder"],
     lambda ctx: (ctx.root / "results").mkdir())  # fmt: skip
case("output-eval-under-a-file", EVAL(output="{root}/f/eval.json"), ["f/eval.json", "file"], _file("f"))
case("output-eval-read-only", EVAL(output="{root}/ro/eval.json"), ["ro/eval.json", "read-only"],
     lambda ctx: (ctx.root / "ro").mkdir(), inject="readonly:{root}/ro")  # fmt: skip
case("output-eval-default-read-only", EVAL("{bad}", output="{bad}/x")[:-2], ["duotune_eval.json", "--output"],
     lambda ctx: adapter_with(ctx, lambda f: None), inject="readonly:{root}/adapter")  # fmt: skip
case("output-parity-default-report-read-only", ["parity", "compare", "{bad}", "golden:demo"], ["{bad}", "--report"],
     lambda ctx: run_with(ctx, lambda f: None), inject="readonly:{root}/run")  # fmt: skip
case("output-eval-disk-full", EVAL(output="{root}/eval.json"), ["eval.json", "no space left"],
     inject="diskfull:{root}")  # fmt: skip
case("output-preview-jsonl-is-a-folder", [*PREVIEW, "--jsonl", "{root}/enc"], ["--jsonl"],
     lambda ctx: (ctx.root / "enc").mkdir(), usage=True)  # fmt: skip
case("output-preview-jsonl-under-a-file", [*PREVIEW, "--jsonl", "{root}/f/enc.jsonl"], ["f/enc.jsonl", "file"],
     _file("f"))  # fmt: skip
case("output-preview-jsonl-read-only", [*PREVIEW, "--jsonl", "{root}/ro/enc.jsonl"], ["ro/enc.jsonl", "read-only"],
     lambda ctx: (ctx.root / "ro").mkdir(), inject="readonly:{root}/ro")  # fmt: skip
case("output-preview-jsonl-disk-full", [*PREVIEW, "--jsonl", "{root}/enc.jsonl"], ["enc.jsonl", "no space left"],
     inject="diskfull:{root}")  # fmt: skip
case("output-parity-report-under-a-file", COMPARE("{run}", "golden:demo")[:-1] + ["{root}/f/report"],
     ["f/report", "file"], _file("f"))  # fmt: skip
case("output-parity-report-is-a-file", COMPARE("{run}", "golden:demo")[:-1] + ["{root}/report.md"],
     ["report.md", "not a folder"], _file("report.md"))  # fmt: skip
case("output-parity-report-read-only", COMPARE("{run}", "golden:demo")[:-1] + ["{root}/ro/report"],
     ["ro/report", "read-only"], lambda ctx: (ctx.root / "ro").mkdir(), inject="readonly:{root}/ro")  # fmt: skip
case("output-download-local-dir-under-a-file", ["download", "org/model", "--local-dir", "{root}/f/m"],
     ["f/m", "file"], _file("f"))  # fmt: skip
case("output-download-cache-dir-is-a-file", ["download", "org/model", "--cache-dir", "{root}/cache"],
     ["cache", "not a folder"], _file("cache"))  # fmt: skip

# ============================================================================ download

case("download-relative-path", ["download", "./models/qwen"], ["./models/qwen", "hub"])
case("download-existing-folder", ["download", "{model}"], ["{model}", "local folder"])
case("download-three-parts", ["download", "a/b/c"], ["a/b/c"])
case("download-bad-characters", ["download", "org/bad name!"], ["org/bad name!"])
case("download-modelers-without-org", ["download", "modelers://qwen"], ["modelers://qwen", "ORG/NAME"])
case("download-demo", ["download", "demo://tiny-llama"], ["demo://tiny-llama"])
case("download-empty-hf-id", ["download", "hf://"], ["hf://"])
case("download-bad-hub-env", ["download", "org/model"], ["DUOTUNE_HUB"], env={"DUOTUNE_HUB": "github"})
case(
    "download-offline-not-cached", ["download", "nobody/nothing-7b"], ["nobody/nothing-7b", "HF_HUB_OFFLINE"]
)
case("download-bad-hub-flag", ["download", "org/model", "--hub", "github"], ["--hub"], usage=True)
for cid in ("relative-path", "three-parts", "bad-characters"):
    c = next(x for x in CASES if x.id == f"download-{cid}")
    assert not any("model_name_or_path" in s for s in c.culprit)

# ================================================================================= env

case("env-unknown-device", ["env", "--device", "tpu"], ["--device"], usage=True)
case("env-unknown-option", ["env", "--verbose"], ["--verbose"], usage=True)
case("env-npu-not-available", ["env", "--device", "npu"], ["npu"], skip_if=device_present("npu"))
case(
    "env-cuda-not-available-json",
    ["env", "--device", "cuda", "--json"],
    ["cuda"],
    skip_if=device_present("cuda"),
)
case("env-mps-not-available", ["env", "--device", "mps"], ["mps"], skip_if=device_present("mps"))
case("train-cuda-not-available", [*TRAIN[:1], "--device", "cuda", "report_to=none", "output_dir={root}/out"],
     ["cuda"], skip_if=device_present("cuda"))  # fmt: skip

# =========================================================================== parity compare


def _log(text: str | bytes):
    def edit(folder: Path) -> None:
        path = folder / "trainer_log.jsonl"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return edit


GOOD_LINE = '{"current_steps": 1, "total_steps": 2, "loss": 6.0, "learning_rate": 0.0}\n'
PARITY_CASES = [
    ("log-garbage", _log("this is not json\n"), ["trainer_log.jsonl", "line 1"]),
    ("log-garbage-line-2", _log(GOOD_LINE + '{"current_steps": 2, "loss": \n'), ["trainer_log.jsonl", "line 2"]),
    ("log-not-utf8", _log(b'{"loss": "\xff"}\n'), ["trainer_log.jsonl", "UTF-8"]),
    ("log-binary", _log(b"\x00\x01\x02\x03" * 50), ["trainer_log.jsonl"]),
    ("log-line-is-a-list", _log(GOOD_LINE + "[1, 2]\n"), ["trainer_log.jsonl", "line 2"]),
    ("log-no-step", _log('{"loss": 6.0}\n'), ["trainer_log.jsonl", "line 1", "current_steps"]),
    ("log-loss-is-text", _log('{"current_steps": 1, "loss": "six"}\n'), ["trainer_log.jsonl", "line 1", "loss"]),
    ("log-step-is-text", _log('{"current_steps": "one", "loss": 6.0}\n'),
     ["trainer_log.jsonl", "line 1", "current_steps"]),
    ("log-empty", _log(""), ["trainer_log.jsonl", "no loss"]),
    ("log-no-loss-lines", _log('{"current_steps": 1, "eval_loss": 6.0}\n'), ["trainer_log.jsonl", "no loss"]),
    ("log-is-a-folder", lambda f: ((f / "trainer_log.jsonl").unlink(), (f / "trainer_log.jsonl").mkdir()),
     ["trainer_log.jsonl"]),
    ("run-info-corrupt", lambda f: (f / "run_info.json").write_text('{"precision": '), ["run_info.json"]),
    ("run-info-a-list", lambda f: (f / "run_info.json").write_text("[]"), ["run_info.json"]),
    ("run-config-not-yaml", lambda f: (f / "run_config.yaml").write_text("seed: [42\n"), ["run_config.yaml", "line 1"]),
    ("run-config-not-utf8", lambda f: (f / "run_config.yaml").write_bytes(b"seed: \xff\n"), ["run_config.yaml", "UTF-8"]),
    ("run-config-a-list", lambda f: (f / "run_config.yaml").write_text("- seed\n"), ["run_config.yaml", "mapping"]),
    ("adapter-truncated", lambda f: truncate(f / "adapter_model.safetensors"), ["adapter_model.safetensors"]),
    ("adapter-garbage", lambda f: (f / "adapter_model.safetensors").write_bytes(b"garbage" * 9),
     ["adapter_model.safetensors"]),
]  # fmt: skip
for cid, fn, culprit in PARITY_CASES:
    case(f"parity-compare-{cid}", COMPARE(), culprit, lambda ctx, fn=fn: run_with(ctx, fn))
case("parity-compare-b-garbage", COMPARE("{run}", "{bad}"), ["trainer_log.jsonl", "{bad}"],
     lambda ctx: run_with(ctx, _log("garbage\n")))  # fmt: skip
case("parity-compare-missing", COMPARE("{root}/nope"), ["nope", "trainer_log.jsonl"])
case("parity-compare-unknown-golden", COMPARE("{run}", "golden:nope"), ["golden:nope"])
