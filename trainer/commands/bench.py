"""``duotune bench``: one LoRA run, side by side, through the pipeline users write today and through
duotune.

The plain pipeline is the seed tutorial's: a per-row ``Dataset.map`` that tokenizes each turn, labels
the replies, truncates to the cutoff; transformers' ``DataCollatorForSeq2Seq(padding=True)``; the
``Trainer``. duotune runs its defaults, then ``packing: true``. All use the same random-weight model,
the same synthetic conversations (trainer/demo/bench_data.py), seed, LoRA (all seven projections),
learning rate, schedule, gradient checkpointing and number of optimizer steps. Each run is a fresh
child process with a cold data cache; the runs alternate (plain, duotune, packing, plain, ...) so that
a busy machine slows them alike, and the table gives the median and the spread over the repeats.

Measured per run: wall time (data preparation, model loading, training, saving; imports excluded),
real (non-padding) tokens per second of the training loop (the Trainer's ``train_runtime``), padding
share, peak memory (resident set on CPU, allocated device memory on accelerators), and the loss on
held-out conversations, computed the same way for every pipeline (duotune's encoding, padded batches).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
from duotune.backends.registry import DEVICE_CHOICES

__all__ = ["BenchConfig", "bench_cmd", "check_overrides", "run_bench", "summarise"]

PIPELINES = ("plain", "duotune", "packing")
# duotune's runs and the recipe keys they add to its defaults; "padded" and "grouped" are there to compare
# duotune's padding-free default with the padded alternatives on a backend (not run by default)
DUOTUNE_PIPELINES = {
    "duotune": {},
    "packing": {"packing": True},
    "padded": {"padding_free": False},
    "grouped": {"padding_free": False, "group_by_length": True},
}
KNOWN_PIPELINES = ("plain", *DUOTUNE_PIPELINES)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class BenchConfig:
    output_dir: str = "saves/bench"
    device: str = "auto"
    shape: str = "auto"  # tiny on CPU, llama2-7b on an accelerator
    steps: int = 20
    batch_size: int = 8
    cutoff_len: int | None = None  # 1024 for tiny, 2048 for the 7B shapes
    conversations: int = 800
    heldout: float = 0.1
    lora_rank: int = 8
    learning_rate: float = 1e-3
    gradient_checkpointing: bool = True
    repeats: int = 3
    pipelines: tuple[str, ...] = PIPELINES
    seed: int = 42
    extra: dict[str, Any] = field(default_factory=dict)  # recipe keys for duotune's runs only


# ------------------------------------------------------------------------------------ orchestration


def run_bench(config: BenchConfig, isolate: bool = True) -> dict[str, Any]:
    """Prepare model and data, run every pipeline ``repeats`` times alternating, summarise.

    ``isolate`` runs each pipeline in a fresh child process (the benchmark); False runs them in this
    process (for tests)."""
    from duotune.trainer.common.console import echo

    work = Path(config.output_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    setup = _call(_prepare, config, work, isolate=isolate)
    config.shape, config.cutoff_len = setup["shape"], setup["cutoff_len"]
    echo(
        f"bench: {setup['shape']} model ({setup['parameters']:,} parameters) on {setup['device']}, "
        f"{setup['train']} train / {setup['heldout']} held-out conversations, batch {config.batch_size}, "
        f"{config.steps} steps, cutoff {config.cutoff_len}, LoRA r{config.lora_rank}, "
        f"{config.repeats} x {', '.join(config.pipelines)}"
    )
    runs = []
    for repeat in range(config.repeats):
        for pipeline in config.pipelines:
            result = _call(_run_pipeline, pipeline, repeat, config, work, isolate=isolate)
            runs.append(result)
            echo(
                f"bench: {pipeline:<8} #{repeat + 1}: wall {result['wall_s']:.1f} s, train "
                f"{result['train_s']:.1f} s ({result['train_cpu_s']:.0f} CPU-s), "
                f"{result['real_tokens_per_s']:,.0f} real tokens/s, padding "
                f"{100 * result['padding']:.1f}%, peak {result['peak_gib']:.2f} GiB, held-out loss "
                f"{result['eval_loss']:.4f}"
            )
    report = {"config": asdict(config), "setup": setup, "runs": runs, "summary": summarise(runs)}
    (work / "bench.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = format_table(report)
    (work / "bench.md").write_text(table + "\n", encoding="utf-8")
    click.echo(table)
    echo(f"bench: results in {work / 'bench.json'} and {work / 'bench.md'}")
    return report


def _call(function, *args, isolate: bool):
    """Run ``function(*args)`` in a fresh spawned child process (or here), returning its result."""
    if not isolate:
        return function(*args)
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue, function, args, os.getpid()), daemon=True)
    child.start()
    outcome = queue.get()
    child.join()
    if "user_error" in outcome:
        from duotune.trainer.common.errors import UserError

        raise UserError(*outcome["user_error"])
    if "error" in outcome:
        raise RuntimeError(f"bench: {function.__name__}{args[:2]} failed in its process:\n{outcome['error']}")
    return outcome["result"]


def _child(queue, function, args, parent: int) -> None:
    import threading

    def orphaned() -> None:  # a killed benchmark must not leave its current run training on
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    from duotune.trainer.common.errors import UserError

    try:
        queue.put({"result": function(*args)})
    except UserError as e:  # the user's mistake: the parent prints its one line
        queue.put({"user_error": e.problems})
    except BaseException:  # report anything else to the parent, which raises it
        import traceback

        queue.put({"error": traceback.format_exc()})


def _backend(config: BenchConfig):
    from duotune.trainer.run.plan import backend_for

    backend, _ = backend_for(config.device)
    return backend


def _prepare(config: BenchConfig, work: Path) -> dict[str, Any]:
    """The model folder and the data files (built once per output dir and shape)."""
    from duotune.trainer.demo.bench_data import build_bench_model, synthetic_conversations

    backend = _backend(config)
    precision = backend.default_precision()[0]
    shape = config.shape if config.shape != "auto" else ("llama2-7b" if backend.is_accelerator else "tiny")
    cutoff = config.cutoff_len or (1024 if shape == "tiny" else 2048)
    model_dir = work / f"model-{shape}"
    if not (model_dir / "config.json").is_file():
        dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
        build_bench_model(shape, model_dir, dtype=dtype, device=backend.device(), seed=config.seed)
    conversations = synthetic_conversations(
        config.conversations, seed=config.seed, max_turns=max(1, 8 * cutoff // 1024)
    )
    n_heldout = max(1, round(config.conversations * config.heldout))
    data = work / f"data-{config.conversations}-{cutoff}"
    data.mkdir(exist_ok=True)
    for name, rows in (
        ("train.json", conversations[n_heldout:]),
        ("heldout.json", conversations[:n_heldout]),
    ):
        (data / name).write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    weights = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    parameters = weights // (4 if precision == "fp32" else 2)
    return {
        "shape": shape,
        "cutoff_len": cutoff,
        "device": backend.device(),
        "precision": precision,
        "model_dir": str(model_dir),
        "data_dir": str(data),
        "train": len(conversations) - n_heldout,
        "heldout": n_heldout,
        "parameters": int(parameters),
    }


def _run_pipeline(pipeline: str, repeat: int, config: BenchConfig, work: Path) -> dict[str, Any]:
    """One timed run of ``pipeline``, then its held-out loss."""
    run_dir = work / "runs" / f"{pipeline}-{repeat}"
    os.environ["HF_DATASETS_CACHE"] = str(run_dir / "datasets-cache")  # every run prepares its data cold
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    backend = _backend(config)
    data = work / f"data-{config.conversations}-{config.cutoff_len}"
    model_dir = work / f"model-{config.shape}"
    start = time.perf_counter()
    train_cpu = _measure_trainer_cpu_time()
    if pipeline == "plain":
        model, tokenizer, counts = _plain_pipeline(config, model_dir, data / "train.json", run_dir, backend)
    else:
        model, tokenizer, counts = _duotune_pipeline(
            config, model_dir, data / "train.json", run_dir, DUOTUNE_PIPELINES[pipeline]
        )
    wall = time.perf_counter() - start
    peak = _peak_memory(backend)
    eval_loss = heldout_loss(model, tokenizer, data / "heldout.json", config.cutoff_len, config.batch_size)
    real, slots, train_s = counts["real"], counts["slots"], counts["train_s"]
    return {
        "pipeline": pipeline,
        "repeat": repeat,
        "wall_s": wall,
        "train_s": train_s,
        "train_cpu_s": train_cpu["seconds"],
        "real_tokens": real,
        "slots": slots,
        "real_tokens_per_s": real / train_s,
        "real_tokens_per_cpu_s": real / train_cpu["seconds"] if train_cpu["seconds"] else 0.0,
        "padding": 1.0 - real / slots if slots else 0.0,
        "peak_gib": peak / 2**30,
        "eval_loss": eval_loss,
    }


def _measure_trainer_cpu_time() -> dict[str, float]:
    """Record the processor time (all threads of this process) that ``Trainer.train`` takes, in every
    pipeline alike. On a machine other jobs share, wall time swings with their load; the processor time
    a run needs much less, so the report gives both."""
    from transformers import Trainer

    measured = {"seconds": 0.0}
    train = Trainer.train

    def timed(self, *args, **kwargs):
        start = time.process_time()
        try:
            return train(self, *args, **kwargs)
        finally:
            measured["seconds"] += time.process_time() - start

    Trainer.train = timed  # this benchmark child process only
    return measured


def _peak_memory(backend) -> int:
    stats = backend.memory_stats()
    return int(next((v for k, v in stats.items() if k.startswith("peak")), 0))


# ------------------------------------------------------------------------------------------ pipelines


def _plain_pipeline(config: BenchConfig, model_dir: Path, train_file: Path, run_dir: Path, backend):
    """The seed tutorial's pipeline, as users write it (per-row map, DataCollatorForSeq2Seq, Trainer)."""
    import torch
    from datasets import Dataset
    from duotune.trainer.model.load import dtype_kwarg
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    precision = backend.default_precision()[0]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    max_length = config.cutoff_len

    def process_func(example):
        input_ids, labels = [], []
        for i, turn in enumerate(example["conversation"]):
            system = f"{turn['system']}\n\n" if i == 0 and turn.get("system") else ""
            bos = tokenizer.bos_token if i == 0 else ""
            instruction = tokenizer(f"{bos}{system}User: {turn['input']}\n\n", add_special_tokens=False)
            response = tokenizer(f"Assistant: {turn['output']}", add_special_tokens=False)
            input_ids += instruction["input_ids"] + response["input_ids"] + [tokenizer.eos_token_id]
            labels += (
                [-100] * len(instruction["input_ids"]) + response["input_ids"] + [tokenizer.eos_token_id]
            )
        input_ids, labels = input_ids[:max_length], labels[:max_length]
        return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}

    rows = json.loads(train_file.read_text(encoding="utf-8"))
    dataset = Dataset.from_list(rows)
    dataset = dataset.map(process_func, remove_columns=dataset.column_names)

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **dtype_kwarg(dtype))
    if config.gradient_checkpointing:
        model.enable_input_require_grads()
    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        target_modules=LORA_TARGETS,
        r=config.lora_rank,
        lora_alpha=2 * config.lora_rank,
        lora_dropout=0.05,
    )
    model = get_peft_model(model, lora)
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    checkpointing = (
        "activation_checkpointing" if "activation_checkpointing" in known else "gradient_checkpointing"
    )
    args = TrainingArguments(
        output_dir=str(run_dir),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=1,
        max_steps=config.steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        logging_steps=1,
        save_strategy="no",
        seed=config.seed,
        report_to="none",
        remove_unused_columns=False,
        use_cpu=not backend.is_accelerator,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        disable_tqdm=True,
        **{checkpointing: config.gradient_checkpointing},  # transformers 5.2x renamed the switch
    )
    collator = _CountingCollator(DataCollatorForSeq2Seq(tokenizer=tokenizer, padding=True), config.steps)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    result = trainer.train()
    model.save_pretrained(str(run_dir))  # the tutorial saves its adapter too
    counts = {
        "real": collator.real,
        "slots": collator.slots,
        "train_s": float(result.metrics["train_runtime"]),
    }
    return model, tokenizer, counts


class _CountingCollator:
    """Wraps the tutorial's collator to count the tokens of the first ``steps`` batches (the ones
    trained on: the data loader may collate one batch ahead), changing nothing."""

    def __init__(self, collator, steps: int) -> None:
        self.collator, self.steps = collator, steps
        self.batches = self.real = self.slots = 0

    def __call__(self, features):
        batch = self.collator(features)
        if self.batches < self.steps:
            self.real += int(batch["attention_mask"].sum())
            self.slots += int(batch["input_ids"].numel())
        self.batches += 1
        return batch


def _duotune_pipeline(config: BenchConfig, model_dir: Path, train_file: Path, run_dir: Path, keys: dict):
    import yaml
    from duotune.trainer.recipe import load_recipe
    from duotune.trainer.run.workflow import run_training

    keys = duotune_recipe_keys(config, model_dir, train_file, run_dir, keys)
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe_file = run_dir / "bench_recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(keys, sort_keys=False), encoding="utf-8")
    recipe, path = load_recipe(recipe_file)
    result = run_training(recipe, path)
    metrics = result.metrics
    real = float(metrics["train_real_tokens"])
    padding = float(metrics["train_padding_fraction"])
    counts = {"real": real, "slots": real / (1.0 - padding), "train_s": float(metrics["train_runtime"])}
    trainer = result.trainer
    return result.model, getattr(trainer, "processing_class", None) or trainer.tokenizer, counts


def duotune_recipe_keys(config: BenchConfig, model_dir: Path, train_file: Path, run_dir: Path, keys: dict):
    """The recipe of one of duotune's runs: the shared settings, the pipeline's ``keys``, then the
    user's KEY=VALUE pairs."""
    return {
        **keys,
        "model_name_or_path": str(model_dir),
        "dataset": [str(train_file)],
        "device": config.device,
        "cutoff_len": config.cutoff_len,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": 1,
        "max_steps": config.steps,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "cosine",
        "lora_rank": config.lora_rank,
        "lora_alpha": 2 * config.lora_rank,
        "lora_dropout": 0.05,
        "lora_target": "all",
        "gradient_checkpointing": config.gradient_checkpointing,
        "logging_steps": 1,
        "save_steps": 10**9,
        "output_dir": str(run_dir),
        "overwrite_output_dir": True,
        "report_to": "none",
        "plot_loss": False,
        "seed": config.seed,
        **config.extra,
    }


def check_overrides(config: BenchConfig) -> None:
    """The KEY=VALUE pairs checked as `train` checks a recipe (recipe_problems), in each of duotune's
    pipelines, before anything is built or run. Raises UserError naming the key."""
    from duotune.trainer.common.errors import UserError
    from duotune.trainer.recipe import recipe_problems

    origin = "KEY=VALUE"
    problems: list[str] = []
    for pipeline in [p for p in config.pipelines if p in DUOTUNE_PIPELINES] or ["duotune"]:
        keys = duotune_recipe_keys(
            config, Path("model"), Path("train.json"), Path("run"), DUOTUNE_PIPELINES[pipeline]
        )
        for problem in recipe_problems({k: v for k, v in keys.items() if v is not None}, origin):
            # a key's own problem is the same in every pipeline; a combination names the pipeline
            message = problem if f"({origin})" in problem else f"{problem} (in the {pipeline} runs)"
            if message not in problems:
                problems.append(message)
        if problems:  # the first pipeline that fails says it
            break
    if problems:
        raise UserError(
            f"bench: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )


def heldout_loss(model, tokenizer, heldout_file: Path, cutoff_len: int, batch_size: int) -> float:
    """Mean loss per learned token on the held-out conversations, encoded by duotune for every
    pipeline and evaluated in padded batches, so all pipelines are measured alike."""
    from duotune.collators import Seq2SeqCollator
    from duotune.trainer.commands.evaluate import token_losses
    from duotune.trainer.data.encode import ChatEncoder
    from duotune.trainer.data.load import row_to_messages

    rows = json.loads(heldout_file.read_text(encoding="utf-8"))
    encoder = ChatEncoder(tokenizer, cutoff_len)
    encoded = encoder.encode_texts([row_to_messages(row, "conversation") for row in rows])
    encoded = [e for e in encoded if e["num_learned"]]
    collator = Seq2SeqCollator.from_tokenizer(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = collator(encoded[start : start + batch_size])
        nll, n = token_losses(model, {k: v.to(device) for k, v in batch.items()})
        total, count = total + nll, count + n
    return total / count


# -------------------------------------------------------------------------------------------- report


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and spreads per pipeline, and each run's ratio to the plain run of the same repeat."""
    by_pipeline: dict[str, list[dict]] = {}
    for run in runs:
        by_pipeline.setdefault(run["pipeline"], []).append(run)
    plain = {r["repeat"]: r for r in by_pipeline.get("plain", [])}
    summary: dict[str, Any] = {}
    for pipeline, rows in by_pipeline.items():
        entry = {
            key: _spread([r[key] for r in rows])
            for key in (
                "wall_s",
                "train_s",
                "real_tokens_per_s",
                "real_tokens_per_cpu_s",
                "padding",
                "peak_gib",
                "eval_loss",
            )
        }
        paired = [(r, plain[r["repeat"]]) for r in rows if r["repeat"] in plain and pipeline != "plain"]
        if paired:
            entry["vs_plain"] = {
                "real_tokens_per_s": _spread(
                    [r["real_tokens_per_s"] / p["real_tokens_per_s"] for r, p in paired]
                ),
                "real_tokens_per_cpu_s": _spread(
                    [r["real_tokens_per_cpu_s"] / p["real_tokens_per_cpu_s"] for r, p in paired]
                ),
                "wall_s": _spread([r["wall_s"] / p["wall_s"] for r, p in paired]),
                "eval_loss": _spread([r["eval_loss"] / p["eval_loss"] - 1.0 for r, p in paired]),
            }
        summary[pipeline] = entry
    return summary


def _ratio(ratios: dict | None, key: str, percent: bool = False) -> str:
    if not ratios:
        return "1"
    r = ratios[key]
    if percent:
        return f"{100 * r['median']:+.2f}% [{100 * r['min']:+.2f} .. {100 * r['max']:+.2f}]"
    return f"{r['median']:.2f}x [{r['min']:.2f} - {r['max']:.2f}]"


def format_table(report: dict[str, Any]) -> str:
    """The Markdown table of docs/performance.md: medians over the repeats, [min - max] for ratios."""
    summary = report["summary"]
    lines = [
        "| pipeline | wall s | train s | real tokens/s | tokens per CPU-s | padding | peak GiB | held-out loss "
        "| tokens/s vs plain | tokens per CPU-s vs plain | wall vs plain | loss vs plain |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for pipeline, entry in summary.items():
        ratios = entry.get("vs_plain")
        lines.append(
            f"| {pipeline} | {entry['wall_s']['median']:.1f} | {entry['train_s']['median']:.1f} "
            f"| {entry['real_tokens_per_s']['median']:,.0f} | {entry['real_tokens_per_cpu_s']['median']:,.0f} "
            f"| {100 * entry['padding']['median']:.1f}% | {entry['peak_gib']['median']:.2f} "
            f"| {entry['eval_loss']['median']:.4f} | {_ratio(ratios, 'real_tokens_per_s')} "
            f"| {_ratio(ratios, 'real_tokens_per_cpu_s')} | {_ratio(ratios, 'wall_s')} "
            f"| {_ratio(ratios, 'eval_loss', percent=True)} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- command


@click.command("bench", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--device", type=click.Choice(list(DEVICE_CHOICES)), default="auto", show_default=True)
@click.option(
    "--shape",
    type=click.Choice(["auto", "tiny", "llama2-7b", "qwen2.5-7b"]),
    default="auto",
    show_default=True,
    help="Model shape, random weights: auto = tiny on CPU, llama2-7b on an accelerator.",
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=20, show_default=True, help="Optimizer steps per run."
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Micro-batch size."
)
@click.option(
    "--cutoff-len", type=click.IntRange(min=16), default=None, help="Default: 1024 (tiny), 2048 (7B)."
)
@click.option("--conversations", type=click.IntRange(min=20), default=800, show_default=True)
@click.option("--lora-rank", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Runs per pipeline."
)
@click.option(
    "--pipelines",
    default=",".join(PIPELINES),
    show_default=True,
    help="Comma-separated, run in this order each repeat; also padded (duotune with padding_free: false) "
    "and grouped (padded, group_by_length: true).",
)
@click.option("--output-dir", default="saves/bench", show_default=True, help="Model, data, runs and results.")
@click.option(
    "--no-gradient-checkpointing",
    "no_checkpointing",
    is_flag=True,
    help="Train without gradient checkpointing.",
)
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def bench_cmd(
    device, shape, steps, batch_size, cutoff_len, conversations, lora_rank, repeats, pipelines, output_dir,
    no_checkpointing, overrides,
):  # fmt: skip
    """Time the seed tutorial's pipeline against duotune's on the same LoRA run.

    KEY=VALUE pairs are recipe keys for duotune's runs (for example flash_attn=sdpa).

    \b
    Examples:
      duotune bench                                  # CPU: tiny Llama, 3 x (plain, duotune, packing)
      duotune bench --device cuda --shape qwen2.5-7b --steps 10 --repeats 2
    """
    from duotune.trainer.recipe import parse_overrides

    names = tuple(p.strip() for p in pipelines.split(",") if p.strip())
    unknown = [p for p in names if p not in KNOWN_PIPELINES]
    if unknown or not names:
        raise click.BadParameter(f"use some of {', '.join(KNOWN_PIPELINES)}", param_hint="--pipelines")
    config = BenchConfig(
        output_dir=output_dir,
        device=device,
        shape=shape,
        steps=steps,
        batch_size=batch_size,
        cutoff_len=cutoff_len,
        conversations=conversations,
        lora_rank=lora_rank,
        repeats=repeats,
        pipelines=names,
        gradient_checkpointing=not no_checkpointing,
    )
    config.extra = parse_overrides(overrides)
    check_overrides(config)
    run_bench(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(bench_cmd())
