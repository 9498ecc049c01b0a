"""The Train tab: the recipe form (generated from the Recipe dataclass), recipe files, the command it
runs, model / device / dataset information, the data preview, and start / abort / resume with the
run's progress.

The form is never the source of truth: its values become ``train [--config FILE] KEY=VALUE ...``
(``form``), which is validated exactly as the CLI validates it and then run as a separate process
(``runner``). Invalid values are marked on their fields with the CLI's message and start nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from duotune.trainer.common.errors import UserError
from duotune.trainer.recipe import configs_dir, default_recipe_path

from .. import runner
from ..checks import Invalid, prepare_run, save_recipe
from ..form import (
    FormField,
    display_path,
    file_values,
    form_fields,
    overrides_for,
    recipe_from_form,
    to_form,
)
from ..info import dataset_info, device_info, model_source_info, preview_examples
from ..locales import message, ui_text
from ..manager import Manager, advanced_title, group_title
from .progress import build_progress, loss_frame, lr_frame, progress_html, stats_markdown, status_markdown

__all__ = ["build_train_tab"]

GROUP_ORDER = ("model", "data", "train", "lora", "speed", "tracking")
RUN_KEYS = ("output_dir", "overwrite_output_dir", "resume_from_checkpoint")  # shown with Start
OPEN_GROUPS = {"model", "data", "train"}
SECRET_FIELDS = (("hf_token", "HF_TOKEN"), ("modelers_token", "MODELERS_TOKEN"), ("swanlab_api_key", "SWANLAB_API_KEY"))  # fmt: skip


def shipped_recipes() -> list[str]:
    return [display_path(p) for p in sorted(configs_dir().glob("*.yaml"))]


# ------------------------------------------------------------------------------------------------
# building the form


def _make_field(manager: Manager, fld: FormField, value: Any, lang: str, **extra):
    texts = Manager.field_texts(fld, lang)
    common = dict(
        value=to_form(fld.key, value),
        elem_id=fld.key,
        elem_classes=["dt-field"],
        label=texts["label"],
        info=texts["info"],
        **extra,
    )
    if fld.kind == "checkbox":
        comp = gr.Checkbox(**common)
    elif fld.kind == "dropdown":
        comp = gr.Dropdown(choices=fld.choice_labels, **common)
    elif fld.kind == "number":
        comp = gr.Number(precision=0, **common)
    elif fld.suggestions:
        choices = list(fld.suggestions)
        comp = gr.Dropdown(choices=choices, allow_custom_value=True, **common)
    else:
        comp = gr.Textbox(lines=1, max_lines=1, type="password" if fld.secret else "text", **common)
    return manager.add_field(fld, comp)


def _rows(manager: Manager, fields: list[FormField], values: dict, lang: str, most: int = 4) -> None:
    boxes = [f for f in fields if f.kind != "checkbox"]
    checks = [f for f in fields if f.kind == "checkbox"]
    n_rows = -(-len(boxes) // most)
    per_row = -(-len(boxes) // n_rows) if boxes else most  # balanced rows: 5 fields as 3 + 2
    for i in range(0, len(boxes), per_row):
        with gr.Row(equal_height=True):
            for f in boxes[i : i + per_row]:
                _make_field(manager, f, values[f.key], lang)
    for i in range(0, len(checks), most):
        with gr.Row(equal_height=True):
            for f in checks[i : i + most]:
                _make_field(manager, f, values[f.key], lang)


def _group(manager: Manager, group: str, fields: list[FormField], values: dict, lang: str, extra=None):
    basic = [f for f in fields if f.basic]
    advanced = [f for f in fields if not f.basic]
    with gr.Accordion(group_title(group, lang), open=group in OPEN_GROUPS, elem_id=f"group_{group}") as acc:
        manager.groups[group] = acc
        _rows(manager, basic, values, lang)
        if extra is not None:
            extra()
        if advanced:
            with gr.Accordion(advanced_title(group, lang), open=False, elem_id=f"advanced_{group}") as adv:
                manager.advanced[group] = adv
                _rows(manager, advanced, values, lang)


# ------------------------------------------------------------------------------------------------
# form -> command, with the CLI's checks


def field_updates(manager: Manager, lang: str, errors: dict[str, str]) -> list[Any]:
    """Mark invalid fields with their error (in place of the help line); restore the others."""
    updates = []
    for _comp, fld in manager.fields.values():
        if fld.key in errors:
            updates.append(gr.update(info="⚠ " + errors[fld.key], elem_classes=["dt-field", "dt-invalid"]))
        else:
            updates.append(gr.update(info=Manager.field_texts(fld, lang)["info"], elem_classes=["dt-field"]))
    return updates


def _error_md(lines: list[str], lang: str) -> str:
    body = "\n".join(lines)
    return f"{message('invalid', lang)}\n\n```text\n{body}\n```"


# ------------------------------------------------------------------------------------------------
# the last run this server started (restored into the form when the UI is opened again)


# ------------------------------------------------------------------------------------------------


def build_train_tab(manager: Manager, lang_box, lang: str = "en") -> dict[str, Any]:
    fields = [f for f in form_fields()]
    values = file_values(default_recipe_path())[0]
    by_group: dict[str, list[FormField]] = {}
    for f in fields:
        if f.key not in RUN_KEYS:
            by_group.setdefault(f.group, []).append(f)
    c: dict[str, Any] = {}
    config_state = gr.State(str(default_recipe_path()))

    # recipe files
    with gr.Row(equal_height=False, elem_classes=["dt-recipe-row"]):
        c["recipe_path"] = manager.add(
            "recipe_path",
            gr.Dropdown(
                choices=shipped_recipes(), value=display_path(default_recipe_path()), allow_custom_value=True,
                label=ui_text("recipe_path", lang), info=ui_text("recipe_path", lang, "info"),
                elem_id="recipe_path", scale=4,
            ),
        )  # fmt: skip
        c["recipe_load"] = manager.add(
            "recipe_load", gr.Button(ui_text("recipe_load", lang, "value"), elem_id="recipe_load", scale=1)
        )
        c["recipe_save_path"] = manager.add(
            "recipe_save_path",
            gr.Textbox(
                "", label=ui_text("recipe_save_path", lang), info=ui_text("recipe_save_path", lang, "info"),
                placeholder="my-recipe.yaml", elem_id="recipe_save_path", scale=4,
            ),
        )  # fmt: skip
        c["recipe_save"] = manager.add(
            "recipe_save", gr.Button(ui_text("recipe_save", lang, "value"), elem_id="recipe_save", scale=1)
        )
    c["recipe_status"] = gr.Markdown("", elem_id="recipe_status")

    # the recipe's groups, with what the UI knows about their values next to them
    def model_extra():
        with gr.Row(equal_height=False):
            c["model_info"] = manager.add(
                "model_info", gr.Markdown("", elem_id="model_info", elem_classes=["dt-info"])
            )
            c["device_info"] = manager.add(
                "device_info", gr.Markdown("", elem_id="device_info", elem_classes=["dt-info"])
            )

    def data_extra():
        with gr.Row(equal_height=True):
            c["data_info"] = manager.add(
                "data_info", gr.Markdown("", elem_id="data_info", elem_classes=["dt-info"])
            )
            c["data_preview_btn"] = manager.add(
                "data_preview_btn",
                gr.Button(
                    ui_text("data_preview_btn", lang, "value"),
                    elem_id="data_preview_btn",
                    scale=0,
                    min_width=160,
                ),
            )
        c["data_stats"] = manager.add("data_stats", gr.Markdown("", elem_id="data_stats", visible=False))
        c["data_preview"] = manager.add(
            "data_preview",
            gr.HighlightedText(
                [], label=ui_text("data_preview", lang), elem_id="data_preview", visible=False,
                color_map={"learned": "#22c55e"}, show_legend=True, combine_adjacent=False,
            ),
        )  # fmt: skip

    extras = {"model": model_extra, "data": data_extra}
    for group in [*GROUP_ORDER, *sorted(set(by_group) - set(GROUP_ORDER))]:  # a new group: its own section
        if by_group.get(group):
            _group(manager, group, by_group[group], values, lang, extras.get(group))

    with gr.Accordion(ui_text("secrets_acc", lang), open=False, elem_id="secrets_acc") as secrets_acc:
        manager.add("secrets_acc", secrets_acc)
        with gr.Row():
            for elem_id, _ in SECRET_FIELDS:
                c[elem_id] = manager.add(
                    elem_id,
                    gr.Textbox(
                        "", type="password", label=ui_text(elem_id, lang), info=ui_text(elem_id, lang, "info"),
                        elem_id=elem_id,
                    ),
                )  # fmt: skip

    # the run
    with gr.Group(elem_id="run_box", elem_classes=["dt-run"]):
        c["run_head"] = manager.add(
            "run_head", gr.Markdown(ui_text("run_head", lang, "value"), elem_id="run_head")
        )
        run_fields = {f.key: f for f in fields if f.key in RUN_KEYS}
        with gr.Row(equal_height=True):
            _make_field(manager, run_fields["output_dir"], values["output_dir"], lang, scale=3)
            _make_field(
                manager, run_fields["resume_from_checkpoint"], values["resume_from_checkpoint"], lang, scale=3
            )
            c["nproc"] = manager.add(
                "nproc",
                gr.Dropdown(
                    choices=["1"], value="1", label=ui_text("nproc", lang), info=ui_text("nproc", lang, "info"),
                    elem_id="nproc", scale=1,
                ),
            )  # fmt: skip
        with gr.Row(equal_height=False, elem_classes=["dt-buttons"]):
            _make_field(
                manager, run_fields["overwrite_output_dir"], values["overwrite_output_dir"], lang, scale=2
            )
            c["command_show"] = manager.add(
                "command_show",
                gr.Button(ui_text("command_show", lang, "value"), elem_id="command_show", scale=1),
            )
            c["start_btn"] = manager.add(
                "start_btn",
                gr.Button(
                    ui_text("start_btn", lang, "value"), variant="primary", elem_id="start_btn", scale=1
                ),
            )
            c["abort_btn"] = manager.add(
                "abort_btn",
                gr.Button(ui_text("abort_btn", lang, "value"), variant="stop", elem_id="abort_btn", scale=1),
            )
        c["form_error"] = gr.Markdown("", elem_id="form_error", elem_classes=["dt-error"], visible=False)
        c["run_notice"] = gr.Markdown("", elem_id="run_notice")
        with gr.Accordion(ui_text("recipe_acc", lang), open=False, elem_id="recipe_acc") as recipe_acc:
            manager.add("recipe_acc", recipe_acc)
            c["command_preview"] = manager.add(
                "command_preview",
                gr.Code("", language="shell", label=ui_text("command_preview", lang), elem_id="command_preview",
                        interactive=False, lines=2),
            )  # fmt: skip
            c["recipe_yaml"] = manager.add(
                "recipe_yaml",
                gr.Textbox("", label=ui_text("recipe_yaml", lang), elem_id="recipe_yaml", interactive=False,
                           lines=12, max_lines=30, buttons=["copy"], elem_classes=["dt-log"]),
            )  # fmt: skip
        c["recipe_acc"] = recipe_acc
        c.update(build_progress(manager, lang))

    keys = manager.field_keys()
    field_comps = manager.field_components()
    secrets = [c[elem_id] for elem_id, _ in SECRET_FIELDS]
    comp = {k: manager.fields[k][0] for k in keys}

    def form_of(vals) -> dict[str, Any]:
        return dict(zip(keys, vals, strict=True))

    # ---- recipe file: load / save -----------------------------------------------------------------
    def load_values(path: str, lang: str, overrides: list[str] | None = None):
        from duotune.trainer.recipe import coerce_value, parse_overrides

        if not path or not str(path).strip():
            raise UserError("give the path of a recipe file (YAML)")
        p = Path(str(path).strip()).expanduser()
        vals, problems = file_values(p)
        for k, v in parse_overrides(overrides or []).items():
            if k in vals:
                vals[k] = coerce_value(k, v)
        return p, vals, problems

    def on_load(path, lang):
        try:
            p, vals, problems = load_values(path, lang)
        except UserError as e:
            return [gr.skip(), f"⚠ {e}"] + [gr.skip()] * len(keys)
        note = message("loaded", lang, path=display_path(p))
        if problems:
            note = (
                message("loaded_incomplete", lang, path=display_path(p))
                + "\n\n```text\n"
                + "\n".join(problems)
                + "\n```"
            )
        return [str(p.resolve()), note] + [gr.update(value=to_form(k, vals[k])) for k in keys]

    c["recipe_load"].click(
        on_load, [c["recipe_path"], lang_box], [config_state, c["recipe_status"], *field_comps]
    )

    def on_save(config, save_path, lang, *vals):
        try:
            target = save_recipe(form_of(vals), save_path)
        except Invalid as bad:
            return [gr.skip(), gr.skip(), _error_md(bad.lines, lang)] + field_updates(
                manager, lang, bad.errors
            )
        except UserError as e:
            return [gr.skip(), gr.skip(), f"⚠ {e}"] + [gr.skip()] * len(keys)
        shown = display_path(target)
        return [str(target.resolve()), gr.update(value=shown, choices=sorted({*shipped_recipes(), shown})),
                message("saved", lang, path=shown)] + field_updates(manager, lang, {})  # fmt: skip

    c["recipe_save"].click(
        on_save,
        [config_state, c["recipe_save_path"], lang_box, *field_comps],
        [config_state, c["recipe_path"], c["recipe_status"], *field_comps],
    )

    # ---- preview command / start / abort ----------------------------------------------------------
    def on_preview_command(config, nproc, lang, *vals):
        try:
            _, cmd, yaml_text, _ = prepare_run(config, nproc, form_of(vals), for_start=False)
        except Invalid as bad:
            return [gr.update(value=_error_md(bad.lines, lang), visible=True), bad.command or gr.skip(), gr.skip(),
                    gr.update(open=True)] + field_updates(manager, lang, bad.errors)  # fmt: skip
        return [gr.update(value="", visible=False), cmd, yaml_text, gr.update(open=True)] + field_updates(
            manager, lang, {}
        )

    outputs_cmd = [c["form_error"], c["command_preview"], c["recipe_yaml"], recipe_acc, *field_comps]
    c["command_show"].click(
        on_preview_command, [config_state, c["nproc"], lang_box, *field_comps], outputs_cmd
    )

    def on_start(config, nproc, lang, *vals):
        tokens, vals = vals[: len(SECRET_FIELDS)], vals[len(SECRET_FIELDS) :]
        form = form_of(vals)
        try:
            args, cmd, yaml_text, recipe = prepare_run(config, nproc, form, for_start=True)
            runner.start(
                recipe.output_dir, args, cmd,
                secrets={env: tok for (_, env), tok in zip(SECRET_FIELDS, tokens, strict=True) if tok},
            )  # fmt: skip
        except Invalid as bad:
            return [gr.update(value=_error_md(bad.lines, lang), visible=True), bad.command or gr.skip(), gr.skip(), "",
                    gr.skip()] + field_updates(manager, lang, bad.errors)  # fmt: skip
        except UserError as e:
            errors = {k: str(e) for k in ["output_dir"]}
            return [gr.update(value=_error_md(e.problems, lang), visible=True), gr.skip(), gr.skip(), "",
                    gr.skip()] + field_updates(manager, lang, errors)  # fmt: skip
        base, _ = file_values(config or default_recipe_path())
        runner.remember(config, overrides_for(base, recipe_from_form(form)[0]), nproc)
        return [gr.update(value="", visible=False), cmd, yaml_text, message("started", lang, cmd=f"`{cmd}`"),
                gr.update(value=ui_text("abort_btn", lang, "value"))] + field_updates(manager, lang, {})  # fmt: skip

    c["start_btn"].click(
        on_start,
        [config_state, c["nproc"], lang_box, *secrets, *field_comps],
        [
            c["form_error"],
            c["command_preview"],
            c["recipe_yaml"],
            c["run_notice"],
            c["abort_btn"],
            *field_comps,
        ],
    )

    def on_abort(output_dir, lang):
        out = str(output_dir or "").strip()
        what = runner.abort(out) if out else None
        if what == "term":
            return message("abort_sent", lang), gr.update(value=ui_text("kill_btn_text", lang, "value"))
        if what == "kill":
            return message("kill_sent", lang), gr.update(value=ui_text("abort_btn", lang, "value"))
        return message("nothing_to_abort", lang, out=out or "?"), gr.update(
            value=ui_text("abort_btn", lang, "value")
        )

    c["abort_btn"].click(on_abort, [comp["output_dir"], lang_box], [c["run_notice"], c["abort_btn"]])

    # ---- live progress: a timer reads the output_dir ----------------------------------------------
    poll_state = gr.State({})
    timer = gr.Timer(1.0)

    def on_tick(output_dir, lang, seen, resume_value):
        out = str(output_dir or "").strip()
        if not out:
            return [gr.skip()] * 9 + [seen]
        st = runner.read(out)
        rows_sig = (len(st.rows), st.rows[-1].get("current_steps") if st.rows else None, out)
        ckpts = [display_path(p) for p in st.checkpoints]
        ckpt_sig = (tuple(ckpts), out)
        new_seen = {
            "rows": list(rows_sig),
            "ckpts": [list(ckpt_sig[0]), out],
            "status": st.status,
            "lang": lang,
        }
        plots_changed = seen.get("rows") != list(rows_sig)
        err = st.message if st.status in ("failed", "diverged", "died") else None
        abort_label = gr.skip()
        if seen.get("status") != st.status and not st.active:
            abort_label = gr.update(value=ui_text("abort_btn", lang, "value"))
        resume_update = gr.skip()
        if seen.get("ckpts") != [list(ckpt_sig[0]), out]:
            choices = ["", "auto", *ckpts]
            resume_update = gr.update(choices=choices, value=resume_value if resume_value in choices else "")
        return [
            progress_html(st, lang),
            status_markdown(st, lang),
            gr.update(value=f"```text\n{err}\n```", visible=True)
            if err
            else gr.update(value="", visible=False),
            loss_frame(st.rows) if plots_changed else gr.skip(),
            lr_frame(st.rows) if plots_changed else gr.skip(),
            stats_markdown(st),
            "\n".join(st.tail[-10:]),
            abort_label,
            resume_update,
            new_seen,
        ]

    timer.tick(
        on_tick,
        [comp["output_dir"], lang_box, poll_state, comp["resume_from_checkpoint"]],
        [c["progress"], c["run_status"], c["run_error"], c["loss_plot"], c["lr_plot"], c["run_stats"], c["run_log"],
         c["abort_btn"], comp["resume_from_checkpoint"], poll_state],
        show_progress="hidden",
    )  # fmt: skip

    # ---- what the UI knows about the model, the devices and the data ------------------------------
    model_keys = ["model_name_or_path", "hub", "revision", "cache_dir", "allow_pickle_weights"]
    data_keys = ["dataset", "dataset_format", "max_samples", "skip_invalid_rows"]

    def values_of(names, vals):
        out = {}
        for k, v in zip(names, vals, strict=True):
            try:
                out[k] = recipe_from_form({k: v})[0][k]
            except KeyError:
                out[k] = None
        return out

    def on_model(lang, *vals):
        text, err = model_source_info(values_of(model_keys, vals), lang)
        errors = {"model_name_or_path": err} if err else {}
        fld = manager.fields["model_name_or_path"][1]
        info = "⚠ " + err if err else Manager.field_texts(fld, lang)["info"]
        classes = ["dt-field", "dt-invalid"] if errors else ["dt-field"]
        return text, gr.update(info=info, elem_classes=classes)

    model_inputs = [lang_box, *[comp[k] for k in model_keys]]
    for k in model_keys:
        event = comp[k].blur if isinstance(comp[k], gr.Textbox) else comp[k].change
        event(on_model, model_inputs, [c["model_info"], comp["model_name_or_path"]], show_progress="hidden")

    def on_device(device, lang):
        text, nmax, err = device_info(device, lang)
        fld = manager.fields["device"][1]
        choices = [str(i) for i in range(1, nmax + 1)] + (["auto"] if nmax > 1 else [])
        dev_update = gr.update(
            info="⚠ " + err if err else Manager.field_texts(fld, lang)["info"],
            elem_classes=["dt-field", "dt-invalid"] if err else ["dt-field"],
        )
        return text, gr.update(choices=choices, value="1", interactive=nmax > 1), dev_update

    comp["device"].change(
        on_device, [comp["device"], lang_box], [c["device_info"], c["nproc"], comp["device"]]
    )

    def on_data(lang, *vals):
        text, err = dataset_info(values_of(data_keys, vals), lang)
        fld = manager.fields["dataset"][1]
        info = "⚠ " + err if err else Manager.field_texts(fld, lang)["info"]
        return text, gr.update(info=info, elem_classes=["dt-field", "dt-invalid"] if err else ["dt-field"])

    data_inputs = [lang_box, *[comp[k] for k in data_keys]]
    for k in data_keys:
        event = comp[k].blur if isinstance(comp[k], gr.Textbox) else comp[k].change
        event(on_data, data_inputs, [c["data_info"], comp["dataset"]], show_progress="hidden")

    def on_preview_data(config, lang, *vals):
        try:
            _, _, _, recipe = prepare_run(config, None, form_of(vals), for_start=False)
            runs, table = preview_examples(recipe, num=3)
        except Invalid as bad:
            return [
                gr.update(value=_error_md(bad.lines, lang), visible=True),
                gr.skip(),
                gr.skip(),
            ] + field_updates(manager, lang, bad.errors)
        except UserError as e:
            return [gr.update(value=_error_md(e.problems, lang), visible=True), gr.skip(), gr.skip()] + [
                gr.skip()
            ] * len(keys)
        return [gr.update(value="", visible=False), gr.update(value=table, visible=True),
                gr.update(value=runs, visible=True)] + field_updates(manager, lang, {})  # fmt: skip

    c["data_preview_btn"].click(
        on_preview_data,
        [config_state, lang_box, *field_comps],
        [c["form_error"], c["data_stats"], c["data_preview"], *field_comps],
    )

    # ---- opening the page: the last run this server started, re-attached --------------------------
    def on_open(lang):
        last = runner.last_started()
        infos = _initial_infos(values if last is None else None, lang)
        if last is None:
            return [gr.skip(), gr.skip()] + [gr.skip()] * len(keys) + infos
        try:
            config = last.get("config") or str(default_recipe_path())
            p, vals, _ = load_values(config, lang, last["overrides"])
        except (UserError, ValueError):
            return [gr.skip(), gr.skip()] + [gr.skip()] * len(keys) + _initial_infos(values, lang)
        return ([str(p.resolve()), gr.update(value=display_path(p))]
                + [gr.update(value=to_form(k, vals[k])) for k in keys] + _initial_infos(vals, lang))  # fmt: skip

    def _initial_infos(vals, lang):
        vals = vals or values
        model_text, _ = model_source_info(vals, lang)
        dev_text, nmax, _ = device_info(vals.get("device", "auto"), lang)
        data_text, _ = dataset_info(vals, lang)
        choices = [str(i) for i in range(1, nmax + 1)] + (["auto"] if nmax > 1 else [])
        return [model_text, dev_text, data_text, gr.update(choices=choices, interactive=nmax > 1)]

    c["on_open"] = (
        on_open,
        [lang_box],
        [
            config_state,
            c["recipe_path"],
            *field_comps,
            c["model_info"],
            c["device_info"],
            c["data_info"],
            c["nproc"],
        ],
    )
    c["config_state"] = config_state
    c["fields"] = comp
    c["refresh_infos"] = (
        lambda lang, *vals: [
            model_source_info(values_of(model_keys, vals[: len(model_keys)]), lang)[0],
            dataset_info(values_of(data_keys, vals[len(model_keys) :]), lang)[0],
        ],
        [lang_box, *[comp[k] for k in model_keys], *[comp[k] for k in data_keys]],
        [c["model_info"], c["data_info"]],
    )
    return c
