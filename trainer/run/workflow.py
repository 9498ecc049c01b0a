"""One training run, top to bottom: plan -> output dir -> tokenizer -> data -> model + LoRA (batch layout,
kernels) -> packing -> Trainer -> saved adapter, logs, throughput and plots.

Everything that can be wrong with the user's input (recipe, device, output dir, data, model folder,
training settings) is checked before the output directory is written to, so a refused run leaves
nothing behind. The output_dir lock is taken first, so a second run into the same folder is refused at
once. ``run_training`` reads as the list of steps; each step is a function below it.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duotune.trainer.common.console import echo, is_main_process, kv
from duotune.trainer.common.errors import UserError
from duotune.trainer.recipe import Recipe

__all__ = ["RunResult", "loss_average_note", "main_process_first", "run_training"]


@dataclass
class RunResult:
    output_dir: Path
    model: Any  # the trained PeftModel, still in memory
    trainer: Any
    metrics: dict[str, float]


@dataclass
class _Run:
    """What the steps of one run hand to each other."""

    recipe: Recipe
    plan: Any
    framework: Any
    out: Path
    world: int = 1
    resume: str | None = None
    source: Any = None
    tokenizer: Any = None
    template_desc: str = ""
    data_fingerprint: str = ""
    train_ds: Any = None
    eval_ds: Any = None
    model: Any = None
    use_swanlab: bool = False
    stop: Any = None  # the GracefulStop signal handlers of trainer.train()
    batching: Any = None  # trainer.model.attention.Batching, confirmed against the loaded model
    kernels: Any = None  # trainer.model.kernels.Kernels
    throughput: Any = None  # trainer.run.throughput.ThroughputMeter
    guard: Any = None  # the NonFiniteGuard watching every update
    trainer: Any = None
    opened: bool = False  # output_dir has been written to (run_status.json says how the run ends)
    swanlab_started: bool = False


def run_training(recipe: Recipe, recipe_path: Path) -> RunResult:
    """Train, save everything to output_dir, and hand back what an in-process caller may inspect."""
    run = plan_run(recipe, recipe_path)
    with output_dir_locked(run):  # and run_status.json says how the run ended, whatever ends it
        check_output(run)
        load_tokenizer(run)
        prepare_examples(run)
        args = training_arguments(run)
        load_model_with_lora(run)
        pack_examples(run)
        describe_schedule(run)
        # ---- nothing above wrote to output_dir; from here on the run is real
        open_output_dir(run)
        trainer = build_trainer(run, args)
        result = train(run, trainer)
        save_results(run, trainer, result)
        end_processes(run)
        return RunResult(run.out, run.model, trainer, dict(result.metrics))


# --------------------------------------------------------------------------------------------- steps


def plan_run(recipe: Recipe, recipe_path: Path) -> _Run:
    """Backend, device, precision, attention and framework, each printed with its reason."""
    from duotune.trainer.run.framework import load_framework
    from duotune.trainer.run.plan import make_plan

    plan = make_plan(recipe)
    framework = load_framework(plan.framework)
    echo(f"recipe {recipe_path}")
    for key, value in plan.lines(framework.describe()):
        kv(key, value)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    for note in plan.backend.preflight(world):  # before anything touches the device or the collectives
        kv("backend", note)
    return _Run(recipe, plan, framework, Path(recipe.output_dir), world=world)


@contextlib.contextmanager
def output_dir_locked(run: _Run):
    """Hold output_dir's lock for the whole run; once output_dir is written to, record in
    run_status.json how the run ended (completed, interrupted, diverged, failed)."""
    from duotune.trainer.run.lifecycle import write_failure
    from duotune.trainer.run.lock import lock_for_run

    lock = lock_for_run(run.out).acquire()
    if lock.took_over:
        echo(f"output_dir lock of an earlier run that died (pid {lock.took_over.get('pid')}) taken over")
    try:
        yield
        _record_status(run, "completed", exit_code=0)
    except BaseException as e:
        error = e
        if isinstance(e, OSError) and _inside(e.filename, run.out):  # e.g. trainer_log.jsonl on a full disk
            error = write_failure(e, run.out, "to output_dir") or e
        _record_failure(run, error)
        _close_progress_bar(run)
        _finish_swanlab(run, failed=True)
        if error is not e:
            raise error from None
        raise
    finally:
        lock.release()


def check_output(run: _Run) -> None:
    """Refuse an unusable output_dir, and find the checkpoint to resume from, before anything loads."""
    from duotune.trainer.run.outputs import check_output_dir

    check_output_dir(run.recipe)
    run.resume = _resolve_resume(run.recipe)


def load_tokenizer(run: _Run) -> None:
    """Find the model (download it on rank 0 first), load its tokenizer and settle the chat template."""
    from duotune.trainer.data.templates import apply_template_choice
    from duotune.trainer.model.load import load_tokenizer as load
    from duotune.trainer.model.load import resolve_model

    with main_process_first(run.plan.backend):  # one download / demo build, the other ranks reuse it
        run.source = resolve_model(run.recipe)
    kv("model", run.source.description)
    run.tokenizer = load(run.source, run.recipe)
    run.template_desc = apply_template_choice(
        run.tokenizer, run.recipe.template, run.recipe.model_name_or_path
    )


def prepare_examples(run: _Run) -> None:
    """Encode the datasets (rank 0 first; the others read its cache) and split off validation."""
    from duotune.trainer.data.prepare import (
        describe_data,
        examples_fingerprint,
        prepare_data,
        split_validation,
    )

    with main_process_first(run.plan.backend):
        data = prepare_data(run.recipe, run.tokenizer)
    for key, value in describe_data(data, run.template_desc):
        kv(key, value)
    run.data_fingerprint = examples_fingerprint(data.dataset)
    if data.num_examples == 0:
        raise UserError(
            "no example has a learned token (see 'dropped' above); check the data or raise cutoff_len"
        )
    run.train_ds, run.eval_ds = split_validation(
        data.dataset.select_columns(["input_ids", "labels"]), run.recipe.val_size, run.recipe.seed
    )


def training_arguments(run: _Run):
    """TrainingArguments of the installed framework (refusing names it does not know)."""
    from duotune.trainer.model.kernels import Kernels, plan_liger
    from duotune.trainer.model.load import model_type
    from duotune.trainer.run.framework import build_training_args

    report_to = [t for t in run.recipe.report_to if t != "swanlab"]
    run.use_swanlab = run.recipe.swanlab_enabled
    if run.use_swanlab and run.framework.has_swanlab_integration:
        report_to.append("swanlab")
    liger, liger_why = plan_liger(run.recipe, run.plan.backend, model_type(run.source))
    run.kernels = Kernels(liger=liger, liger_why=liger_why)
    extra = run.plan.backend.training_args_overrides()
    if liger:
        extra["use_liger_kernel"] = True
    return build_training_args(
        run.framework,
        run.recipe,
        precision=run.plan.precision,
        has_eval=run.eval_ds is not None,
        report_to=report_to,
        deepspeed=run.plan.deepspeed_config,
        extra=extra,
    )


def load_model_with_lora(run: _Run) -> None:
    """Backend set-up, then the base model with the LoRA adapter on it (seeded: same seed, same init),
    its batch layout and kernels confirmed against the model."""
    from duotune.trainer.model.attention import enable_batching
    from duotune.trainer.model.kernels import apply_fast_dropout, apply_fused_ops, learned_logits_supported
    from duotune.trainer.model.load import apply_lora, count_parameters, load_model
    from transformers import set_seed

    for note in run.plan.backend.setup({"npu_jit_compile": run.recipe.npu_jit_compile}):
        kv("backend", note)
    set_seed(run.recipe.seed)  # LoRA's random init draws from the global generator
    model = load_model(
        run.source,
        run.recipe,
        precision=run.plan.precision,
        attn_implementation=run.plan.attn_implementation,
    )
    run.batching = enable_batching(model, run.plan.batching, run.recipe)
    kernels = run.kernels
    kernels.fused_ops, kernels.fused_ops_why = apply_fused_ops(run.recipe, run.plan.backend, model)
    run.model = apply_lora(model, run.recipe)
    kernels.fast_dropout, kernels.fast_dropout_why = apply_fast_dropout(
        run.recipe, run.plan.backend, run.model
    )
    kernels.learned_logits_only, kernels.learned_logits_why = learned_logits_supported(
        run.model, kernels.liger
    )
    kv("batching", run.batching.describe())
    kv("kernels", kernels.describe())
    trainable, total = (
        run.model.get_nb_trainable_parameters()
        if hasattr(run.model, "get_nb_trainable_parameters")
        else count_parameters(run.model)
    )
    kv("parameters", f"{trainable:,} trainable of {total:,} ({100 * trainable / total:.4f}%)")


def pack_examples(run: _Run) -> None:
    """packing: true packs the training examples into rows of up to cutoff_len tokens."""
    if not run.recipe.packing:
        return
    from duotune.trainer.data.pack import pack_dataset

    run.train_ds, stats = pack_dataset(run.train_ds, run.recipe.cutoff_len)
    kv("packing", stats.describe())


def describe_schedule(run: _Run) -> None:
    """Examples, updates per epoch and where the openMind stack averages the loss differently."""
    recipe = run.recipe
    micro_batches = math.ceil(math.ceil(len(run.train_ds) / run.world) / recipe.per_device_train_batch_size)
    steps_per_epoch = math.ceil(micro_batches / recipe.gradient_accumulation_steps)
    length = (
        f"max_steps {recipe.max_steps}" if recipe.max_steps > 0 else f"{recipe.num_train_epochs:g} epochs"
    )
    n_eval = len(run.eval_ds) if run.eval_ds is not None else 0
    kv(
        "schedule",
        f"{len(run.train_ds)} train {'rows' if recipe.packing else 'examples'} / {n_eval} eval examples, "
        f"~{steps_per_epoch} updates per epoch, {length}",
    )
    note = loss_average_note(run.framework, recipe, run.world, micro_batches)
    if note:
        kv("note", note)


def open_output_dir(run: _Run) -> None:
    """Create output_dir and record the resolved recipe and what runs where (rank 0 owns the files)."""
    from duotune.trainer.run.outputs import clear_previous_run, write_run_config, write_run_info

    run.out.mkdir(parents=True, exist_ok=True)
    run.opened = True
    if is_main_process():
        if run.recipe.overwrite_output_dir and not run.resume:
            clear_previous_run(run.out)
        _record_status(run, "running")
        write_run_config(run.out, run.recipe)
        write_run_info(run.out, run.plan, run.framework, data_fingerprint=run.data_fingerprint)


def build_trainer(run: _Run, args):
    """The collator, the throughput meter, the callbacks (log, lifecycle, SwanLab) and the Trainer."""
    from duotune.trainer.run.framework import make_trainer
    from duotune.trainer.run.guard import NonFiniteGuard, make_guard_callback
    from duotune.trainer.run.lifecycle import GracefulStop, make_lifecycle_callback
    from duotune.trainer.run.tracking import make_log_callback, start_swanlab

    recipe = run.recipe
    collator = _collator(run)
    run.throughput = _throughput_meter(run)
    run.stop = GracefulStop()
    run.guard = NonFiniteGuard(
        allowed_skips=recipe.skip_nonfinite_steps,
        precision=run.plan.precision,
        learning_rate=recipe.learning_rate,
        max_grad_norm=recipe.max_grad_norm,
    )
    callbacks: list = [
        make_log_callback(run.out),
        make_lifecycle_callback(run.stop, recipe.save_total_limit),
        make_guard_callback(run.guard),
    ]
    if run.use_swanlab and is_main_process():
        mode, why = start_swanlab(recipe, run.out)
        run.swanlab_started = mode != "disabled"
        kv("swanlab", f"{mode} ({why})")
        if mode != "disabled" and not run.framework.has_swanlab_integration:
            from swanlab.integration.transformers import SwanLabCallback

            callbacks.append(SwanLabCallback())
    if recipe.pissa_init and not (run.out / "pissa_init").is_dir():
        run.model.save_pretrained(str(run.out / "pissa_init"))  # the reference for converting PiSSA back
    run.trainer = make_trainer(
        run.framework,
        model=run.model,
        args=args,
        train_dataset=run.train_ds,
        eval_dataset=run.eval_ds,
        data_collator=collator,
        tokenizer=run.tokenizer,
        callbacks=callbacks,
        loraplus_lr_ratio=recipe.loraplus_lr_ratio,
        throughput=run.throughput,
        learned_logits_only=run.kernels.learned_logits_only,
        guard=run.guard,
    )
    return run.trainer


def train(run: _Run, trainer):
    """The Trainer's loop; a first Ctrl-C / SIGTERM ends it after a checkpoint (raises Interrupted).

    A checkpoint that cannot be written ends the run with WriteFailed; its half-written folder is removed
    and the last complete checkpoint stays the one to resume from."""
    from duotune.trainer.run.lifecycle import (
        Interrupted,
        last_complete_checkpoint,
        remove_incomplete_checkpoints,
        write_failure,
    )
    from duotune.trainer.run.throughput import describe

    try:
        with run.stop:
            result = trainer.train(resume_from_checkpoint=run.resume)
    except Exception as e:
        failure = write_failure(e, run.out, f"checkpoint or log at step {trainer.state.global_step}")
        if failure is None:
            raise
        if is_main_process():
            remove_incomplete_checkpoints(run.out)
        raise failure from None
    if run.stop.signum is not None:
        raise Interrupted(run.stop.signum, trainer.state.global_step, last_complete_checkpoint(run.out))
    summary = run.throughput.summary()  # every process takes part (the counts are summed over them)
    kv("throughput", describe(summary))
    result.metrics.update({f"train_{key}": value for key, value in summary.items()})
    memory = run.plan.backend.memory_stats()
    if memory:
        kv("memory", ", ".join(f"{k.replace('_bytes', '')} {v / 2**30:.2f} GiB" for k, v in memory.items()))
    return result


def end_processes(run: _Run) -> None:
    """In a multi-process run, every process waits for rank 0's saving, then the collective group is
    closed: a process that exits with the group still open can abort in the collective library's
    threads ("terminate called without an active exception") and fail a finished run."""
    import torch.distributed as dist

    if run.world > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def save_results(run: _Run, trainer, result) -> None:
    """Adapter, trainer state, metrics, the final evaluation, tokenizer and plots."""
    from duotune.trainer.model.load import save_tokenizer
    from duotune.trainer.run.lifecycle import write_failure
    from duotune.trainer.run.outputs import RUN_CONFIG, staged_into
    from duotune.trainer.run.tracking import plot_losses

    try:
        # written into a staging folder and moved into place file by file: a failed or killed save never
        # leaves a truncated adapter_model.safetensors that looks like a finished one
        with staged_into(run.out, enabled=is_main_process()) as stage:
            trainer.save_model(str(stage))
            if run.recipe.pissa_init:
                run.model.save_pretrained(
                    str(stage), path_initial_model_for_weight_conversion=str(run.out / "pissa_init")
                )
    except Exception as e:
        failure = write_failure(e, run.out, "the final adapter")
        if failure is None:
            raise
        raise failure from None
    trainer.save_state()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    if run.eval_ds is not None:
        _final_evaluation(trainer)
    if not is_main_process():
        return
    save_tokenizer(run.tokenizer, run.out)
    plots = plot_losses(run.out) if run.recipe.plot_loss else []
    _finish_swanlab(run)
    if run.guard.skipped:
        kv("note", f"updates skipped for a non-finite loss or gradient: steps {run.guard.skipped}")
    written = [
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer",
        RUN_CONFIG,
        "trainer_log.jsonl",
    ]
    written += [p.name for p in plots]
    echo(f"done: {', '.join(written)} and checkpoints are in {run.out.resolve()}")


# --------------------------------------------------------------------------------------------- helpers


def _final_evaluation(trainer) -> None:
    """The final model is always evaluated once (unless the last step just was)."""
    evaluated = [h["step"] for h in trainer.state.log_history if "eval_loss" in h]
    if not evaluated or evaluated[-1] != trainer.state.global_step:
        trainer.evaluate()
    final = [h for h in trainer.state.log_history if "eval_loss" in h][-1]
    metrics = {k: v for k, v in final.items() if k.startswith("eval_")}
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)


def _collator(run: _Run):
    """Padding-free when the batching allows it, else padded to the longest example."""
    from duotune.collators import PaddingFreeCollator, Seq2SeqCollator

    if run.batching.padding_free:
        import torch
        from duotune.trainer.model.load import TORCH_DTYPES

        dtype = getattr(torch, TORCH_DTYPES[run.plan.precision])  # the 4-D mask's, where one is needed
        return PaddingFreeCollator(boundaries=run.batching.boundaries, mask_dtype=dtype)
    return Seq2SeqCollator.from_tokenizer(run.tokenizer, pad_to_multiple_of=run.recipe.pad_to_multiple_of)


def _throughput_meter(run: _Run):
    from duotune.trainer.run.throughput import ThroughputMeter, flop_counter

    backend = run.plan.backend
    peak_flops = backend.peak_flops(run.plan.precision)[0] if backend.is_accelerator else None

    def peak_memory() -> int | None:
        return next((v for k, v in backend.memory_stats().items() if k.startswith("peak")), None)

    return ThroughputMeter(
        flops=flop_counter(run.model, run.recipe.gradient_checkpointing),
        peak_flops=peak_flops,
        peak_memory=peak_memory,
        learned_logits_only=run.kernels.learned_logits_only,
        processes=run.world,
    )


def _finish_swanlab(run: _Run, failed: bool = False) -> None:
    if not (run.swanlab_started and is_main_process()):
        return
    run.swanlab_started = False
    import swanlab

    try:
        swanlab.finish(state="crashed" if failed else "success")
    except TypeError:  # older swanlab: no state argument
        swanlab.finish()


def _inside(filename, folder: Path) -> bool:
    if not filename:
        return False
    try:
        return Path(os.fsdecode(filename)).resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):
        return False


def _close_progress_bar(run: _Run) -> None:
    """End the Trainer's progress bar line, so an error printed next starts a line of its own."""
    if run.trainer is None:
        return
    for callback in run.trainer.callback_handler.callbacks:
        bar = getattr(callback, "training_bar", None)
        if bar is not None:
            bar.close()
            callback.training_bar = None


def _record_status(run: _Run, status: str, exit_code: int | None = None, message: str | None = None) -> None:
    if not (run.opened and is_main_process()):
        return  # a run refused before it wrote anything leaves nothing behind, a status file included
    from duotune.trainer.run.outputs import write_run_status

    state = run.trainer.state if run.trainer is not None else None
    step = state.global_step if state is not None else 0
    total = state.max_steps if state is not None and state.max_steps else None
    try:
        write_run_status(run.out, status, step=step, total_steps=total, exit_code=exit_code, message=message)
    except OSError:
        pass  # the run's own error (a full disk, say) is the one to report


def _record_failure(run: _Run, error: BaseException) -> None:
    from duotune.trainer.common.errors import EXIT_USER_ERROR, UserError, first_line
    from duotune.trainer.run.guard import Diverged
    from duotune.trainer.run.lifecycle import Interrupted

    if isinstance(error, Interrupted):
        _record_status(run, "interrupted", exit_code=error.exit_code, message=str(error))
    elif isinstance(error, Diverged):
        _record_status(run, "diverged", exit_code=error.exit_code, message=first_line(error))
    elif isinstance(error, UserError):
        _record_status(run, "failed", exit_code=EXIT_USER_ERROR, message=first_line(error))
    elif isinstance(error, KeyboardInterrupt):
        _record_status(run, "interrupted", exit_code=130, message="interrupted")
    else:
        _record_status(run, "failed", exit_code=1, message=f"{type(error).__name__}: {first_line(error)}")


def _resolve_resume(recipe: Recipe) -> str | None:
    from duotune.trainer.run.lifecycle import check_checkpoint, unmark_damaged, usable_checkpoint

    if not recipe.resume_from_checkpoint:
        return None
    if recipe.resume_from_checkpoint == "auto":
        last, passed_over = usable_checkpoint(recipe.output_dir)
        for note in passed_over:
            echo(note)
        unmark_damaged(recipe.output_dir, until=last)
        if last is None:
            echo(f"no complete checkpoint in {recipe.output_dir} to resume from: starting from the beginning")
            return None
        echo(f"resuming from {last}")
        return str(last)
    return str(check_checkpoint(Path(recipe.resume_from_checkpoint)))


def main_process_first(backend):
    """In a multi-process run, let rank 0 do a cacheable step before the others (a no-op otherwise)."""
    import contextlib

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return contextlib.nullcontext()
    from accelerate import PartialState

    state = PartialState(cpu=not backend.is_accelerator, backend=backend.dist_backend)
    return state.main_process_first()


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
