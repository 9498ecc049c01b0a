"""What a run achieves per second: real (non-padding) tokens, the share of padding, peak memory, and on
accelerators the model FLOPs utilisation (MFU).

Counted from the micro-batches the Trainer trains on, over training time only (evaluation excluded).
Each logged loss line gets the numbers of the interval since the previous one; the end of a run prints
and saves the whole run's (``train_real_tokens_per_second`` ... in train_results.json).

MFU = model FLOPs per second / (peak FLOP/s of one device x devices), with the model FLOPs of LoRA on a
frozen base, per token (N = frozen weights of the decoder layers, H = the output head, A = the adapter):

- layers: 4N (forward 2N, backward to the inputs 2N: frozen weights get no gradient), 6N with gradient
  checkpointing (the forward runs twice);
- output head: 4H at every position it runs on (all tokens, or only the learned ones);
- adapter: 6A (its weights do get gradients), 8A with gradient checkpointing;
- attention: for an example of L tokens, 6 x layers x width x L^2 (forward 2 x width x L^2 per layer,
  causal; backward twice that), 8 x ... with checkpointing; width = heads x head_dim.

Peak FLOP/s come from the backend (datasheet values for common NVIDIA GPUs) or ``DUOTUNE_PEAK_TFLOPS``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["THROUGHPUT_KEYS", "FlopCounter", "ThroughputMeter", "batch_tokens", "describe", "flop_counter"]

#: keys each trainer_log.jsonl loss line (and SwanLab) gets; train_results.json has them with "train_"
THROUGHPUT_KEYS = ("real_tokens_per_second", "padding_fraction", "peak_memory_gib", "mfu")
IGNORE_INDEX = -100


def batch_tokens(inputs: dict[str, Any]) -> tuple[int, int, int]:
    """(real tokens, token slots, sum of the examples' squared lengths) of one micro-batch: padded
    (a 2-D attention_mask), or flattened (cu_seq_lens_q, or position_ids restarting at 0)."""
    import torch

    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        lengths = mask.sum(dim=-1).long()
    elif inputs.get("cu_seq_lens_q") is not None:
        cu = inputs["cu_seq_lens_q"].long()
        lengths = cu[1:] - cu[:-1]
    elif inputs.get("position_ids") is not None:
        starts = (inputs["position_ids"].reshape(-1) == 0).nonzero().reshape(-1)
        ends = torch.cat([starts[1:], torch.tensor([ids.numel()], device=starts.device)])
        lengths = ends - starts
    else:  # unpadded rows
        lengths = torch.full((ids.shape[0],), ids.shape[-1], dtype=torch.long)
    return int(lengths.sum()), int(ids.numel()), int((lengths**2).sum())


def learned_positions(inputs: dict[str, Any]) -> int:
    labels = inputs.get("labels")
    return int((labels[..., 1:] != IGNORE_INDEX).sum()) if labels is not None else 0


@dataclass(frozen=True)
class FlopCounter:
    """Model FLOPs of LoRA training (see the module docstring for the formula)."""

    layer_params: int
    head_params: int
    adapter_params: int
    layers: int
    attention_width: int
    recompute: bool

    def flops(self, tokens: int, head_tokens: int, sum_squared_lengths: int) -> float:
        layers = (6 if self.recompute else 4) * self.layer_params * tokens
        head = 4 * self.head_params * head_tokens
        adapter = (8 if self.recompute else 6) * self.adapter_params * tokens
        attention = (8 if self.recompute else 6) * self.layers * self.attention_width * sum_squared_lengths
        return float(layers + head + adapter + attention)


def flop_counter(model, recompute: bool) -> FlopCounter:
    """Count the weights of a (LoRA-wrapped) causal LM by role."""
    embed = model.get_input_embeddings()
    head = model.get_output_embeddings()
    embed_w = getattr(embed, "weight", None)
    head_w = getattr(head, "weight", None)
    layer = adapter = 0
    for param in model.parameters():
        if param.requires_grad:
            adapter += param.numel()
        elif param.dim() >= 2 and param is not embed_w and param is not head_w:
            layer += param.numel()
    config = model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return FlopCounter(
        layer_params=layer,
        head_params=head_w.numel() if head_w is not None else 0,
        adapter_params=adapter,
        layers=config.num_hidden_layers,
        attention_width=heads * head_dim,
        recompute=recompute,
    )


class _Counts:
    def __init__(self) -> None:
        self.real = self.slots = self.head = self.squares = 0
        self.seconds = 0.0

    def values(self) -> list[float]:
        return [float(self.real), float(self.slots), float(self.head), float(self.squares)]


class ThroughputMeter:
    """Counts the micro-batches of training and turns them into the logged throughput numbers.

    ``reduce`` (set by the Trainer in a multi-process run) sums a list of floats over processes."""

    def __init__(
        self,
        *,
        flops: FlopCounter | None = None,
        peak_flops: float | None = None,
        peak_memory: Callable[[], int | None] = lambda: None,
        learned_logits_only: bool = False,
        processes: int = 1,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.flops = flops
        self.peak_flops = peak_flops
        self.peak_memory = peak_memory
        self.learned_logits_only = learned_logits_only
        self.processes = processes
        self.clock = clock
        self.reduce: Callable[[list[float]], list[float]] | None = None
        self.total = _Counts()
        self.interval = _Counts()
        self._clock: float | None = None  # perf_counter when time was last booked
        self._paused = 0

    def add(self, inputs: dict[str, Any]) -> None:
        """Book one micro-batch (called as its training step starts)."""
        self._book_time()
        real, slots, squares = batch_tokens(inputs)
        head = learned_positions(inputs) if self.learned_logits_only else real
        for counts in (self.total, self.interval):
            counts.real += real
            counts.slots += slots
            counts.head += head
            counts.squares += squares

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        """Time inside (evaluation) is not training time."""
        self._book_time()
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
            self._clock = self.clock()

    def _book_time(self) -> None:
        now = self.clock()
        if self._clock is not None and not self._paused:
            elapsed = now - self._clock
            self.total.seconds += elapsed
            self.interval.seconds += elapsed
        self._clock = now

    def interval_logs(self) -> dict[str, float]:
        """The numbers since the previous call, for a loss line of trainer_log.jsonl and the trackers."""
        self._book_time()
        logs = self._numbers(self.interval)
        self.interval = _Counts()
        return logs

    def summary(self) -> dict[str, float]:
        """The whole run's numbers (train_results.json gets them with a train_ prefix)."""
        self._book_time()
        numbers = self._numbers(self.total)
        numbers["real_tokens"] = self._summed(self.total)[0]
        return numbers

    def _summed(self, counts: _Counts) -> list[float]:
        values = counts.values()
        return self.reduce(values) if self.reduce is not None and self.processes > 1 else values

    def _numbers(self, counts: _Counts) -> dict[str, float]:
        real, slots, head, squares = self._summed(counts)
        seconds = max(counts.seconds, 1e-9)
        logs: dict[str, float] = {
            "real_tokens_per_second": round(real / seconds, 2),
            "padding_fraction": round(1.0 - real / slots, 6) if slots else 0.0,
        }
        peak = self.peak_memory()
        if peak:
            logs["peak_memory_gib"] = round(peak / 2**30, 4)
        if self.flops is not None and self.peak_flops:
            achieved = self.flops.flops(int(real), int(head), int(squares)) / seconds
            logs["mfu"] = round(achieved / (self.peak_flops * self.processes), 6)
        return logs


def describe(summary: dict[str, float]) -> str:
    """`1,930 real tokens/s, padding 0.8%, peak 3.40 GiB, MFU 41.2%` for the end of a run."""
    parts = [
        f"{summary['real_tokens_per_second']:,.0f} real tokens/s",
        f"padding {100 * summary['padding_fraction']:.1f}%",
    ]
    if "peak_memory_gib" in summary:
        parts.append(f"peak {summary['peak_memory_gib']:.2f} GiB")
    if "mfu" in summary:
        parts.append(f"MFU {100 * summary['mfu']:.1f}%")
    return ", ".join(parts)
