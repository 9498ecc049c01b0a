"""Stopping a run that diverged instead of training on NaN.

Before every optimizer update the guard looks at the update's loss (each micro-batch's, on every
process) and at the gradients of the trainable parameters. If either is not finite the update is not
applied: the gradients are dropped, so the optimizer leaves the weights and its own state untouched.
``skip_nonfinite_steps`` such updates are tolerated in a run (fp16 loss scaling works this way); one
more ends the run with :class:`Diverged` (exit code 3) before anything of the bad step is saved. Under
fp16 an overflow of the gradients alone is GradScaler's business (it skips that update and lowers the
scale); a non-finite loss is not.
"""

from __future__ import annotations

import math

from duotune.trainer.common.errors import UserError

__all__ = ["Diverged", "EXIT_DIVERGED", "NonFiniteGuard", "make_guard_callback"]

EXIT_DIVERGED = 3


class Diverged(UserError):
    """The loss or the gradient norm stopped being a finite number."""

    exit_code = EXIT_DIVERGED

    def __init__(self, message: str, step: int):
        self.step = step
        super().__init__(message)


class NonFiniteGuard:
    """Watches each update's loss and gradients (see the module docstring)."""

    def __init__(self, *, allowed_skips: int, precision: str, learning_rate: float, max_grad_norm: float):
        self.allowed_skips = allowed_skips
        self.precision = precision
        self.learning_rate = learning_rate
        self.max_grad_norm = max_grad_norm
        self.skipped: list[int] = []
        self._loss_ok = None  # a 0-dim bool tensor on the device: every micro-batch loss so far finite

    def observe_loss(self, loss) -> None:
        """One micro-batch's loss (kept on the device: no synchronisation per micro-batch)."""
        import torch

        ok = torch.isfinite(loss.detach()).all()
        self._loss_ok = ok if self._loss_ok is None else self._loss_ok & ok

    def before_update(self, model, step: int, *, device=None) -> bool:
        """Called before the optimizer steps for update ``step`` (1-based). Returns True when the update
        goes ahead, False when it is skipped; raises Diverged when the run must stop."""
        loss_ok = self._loss_finite(device)
        grads_ok = self._grads_finite(model)
        self._loss_ok = None
        if loss_ok and grads_ok:
            return True
        if not loss_ok:
            what = "the loss"
        elif self.precision == "fp16":
            return True  # an fp16 gradient overflow: GradScaler skips the update and lowers the scale
        else:
            what = "the gradient norm"
        if len(self.skipped) < self.allowed_skips:
            self.skipped.append(step)
            for p in model.parameters():
                p.grad = None  # the optimizer skips parameters without a gradient: nothing changes
            from duotune.trainer.common.console import echo

            echo(
                f"step {step}: {what} is not finite; update skipped "
                f"({len(self.skipped)} of skip_nonfinite_steps={self.allowed_skips})"
            )
            return False
        raise Diverged(self._message(step, what), step)

    def _loss_finite(self, device) -> bool:
        if self._loss_ok is None:
            return True
        import torch
        import torch.distributed as dist

        ok = self._loss_ok.to(torch.int32)
        if dist.is_available() and dist.is_initialized():
            bad = (1 - ok).to(device) if device is not None else 1 - ok
            dist.all_reduce(bad)  # SUM: works on every collective backend
            return int(bad.item()) == 0
        return bool(ok.item())

    @staticmethod
    def _grads_finite(model) -> bool:
        """All gradients finite (after DDP's all-reduce every process holds the same ones). Gradients that
        live elsewhere (DeepSpeed partitions them) are not seen here; the loss check still applies."""
        import torch

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return True
        norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])
        return bool(torch.isfinite(norms).all().item())

    def _message(self, step: int, what: str) -> str:
        tips = [f"a lower learning_rate (now {self.learning_rate:g})"]
        if self.precision == "fp16":
            tips.append(
                "compute_type: bf16 where the device has it (fp16 overflows; Ascend 910A and 310P have no "
                "bf16: use fp32 there)"
            )
        if not self.max_grad_norm or math.isinf(self.max_grad_norm):
            tips.append("gradient clipping (max_grad_norm: 1.0)")
        tips.append("skip_nonfinite_steps: N to skip a few bad updates")
        skipped = f" after skipping {len(self.skipped)} update(s)" if self.skipped else ""
        return (
            f"training diverged at step {step}: {what} is not finite (NaN or inf){skipped}; stopped before "
            f"that update, saving nothing from it. Try {', '.join(tips[:-1])}, or {tips[-1]}"
        )


def make_guard_callback(guard: NonFiniteGuard):
    from transformers import TrainerCallback

    class NonFiniteCallback(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            guard.before_update(model, state.global_step + 1, device=args.device)

    return NonFiniteCallback()
