"""The Evaluate tab: ``duotune eval`` (loss and perplexity on the learned tokens of a dataset, encoded
as training encodes it), run as the CLI command it shows, its output streamed."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
from duotune.trainer.commands.evaluate import EVAL_RESULTS
from duotune.trainer.data.load import FORMATS

from ..locales import ui_text
from .common import (
    RUNS_ROOT,
    adapter_box,
    choice_box,
    command_panel,
    device_box,
    dtype_box,
    run_command,
    text_box,
)

__all__ = ["build_eval_tab", "eval_args"]


def eval_args(
    adapter, model, dataset, fmt, cutoff, max_samples, batch, device, dtype
) -> tuple[list[str], Path]:
    """The arguments of ``duotune eval`` for the form, and where its results land (next to the adapter)."""
    args = ["eval"]
    adapter = str(adapter or "").strip()
    model = str(model or "").strip()
    if adapter:
        args += ["--adapter", adapter]
    if model:
        args += ["--model", model]
    for spec in [s.strip() for s in str(dataset or "").split(",") if s.strip()]:
        args += ["--dataset", spec]
    args += ["--dataset-format", fmt or "auto"]
    # optional numbers go to the CLI as typed: its own option parsing judges them
    if str(cutoff or "").strip():
        args += ["--cutoff-len", str(cutoff).strip()]
    if str(max_samples or "").strip():
        args += ["--max-samples", str(max_samples).strip()]
    args += ["--batch-size", str(int(batch or 4)), "--device", device or "auto", "--dtype", dtype or "auto"]
    output = (Path(adapter) if adapter else Path(RUNS_ROOT)) / EVAL_RESULTS
    return args + ["--output", str(output)], output


def build_eval_tab(manager, lang: str = "en") -> dict:
    c: dict = {}

    with gr.Row(equal_height=True):
        c["eval_adapter"] = adapter_box(manager, "eval_adapter", lang, scale=3)
        c["eval_model"] = text_box(manager, "eval_model", lang, scale=2)
        c["eval_dataset"] = choice_box(
            manager,
            "eval_dataset",
            lang,
            ["demo://counselling"],
            "demo://counselling",
            allow_custom_value=True,
            scale=2,
        )
    with gr.Row(equal_height=True):
        c["eval_format"] = choice_box(manager, "eval_format", lang, ["auto", *FORMATS], "auto")
        c["eval_cutoff"] = text_box(manager, "eval_cutoff", lang)
        c["eval_max_samples"] = text_box(manager, "eval_max_samples", lang)
        c["eval_batch"] = manager.add(
            "eval_batch", gr.Number(4, precision=0, label=ui_text("eval_batch", lang), elem_id="eval_batch")
        )
        c["eval_device"] = device_box(manager, "eval_device", lang)
        c["eval_dtype"] = dtype_box(manager, "eval_dtype", lang)
    inputs = [c[k] for k in ("eval_adapter", "eval_model", "eval_dataset", "eval_format", "eval_cutoff",
                             "eval_max_samples", "eval_batch", "eval_device", "eval_dtype")]  # fmt: skip

    def on_eval(*vals):
        args, output = eval_args(*vals)

        def summary(lines: list[str]) -> str:
            results = json.loads(output.read_text(encoding="utf-8"))
            return (
                f"**loss {results['loss']:.4f}** · perplexity {results['perplexity']:.4g} · "
                f"{results['learned_tokens']:,} learned tokens in {results['examples']} examples · `{output}`"
            )

        yield from run_command(args, summary)

    c.update(command_panel(manager, lang, "eval", inputs, on_eval))
    return c
