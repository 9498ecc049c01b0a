"""The whole page: the top bar, then the Train, Evaluate, Chat, Export and Runs tabs, wired together
(the language switch re-labels everything; a run opened in Runs shows in Train)."""

from __future__ import annotations

import gradio as gr

from .components.chat import build_chat_tab
from .components.common import RUNS_ROOT
from .components.evaluate import build_eval_tab
from .components.export import build_export_tab
from .components.runs import build_runs_tab
from .components.top import build_top
from .components.train import build_train_tab
from .locales import message, ui_text
from .manager import Manager
from .monitor import adapter_folders

__all__ = ["CSS", "build_app", "theme"]

CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto; }
#top_bar { align-items: center; border-bottom: 1px solid var(--border-color-primary); padding-bottom: 6px; }
#title h2 { margin: 6px 0; font-weight: 650; letter-spacing: -0.01em; }
.dt-field.dt-invalid input, .dt-field.dt-invalid textarea { border-color: #dc2626 !important;
  box-shadow: 0 0 0 1px #dc2626 !important; }
.dt-field.dt-invalid [data-testid="block-info"], .dt-field.dt-invalid .info { color: #dc2626 !important; }
.dt-error { border-left: 4px solid #dc2626; background: #fef2f2; padding: 4px 12px !important; border-radius: 6px; }
.dt-error p, .dt-error code, .dt-error pre { color: #991b1b !important; }
.dt-info { font-size: 0.92em; }
.dt-info table { font-size: 0.92em; }
.dt-run { padding: 10px; }
#run_head h3 { margin: 4px 0 0 6px; }
.dt-progress { position: relative; height: 30px; border-radius: 8px; background: var(--background-fill-secondary);
  border: 1px solid var(--border-color-primary); overflow: hidden; margin: 4px 0; }
.dt-progress .dt-bar { position: absolute; left: 0; top: 0; bottom: 0; background: linear-gradient(90deg,#6366f1,#818cf8);
  transition: width 0.6s ease; }
.dt-progress.dt-done .dt-bar { background: linear-gradient(90deg,#16a34a,#4ade80); }
.dt-progress.dt-failed .dt-bar { background: linear-gradient(90deg,#dc2626,#f87171); }
.dt-progress.dt-stopped .dt-bar { background: linear-gradient(90deg,#d97706,#fbbf24); }
.dt-progress .dt-label { position: relative; line-height: 30px; padding-left: 12px; font-variant-numeric: tabular-nums;
  font-weight: 600; font-size: 0.92em; }
.dt-log textarea { font-family: ui-monospace, SFMono-Regular, Menlo, monospace !important; font-size: 12px !important; }
.dt-result { font-size: 1.05em; }
#loss_plot, #lr_plot { overflow: visible !important; padding-bottom: 28px !important; }
.dt-recipe-row, .dt-buttons { align-items: flex-end; }
.dt-recipe-row > button, .dt-buttons > button { min-height: 44px; margin-bottom: 6px; }
"""


def theme():
    """Gradio's default theme with local fonts only (the UI works without internet)."""
    sans = [
        "ui-sans-serif",
        "system-ui",
        "-apple-system",
        "Segoe UI",
        "Noto Sans",
        "WenQuanYi Micro Hei",
        "sans-serif",
    ]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Soft(
        primary_hue="indigo", secondary_hue="slate", neutral_hue="slate", font=sans, font_mono=mono
    )


def build_app(lang: str = "en") -> gr.Blocks:
    manager = Manager()
    with gr.Blocks(title="duotune", analytics_enabled=False) as app:
        lang_box = build_top(manager, lang)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab(ui_text("tab_train", lang), id="train", elem_id="tab_train") as tab_train:
                train = build_train_tab(manager, lang_box, lang)
            with gr.Tab(ui_text("tab_eval", lang), id="eval", elem_id="tab_eval") as tab_eval:
                evaluate = build_eval_tab(manager, lang)
            with gr.Tab(ui_text("tab_chat", lang), id="chat", elem_id="tab_chat") as tab_chat:
                chat = build_chat_tab(manager, lang)
            with gr.Tab(ui_text("tab_export", lang), id="export", elem_id="tab_export") as tab_export:
                export = build_export_tab(manager, lang)
            with gr.Tab(ui_text("tab_runs", lang), id="runs", elem_id="tab_runs") as tab_runs:
                runs = build_runs_tab(manager, lang)
        for elem_id, tab in (("tab_train", tab_train), ("tab_eval", tab_eval), ("tab_chat", tab_chat),
                             ("tab_export", tab_export), ("tab_runs", tab_runs)):  # fmt: skip
            manager.add(elem_id, tab)

        # the language: every label, help line and button, then the texts made from data
        translatable = manager.translatable()
        lang_box.change(manager.language_updates, [lang_box], translatable, show_progress="hidden").then(
            *train["refresh_infos"], show_progress="hidden"
        ).then(lambda lang: gr.update(choices=_mode_choices(lang)), [lang_box], [chat["chat_mode"]])

        # adapters trained meanwhile appear in the other tabs
        adapter_boxes = [evaluate["eval_adapter"], chat["chat_adapter"], export["export_adapter"]]

        def refresh_adapters(*current):
            found = adapter_folders(RUNS_ROOT)
            return [
                gr.update(choices=found, value=v if v else (found[0] if found else None)) for v in current
            ]

        for tab in (tab_eval, tab_chat, tab_export):
            tab.select(refresh_adapters, adapter_boxes, adapter_boxes, show_progress="hidden")
        tab_runs.select(*runs["refresh"], show_progress="hidden")

        # Runs -> Train: the run's own recipe (run_config.yaml) in the form, its progress re-attached
        fields = train["fields"]

        def open_run(path, lang):
            from pathlib import Path

            from .form import display_path, file_values, to_form

            if not path:
                return [gr.skip()] * (3 + len(fields))
            cfg = Path(path) / "run_config.yaml"
            if not cfg.is_file():
                out = display_path(path)
                return [gr.skip(), gr.Tabs(selected="train"), gr.skip()] + [
                    gr.update(value=out) if k == "output_dir" else gr.skip() for k in fields
                ]
            vals, _ = file_values(cfg)
            vals["output_dir"] = display_path(path)
            return [
                str(cfg.resolve()),
                gr.Tabs(selected="train"),
                message("loaded", lang, path=display_path(cfg)),
            ] + [gr.update(value=to_form(k, vals[k])) for k in fields]

        runs["runs_open"].click(
            open_run,
            [runs["runs_pick"], lang_box],
            [train["config_state"], tabs, train["recipe_status"], *fields.values()],
        )

        app.load(*train["on_open"], show_progress="hidden")
    return app


def _mode_choices(lang: str):
    from .components.chat import _mode_choices as choices

    return choices(lang)
