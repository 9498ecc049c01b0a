"""The Runs tab: the runs under a folder with their status, progress, final loss and eval loss, and a
button that opens one in the Train tab (its recipe in the form, its progress re-attached)."""

from __future__ import annotations

import gradio as gr

from ..locales import message, ui_text
from ..monitor import list_runs, updated_text

__all__ = ["build_runs_tab", "runs_table"]


def runs_table(root: str, lang: str):
    import pandas as pd

    rows = []
    for st in list_runs(root):
        total = st.total or "?"
        rows.append(
            [
                str(st.output_dir),
                message(f"status_{st.status}", lang) if st.status != "none" else "-",
                f"{st.step}/{total}",
                f"{st.final_loss:.4f}" if st.final_loss is not None else "",
                f"{st.final_eval_loss:.4f}" if st.final_eval_loss is not None else "",
                updated_text(st.output_dir),
            ]
        )
    cols = [
        message(k, lang) for k in ("col_run", "col_status", "col_step", "col_loss", "col_eval", "col_updated")
    ]
    return pd.DataFrame(rows, columns=cols)


def build_runs_tab(manager, lang: str = "en") -> dict:
    c: dict = {}
    with gr.Row(equal_height=True):
        c["runs_root"] = manager.add("runs_root", gr.Textbox(
            "saves", label=ui_text("runs_root", lang), info=ui_text("runs_root", lang, "info"), elem_id="runs_root",
            scale=4))  # fmt: skip
        c["runs_refresh"] = manager.add("runs_refresh", gr.Button(
            ui_text("runs_refresh", lang, "value"), elem_id="runs_refresh", scale=1))  # fmt: skip
    c["runs_table"] = manager.add("runs_table", gr.Dataframe(
        runs_table("saves", lang), label=ui_text("runs_table", lang), elem_id="runs_table", interactive=False,
        wrap=True))  # fmt: skip
    with gr.Row(equal_height=True):
        c["runs_pick"] = manager.add("runs_pick", gr.Dropdown(
            choices=[], value=None, allow_custom_value=True, label=ui_text("runs_pick", lang), elem_id="runs_pick",
            scale=4))  # fmt: skip
        c["runs_open"] = manager.add("runs_open", gr.Button(
            ui_text("runs_open", lang, "value"), variant="primary", elem_id="runs_open", scale=1))  # fmt: skip

    def on_refresh(root, lang):
        table = runs_table(root, lang)
        runs = [str(st.output_dir) for st in list_runs(root)]
        return table, gr.update(choices=runs, value=runs[0] if runs else None)

    c["runs_refresh"].click(
        on_refresh, [c["runs_root"], manager.elems["lang"]], [c["runs_table"], c["runs_pick"]]
    )
    c["refresh"] = (on_refresh, [c["runs_root"], manager.elems["lang"]], [c["runs_table"], c["runs_pick"]])

    def on_select(table, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return table.iloc[row, 0]

    c["runs_table"].select(on_select, [c["runs_table"]], [c["runs_pick"]])
    return c
