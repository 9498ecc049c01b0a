"""The Evaluate tab: ``duotune eval`` (loss and perplexity on the learned tokens of a dataset, encoded
as training encodes it), run as the CLI command it shows, its output streamed."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
from duotune.backends.registry import DEVICE_CHOICES

from .. import runner
from ..form import command_line
from ..locales import ui_text
from ..monitor import adapter_folders, error_lines
from .common import command_box, log_box, result_box

__all__ = ["build_eval_tab", "eval_args"]

RUNS_ROOT = "saves"


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
    output = (Path(adapter) if adapter else Path(RUNS_ROOT)) / "eval_results.json"
    return args + ["--output", str(output)], output


def build_eval_tab(manager, lang: str = "en") -> dict:
    c: dict = {}

    def L(elem_id, what="label"):  # noqa: N802
        return ui_text(elem_id, lang, what)

    with gr.Row(equal_height=True):
        c["eval_adapter"] = manager.add("eval_adapter", gr.Dropdown(
            choices=adapter_folders(RUNS_ROOT), value=None, allow_custom_value=True, label=L("eval_adapter"),
            info=L("eval_adapter", "info"), elem_id="eval_adapter", scale=3))  # fmt: skip
        c["eval_model"] = manager.add("eval_model", gr.Textbox(
            "", label=L("eval_model"), info=L("eval_model", "info"), elem_id="eval_model", scale=2))  # fmt: skip
        c["eval_dataset"] = manager.add("eval_dataset", gr.Dropdown(
            choices=["demo://counselling"], value="demo://counselling", allow_custom_value=True,
            label=L("eval_dataset"), elem_id="eval_dataset", scale=2))  # fmt: skip
    with gr.Row(equal_height=True):
        c["eval_format"] = manager.add("eval_format", gr.Dropdown(
            ["auto", "conversation", "alpaca", "messages"], value="auto", label=L("eval_format"), elem_id="eval_format"))  # fmt: skip
        c["eval_cutoff"] = manager.add(
            "eval_cutoff",
            gr.Textbox("", label=L("eval_cutoff"), info=L("eval_cutoff", "info"), elem_id="eval_cutoff"),
        )
        c["eval_max_samples"] = manager.add(
            "eval_max_samples", gr.Textbox("", label=L("eval_max_samples"), elem_id="eval_max_samples")
        )
        c["eval_batch"] = manager.add(
            "eval_batch", gr.Number(4, precision=0, label=L("eval_batch"), elem_id="eval_batch")
        )
        c["eval_device"] = manager.add("eval_device", gr.Dropdown(
            list(DEVICE_CHOICES), value="auto", label=L("eval_device"), elem_id="eval_device"))  # fmt: skip
        c["eval_dtype"] = manager.add("eval_dtype", gr.Dropdown(
            ["auto", "bf16", "fp16", "fp32"], value="auto", label=L("eval_dtype"), elem_id="eval_dtype"))  # fmt: skip
    c["eval_btn"] = manager.add(
        "eval_btn", gr.Button(L("eval_btn", "value"), variant="primary", elem_id="eval_btn")
    )
    c["eval_command"] = command_box(manager, "eval_command", lang)
    c["eval_result"] = result_box(manager, "eval_result", lang)
    c["eval_log"] = log_box(manager, "eval_log", lang)

    inputs = [c[k] for k in ("eval_adapter", "eval_model", "eval_dataset", "eval_format", "eval_cutoff",
                             "eval_max_samples", "eval_batch", "eval_device", "eval_dtype")]  # fmt: skip

    def on_eval(*vals):
        args, output = eval_args(*vals)
        cmd = command_line(args, program="duotune")
        yield cmd, "", ""
        result: tuple[list[str], int | None] = ([], None)
        for result in runner.stream_cli(args):
            yield gr.skip(), gr.skip(), "\n".join(result[0])
        lines, code = result
        if code == 0:
            results = json.loads(output.read_text(encoding="utf-8"))
            yield (
                gr.skip(),
                (
                    f"**loss {results['loss']:.4f}** · perplexity {results['perplexity']:.4g} · "
                    f"{results['learned_tokens']:,} learned tokens in {results['examples']} examples · `{output}`"
                ),
                gr.skip(),
            )
        else:
            yield (
                gr.skip(),
                f"⚠ exit {code}\n\n```text\n{error_lines(lines) or (lines[-1] if lines else '')}\n```",
                gr.skip(),
            )

    c["eval_btn"].click(on_eval, inputs, [c["eval_command"], c["eval_result"], c["eval_log"]])
    return c
