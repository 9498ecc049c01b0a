"""The top of the page: the title and the language switch (English / 中文), which re-labels every
component at once."""

from __future__ import annotations

import gradio as gr

from ..locales import LANGS, ui_text

__all__ = ["build_top"]


def build_top(manager, lang: str = "en"):
    """The title and the language dropdown (elem_id ``lang``); returns the dropdown."""
    with gr.Row(equal_height=True, elem_id="top_bar"):
        manager.add("title", gr.Markdown(ui_text("title", lang, "value"), elem_id="title"))
        lang_box = gr.Dropdown(
            choices=[(name, code) for code, name in LANGS.items()],
            value=lang,
            label=ui_text("lang", lang),
            elem_id="lang",
            scale=0,
            min_width=160,
        )
        manager.add("lang", lang_box)
    return lang_box
