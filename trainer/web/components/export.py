"""The Export tab: ``duotune merge --verify`` (base + adapter folded into one standalone model, then
reloaded and checked against base + adapter), run as the CLI command it shows."""

from __future__ import annotations

import gradio as gr
from duotune.backends.registry import DEVICE_CHOICES, HOST_DEVICE

from .. import runner
from ..form import command_line
from ..locales import ui_text
from ..monitor import adapter_folders, error_lines
from .common import command_box, log_box, result_box
from .evaluate import RUNS_ROOT

__all__ = ["build_export_tab", "merge_args"]


def merge_args(adapter, base, out, dtype, shard, device, verify) -> list[str]:
    args = ["merge", "--adapter", str(adapter or "").strip(), "--output-dir", str(out or "").strip()]
    if str(base or "").strip():
        args += ["--base", str(base).strip()]
    args += [
        "--dtype",
        dtype or "auto",
        "--max-shard-size",
        str(shard or "5GB").strip(),
        "--device",
        device or HOST_DEVICE,
    ]
    return args + (["--verify"] if verify else [])


def build_export_tab(manager, lang: str = "en") -> dict:
    c: dict = {}

    def L(elem_id, what="label"):  # noqa: N802
        return ui_text(elem_id, lang, what)

    with gr.Row(equal_height=True):
        c["export_adapter"] = manager.add("export_adapter", gr.Dropdown(
            choices=adapter_folders(RUNS_ROOT), value=None, allow_custom_value=True, label=L("export_adapter"),
            elem_id="export_adapter", scale=3))  # fmt: skip
        c["export_base"] = manager.add("export_base", gr.Textbox(
            "", label=L("export_base"), info=L("export_base", "info"), elem_id="export_base", scale=2))  # fmt: skip
        c["export_dir"] = manager.add("export_dir", gr.Textbox(
            "", label=L("export_dir"), info=L("export_dir", "info"), placeholder="merged/my-model",
            elem_id="export_dir", scale=2))  # fmt: skip
    with gr.Row(equal_height=True):
        c["export_dtype"] = manager.add("export_dtype", gr.Dropdown(
            ["auto", "bf16", "fp16", "fp32"], value="auto", label=L("export_dtype"), elem_id="export_dtype"))  # fmt: skip
        c["export_shard"] = manager.add(
            "export_shard", gr.Textbox("5GB", label=L("export_shard"), elem_id="export_shard")
        )
        c["export_device"] = manager.add("export_device", gr.Dropdown(
            list(DEVICE_CHOICES), value=HOST_DEVICE, label=L("export_device"), elem_id="export_device"))  # fmt: skip
        c["export_verify"] = manager.add("export_verify", gr.Checkbox(
            True, label=L("export_verify"), info=L("export_verify", "info"), elem_id="export_verify"))  # fmt: skip
    c["export_btn"] = manager.add(
        "export_btn", gr.Button(L("export_btn", "value"), variant="primary", elem_id="export_btn")
    )
    c["export_command"] = command_box(manager, "export_command", lang)
    c["export_result"] = result_box(manager, "export_result", lang)
    c["export_log"] = log_box(manager, "export_log", lang)

    inputs = [c[k] for k in ("export_adapter", "export_base", "export_dir", "export_dtype", "export_shard",
                             "export_device", "export_verify")]  # fmt: skip

    def on_export(*vals):
        args = merge_args(*vals)
        yield command_line(args, program="duotune"), "", ""
        result: tuple[list[str], int | None] = ([], None)
        for result in runner.stream_cli(args):
            yield gr.skip(), gr.skip(), "\n".join(result[0])
        lines, code = result
        done = [line for line in lines if "verified:" in line or "merged model in" in line]
        if code == 0:
            yield gr.skip(), "✅ " + "\n\n".join(x.removeprefix("[duotune] ") for x in done), gr.skip()
        else:
            yield (
                gr.skip(),
                f"⚠ exit {code}\n\n```text\n{error_lines(lines) or (lines[-1] if lines else '')}\n```",
                gr.skip(),
            )

    c["export_btn"].click(on_export, inputs, [c["export_command"], c["export_result"], c["export_log"]])
    return c
