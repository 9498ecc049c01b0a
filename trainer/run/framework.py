"""Which library's Trainer / TrainingArguments a run uses, and the small glue both need.

``framework: auto`` takes openMind's Trainer on an NPU when the openmind package is installed (its import
side effects undone) and transformers' everywhere else. The Trainer class is subclassed once here,
whichever framework supplies it, for what duotune needs and the base class does not do:

- the LoRA+ optimizer (``loraplus_lr_ratio``, through peft);
- each micro-batch's loss handed to the non-finite guard (``run/guard.py``) before the update;
- on transformers < 4.46 (the openMind stack): the loss averaged per token over the whole update as newer
  versions do (:class:`_TokenMean`), the logged loss at full precision instead of rounded to 4 decimals,
  and RNG states that torch >= 2.6 refuses to load without an allow-list.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
from dataclasses import dataclass
from typing import Any

from duotune.trainer.common.errors import UserError
from duotune.trainer.recipe import Recipe

__all__ = [
    "Framework",
    "build_training_args",
    "import_openmind",
    "load_framework",
    "make_trainer",
    "openmind_installed",
    "resolve_framework",
]


@dataclass
class Framework:
    name: str
    version: str
    Trainer: type
    TrainingArguments: type
    transformers_version: str

    @property
    def transformers_major_minor(self) -> tuple[int, int]:
        major, minor = self.transformers_version.split(".")[:2]
        return int(major), int(minor)

    @property
    def has_swanlab_integration(self) -> bool:
        """transformers >= 4.50 knows report_to="swanlab"."""
        return self.transformers_major_minor >= (4, 50)

    def describe(self) -> str:
        if self.name == "transformers":
            return f"transformers {self.version} Trainer"
        return f"{self.name} {self.version} Trainer (transformers {self.transformers_version})"


def openmind_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openmind") is not None


def resolve_framework(requested: str, backend) -> tuple[str, str]:
    """(framework name, why) for a recipe's `framework` on a backend (openMind where it prefers it)."""
    if requested == "auto":
        if backend.prefers_openmind and openmind_installed():
            return "openmind", f"auto: {backend.name.upper()} with the openMind Library installed"
        if backend.prefers_openmind:
            return "transformers", "auto: the openmind package is not installed"
        return "transformers", "auto"
    if requested == "openmind" and not openmind_installed():
        raise UserError(
            "framework: openmind needs the openmind package (openMind Library 1.0.0 with transformers "
            "4.45.2); set it up with `bash scripts/setup_openmind_env.sh`, or use framework: transformers"
        )
    return requested, "from the recipe"


# (module path, attribute) pairs that importing openmind patches and that duotune puts back: which hub a
# model id resolves to, which attention kernel loads, and how transformers logs stay duotune's choices.
_OPENMIND_PATCHED = (
    ("transformers.modeling_utils", "PreTrainedModel", "from_pretrained"),
    ("transformers.tokenization_utils_base", "PreTrainedTokenizerBase", "from_pretrained"),
    ("transformers.modeling_utils", "PreTrainedModel", "_autoset_attn_implementation"),
    ("transformers.dynamic_module_utils", None, "get_class_in_module"),
    ("transformers.utils.logging", None, "get_logger"),
    ("transformers.utils.logging", None, "set_verbosity"),
    ("transformers.utils.logging", None, "set_verbosity_info"),
    ("transformers.utils.logging", None, "set_verbosity_debug"),
    ("transformers.utils.logging", None, "set_verbosity_warning"),
    ("transformers.utils.logging", None, "set_verbosity_error"),
    ("transformers.utils.logging", None, "set_verbosity_critical"),
)


def import_openmind():
    """Import openMind's Trainer and TrainingArguments without keeping its import-time side effects.

    openmind 1.0.0, on import, sets ``sys.tracebacklimit = 0`` (hiding the traceback of any later
    crash), re-points ``from_pretrained`` of every model and tokenizer at the Modelers hub, and replaces
    transformers' attention selection and logging functions. duotune needs only the two classes (thin
    subclasses of transformers'), so every one of those is put back as it was.
    """
    import importlib
    import os
    import sys

    saved = []
    for module_name, owner_name, attr in _OPENMIND_PATCHED:
        module = importlib.import_module(module_name)
        owner = getattr(module, owner_name) if owner_name else module
        store = owner.__dict__ if isinstance(owner, type) else vars(owner)
        saved.append((owner, attr, store.get(attr, _MISSING)))
    had_limit = hasattr(sys, "tracebacklimit")
    old_limit = getattr(sys, "tracebacklimit", None)
    old_env = os.environ.get("OPENMIND_HIDE_STACKTRACE")
    os.environ["OPENMIND_HIDE_STACKTRACE"] = "FALSE"
    try:
        import openmind
        from openmind import Trainer, TrainingArguments
    finally:
        for owner, attr, value in saved:
            if value is _MISSING:
                if attr in vars(owner):
                    delattr(owner, attr)
            else:
                setattr(owner, attr, value)
        if had_limit:
            sys.tracebacklimit = old_limit
        elif hasattr(sys, "tracebacklimit"):
            del sys.tracebacklimit
        if old_env is None:
            os.environ.pop("OPENMIND_HIDE_STACKTRACE", None)
        else:
            os.environ["OPENMIND_HIDE_STACKTRACE"] = old_env
    return openmind, Trainer, TrainingArguments


_MISSING = object()


def load_framework(name: str = "transformers") -> Framework:
    import transformers

    if name == "transformers":
        return Framework(
            name="transformers",
            version=transformers.__version__,
            Trainer=transformers.Trainer,
            TrainingArguments=transformers.TrainingArguments,
            transformers_version=transformers.__version__,
        )
    if name == "openmind":
        openmind, trainer_cls, args_cls = import_openmind()
        return Framework(
            name="openmind",
            version=getattr(openmind, "__version__", "?"),
            Trainer=trainer_cls,
            TrainingArguments=args_cls,
            transformers_version=transformers.__version__,
        )
    raise UserError(f"unknown framework {name!r}; use transformers or openmind")


def build_training_args(
    framework: Framework,
    recipe: Recipe,
    *,
    precision: str,
    has_eval: bool,
    report_to: list[str],
    deepspeed: str | None = None,
    extra: dict[str, Any] | None = None,
):
    """TrainingArguments for the recipe, spelled the way the installed version wants them."""
    known = {f.name for f in dataclasses.fields(framework.TrainingArguments)}
    kwargs: dict[str, Any] = {
        "output_dir": recipe.output_dir,
        "per_device_train_batch_size": recipe.per_device_train_batch_size,
        "per_device_eval_batch_size": recipe.per_device_eval_batch_size or recipe.per_device_train_batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "learning_rate": recipe.learning_rate,
        "num_train_epochs": recipe.num_train_epochs,
        "max_steps": recipe.max_steps,
        "lr_scheduler_type": recipe.lr_scheduler_type,
        "max_grad_norm": recipe.max_grad_norm,
        "weight_decay": recipe.weight_decay,
        "optim": recipe.optim,
        "neftune_noise_alpha": recipe.neftune_noise_alpha,
        "logging_steps": recipe.logging_steps,
        "logging_nan_inf_filter": False,  # show a NaN loss as NaN instead of hiding it
        "save_strategy": "steps",
        "save_steps": recipe.save_steps,
        # save_total_limit is applied by duotune once the newest checkpoint is complete (run/lifecycle.py);
        # the Trainer would delete the old ones before the new one is marked complete
        "save_total_limit": None,
        "seed": recipe.seed,
        "data_seed": recipe.seed,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "report_to": report_to or "none",
        "run_name": recipe.experiment_name,
        "remove_unused_columns": False,
        "dataloader_num_workers": recipe.dataloader_num_workers,
        "disable_tqdm": False,
        "ddp_find_unused_parameters": False,
        "prediction_loss_only": True,  # evaluation needs the loss only, never all the logits gathered
    }
    if recipe.group_by_length:  # transformers 5 renamed the switch
        if "train_sampling_strategy" in known:
            kwargs["train_sampling_strategy"] = "group_by_length"
        else:
            kwargs["group_by_length"] = True
    if recipe.warmup_steps:
        kwargs["warmup_steps"] = recipe.warmup_steps
    elif recipe.warmup_ratio:
        # transformers 5 folds the ratio into warmup_steps (a float < 1); 4.x has warmup_ratio
        kwargs["warmup_ratio" if "warmup_ratio" in known else "warmup_steps"] = recipe.warmup_ratio
    strategy = ("steps" if recipe.eval_steps else "epoch") if has_eval else "no"
    kwargs["eval_strategy" if "eval_strategy" in known else "evaluation_strategy"] = strategy
    if has_eval and recipe.eval_steps:
        kwargs["eval_steps"] = recipe.eval_steps
    if recipe.deterministic:
        kwargs["full_determinism"] = True  # seeds everything and turns on deterministic kernels
    if deepspeed:
        kwargs["deepspeed"] = deepspeed  # the config path the plan resolved
    if recipe.fsdp:
        kwargs["fsdp"] = f"{recipe.fsdp} auto_wrap"
        # frozen base weights and trainable LoRA weights share FSDP units: needs use_orig_params
        kwargs["fsdp_config"] = {"use_orig_params": True}
    kwargs.update(extra or {})
    kwargs = {k: v for k, v in kwargs.items() if k in known}
    _check_names(recipe)
    return framework.TrainingArguments(**kwargs)


def _check_names(recipe: Recipe) -> None:
    """Names the installed transformers must know; anything else TrainingArguments refuses is a bug."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    optimizers = [o.value for o in OptimizerNames]
    if recipe.optim not in optimizers:
        close = difflib.get_close_matches(recipe.optim, optimizers, n=3)
        raise UserError(
            f"recipe key 'optim': {recipe.optim!r} is not an optimizer this transformers knows"
            + (
                f"; did you mean {', '.join(close)}?"
                if close
                else f"; use one of {', '.join(optimizers[:8])}, ..."
            )
        )
    schedulers = [s.value for s in SchedulerType]
    if recipe.lr_scheduler_type not in schedulers:
        raise UserError(
            f"recipe key 'lr_scheduler_type': {recipe.lr_scheduler_type!r} is not supported by this "
            f"transformers; use one of {', '.join(schedulers)}"
        )


def _numpy_safe_globals():
    import numpy as np
    import torch

    if not hasattr(torch.serialization, "safe_globals"):  # torch < 2.5 loads these without asking
        return contextlib.nullcontext()
    core = np._core if int(np.__version__.split(".")[0]) >= 2 else np.core
    allow = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    return torch.serialization.safe_globals(allow)


def make_trainer(
    framework: Framework,
    *,
    model,
    args,
    train_dataset,
    eval_dataset,
    data_collator,
    tokenizer,
    callbacks: list,
    loraplus_lr_ratio: float | None = None,
    throughput=None,
    learned_logits_only: bool = False,
    guard=None,
):
    """The Trainer of ``framework`` with duotune's additions: LoRA+, the token-mean loss on transformers
    < 4.46, exact logged losses, the ``throughput`` meter (trainer/run/throughput.py) fed with every
    training micro-batch, and ``learned_logits_only`` (trainer/model/kernels.py)."""
    base = framework.Trainer
    # transformers 4.x rounds the logged loss to 4 decimals; parity checks need it exact
    rounds_loss = framework.transformers_major_minor < (5, 0)
    # transformers < 4.46 averages the loss per micro-batch (and per process); newer ones per token
    needs_token_mean = framework.transformers_major_minor < (4, 46)

    class DuotuneTrainer(base):  # type: ignore[misc, valid-type]
        _exact_loss: float | None = None
        _token_mean: _TokenMean | None = None

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            if needs_token_mean and token_mean_applies(self.args, self.accelerator):
                self._token_mean = _TokenMean(self)
                self.add_callback(_token_mean_callback(self._token_mean))
            if throughput is not None and self.accelerator.num_processes > 1:
                throughput.reduce = self._sum_over_processes

        def _sum_over_processes(self, values: list[float]) -> list[float]:
            import torch

            summed = self.accelerator.reduce(
                torch.tensor([int(v) for v in values], dtype=torch.long, device=self.args.device), "sum"
            )
            return [float(v) for v in summed.tolist()]

        def evaluate(self, *a, **kw):
            with throughput.excluded() if throughput is not None else contextlib.nullcontext():
                return super().evaluate(*a, **kw)

        def training_step(self, model, inputs, *a, **kw):
            if throughput is not None:
                throughput.add(inputs)
            if self._token_mean is None:
                loss = super().training_step(model, inputs, *a, **kw)
            else:
                with self._token_mean.micro_batch(inputs):
                    loss = super().training_step(model, inputs, *a, **kw)
            if guard is not None:
                guard.observe_loss(loss)  # a NaN loss stops the run before the update (run/guard.py)
            return loss

        def compute_loss(self, model, inputs, return_outputs=False, **kw):
            if learned_logits_only:
                from duotune.trainer.model.kernels import learned_positions_only

                inputs = learned_positions_only(inputs)
            result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kw)
            if self._token_mean is None or not self._token_mean.in_micro_batch:
                return result
            if return_outputs:
                loss, outputs = result
                return self._token_mean.rescale_loss(loss), outputs
            return self._token_mean.rescale_loss(result)

        def _maybe_log_save_evaluate(self, tr_loss, *a, **kw):
            if self._token_mean is not None:
                # what the base loop summed is not a token mean; the updates' token means since the last
                # log are (every process holds the same value, so the gathered mean is that value)
                tr_loss.fill_(self._token_mean.unlogged_loss_sum)
            logs = self.control.should_log and self.state.global_step > self._globalstep_last_logged
            if rounds_loss and logs:
                steps = self.state.global_step - self._globalstep_last_logged
                self._exact_loss = self._nested_gather(tr_loss).mean().item() / steps
            result = super()._maybe_log_save_evaluate(tr_loss, *a, **kw)
            if self._token_mean is not None and logs:
                self._token_mean.unlogged_loss_sum = 0.0
            return result

        def _load_rng_state(self, checkpoint):
            # transformers < 4.47 calls torch.load without allowlisting numpy, which torch >= 2.6
            # refuses by default (weights_only=True); allow exactly the numpy types an RNG state holds
            with _numpy_safe_globals():
                return super()._load_rng_state(checkpoint)

        def log(self, logs, *a, **kw):
            if self._exact_loss is not None and "loss" in logs:
                logs["loss"] = self._exact_loss
                self._exact_loss = None
            if throughput is not None and "loss" in logs:
                logs.update(throughput.interval_logs())
            return super().log(logs, *a, **kw)

        def create_optimizer(self, *a, **kw):
            if self.optimizer is None and loraplus_lr_ratio:
                from peft.optimizers import create_loraplus_optimizer

                optim_cls, optim_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
                optim_kwargs = dict(optim_kwargs)
                lr = optim_kwargs.pop("lr", self.args.learning_rate)
                self.optimizer = create_loraplus_optimizer(
                    self.model,
                    optim_cls,
                    lr=lr,
                    loraplus_lr_ratio=loraplus_lr_ratio,
                    loraplus_weight_decay=self.args.weight_decay,
                    **optim_kwargs,
                )
            return super().create_optimizer(*a, **kw)

    params = inspect.signature(base.__init__).parameters
    kwargs: dict[str, Any] = dict(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=data_collator,
        callbacks=callbacks,
    )
    # processing_class replaced tokenizer= in transformers 4.46
    kwargs["processing_class" if "processing_class" in params else "tokenizer"] = tokenizer
    return DuotuneTrainer(**kwargs)


def token_mean_applies(args, accelerator) -> bool:
    """Whether duotune normalises the loss per token itself on transformers < 4.46: only where the two
    averages differ (gradient accumulation or several processes) and the gradients are plain tensors
    (not DeepSpeed's or FSDP's partitions, which those engines scale themselves)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        return False
    return args.gradient_accumulation_steps > 1 or accelerator.num_processes > 1


class _TokenMean:
    """Per-token loss averaging over a whole update, for transformers < 4.46 (the openMind stack).

    transformers >= 4.46 divides the summed token losses of all micro-batches of an update, on all
    processes, by their total number of learned tokens; 4.45 averages each micro-batch's own mean
    over micro-batches and processes, which weights a short reply as much as a long one. This gives
    4.45 the newer behaviour without knowing the update's token count in advance: each micro-batch
    backpropagates its summed token loss divided by a fixed ``K`` (of the order of its token count,
    so that half-precision gradients stay in range); just before the gradients are clipped (or, without
    clipping, before the optimizer step) the token count of the update is summed over processes and
    every gradient is multiplied by ``world * GA * K / N``, which undoes accelerate's 1/GA, DDP's
    1/world and ``K``, and divides by ``N``. Gradients are linear in the loss, so the result is the
    newer versions' gradient, and the logged loss is the update's token mean as they log it.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        args = trainer.args
        self.K = float(args.per_device_train_batch_size * 1024)  # any constant shared by all processes
        self.in_micro_batch = False
        self._current = 0
        self._tokens = 0
        self._loss_sum = 0.0
        self._normalised = False
        self.unlogged_loss_sum = 0.0
        accelerator = trainer.accelerator
        clip = accelerator.clip_grad_norm_

        def clip_grad_norm_(parameters, *a, **kw):
            self.normalise()
            return clip(parameters, *a, **kw)

        accelerator.clip_grad_norm_ = clip_grad_norm_

    @contextlib.contextmanager
    def micro_batch(self, inputs):
        """While one micro-batch's training step runs: its learned tokens (after the causal shift)."""
        labels = inputs.get("labels")
        self._current = int((labels[..., 1:] != -100).sum()) if labels is not None else 0
        self.in_micro_batch = True
        try:
            yield
        finally:
            self.in_micro_batch = False
            self._tokens += self._current

    def rescale_loss(self, mean_loss):
        """The micro-batch's mean token loss -> its summed token loss / K (what is backpropagated)."""
        # a micro-batch without learned tokens cannot happen with duotune's data (such examples are dropped)
        if self._current == 0:
            return mean_loss * 0.0
        self._loss_sum += float(mean_loss.detach()) * self._current
        return mean_loss * (self._current / self.K)

    def normalise(self) -> None:
        """Turn the accumulated gradients into the per-token mean's; once per update."""
        if self._normalised:
            return
        import torch

        trainer = self.trainer
        accelerator = trainer.accelerator
        totals = torch.tensor([float(self._tokens), self._loss_sum], dtype=torch.float64)
        if accelerator.num_processes > 1:
            import torch.distributed as dist

            totals = totals.to(trainer.args.device)
            if totals.device.type != "cpu":  # some collective libraries lack float64
                totals = totals.float()
            dist.all_reduce(totals)
            totals = totals.double().cpu()
        tokens, loss_sum = float(totals[0]), float(totals[1])
        if tokens > 0:
            scale = accelerator.num_processes * accelerator.gradient_accumulation_steps * self.K / tokens
            for p in trainer.model.parameters():
                if p.grad is not None:
                    p.grad.mul_(scale)
            self.unlogged_loss_sum += loss_sum / tokens
        self._tokens, self._loss_sum, self._normalised = 0, 0.0, True

    def step_done(self) -> None:
        self._normalised = False


def _token_mean_callback(token_mean: _TokenMean):
    from transformers import TrainerCallback

    class TokenMeanCallback(TrainerCallback):
        """Normalise before an optimizer step that no gradient clipping preceded; re-arm after it."""

        def on_pre_optimizer_step(self, args, state, control, **kw):
            token_mean.normalise()

        def on_optimizer_step(self, args, state, control, **kw):
            token_mean.step_done()

    return TokenMeanCallback()
