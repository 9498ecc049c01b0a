"""One training run, top to bottom: recipe -> backend -> tokenizer -> data -> model + LoRA -> Trainer
-> saved adapter, logs and plots.

Everything that can be wrong with the user's input (recipe, device, data, model folder, training
settings) is checked before the output directory is touched, so a refused run leaves nothing behind.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .console import echo, is_main_process, kv
from .errors import UserError
from .recipe import Recipe

__all__ = ["Plan", "RunResult", "make_plan", "prepare_data", "run_training", "RUN_CONFIG"]

RUN_CONFIG = "run_config.yaml"
RUN_INFO = "run_info.json"
# Files a run writes into output_dir; overwrite_output_dir removes exactly these (and checkpoint-*).
RUN_ARTIFACTS = (
    RUN_CONFIG,
    RUN_INFO,
    "trainer_log.jsonl",
    "training_loss.png",
    "training_eval_loss.png",
    "adapter_model.safetensors",
    "adapter_config.json",
    "trainer_state.json",
    "train_results.json",
    "eval_results.json",
    "all_results.json",
    "training_args.bin",
    "README.md",
)


@dataclass
class Plan:
    """What the backend decided for this run, and why (printed at the start of train)."""

    backend: Any
    device: str
    device_why: str
    precision: str
    precision_why: str
    attn_implementation: str
    attn_why: str
    framework: str
    framework_why: str

    def lines(self, framework_desc: str | None = None) -> list[tuple[str, str]]:
        return [
            ("device", f"{self.device} ({self.device_why})"),
            ("framework", f"{framework_desc or self.framework} ({self.framework_why})"),
            ("precision", f"{self.precision} ({self.precision_why})"),
            ("attention", f"{self.attn_implementation} ({self.attn_why})"),
        ]


def make_plan_device(device: str):
    """The backend a `--device` value selects (for `--nproc auto`)."""
    from backends import BackendError, select_backend

    try:
        return select_backend(device)[0]
    except BackendError as e:
        raise UserError(str(e)) from None


def make_plan(recipe: Recipe, device: str | None = None) -> Plan:
    """Pick the backend and let it decide device, precision and attention; pick the framework."""
    from backends import BackendError, select_backend

    from .framework import resolve_framework

    try:
        backend, why = select_backend(device or recipe.device)
    except BackendError as e:
        raise UserError(str(e)) from None
    wanted = recipe.requested_precision
    if wanted == "auto":
        precision, precision_why = backend.default_precision()
    else:
        support = backend.supports_precision(wanted)
        if not support.ok:
            raise UserError(f"compute_type {wanted} on {backend.name}: {support.reason}")
        precision, precision_why = wanted, "from the recipe"
    if recipe.attn_implementation == "auto":
        attn, attn_why = backend.attn_implementation(precision)
    else:
        attn, attn_why = recipe.attn_implementation, "from the recipe"
    _check_strategy(recipe, backend)
    framework, framework_why = resolve_framework(recipe.framework, backend.device_type)
    return Plan(
        backend, backend.device(), why, precision, precision_why, attn, attn_why, framework, framework_why
    )


def _check_strategy(recipe: Recipe, backend) -> None:
    """DeepSpeed and FSDP shard across accelerators; refuse them where they cannot run."""
    import importlib.util

    what = "deepspeed" if recipe.deepspeed else "fsdp" if recipe.fsdp else None
    if what is None:
        return
    if backend.name not in ("cuda", "npu"):
        raise UserError(
            f"{what} needs CUDA GPUs or Ascend NPUs, not {backend.name}; on {backend.name} train several "
            "processes with plain data parallelism instead (train --nproc N)"
        )
    if recipe.deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise UserError(
            "deepspeed is not installed: pip install deepspeed (on Ascend it runs through the Ascend adapter)"
        )
    if recipe.deepspeed:
        deepspeed_config(recipe.deepspeed)


def deepspeed_config(value: str) -> str:
    """`zero2` / `zero3` (shipped in configs/deepspeed/) or a path to a DeepSpeed JSON config."""
    import json

    from .recipe import configs_dir

    path = configs_dir() / "deepspeed" / f"{value}.json" if value in ("zero2", "zero3") else Path(value)
    if not path.is_file():
        raise UserError(f"deepspeed: {value!r} is neither zero2, zero3 nor an existing JSON file")
    try:
        json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"deepspeed config {path} is not valid JSON: {e}") from None
    return str(path)


def prepare_data(recipe: Recipe, tokenizer):
    from .encoding import encode_dataset

    return encode_dataset(
        recipe.dataset,
        tokenizer,
        dataset_format=recipe.dataset_format,
        cutoff_len=recipe.cutoff_len,
        max_samples=recipe.max_samples,
        skip_invalid_rows=recipe.skip_invalid_rows,
        num_proc=recipe.preprocessing_num_workers,
    )


def describe_data(data, template_desc: str) -> list[tuple[str, str]]:
    st = data.stats()
    dropped = sum(st["dropped"].values())
    pct = st["length_percentiles"]
    rows = [
        ("data", f"{data.formats}; template: {template_desc}" + (" (cached)" if data.cache_hit else "")),
        (
            "examples",
            f"{st['examples']} of {st['rows_read']} rows, {dropped} dropped, {st['truncated']} truncated; "
            f"{st['tokens']:,} tokens, {st['learned_tokens']:,} learned",
        ),
    ]
    if pct:
        rows.append(
            ("lengths", f"p50 {pct['p50']}, p90 {pct['p90']}, p99 {pct['p99']}, max {pct['max']} tokens")
        )
    for reason, n in sorted(st["dropped"].items()):
        rows.append(("dropped", f"{n} x {reason}"))
    return rows


def _split(dataset, val_size: float, seed: int):
    if not val_size:
        return dataset, None
    n = len(dataset)
    n_val = max(1, round(n * val_size))
    if n - n_val < 1:
        raise UserError(f"val_size {val_size} leaves no training examples out of {n}; lower val_size")
    parts = dataset.train_test_split(test_size=n_val, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def _check_output_dir(recipe: Recipe) -> None:
    out = Path(recipe.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} exists and is not a folder; choose another output_dir")
    if not out.is_dir() or recipe.resume_from_checkpoint or recipe.overwrite_output_dir:
        return
    leftovers = [p.name for p in out.iterdir() if p.name in RUN_ARTIFACTS or p.name.startswith("checkpoint-")]
    if leftovers:
        raise UserError(
            f"output_dir {out} already holds a run ({', '.join(sorted(leftovers)[:3])}, ...); set "
            "overwrite_output_dir=true to replace it, resume_from_checkpoint=auto to continue it, or choose "
            "another output_dir"
        )


def _clear_previous_run(out: Path) -> None:
    for p in out.iterdir():
        if p.name in RUN_ARTIFACTS and p.is_file():
            p.unlink()
        elif (p.name.startswith("checkpoint-") or p.name == "pissa_init") and p.is_dir():
            shutil.rmtree(p)


def main_process_first(backend):
    """In a multi-process run, let rank 0 do a cacheable step before the others (a no-op otherwise)."""
    import contextlib

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return contextlib.nullcontext()
    from accelerate import PartialState

    state = PartialState(cpu=backend.name == "cpu", backend=backend.dist_backend)
    return state.main_process_first()


def write_run_info(out: Path, plan: Plan, framework) -> None:
    """What ran where (read by `duotune parity compare` to choose its tolerances)."""
    import json
    import platform
    from importlib import metadata

    versions = {}
    for dist in ("torch", "transformers", "peft", "accelerate", "openmind", "torch-npu"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    info = {
        "device": plan.device,
        "backend": plan.backend.name,
        "precision": plan.precision,
        "attn_implementation": plan.attn_implementation,
        "framework": framework.describe(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "python": platform.python_version(),
        "versions": versions,
    }
    (out / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _resolve_resume(recipe: Recipe) -> str | None:
    from .lifecycle import check_checkpoint, last_complete_checkpoint

    if not recipe.resume_from_checkpoint:
        return None
    if recipe.resume_from_checkpoint == "auto":
        last = last_complete_checkpoint(recipe.output_dir)
        if last is None:
            echo(f"no complete checkpoint in {recipe.output_dir} to resume from: starting from the beginning")
            return None
        echo(f"resuming from {last}")
        return str(last)
    return str(check_checkpoint(Path(recipe.resume_from_checkpoint)))


@dataclass
class RunResult:
    output_dir: Path
    model: Any  # the trained PeftModel, still in memory
    trainer: Any
    metrics: dict[str, float]


def loss_average_note(framework, recipe: Recipe, world: int, micro_batches_per_epoch: int) -> str | None:
    """Where a run on transformers < 4.46 (the openMind stack) will not average the loss as newer
    versions do. duotune averages it per token over each update there too (framework._TokenMean),
    except under DeepSpeed or FSDP; and 4.45 lets an update run on into the next epoch where newer
    versions end it with the epoch."""
    ga = recipe.gradient_accumulation_steps
    if framework.transformers_major_minor >= (4, 46) or (ga == 1 and world == 1):
        return None
    version = f"transformers {framework.transformers_version}"
    if recipe.deepspeed or recipe.fsdp:
        return (
            f"{version} under {'DeepSpeed' if recipe.deepspeed else 'FSDP'} averages the loss per micro-batch "
            "and per process, not per token as transformers >= 4.46 does, so the updates differ slightly "
            "(`duotune parity compare` shows by how much)"
        )
    spans_epochs = (
        recipe.num_train_epochs > 1
        if recipe.max_steps <= 0
        else recipe.max_steps * ga > micro_batches_per_epoch
    )
    if ga > 1 and micro_batches_per_epoch % ga and spans_epochs:
        return (
            f"{micro_batches_per_epoch} micro-batches per epoch is not a multiple of gradient_accumulation_steps "
            f"{ga}: {version} carries an epoch's last, partial update into the next epoch, where transformers "
            ">= 4.46 ends it with the epoch, so runs of the two differ from the second epoch on"
        )
    return None


def run_training(recipe: Recipe, recipe_path: Path) -> RunResult:
    """Train, save everything to output_dir, and hand back what an in-process caller may inspect."""
    plan = make_plan(recipe)
    from .framework import build_training_args, load_framework, make_trainer
    from .model import apply_lora, count_parameters, load_model, load_tokenizer, resolve_model, save_tokenizer
    from .templates import apply_template_choice

    framework = load_framework(plan.framework)
    echo(f"recipe {recipe_path}")
    for key, value in plan.lines(framework.describe()):
        kv(key, value)
    world = int(os.environ.get("WORLD_SIZE", "1"))

    with main_process_first(plan.backend):  # one download / demo build, the other ranks reuse it
        source = resolve_model(recipe)
    kv("model", source.description)
    tokenizer = load_tokenizer(source, recipe)
    template_desc = apply_template_choice(tokenizer, recipe.template, recipe.model_name_or_path)

    with main_process_first(plan.backend):  # rank 0 tokenizes and caches; the others read the cache
        data = prepare_data(recipe, tokenizer)
    for key, value in describe_data(data, template_desc):
        kv(key, value)
    if data.num_examples == 0:
        raise UserError(
            "no example has a learned token (see 'dropped' above); check the data or raise cutoff_len"
        )
    train_ds, eval_ds = _split(
        data.dataset.select_columns(["input_ids", "labels"]), recipe.val_size, recipe.seed
    )

    _check_output_dir(recipe)
    resume = _resolve_resume(recipe)
    report_to = [t for t in recipe.report_to if t != "swanlab"]
    use_swanlab = recipe.swanlab_enabled
    if use_swanlab and framework.has_swanlab_integration:
        report_to.append("swanlab")
    args = build_training_args(
        framework,
        recipe,
        precision=plan.precision,
        has_eval=eval_ds is not None,
        report_to=report_to,
        extra=plan.backend.training_args_overrides(),
    )

    for note in plan.backend.setup({"npu_jit_compile": recipe.npu_jit_compile}):
        kv("backend", note)
    from transformers import set_seed

    set_seed(recipe.seed)  # LoRA's random init draws from the global generator: same seed, same adapter
    model = load_model(source, recipe, precision=plan.precision, attn_implementation=plan.attn_implementation)
    model = apply_lora(model, recipe)
    trainable, total = (
        model.get_nb_trainable_parameters()
        if hasattr(model, "get_nb_trainable_parameters")
        else count_parameters(model)
    )
    kv("parameters", f"{trainable:,} trainable of {total:,} ({100 * trainable / total:.4f}%)")
    micro_batches_per_epoch = math.ceil(math.ceil(len(train_ds) / world) / recipe.per_device_train_batch_size)
    steps_per_epoch = math.ceil(micro_batches_per_epoch / recipe.gradient_accumulation_steps)
    kv(
        "schedule",
        f"{len(train_ds)} train / {len(eval_ds) if eval_ds is not None else 0} eval examples, "
        f"~{steps_per_epoch} updates per epoch, "
        + (
            f"max_steps {recipe.max_steps}" if recipe.max_steps > 0 else f"{recipe.num_train_epochs:g} epochs"
        ),
    )

    note = loss_average_note(framework, recipe, world, micro_batches_per_epoch)
    if note:
        kv("note", note)

    # ---- nothing above wrote to output_dir; from here on the run is real
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():  # rank 0 alone owns the files of output_dir
        if recipe.overwrite_output_dir and not resume:
            _clear_previous_run(out)
        (out / RUN_CONFIG).write_text(recipe.to_yaml(), encoding="utf-8")
        write_run_info(out, plan, framework)

    from collators import Seq2SeqCollator

    from .lifecycle import GracefulStop, Interrupted, last_complete_checkpoint, make_lifecycle_callback
    from .tracking import make_log_callback, plot_losses, start_swanlab

    collator = Seq2SeqCollator.from_tokenizer(tokenizer, pad_to_multiple_of=recipe.pad_to_multiple_of)
    stop = GracefulStop()
    callbacks: list = [make_log_callback(out), make_lifecycle_callback(stop)]
    is_main = is_main_process()
    if use_swanlab and is_main:
        mode, why = start_swanlab(recipe, out)
        kv("swanlab", f"{mode} ({why})")
        if mode != "disabled" and not framework.has_swanlab_integration:
            from swanlab.integration.transformers import SwanLabCallback

            callbacks.append(SwanLabCallback())
    if recipe.pissa_init and not (out / "pissa_init").is_dir():
        model.save_pretrained(str(out / "pissa_init"))  # the reference for converting PiSSA back to LoRA

    trainer = make_trainer(
        framework,
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        tokenizer=tokenizer,
        callbacks=callbacks,
        loraplus_lr_ratio=recipe.loraplus_lr_ratio,
    )
    with stop:
        result = trainer.train(resume_from_checkpoint=resume)
    if stop.signum is not None:
        if use_swanlab and is_main:
            import swanlab

            swanlab.finish()
        raise Interrupted(stop.signum, trainer.state.global_step, last_complete_checkpoint(out))
    memory = plan.backend.memory_stats()
    if memory:
        kv("memory", ", ".join(f"{k.replace('_bytes', '')} {v / 2**30:.2f} GiB" for k, v in memory.items()))

    trainer.save_model(str(out))
    if recipe.pissa_init:
        model.save_pretrained(str(out), path_initial_model_for_weight_conversion=str(out / "pissa_init"))
    trainer.save_state()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    if eval_ds is not None:
        evaluated = [h["step"] for h in trainer.state.log_history if "eval_loss" in h]
        if not evaluated or evaluated[-1] != trainer.state.global_step:
            trainer.evaluate()  # the final model is always evaluated once
        final = [h for h in trainer.state.log_history if "eval_loss" in h][-1]
        metrics = {k: v for k, v in final.items() if k.startswith("eval_")}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if is_main:
        save_tokenizer(tokenizer, out)
        plots = plot_losses(out) if recipe.plot_loss else []
        if use_swanlab:
            import swanlab

            swanlab.finish()
        written = [
            "adapter_model.safetensors",
            "adapter_config.json",
            "tokenizer",
            RUN_CONFIG,
            "trainer_log.jsonl",
        ]
        written += [p.name for p in plots]
        echo(f"done: {', '.join(written)} and checkpoints are in {out.resolve()}")
    return RunResult(out, model, trainer, dict(result.metrics))
