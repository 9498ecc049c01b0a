"""Faster kernels for the same computation, each on only where it is installed and exact:

- Liger's fused Triton kernels on CUDA (``use_liger_kernel``, transformers' own switch);
- the Ascend fused operators of backends/npu.py (``npu_fused_ops``);
- LoRA's dropout masks drawn from 32-bit random integers on CPU (``fast_dropout``, backends/dropout.py):
  the same distribution, other draws than PyTorch's per-element Bernoulli kernel;
- the output head and cross-entropy at learned positions only. The loss reads the logits only where the
  next token's label is learned, so the other positions' logits (one vocabulary-sized row per token, the
  largest activation of a chat fine-tune) are never computed: the model is asked for
  ``logits_to_keep=<those positions>`` with the matching ``shift_labels``, which its own forward and
  loss function (transformers >= 5) handle. Same loss and gradients; a prompt-heavy batch skips most of
  the head.

``train`` prints which are on and why the others are not.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from duotune.trainer.common.errors import UserError

__all__ = [
    "Kernels",
    "apply_fast_dropout",
    "apply_fused_ops",
    "learned_logits_supported",
    "learned_positions_only",
    "plan_liger",
]

IGNORE_INDEX = -100


@dataclass
class Kernels:
    """Which kernels a run uses, and why the others are off (printed by ``train``)."""

    liger: bool = False
    liger_why: str = ""
    fused_ops: list[str] = field(default_factory=list)
    fused_ops_why: str = ""
    learned_logits_only: bool = False
    learned_logits_why: str = ""
    fast_dropout: bool = False
    fast_dropout_why: str = ""

    def describe(self) -> str:
        on, off = [], []
        (on if self.liger else off).append(f"Liger ({self.liger_why})")
        if self.fused_ops:
            on.append(
                "Ascend "
                + ", ".join(self.fused_ops)
                + (f" ({self.fused_ops_why})" if self.fused_ops_why else "")
            )
        else:
            off.append(f"Ascend fused ops ({self.fused_ops_why})")
        head = "output head on learned positions only"
        (on if self.learned_logits_only else off).append(f"{head} ({self.learned_logits_why})")
        if self.fast_dropout_why:
            (on if self.fast_dropout else off).append(f"fast dropout ({self.fast_dropout_why})")
        return "on: " + ("; ".join(on) if on else "none") + " | off: " + ("; ".join(off) if off else "none")


def plan_liger(recipe, backend, model_type: str | None) -> tuple[bool, str]:
    """Whether transformers' `use_liger_kernel` goes on (decided before TrainingArguments exist)."""
    wanted = recipe.use_liger_kernel
    if wanted is False:
        return False, "use_liger_kernel: false"
    if not backend.supports_liger:
        return False, f"CUDA only, this is {backend.name}"
    available = backend.liger_kernel()
    if available.ok:
        supported = _liger_model_types()
        if supported is not None and model_type not in supported:
            available = type(available)(False, f"liger-kernel has no kernels for {model_type} models")
    if not available.ok and wanted is True:
        raise UserError(
            f"use_liger_kernel: true: {available.reason}; install it or set use_liger_kernel: auto"
        )
    return available.ok, available.reason


def _liger_model_types() -> set[str] | None:
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception:  # layout of another liger-kernel version: let transformers decide
        return None
    return set(MODEL_TYPE_TO_APPLY_LIGER_FN)


def apply_fused_ops(recipe, backend, model) -> tuple[list[str], str]:
    """The backend's fused operators, swapped into the base model (before LoRA wraps its layers)."""
    wanted = recipe.npu_fused_ops
    if wanted is False:
        return [], "npu_fused_ops: false"
    if not backend.supports_fused_ops:
        return [], f"Ascend only, this is {backend.name}"
    used, note = backend.apply_fused_ops(model)
    if not used and wanted is True:
        raise UserError(f"npu_fused_ops: true: {note}; set npu_fused_ops: auto")
    return used, note


def apply_fast_dropout(recipe, backend, model) -> tuple[bool, str]:
    """Swap LoRA's dropout modules for the backend's faster one (after LoRA is attached)."""
    if recipe.fast_dropout is False:
        return False, "fast_dropout: false"
    if not backend.supports_fast_dropout:
        return False, f"CPU only, this is {backend.name}"
    if not recipe.lora_dropout:
        return False, "lora_dropout is 0"
    import torch

    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not hasattr(dropouts, "items"):
            continue
        for name, layer in list(dropouts.items()):
            if type(layer) is torch.nn.Dropout and layer.p > 0:
                dropouts[name] = backend.dropout_layer(layer.p)
                swapped += 1
    if not swapped:
        return False, "this peft builds no nn.Dropout for LoRA's inputs"
    return True, f"LoRA's dropout masks from 32-bit random integers on {swapped} layers; same distribution"


def learned_logits_supported(model, liger: bool) -> tuple[bool, str]:
    """Whether the model can compute logits and loss at chosen positions only (transformers >= 5)."""
    if liger:
        return False, "Liger's fused linear cross-entropy already skips the logits"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "logits_to_keep" not in inspect.signature(type(base).forward).parameters:
        return False, f"{type(base).__name__} takes no logits_to_keep in this transformers"
    try:
        from transformers.loss.loss_utils import ForCausalLMLoss
    except ImportError:
        return False, "this transformers has no shared causal-LM loss"
    if "shift_labels" not in inspect.signature(ForCausalLMLoss).parameters:
        return False, "this transformers' causal-LM loss takes no shift_labels"
    if getattr(base, "loss_function", None) is not ForCausalLMLoss:
        return False, f"{type(base).__name__} computes its own loss"
    return True, "exact: the loss reads no other logits"


def learned_positions_only(inputs: dict) -> dict:
    """Model inputs that ask for logits only where a (shifted) label is learned, with those labels.

    The positions are shared by the rows of a batch (``logits_to_keep`` as 1-D indices): every position
    learned in some row is kept, and the rows that do not learn it carry -100 there."""
    import torch

    labels = inputs.get("labels")
    if labels is None:
        return inputs
    shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    keep = (shifted != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    if keep.numel() == 0:
        return inputs
    return {**inputs, "logits_to_keep": keep, "shift_labels": shifted[:, keep]}
