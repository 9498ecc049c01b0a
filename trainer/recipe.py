"""The recipe: every knob of a run, as one typed dataclass.

A recipe is a flat YAML mapping whose keys are the fields of :class:`Recipe`. Names follow
LLaMA-Factory where it has one and Hugging Face ``TrainingArguments`` otherwise, so a recipe written
for either reads the same here. ``KEY=VALUE`` pairs on the command line override the file.

Loading is stdlib + PyYAML only (no torch), so ``train --help`` and config errors stay instant.
Validation collects every problem and raises once (:class:`~trainer.errors.UserError`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from duotune.backends.registry import DEVICE_CHOICES
from duotune.trainer.common.errors import UserError

__all__ = [
    "Recipe",
    "load_recipe",
    "parse_overrides",
    "recipe_fields",
    "field_choices",
    "field_type",
    "coerce_value",
    "read_recipe_yaml",
    "default_recipe_path",
    "configs_dir",
    "SECRET_KEY_PATTERN",
]

# Keys whose values are never written to disk, logs or trackers.
SECRET_KEY_PATTERN = re.compile(r"(token|api_key|apikey|secret|password)", re.IGNORECASE)

# attn_implementation (Hugging Face's key) -> flash_attn (LLaMA-Factory's): the same choice, two spellings
ATTN_IMPLEMENTATION_TO_FLASH_ATTN = {
    "auto": "auto",
    "flash_attention_2": "fa2",
    "sdpa": "sdpa",
    "eager": "eager",
}

MAX_SEED = 2**32 - 1  # numpy.random.seed, which transformers' set_seed calls, takes no other value

LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)


def _f(default: Any, help: str, group: str, **extra: Any) -> Any:
    """A dataclass field with its documentation attached (README's config reference reads it)."""
    if isinstance(default, list):
        return field(
            default_factory=lambda d=default: list(d), metadata={"help": help, "group": group, **extra}
        )
    return field(default=default, metadata={"help": help, "group": group, **extra})


@dataclass
class Recipe:
    # ---------------------------------------------------------------- model
    model_name_or_path: str = _f(
        "",
        "Base model: a local folder, a hub id (`ORG/NAME`), or `demo://tiny-llama` for the bundled demo model.",
        "model",
    )
    hub: Literal["auto", "hf", "modelers"] = _f(
        "auto",
        "Hub of a bare `ORG/NAME` id: `hf` (Hugging Face) or `modelers`; `auto` = `$DUOTUNE_HUB`, else hf. "
        "`hf://ORG/NAME` and `modelers://ORG/NAME` name the hub in the id itself.",
        "model",
    )
    revision: str | None = _f(None, "Branch, tag or commit of a hub model (default: main).", "model")
    cache_dir: str | None = _f(
        None,
        "Download cache; default: the hub client's own (~/.cache/huggingface, ~/.cache/openmind).",
        "model",
    )
    allow_pickle_weights: bool = _f(
        False,
        "Also load pickle weights (*.bin), which can run code when loaded; by default only safetensors.",
        "model",
    )
    trust_remote_code: bool = _f(
        False, "Allow the model's own Python code from its folder or hub repo.", "model"
    )
    device: str = _f(
        "auto",
        "Where to train. `auto` picks NPU, then CUDA, then MPS, then CPU. `train --device` overrides it.",
        "model",
        choices=DEVICE_CHOICES,
    )
    framework: Literal["auto", "transformers", "openmind"] = _f(
        "auto",
        "Whose Trainer runs the loop: `auto` = openMind's on an NPU when the `openmind` package is "
        "installed, else transformers'.",
        "model",
    )
    npu_jit_compile: bool = _f(
        False,
        "Ascend only: compile kernels just in time instead of using the precompiled binaries "
        "(also `DUOTUNE_NPU_JIT_COMPILE=1`).",
        "model",
    )

    # ---------------------------------------------------------------- data
    dataset: list[str] = _f(
        [],
        "Training data: a JSON/JSONL file, a list of them, or `demo://counselling` for the bundled demo data.",
        "data",
    )
    dataset_format: Literal["auto", "conversation", "alpaca", "messages"] = _f(
        "auto", "Row format. `auto` detects it from the keys of the first row of each file.", "data"
    )
    template: str = _f(
        "auto",
        "Chat template. `auto` uses the tokenizer's own `chat_template`; a built-in name "
        "(deepseek, chatml, llama3, llama2) replaces it, for tokenizers that have none.",
        "data",
    )
    cutoff_len: int = _f(
        2048, "Maximum tokens per example; longer conversations keep their beginning.", "data"
    )
    max_samples: int | None = _f(None, "Use at most this many rows from each dataset file.", "data")
    val_size: float = _f(0.0, "Fraction of examples held out for evaluation, in [0, 1).", "data")
    skip_invalid_rows: bool = _f(
        False, "Skip and count malformed rows instead of stopping at the first one.", "data"
    )
    preprocessing_num_workers: int | None = _f(None, "Processes used to tokenize the dataset.", "data")

    # ---------------------------------------------------------------- lora
    lora_rank: int = _f(8, "LoRA rank r.", "lora")
    lora_alpha: int | None = _f(None, "LoRA scaling alpha; defaults to 2 x lora_rank.", "lora")
    lora_dropout: float = _f(0.0, "Dropout on the LoRA input, in [0, 1).", "lora")
    lora_target: list[str] = _f(
        ["all"],
        "Modules that get LoRA: `all` (every linear layer except the output head) or a list such as "
        "`q_proj,v_proj`.",
        "lora",
    )
    additional_target: list[str] | None = _f(
        None, "Extra modules trained in full and saved with the adapter (peft `modules_to_save`).", "lora"
    )
    loraplus_lr_ratio: float | None = _f(
        None, "LoRA+: learning rate of the B matrices = learning_rate x this ratio (16 is typical).", "lora"
    )
    use_rslora: bool = _f(False, "Rank-stabilised LoRA scaling (alpha / sqrt(r)).", "lora")
    use_dora: bool = _f(False, "Weight-decomposed LoRA (DoRA).", "lora")
    pissa_init: bool = _f(
        False,
        "Initialise LoRA from the principal singular vectors of the base weights (PiSSA). The saved "
        "adapter is converted back to plain LoRA so it applies to the unmodified base model.",
        "lora",
    )
    pissa_iter: int = _f(16, "Fast-SVD iterations for PiSSA; -1 runs a full SVD (slow on 7B models).", "lora")

    # ---------------------------------------------------------------- training
    output_dir: str = _f("", "Where the adapter, logs, plots and checkpoints go.", "train")
    overwrite_output_dir: bool = _f(
        False, "Replace the results of an earlier run in output_dir instead of refusing to start.", "train"
    )
    per_device_train_batch_size: int = _f(1, "Examples per device per step.", "train")
    per_device_eval_batch_size: int | None = _f(
        None, "Examples per device per evaluation step; defaults to the training batch size.", "train"
    )
    gradient_accumulation_steps: int = _f(1, "Steps whose gradients are summed before an update.", "train")
    learning_rate: float = _f(1e-4, "Peak learning rate (LoRA works best around 1e-4 to 1e-3).", "train")
    num_train_epochs: float = _f(3.0, "Passes over the training data.", "train")
    max_steps: int = _f(-1, "Stop after this many optimizer updates; -1 = use num_train_epochs.", "train")
    lr_scheduler_type: str = _f(
        "cosine", "Learning-rate schedule: " + ", ".join(LR_SCHEDULERS) + ".", "train"
    )
    warmup_ratio: float = _f(
        0.0, "Fraction of the updates spent warming the learning rate up, in [0, 1).", "train"
    )
    warmup_steps: int = _f(0, "Number of warm-up updates (use this or warmup_ratio, not both).", "train")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm; 0 disables clipping.", "train")
    weight_decay: float = _f(0.0, "AdamW weight decay.", "train")
    optim: str = _f("adamw_torch", "Optimizer name as Hugging Face TrainingArguments knows it.", "train")
    neftune_noise_alpha: float | None = _f(
        None, "NEFTune: noise added to embeddings during training (e.g. 5).", "train"
    )
    gradient_checkpointing: bool = _f(
        True,
        "Recompute activations in the backward pass to save memory (needed for 7B on one device).",
        "train",
    )
    compute_type: Literal["auto", "bf16", "fp16", "fp32"] = _f(
        "auto",
        "Training precision. `auto` = bf16 where the device supports it, else fp16 on accelerators, fp32 on CPU.",
        "train",
    )
    bf16: bool = _f(False, "Hugging Face spelling of `compute_type: bf16`.", "train")
    fp16: bool = _f(False, "Hugging Face spelling of `compute_type: fp16`.", "train")
    pad_to_multiple_of: int | None = _f(
        8,
        "Pad each padded batch to a multiple of this length (8 suits tensor cores); null pads to the "
        "longest. Padding-free batches have no padding.",
        "train",
    )
    logging_steps: int = _f(10, "Log loss, learning rate and grad norm every this many updates.", "train")
    save_steps: int = _f(500, "Write a checkpoint-N folder every this many updates.", "train")
    save_total_limit: int | None = _f(None, "Keep only the newest this-many checkpoints.", "train")
    eval_steps: int | None = _f(
        None, "Evaluate every this many updates (needs val_size > 0); unset = once per epoch.", "train"
    )
    seed: int = _f(42, "Random seed for initialisation, data order and dropout.", "train")
    skip_nonfinite_steps: int = _f(
        0,
        "Updates whose loss or gradient is NaN/inf that may be skipped (not applied) before the run stops "
        "with exit code 3; 0 stops at the first.",
        "train",
    )
    resume_from_checkpoint: str | None = _f(
        None, "Continue from a checkpoint folder, or `auto` for the newest one in output_dir.", "train"
    )
    dataloader_num_workers: int = _f(0, "Worker processes that collate batches.", "train")
    deterministic: bool = _f(
        False,
        "Deterministic algorithms and no dropout in the base model (what `duotune parity run` uses).",
        "train",
    )
    deepspeed: str | None = _f(
        None,
        "DeepSpeed: `zero2`, `zero3` (configs/deepspeed/) or the path of a DeepSpeed JSON config. CUDA and NPU only.",
        "train",
    )
    fsdp: str | None = _f(
        None,
        "FSDP through accelerate: `full_shard` or `shard_grad_op` (auto-wrapping the decoder layers). CUDA and NPU only.",
        "train",
    )

    # ---------------------------------------------------------------- speed
    padding_free: bool | Literal["auto"] = _f(
        "auto",
        "Train each micro-batch as one flattened sequence without padding: position_ids restart at every "
        "example and attention stays inside each example, so loss and gradients equal those of padded "
        "batches. `auto` = on wherever the backend has an exact kernel for it; `train` prints which.",
        "speed",
    )
    packing: bool = _f(
        False,
        "Pack several examples into each row of up to cutoff_len tokens (best-fit decreasing), attention "
        "still confined to each example. per_device_train_batch_size then counts rows, so an epoch has "
        "fewer, larger updates (README: Performance).",
        "speed",
    )
    group_by_length: bool = _f(
        False,
        "Put examples of similar length into the same batch (Hugging Face's length-grouped sampler) so "
        "padded batches waste less; padding-free batches have no padding to save.",
        "speed",
    )
    flash_attn: Literal["auto", "fa2", "sdpa", "eager"] = _f(
        "auto",
        "Attention kernel: `fa2` = FlashAttention-2 (CUDA with flash-attn; on Ascend the NPU's fused "
        "attention), `sdpa` = PyTorch's scaled-dot-product attention, `eager` = plain matmuls. `auto` lets "
        "the backend choose.",
        "speed",
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = _f(
        "auto",
        "Hugging Face spelling of `flash_attn` (flash_attention_2 = fa2); set one of the two.",
        "speed",
    )
    use_liger_kernel: bool | Literal["auto"] = _f(
        "auto",
        "CUDA: Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) through "
        "transformers' own switch. `auto` = on when liger-kernel is installed and supports the model.",
        "speed",
    )
    npu_fused_ops: bool | Literal["auto"] = _f(
        "auto",
        "Ascend: run RMSNorm, rotary embedding and SwiGLU of Llama / Qwen2 / DeepSeek-LLM models on "
        "the fused npu_rms_norm, npu_rotary_mul and npu_swiglu. `auto` = on on an NPU for those models.",
        "speed",
    )
    fast_dropout: bool | Literal["auto"] = _f(
        "auto",
        "CPU: draw LoRA's dropout masks from 32-bit random integers (about 3x faster than PyTorch's "
        "per-element draws; the same Bernoulli(lora_dropout) distribution, other draws). `auto` = on on "
        "CPU when lora_dropout > 0; `false` = PyTorch's nn.Dropout.",
        "speed",
    )

    # ---------------------------------------------------------------- tracking
    report_to: list[str] = _f(
        ["swanlab"],
        "Experiment trackers: `swanlab` (default), any other name transformers supports, or `none`.",
        "tracking",
    )
    swanlab_project: str | None = _f(None, "SwanLab project; defaults to `duotune`.", "tracking")
    swanlab_workspace: str | None = _f(None, "SwanLab workspace (user or organisation).", "tracking")
    swanlab_mode: Literal["auto", "online", "offline", "local", "disabled"] = _f(
        "auto",
        "`auto` = online when a SwanLab API key is configured, else offline (kept in output_dir/swanlog "
        "for `swanlab sync`). Never prompts for a login.",
        "tracking",
    )
    experiment_name: str | None = _f(None, "Run name in SwanLab and other trackers.", "tracking")
    description: str | None = _f(None, "Free-text description of the run (SwanLab).", "tracking")
    plot_loss: bool = _f(True, "Write training_loss.png (and training_eval_loss.png) at the end.", "tracking")

    # ------------------------------------------------------------------------------------------------
    @property
    def resolved_lora_alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_rank

    @property
    def requested_precision(self) -> str:
        """compute_type with the HF-style bf16/fp16 booleans folded in (validation rejects conflicts)."""
        if self.bf16:
            return "bf16"
        if self.fp16:
            return "fp16"
        return self.compute_type

    @property
    def requested_attention(self) -> str:
        """flash_attn with the Hugging Face spelling attn_implementation folded in (validation rejects
        conflicts): auto, fa2, sdpa or eager."""
        if self.flash_attn != "auto":
            return self.flash_attn
        return ATTN_IMPLEMENTATION_TO_FLASH_ATTN[self.attn_implementation]

    @property
    def swanlab_enabled(self) -> bool:
        return "swanlab" in self.report_to and self.swanlab_mode != "disabled"

    def public_dict(self) -> dict[str, Any]:
        """The recipe as plain data with anything secret-looking removed (for disk, logs, trackers)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if not SECRET_KEY_PATTERN.search(k)}

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.public_dict(), sort_keys=False, allow_unicode=True)

    def validate(self) -> list[str]:
        """Problems with values that are each well-typed but impossible, alone or together."""
        p: list[str] = []

        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                p.append(f"'{key}': {msg}, got {getattr(self, key)!r}")

        need(bool(self.model_name_or_path), "model_name_or_path", "is required (a folder or hub id)")
        need(bool(self.dataset), "dataset", "is required (a JSON/JSONL file or a list of them)")
        need(bool(self.output_dir), "output_dir", "is required")
        need(self.cutoff_len > 0, "cutoff_len", "must be > 0")
        need(self.max_samples is None or self.max_samples > 0, "max_samples", "must be > 0 or null")
        need(0.0 <= self.val_size < 1.0, "val_size", "must be in [0, 1)")
        need(
            self.preprocessing_num_workers is None or self.preprocessing_num_workers >= 1,
            "preprocessing_num_workers",
            "must be >= 1 or null",
        )
        need(self.lora_rank > 0, "lora_rank", "must be > 0")
        need(self.lora_alpha is None or self.lora_alpha > 0, "lora_alpha", "must be > 0")
        need(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "must be in [0, 1)")
        need(bool(self.lora_target), "lora_target", "must name at least one module, or be `all`")
        if "all" in self.lora_target and len(self.lora_target) > 1:
            p.append(f"'lora_target': `all` cannot be combined with module names, got {self.lora_target!r}")
        need(
            self.loraplus_lr_ratio is None or self.loraplus_lr_ratio > 0,
            "loraplus_lr_ratio",
            "must be > 0 or null",
        )
        need(self.pissa_iter == -1 or self.pissa_iter > 0, "pissa_iter", "must be -1 (full SVD) or > 0")
        if self.pissa_init and self.use_dora:
            p.append("'pissa_init' and 'use_dora' cannot both be true: peft initialises DoRA only from zero")
        need(self.per_device_train_batch_size >= 1, "per_device_train_batch_size", "must be >= 1")
        need(
            self.per_device_eval_batch_size is None or self.per_device_eval_batch_size >= 1,
            "per_device_eval_batch_size",
            "must be >= 1",
        )
        need(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1")
        need(self.learning_rate > 0, "learning_rate", "must be > 0")
        need(self.max_steps == -1 or self.max_steps > 0, "max_steps", "must be -1 (use epochs) or > 0")
        if self.max_steps == -1:
            need(self.num_train_epochs > 0, "num_train_epochs", "must be > 0 when max_steps is -1")
        need(
            self.lr_scheduler_type in LR_SCHEDULERS,
            "lr_scheduler_type",
            "must be one of " + ", ".join(LR_SCHEDULERS),
        )
        need(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
        need(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        if self.warmup_ratio > 0 and self.warmup_steps > 0:
            p.append("'warmup_ratio' and 'warmup_steps' are both set: keep one of them")
        need(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(
            self.neftune_noise_alpha is None or self.neftune_noise_alpha > 0,
            "neftune_noise_alpha",
            "must be > 0 or null",
        )
        if self.bf16 and self.fp16:
            p.append("'bf16' and 'fp16' are both true: choose one (or set compute_type)")
        for flag in ("bf16", "fp16"):
            if getattr(self, flag) and self.compute_type not in ("auto", flag):
                p.append(f"'{flag}: true' contradicts 'compute_type: {self.compute_type}': keep one of them")
        need(
            self.pad_to_multiple_of is None or self.pad_to_multiple_of >= 1,
            "pad_to_multiple_of",
            "must be >= 1 or null",
        )
        need(self.logging_steps >= 1, "logging_steps", "must be >= 1")
        need(self.save_steps >= 1, "save_steps", "must be >= 1")
        need(self.save_total_limit is None or self.save_total_limit >= 1, "save_total_limit", "must be >= 1")
        need(self.eval_steps is None or self.eval_steps >= 1, "eval_steps", "must be >= 1")
        if self.eval_steps is not None and self.val_size == 0:
            p.append("'eval_steps' is set but 'val_size' is 0: set val_size (e.g. 0.1) to evaluate")
        need(self.dataloader_num_workers >= 0, "dataloader_num_workers", "must be >= 0")
        need(0 <= self.seed <= MAX_SEED, "seed", f"must be in [0, {MAX_SEED}] (numpy's seed range)")
        need(self.skip_nonfinite_steps >= 0, "skip_nonfinite_steps", "must be >= 0")
        need(
            self.fsdp is None or self.fsdp in ("full_shard", "shard_grad_op"),
            "fsdp",
            "must be full_shard, shard_grad_op or null",
        )
        hf_attention = ATTN_IMPLEMENTATION_TO_FLASH_ATTN[self.attn_implementation]
        if "auto" not in (self.flash_attn, hf_attention) and self.flash_attn != hf_attention:
            p.append(
                f"'flash_attn: {self.flash_attn}' contradicts 'attn_implementation: {self.attn_implementation}': "
                "keep one of them"
            )
        if self.packing and self.padding_free is False:
            p.append(
                "'packing: true' trains packed rows padding-free (attention kept inside each example): "
                "remove 'padding_free: false' or set packing to false"
            )
        if self.fsdp and self.deepspeed:
            p.append("'deepspeed' and 'fsdp' are both set: choose one way to shard")
        if "none" in self.report_to and len(self.report_to) > 1:
            p.append(f"'report_to': `none` cannot be combined with trackers, got {self.report_to!r}")
        return p


# ---------------------------------------------------------------------------------------------------
# Types


def recipe_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(Recipe)}


def field_choices(name: str) -> tuple[str, ...] | None:
    """The values a recipe key accepts when it is a choice (a Literal type or a `choices` list)."""
    f = recipe_fields()[name]
    if "choices" in f.metadata:
        return tuple(f.metadata["choices"])
    tp = _type_hints()[name]
    if typing.get_origin(tp) is Literal:
        return tuple(typing.get_args(tp))
    return None


_TYPE_HINTS: dict[str, Any] | None = None


def _type_hints() -> dict[str, Any]:
    global _TYPE_HINTS
    if _TYPE_HINTS is None:
        _TYPE_HINTS = typing.get_type_hints(Recipe)
    return _TYPE_HINTS


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if all(a is bool or typing.get_origin(a) is Literal for a in args):  # bool | Literal["auto"]
            values = ["true", "false"] + [str(v) for a in args if a is not bool for v in typing.get_args(a)]
            return "one of " + ", ".join(values)
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is list:
        return "a list of strings (or one comma-separated string)"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(
        tp, str(tp)
    )


class _Bad(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """Convert a YAML value to the field type, or raise _Bad."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.strip().lower() in ("null", "none", "~") and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a)
            except _Bad:
                pass
        raise _Bad
    if origin is Literal:
        if isinstance(value, str) and value.lower() in args:
            return value.lower()
        raise _Bad
    if origin is list:
        if isinstance(value, str):
            items = [s.strip() for s in value.split(",") if s.strip()]
        elif isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            items = [str(v).strip() for v in value]
        else:
            raise _Bad
        return items
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                raise _Bad from None
        else:
            raise _Bad
        if not math.isfinite(number):  # .inf, .nan, "inf", "nan": no recipe number may be one
            raise _Bad
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Bad
    raise TypeError(f"unsupported recipe field type {tp!r}")  # a bug in Recipe, not the user's fault


def field_type(name: str) -> Any:
    """The type a recipe key's value must have (a ``choices`` list counts as a Literal)."""
    choices = recipe_fields()[name].metadata.get("choices")
    return _type_hints()[name] if choices is None else Literal[tuple(choices)]


def coerce_value(name: str, value: Any) -> Any:
    """A YAML value for key ``name`` converted to the key's type, as ``load_recipe`` does it.

    Raises ValueError("expected ..., got ...") when the value does not fit (the web UI shows that text
    next to the field; load_recipe prefixes it with the key).
    """
    tp = field_type(name)
    try:
        return _coerce(value, tp)
    except _Bad:
        raise ValueError(f"expected {_describe(tp)}, got {value!r}") from None


# ---------------------------------------------------------------------------------------------------
# Loading


def configs_dir() -> Path:
    """The shipped recipes: inside the wheel, or the repository's configs/ in a source checkout."""
    from duotune import PACKAGE_ROOT

    candidate = PACKAGE_ROOT / "configs"
    if (candidate / "demo.yaml").is_file():
        return candidate
    raise UserError(
        "the bundled recipes (configs/demo.yaml) are missing from this installation; reinstall duotune"
    )


def default_recipe_path() -> Path:
    return configs_dir() / "demo.yaml"


def parse_overrides(pairs: typing.Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> dict; values are parsed as YAML scalars (``1e-3``, ``true``, ``null``)."""
    import yaml

    out: dict[str, Any] = {}
    bad: list[str] = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            bad.append(f"override {pair!r} is not KEY=VALUE (for example learning_rate=1e-3)")
            continue
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key] = raw
    if bad:
        raise UserError(*bad)
    return out


def read_recipe_yaml(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a recipe file (no type checks), with the CLI's errors for a missing or broken
    file. The web UI loads a recipe into its form with it, complete or not."""
    return _read_yaml(Path(path))


def _read_yaml(path: Path) -> dict[str, Any]:
    from duotune.trainer.common.files import read_yaml_mapping

    if not path.exists():
        raise UserError(f"recipe {path} does not exist; pass --config with the path of a YAML recipe")
    return read_yaml_mapping(path, "recipe")


def load_recipe(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Recipe, Path]:
    """Read a recipe (the demo recipe when ``path`` is None), apply overrides, validate everything.

    Returns the recipe and the path it was read from. Raises UserError listing every problem.
    """
    src = Path(path) if path is not None else default_recipe_path()
    raw = _read_yaml(src)
    recipe, problems = _typed_recipe([(str(src), raw), ("command line", overrides or {})])
    if problems:
        raise UserError(*_headed(src, problems))
    if recipe.report_to == ["none"]:
        recipe.report_to = []
    return recipe, src


def _typed_recipe(mappings: list[tuple[str, dict[str, Any]]]) -> tuple[Recipe, list[str]]:
    """A Recipe from ``(origin, mapping)`` pairs applied in order, and every problem with them: unknown
    keys, values of the wrong type, impossible values and combinations (each naming its origin)."""
    fields = recipe_fields()
    problems: list[str] = []
    values: dict[str, Any] = {}
    bad_keys: set[str] = set()
    for origin, mapping in mappings:
        for key, value in mapping.items():
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields.keys(), n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else "; see the config reference in README.md"
                problems.append(f"unknown key '{key}' ({origin}){hint}")
                continue
            try:
                values[key] = coerce_value(key, value)
                bad_keys.discard(key)
            except ValueError as e:
                problems.append(f"'{key}' ({origin}): {e}")
                bad_keys.add(key)
    recipe = Recipe(**{k: v for k, v in values.items() if k not in bad_keys})
    recipe.report_to = [t.lower() for t in recipe.report_to]
    # value checks run even when some keys had the wrong type, so one pass reports everything; a check
    # about a key already reported as mistyped would only repeat it
    problems += [p for p in recipe.validate() if not any(p.startswith(f"'{k}'") for k in bad_keys)]
    return recipe, problems


def recipe_problems(values: dict[str, Any], origin: str) -> list[str]:
    """Everything `train` would refuse in a recipe given as one mapping (``origin`` names where it
    came from in the messages); empty when it would run."""
    return _typed_recipe([(origin, values)])[1]


def _headed(src: Path, problems: list[str]) -> list[str]:
    """One problem is one line; several get a heading line and one line each."""
    if len(problems) == 1:
        return [f"recipe {src}: {problems[0]}"]
    return [f"recipe {src}: {len(problems)} problems (fix them and run again)"] + [
        f"  - {p}" for p in problems
    ]


GROUP_TITLES = {
    "model": "Model and device",
    "data": "Data",
    "lora": "LoRA",
    "train": "Training",
    "speed": "Speed: batching and kernels",
    "tracking": "Tracking and outputs",
}


def reference_markdown() -> str:
    """The README's config reference, generated from the dataclass (a test keeps them in step)."""
    lines: list[str] = []
    fields = dataclasses.fields(Recipe)
    for group, title in GROUP_TITLES.items():
        lines += [f"#### {title}", "", "| key | default | meaning |", "| --- | --- | --- |"]
        for f in fields:
            if f.metadata.get("group") != group:
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if default is None:
                shown = "null"
            elif isinstance(default, bool):
                shown = "true" if default else "false"
            elif isinstance(default, list):
                shown = ",".join(default)
            else:
                shown = default
            if shown == "":
                shown = "(required)"
            help_text = f.metadata["help"].replace("|", "\\|")
            lines.append(f"| `{f.name}` | `{shown}` | {help_text} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
