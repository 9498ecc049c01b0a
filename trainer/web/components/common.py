"""Widgets the Evaluate, Chat and Export tabs share: the adapter, model, device and dtype pickers, the
command a tab runs, its result and its output. Each is registered under its elem_id, with its texts
from the locales."""

from __future__ import annotations

import gradio as gr
from duotune.backends.registry import DEVICE_CHOICES
from duotune.trainer.model.inference import DTYPES

from .. import runner
from ..form import command_line
from ..locales import ui_text
from ..monitor import adapter_folders, error_lines

__all__ = [
    "RUNS_ROOT",
    "adapter_box",
    "choice_box",
    "command_box",
    "command_panel",
    "device_box",
    "dtype_box",
    "log_box",
    "result_box",
    "run_command",
    "text_box",
]

#: where the tabs look for trained adapters (the folder `train` writes to by default)
RUNS_ROOT = "saves"


def _texts(elem_id: str, lang: str) -> dict:
    texts = {"label": ui_text(elem_id, lang)}
    info = ui_text(elem_id, lang, "info")
    return {**texts, "info": info} if info else texts


def text_box(manager, elem_id: str, lang: str, value: str = "", **kwargs):
    return manager.add(elem_id, gr.Textbox(value, elem_id=elem_id, **_texts(elem_id, lang), **kwargs))


def choice_box(manager, elem_id: str, lang: str, choices, value, **kwargs):
    return manager.add(
        elem_id, gr.Dropdown(list(choices), value=value, elem_id=elem_id, **_texts(elem_id, lang), **kwargs)
    )


def adapter_box(manager, elem_id: str, lang: str, **kwargs):
    """The trained adapters under RUNS_ROOT (refreshed when the tab opens); any folder can be typed."""
    return choice_box(
        manager, elem_id, lang, adapter_folders(RUNS_ROOT), None, allow_custom_value=True, **kwargs
    )


def device_box(manager, elem_id: str, lang: str, value: str = "auto", **kwargs):
    return choice_box(manager, elem_id, lang, DEVICE_CHOICES, value, **kwargs)


def dtype_box(manager, elem_id: str, lang: str, **kwargs):
    return choice_box(manager, elem_id, lang, DTYPES, "auto", **kwargs)


def command_box(manager, elem_id: str, lang: str):
    return manager.add(
        elem_id,
        gr.Code(
            "", language="shell", label=ui_text(elem_id, lang), elem_id=elem_id, interactive=False, lines=1
        ),
    )


def result_box(manager, elem_id: str, lang: str):
    return manager.add(
        elem_id, gr.Markdown("", label=ui_text(elem_id, lang), elem_id=elem_id, elem_classes=["dt-result"])
    )


def log_box(manager, elem_id: str, lang: str):
    return manager.add(
        elem_id,
        gr.Textbox("", label=ui_text(elem_id, lang), lines=8, max_lines=8, interactive=False, autoscroll=True,
                   elem_id=elem_id, elem_classes=["dt-log"]),
    )  # fmt: skip


def run_command(args: list[str], success):
    """Run ``duotune ARGS`` for a tab, yielding (command, result, output) updates: the command line first,
    the output as it comes, then ``success(output lines)`` or the CLI's own error."""
    yield command_line(args, program="duotune"), "", ""
    result: tuple[list[str], int | None] = ([], None)
    for result in runner.stream_cli(args):
        yield gr.skip(), gr.skip(), "\n".join(result[0])
    lines, code = result
    if code == 0:
        yield gr.skip(), success(lines), gr.skip()
    else:
        yield (
            gr.skip(),
            f"⚠ exit {code}\n\n```text\n{error_lines(lines) or (lines[-1] if lines else '')}\n```",
            gr.skip(),
        )


def command_panel(manager, lang: str, prefix: str, inputs: list, handler) -> dict:
    """A tab's run button (``{prefix}_btn``) with the command it runs, its result and its output, the
    button wired to ``handler(*inputs)``, a generator of (command, result, output) updates."""
    c = {f"{prefix}_btn": manager.add(f"{prefix}_btn", gr.Button(
        ui_text(f"{prefix}_btn", lang, "value"), variant="primary", elem_id=f"{prefix}_btn"))}  # fmt: skip
    for part, make in (("command", command_box), ("result", result_box), ("log", log_box)):
        c[f"{prefix}_{part}"] = make(manager, f"{prefix}_{part}", lang)
    c[f"{prefix}_btn"].click(
        handler, inputs, [c[f"{prefix}_command"], c[f"{prefix}_result"], c[f"{prefix}_log"]]
    )
    return c
