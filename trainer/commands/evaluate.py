"""``duotune eval``: loss and perplexity on the learned tokens of a dataset, encoded exactly as training
encodes it (same chat template, same labels, same cutoff)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from duotune.trainer.common.console import kv
from duotune.trainer.common.errors import UserError
from duotune.trainer.common.files import atomic_write_text, write_error

#: where `duotune eval --adapter DIR` writes by default: not eval_results.json, which the Trainer writes
#: into a training output_dir for its own validation split
EVAL_RESULTS = "duotune_eval.json"

__all__ = ["evaluate_dataset", "token_losses"]


def token_losses(model, batch) -> tuple[float, int]:
    """Sum of next-token negative log-likelihoods over labelled positions, and their count."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    logits = logits[:, :-1].float()
    nll = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return float(nll), int((labels != -100).sum())


def evaluate_dataset(
    loaded,
    datasets: list[str],
    *,
    dataset_format: str = "auto",
    template: str = "auto",
    cutoff_len: int = 2048,
    max_samples: int | None = None,
    batch_size: int = 4,
    output: Path | None = None,
) -> dict[str, Any]:
    """Evaluate and print; write the results as JSON to ``output`` when given (never to the current
    directory by default: the CLI puts them next to the adapter)."""
    from duotune.collators import Seq2SeqCollator
    from duotune.trainer.data.encode import encode_dataset
    from duotune.trainer.data.templates import apply_template_choice

    template_desc = apply_template_choice(loaded.tokenizer, template, loaded.base.model_name_or_path)
    data = encode_dataset(
        datasets,
        loaded.tokenizer,
        dataset_format=dataset_format,
        cutoff_len=cutoff_len,
        max_samples=max_samples,
        skip_invalid_rows=False,
    )
    if data.num_examples == 0:
        raise UserError("no example has a learned token within cutoff_len; nothing to evaluate")
    collator = Seq2SeqCollator.from_tokenizer(loaded.tokenizer)
    rows = data.dataset.select_columns(["input_ids", "labels"])
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        batch = {k: v.to(loaded.device) for k, v in batch.items()}
        nll, count = token_losses(loaded.model, batch)
        total_nll += nll
        total_tokens += count
    loss = total_nll / total_tokens
    stats = data.stats()
    results = {
        "model": loaded.base.model_name_or_path,
        "adapter": str(loaded.adapter) if loaded.adapter else None,
        "datasets": list(datasets),
        "format": data.formats,
        "template": template_desc,
        "cutoff_len": cutoff_len,
        "device": loaded.device,
        "dtype": loaded.dtype,
        "rows": stats["rows_read"],
        "examples": stats["examples"],
        "dropped": stats["dropped"],
        "truncated": stats["truncated"],
        "tokens": stats["tokens"],
        "learned_tokens": total_tokens,
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
    }
    if output is not None:
        try:
            atomic_write_text(output, json.dumps(results, indent=2) + "\n")
        except OSError as e:
            raise write_error(e, "the results", output) from None
    kv("data", f"{data.formats}; template: {template_desc}")
    kv(
        "examples",
        f"{stats['examples']} of {stats['rows_read']} rows ({sum(stats['dropped'].values())} dropped)",
    )
    kv("tokens", f"{total_tokens:,} learned tokens evaluated")
    kv("loss", f"{loss:.6f} per learned token (perplexity {results['perplexity']:.4g})")
    if output is not None:
        kv("results", str(output.resolve()))
    else:
        kv("results", "printed only (no --adapter to put them next to): give --output FILE to keep them")
    return results
