"""Which library's Trainer / TrainingArguments a run uses, and the small glue both need.

The Trainer class is subclassed once here (whichever framework supplies it) to add what the recipe
asks for and the base class does not do: the LoRA+ optimizer.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any

from .errors import UserError
from .recipe import Recipe

__all__ = ["Framework", "load_framework", "build_training_args", "make_trainer"]


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
        return f"{self.name} {self.version} Trainer"


def load_framework(name: str = "transformers") -> Framework:
    import transformers

    if name != "transformers":
        raise UserError(f"framework {name!r} is not available in this version; use transformers")
    return Framework(
        name="transformers",
        version=transformers.__version__,
        Trainer=transformers.Trainer,
        TrainingArguments=transformers.TrainingArguments,
        transformers_version=transformers.__version__,
    )


def build_training_args(
    framework: Framework,
    recipe: Recipe,
    *,
    precision: str,
    has_eval: bool,
    report_to: list[str],
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
        "save_total_limit": recipe.save_total_limit,
        "seed": recipe.seed,
        "data_seed": recipe.seed,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "report_to": report_to or "none",
        "run_name": recipe.experiment_name,
        "remove_unused_columns": False,
        "gradient_checkpointing": False,  # enabled on the model before LoRA is attached (model.py)
        "dataloader_num_workers": recipe.dataloader_num_workers,
        "disable_tqdm": False,
        "ddp_find_unused_parameters": False,
    }
    if recipe.warmup_steps:
        kwargs["warmup_steps"] = recipe.warmup_steps
    elif recipe.warmup_ratio:
        # transformers 5 folds the ratio into warmup_steps (a float < 1); 4.x has warmup_ratio
        kwargs["warmup_ratio" if "warmup_ratio" in known else "warmup_steps"] = recipe.warmup_ratio
    strategy = ("steps" if recipe.eval_steps else "epoch") if has_eval else "no"
    kwargs["eval_strategy" if "eval_strategy" in known else "evaluation_strategy"] = strategy
    if has_eval and recipe.eval_steps:
        kwargs["eval_steps"] = recipe.eval_steps
    kwargs.update(extra or {})
    kwargs = {k: v for k, v in kwargs.items() if k in known}
    try:
        return framework.TrainingArguments(**kwargs)
    except ValueError as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"the recipe's training settings were refused by {framework.describe()}: {text}"
        ) from None


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
):
    base = framework.Trainer

    class DuotuneTrainer(base):  # type: ignore[misc, valid-type]
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
