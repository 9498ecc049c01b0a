"""The run's progress on the Train tab: a progress bar (step / total, elapsed, remaining), the status
with the CLI's one-line error, the loss (and eval loss) and learning-rate curves from
trainer_log.jsonl, throughput and memory when the run reports them, and the last lines of its log."""

from __future__ import annotations

import html
from typing import Any

from ..locales import message
from ..monitor import RunState

__all__ = ["build_progress", "progress_html", "status_markdown", "loss_frame", "lr_frame", "stats_markdown"]

STATUS_CLASS = {
    "running": "running",
    "starting": "running",
    "completed": "done",
    "interrupted": "stopped",
    "failed": "failed",
    "diverged": "failed",
    "died": "failed",
}


def progress_html(st: RunState, lang: str) -> str:
    pct = st.percent
    total = st.total if st.total else "?"
    parts = [f"{message('step', lang)} {st.step} / {total}", f"{pct:.0f}%"]
    if st.elapsed:
        parts.append(f"{message('elapsed', lang)} {st.elapsed}")
    if st.remaining and st.status != "completed":
        parts.append(f"{message('remaining', lang)} {st.remaining}")
    css = STATUS_CLASS.get(st.status, "idle")
    text = " · ".join(parts) if st.status != "none" else message("status_none", lang, out=st.output_dir)
    return (
        f'<div class="dt-progress dt-{css}" data-status="{st.status}" data-step="{st.step}" '
        f'data-total="{st.total or 0}" data-percent="{pct:.1f}">'
        f'<div class="dt-bar" style="width:{pct:.1f}%"></div>'
        f'<div class="dt-label">{html.escape(text)}</div></div>'
    )


def status_markdown(st: RunState, lang: str) -> str:
    if st.status == "none":
        return ""
    name = message(f"status_{st.status}", lang) if f"status_{st.status}" in _STATUSES else st.status
    where = f"`{st.output_dir}`"
    bits = [f"**{name}** · {where}"]
    if st.exit_code is not None:
        bits.append(f"exit {st.exit_code}")
    if st.checkpoints:
        bits.append(f"checkpoints: {', '.join(p.name for p in st.checkpoints)}")
    return " · ".join(bits)


_STATUSES = {f"status_{s}" for s in ("running", "starting", "completed", "interrupted", "failed",
                                      "diverged", "died", "unknown")}  # fmt: skip


def loss_frame(rows: list[dict[str, Any]]):
    """Loss and eval loss per step; None before the first one (a plot first drawn from an empty frame
    keeps its empty colour scale and draws nothing later)."""
    points = [(r["current_steps"], float(r["loss"]), "loss") for r in rows if "loss" in r]
    points += [(r["current_steps"], float(r["eval_loss"]), "eval_loss") for r in rows if "eval_loss" in r]
    return _frame(points, {"step": "int64", "value": "float64", "series": "str"}) if points else None


def lr_frame(rows: list[dict[str, Any]]):
    points = [
        (r["current_steps"], float(r["learning_rate"]), "learning_rate") for r in rows if "learning_rate" in r
    ]
    return _frame(points, {"step": "int64", "learning_rate": "float64", "series": "str"}) if points else None


def _frame(points: list[tuple], dtypes: dict[str, str]):
    import pandas as pd

    columns = list(dtypes)
    return pd.DataFrame(
        {c: pd.Series([p[i] for p in points], dtype=t) for i, (c, t) in enumerate(dtypes.items())}
    )[columns]


def stats_markdown(st: RunState) -> str:
    t = st.throughput
    bits = []
    if "real_tokens_per_second" in t:
        bits.append(f"**{t['real_tokens_per_second']:,.0f}** real tokens/s")
    if "padding_fraction" in t:
        bits.append(f"padding {100 * t['padding_fraction']:.1f}%")
    if "peak_memory_gib" in t:
        bits.append(f"peak memory {t['peak_memory_gib']:.2f} GiB")
    if "mfu" in t:
        bits.append(f"MFU {100 * t['mfu']:.1f}%")
    last = st.final_loss
    if last is not None:
        bits.insert(0, f"loss **{last:.4f}**")
    if st.final_eval_loss is not None:
        bits.insert(1, f"eval loss **{st.final_eval_loss:.4f}**")
    return " · ".join(bits)


def build_progress(manager, lang: str) -> dict[str, Any]:
    """The components (registered for translation); the Train tab wires them to its timer."""
    import gradio as gr

    from ..locales import ui_text

    c: dict[str, Any] = {}
    c["progress"] = gr.HTML(progress_html(RunState(output_dir="-"), lang), elem_id="progress")
    c["run_status"] = gr.Markdown("", elem_id="run_status")
    c["run_error"] = manager.add(
        "run_error", gr.Markdown("", elem_id="run_error", elem_classes=["dt-error"], visible=False)
    )
    with gr.Row(equal_height=False):
        c["loss_plot"] = manager.add(
            "loss_plot",
            gr.LinePlot(
                loss_frame([]), x="step", y="value", color="series", label=ui_text("loss_plot", lang),
                elem_id="loss_plot", height=280, color_map={"loss": "#4f46e5", "eval_loss": "#f59e0b"},
                x_title="step", y_title="loss", x_axis_format="d",
            ),
        )  # fmt: skip
        c["lr_plot"] = manager.add(
            "lr_plot",
            gr.LinePlot(
                lr_frame([]), x="step", y="learning_rate", color="series", color_map={"learning_rate": "#10b981"}, label=ui_text("lr_plot", lang),
                elem_id="lr_plot", height=280, x_title="step", y_title="learning rate", x_axis_format="d",
            ),
        )  # fmt: skip
    c["run_stats"] = gr.Markdown("", elem_id="run_stats")
    c["run_log"] = manager.add(
        "run_log",
        gr.Textbox(
            "", label=ui_text("run_log", lang), lines=10, max_lines=10, elem_id="run_log",
            interactive=False, autoscroll=True, elem_classes=["dt-log"],
        ),
    )  # fmt: skip
    return c
