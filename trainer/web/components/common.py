"""Components the Evaluate and Export tabs share: the command shown, its result, its output."""

from __future__ import annotations

import gradio as gr

from ..locales import ui_text

__all__ = ["command_box", "log_box", "result_box"]


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
