"""The Export tab: ``duotune merge --verify`` (base + adapter folded into one standalone model, then
reloaded and checked against base + adapter), run as the CLI command it shows."""

from __future__ import annotations

import gradio as gr
from duotune.backends.registry import HOST_DEVICE

from ..locales import ui_text
from .common import (
    adapter_box,
    command_panel,
    device_box,
    dtype_box,
    run_command,
    text_box,
)

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

    with gr.Row(equal_height=True):
        c["export_adapter"] = adapter_box(manager, "export_adapter", lang, scale=3)
        c["export_base"] = text_box(manager, "export_base", lang, scale=2)
        c["export_dir"] = text_box(manager, "export_dir", lang, placeholder="merged/my-model", scale=2)
    with gr.Row(equal_height=True):
        c["export_dtype"] = dtype_box(manager, "export_dtype", lang)
        c["export_shard"] = text_box(manager, "export_shard", lang, "5GB")
        c["export_device"] = device_box(manager, "export_device", lang, HOST_DEVICE)
        c["export_verify"] = manager.add(
            "export_verify",
            gr.Checkbox(True, elem_id="export_verify", label=ui_text("export_verify", lang),
                        info=ui_text("export_verify", lang, "info")),
        )  # fmt: skip
    inputs = [c[k] for k in ("export_adapter", "export_base", "export_dir", "export_dtype", "export_shard",
                             "export_device", "export_verify")]  # fmt: skip

    def on_export(*vals):
        def summary(lines: list[str]) -> str:
            done = [
                line.removeprefix("[duotune] ")
                for line in lines
                if "verified:" in line or "merged model in" in line
            ]
            return "✅ " + "\n\n".join(done)

        yield from run_command(merge_args(*vals), summary)

    c.update(command_panel(manager, lang, "export", inputs, on_export))
    return c
