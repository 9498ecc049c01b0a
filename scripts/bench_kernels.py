"""Micro-benchmark behind duotune's kernel choices on a device: one LoRA training step (forward and
backward, gradient checkpointing on) of the `duotune bench` tiny model on one micro-batch of its
conversations, laid out each way duotune can lay it out, with and without the output head on learned
positions only.

    python scripts/bench_kernels.py                          # CPU, vocabularies of 1,024 and 32,000
    python scripts/bench_kernels.py --vocab 152064 --repeats 5

The variants run interleaved, ``--repeats`` times; it prints the median processor time (all threads)
and wall time per step of each, and the speed-up of its processor time over the padded batch. docs/performance.md holds the
measured table.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import types


def _model(vocab: int, attn: str, batching=None):
    import torch
    from duotune.trainer.demo.bench_data import MODEL_SHAPES
    from duotune.trainer.model.attention import enable_batching
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = {k: v for k, v in MODEL_SHAPES["tiny"].items() if k != "model_type"}
    config = AutoConfig.for_model("llama", **{**spec, "vocab_size": vocab})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    if batching is not None:
        enable_batching(model, batching, types.SimpleNamespace(cutoff_len=1024))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.config.use_cache = False
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=targets))
    model.train()
    return model


def sdpa_examples_batched(query, key, value, cu_seqlens, scale: float, dropout: float):
    """The alternative measured against duotune's per-example SDPA: causal SDPA over the examples stacked
    as a batch: each example's tokens are scattered into a
    row of the longest example's length, one SDPA call runs on the rows, the tokens are gathered back.

    Exact for every real token: the rows are padded at the end only, so causal attention never lets a
    real token see a padding position (padding positions see garbage, and are dropped). The linear
    layers still see no padding; only attention computes the rows' padding, in a constant handful of
    operations however many examples there are (on a CPU, many small operations cost more)."""
    import torch
    import torch.nn.functional as F

    bounds = [int(b) for b in cu_seqlens.tolist()]
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    count, longest = len(lengths), max(lengths)
    device = query.device
    example = torch.repeat_interleave(
        torch.arange(count, device=device), torch.tensor(lengths, device=device)
    )
    starts = torch.tensor([0, *lengths[:-1]], device=device).cumsum(0)
    slot = example * longest + torch.arange(query.shape[2], device=device) - starts[example]

    def stack(tensor):  # (1, heads, tokens, dim) -> (examples, heads, longest, dim)
        heads, dim = tensor.shape[1], tensor.shape[3]
        rows = tensor[0].transpose(0, 1).new_zeros(count * longest, heads, dim)
        rows = rows.index_copy(0, slot, tensor[0].transpose(0, 1))
        return rows.view(count, longest, heads, dim).transpose(1, 2)

    groups = query.shape[1] // key.shape[1]
    out = F.scaled_dot_product_attention(
        stack(query),
        stack(key).repeat_interleave(groups, dim=1) if groups > 1 else stack(key),
        stack(value).repeat_interleave(groups, dim=1) if groups > 1 else stack(value),
        dropout_p=dropout,
        is_causal=True,
        scale=scale,
    )
    rows = out.transpose(1, 2).reshape(count * longest, out.shape[1], out.shape[3])
    return rows.index_select(0, slot).unsqueeze(0)


def _step(model, batch) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    model.zero_grad()
    model(**batch).loss.backward()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[1024, 32000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from duotune.backends.cpu import CpuBackend
    from duotune.collators import PaddingFreeCollator, Seq2SeqCollator
    from duotune.trainer.data.encode import ChatEncoder
    from duotune.trainer.data.load import row_to_messages
    from duotune.trainer.demo import demo_model_path
    from duotune.trainer.demo.bench_data import synthetic_conversations
    from duotune.trainer.model import attention
    from duotune.trainer.model.attention import plan_batching
    from duotune.trainer.model.kernels import learned_positions_only
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(demo_model_path()))
    rows = synthetic_conversations(args.batch_size, seed=args.seed)
    features = ChatEncoder(tokenizer, 1024).encode_texts([row_to_messages(r, "conversation") for r in rows])
    lengths = [f["length"] for f in features]
    padded = Seq2SeqCollator.from_tokenizer(tokenizer)(features)
    recipe = types.SimpleNamespace(
        padding_free=True,
        packing=False,
        neftune_noise_alpha=None,
        per_device_train_batch_size=8,
        cutoff_len=1024,
    )
    per_example = plan_batching(recipe, CpuBackend(), "sdpa", "fp32")
    stacked = dataclasses.replace(
        per_example, kernel_fn=sdpa_examples_batched, attention_name="bench_examples_stacked"
    )
    per_example = dataclasses.replace(
        per_example, kernel_fn=attention.sdpa_per_example, attention_name="bench_per_example"
    )
    flat = PaddingFreeCollator(boundaries="cu_seqlens")(features)
    masked = PaddingFreeCollator(boundaries="mask4d")(features)
    print(
        f"micro-batch: {len(lengths)} examples, {sum(lengths)} tokens, longest {max(lengths)}, "
        f"padded {len(lengths) * max(lengths)} ({1 - sum(lengths) / (len(lengths) * max(lengths)):.0%} padding)"
    )
    print("| vocabulary | layout | output head | CPU s / step | wall s / step | CPU speed-up |")
    print("| ---: | --- | --- | ---: | ---: | ---: |")
    for vocab in args.vocab:
        models = {
            "plain": _model(vocab, "sdpa"),
            "per example": _model(vocab, "sdpa", per_example),
            "stacked": _model(vocab, "sdpa", stacked),
        }
        variants = [
            ("padded (SDPA, 2-D mask)", "all positions", "plain", padded),
            ("padded (SDPA, 2-D mask)", "learned only", "plain", learned_positions_only(padded)),
            ("flattened, block-diagonal 4-D mask", "all positions", "plain", masked),
            ("flattened, SDPA per example", "all positions", "per example", flat),
            ("flattened, SDPA per example", "learned only", "per example", learned_positions_only(flat)),
            ("flattened, one SDPA on the examples stacked", "all positions", "stacked", flat),
            (
                "flattened, one SDPA on the examples stacked",
                "learned only",
                "stacked",
                learned_positions_only(flat),
            ),
        ]
        for _, _, which, batch in variants:
            _step(models[which], batch)  # warm-up
        times: list[list[tuple[float, float]]] = [[] for _ in variants]
        for _ in range(args.repeats):  # interleaved, so that a changing load slows every variant alike
            for i, (_, _, which, batch) in enumerate(variants):
                times[i].append(_step(models[which], batch))
        base_cpu = None
        for (layout, head, _, _), measured in zip(variants, times, strict=True):
            cpu = statistics.median(t[0] for t in measured)
            wall = statistics.median(t[1] for t in measured)
            base_cpu = base_cpu or cpu
            print(f"| {vocab:,} | {layout} | {head} | {cpu:.2f} | {wall:.2f} | {base_cpu / cpu:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
