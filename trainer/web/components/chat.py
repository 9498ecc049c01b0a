"""The Chat tab: talk to the base model, the base model with an adapter, or both side by side with the
same prompt, answers streamed token by token; generation settings as ``duotune chat`` takes them.

The model is loaded into this server's process (one at a time) with the loader ``duotune chat`` uses.
"""

from __future__ import annotations

import threading

import gradio as gr
from duotune.trainer.common.errors import UserError

from ..locales import message, ui_text
from .common import adapter_box, device_box, dtype_box, text_box

__all__ = ["build_chat_tab"]

_MODEL: dict = {"key": None, "lm": None}
_LOCK = threading.Lock()  # one generation at a time: the model (and its adapter switch) is shared


def load_chat_model(model: str, adapter: str, device: str, dtype: str):
    from duotune.trainer.model.inference import load_model_and_tokenizer

    key = (model, adapter, device, dtype)
    with _LOCK:
        if _MODEL["key"] != key:
            _MODEL.update(key=None, lm=None)
            lm = load_model_and_tokenizer(model or None, adapter or None, device=device, dtype=dtype)
            if not getattr(lm.tokenizer, "chat_template", None):
                raise UserError(
                    f"the tokenizer of {lm.base.model_name_or_path} has no chat template; chat needs one"
                )
            _MODEL.update(key=key, lm=lm)
        return _MODEL["lm"]


def build_chat_tab(manager, lang: str = "en") -> dict:
    c: dict = {}

    def L(elem_id, what="label"):  # noqa: N802
        return ui_text(elem_id, lang, what)

    with gr.Row(equal_height=True):
        c["chat_adapter"] = adapter_box(manager, "chat_adapter", lang, scale=3)
        c["chat_model"] = text_box(manager, "chat_model", lang, scale=2)
        c["chat_device"] = device_box(manager, "chat_device", lang, scale=1)
        c["chat_dtype"] = dtype_box(manager, "chat_dtype", lang, scale=1)
        with gr.Column(scale=1, min_width=140):
            c["chat_load"] = manager.add(
                "chat_load", gr.Button(L("chat_load", "value"), variant="primary", elem_id="chat_load")
            )
            c["chat_unload"] = manager.add(
                "chat_unload", gr.Button(L("chat_unload", "value"), elem_id="chat_unload", size="sm")
            )
    c["chat_status"] = gr.Markdown(message("chat_none", lang), elem_id="chat_status")
    c["chat_mode"] = manager.add("chat_mode", gr.Radio(
        choices=_mode_choices(lang), value="adapter", label=L("chat_mode"), info=L("chat_mode", "info"),
        elem_id="chat_mode"))  # fmt: skip
    with gr.Accordion(L("gen_acc"), open=False, elem_id="gen_acc") as acc:
        manager.add("gen_acc", acc)
        c["chat_system"] = manager.add(
            "chat_system", gr.Textbox("", label=L("chat_system"), lines=2, elem_id="chat_system")
        )
        with gr.Row():
            c["max_new_tokens"] = manager.add("max_new_tokens", gr.Slider(
                1, 4096, value=256, step=1, label=L("max_new_tokens"), elem_id="max_new_tokens"))  # fmt: skip
            c["temperature"] = manager.add("temperature", gr.Slider(
                0.01, 2.0, value=0.7, step=0.01, label=L("temperature"), elem_id="temperature"))  # fmt: skip
            c["top_p"] = manager.add(
                "top_p", gr.Slider(0.01, 1.0, value=0.9, step=0.01, label=L("top_p"), elem_id="top_p")
            )
            c["repetition_penalty"] = manager.add("repetition_penalty", gr.Slider(
                0.5, 2.0, value=1.1, step=0.01, label=L("repetition_penalty"), elem_id="repetition_penalty"))  # fmt: skip
        with gr.Row():
            c["do_sample"] = manager.add(
                "do_sample", gr.Checkbox(True, label=L("do_sample"), elem_id="do_sample")
            )
            c["gen_seed"] = manager.add("gen_seed", gr.Textbox("", label=L("gen_seed"), elem_id="gen_seed"))
    with gr.Row(equal_height=True):
        c["chat_base"] = manager.add("chat_base", gr.Chatbot(
            [], label=L("chat_base"), elem_id="chat_base", visible=False, height=360))  # fmt: skip
        c["chat_tuned"] = manager.add(
            "chat_tuned", gr.Chatbot([], label=L("chat_tuned"), elem_id="chat_tuned", height=360)
        )
    with gr.Row(equal_height=False, elem_classes=["dt-buttons"]):
        c["chat_input"] = manager.add("chat_input", gr.Textbox(
            "", label=L("chat_input"), info=L("chat_input", "info"), elem_id="chat_input", scale=6, lines=1))  # fmt: skip
        c["chat_send"] = manager.add(
            "chat_send", gr.Button(L("chat_send", "value"), variant="primary", elem_id="chat_send", scale=1)
        )
        c["chat_clear"] = manager.add(
            "chat_clear", gr.Button(L("chat_clear", "value"), elem_id="chat_clear", scale=1)
        )

    def on_load(adapter, model, device, dtype, lang):
        try:
            lm = load_chat_model(str(model or "").strip(), str(adapter or "").strip(), device, dtype)
        except UserError as e:
            return f"⚠ {e}"
        what = f"`{lm.base.model_name_or_path}`" + (f" + `{lm.adapter}`" if lm.adapter else "")
        return message("chat_loaded", lang, what=what, device=lm.device, dtype=lm.dtype)

    c["chat_load"].click(on_load, [c["chat_adapter"], c["chat_model"], c["chat_device"], c["chat_dtype"],
                                   manager.elems["lang"]], [c["chat_status"]])  # fmt: skip

    def on_unload(lang):
        with _LOCK:
            _MODEL.update(key=None, lm=None)
        return message("chat_none", lang)

    c["chat_unload"].click(on_unload, [manager.elems["lang"]], [c["chat_status"]])

    def on_mode(mode):
        return gr.update(visible=mode in ("base", "compare")), gr.update(
            visible=mode in ("adapter", "compare")
        )

    c["chat_mode"].change(on_mode, [c["chat_mode"]], [c["chat_base"], c["chat_tuned"]])

    def on_send(text, mode, left, right, system, max_new, temp, top_p, rep, sample, seed, lang):
        from duotune.trainer.commands.chat import Chat, GenerationSettings

        text = str(text or "").strip()
        lm = _MODEL["lm"]
        if not text:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        if lm is None:
            yield gr.skip(), gr.skip(), gr.skip(), message("chat_none", lang)
            return
        if mode == "compare" and lm.adapter is None:
            yield gr.skip(), gr.skip(), gr.skip(), message("chat_need_adapter", lang)
            return
        settings = GenerationSettings(int(max_new), float(temp), float(top_p), float(rep), bool(sample))
        sides = (
            [("left", False)]
            if mode == "base"
            else [("right", True)]
            if mode == "adapter"
            else [("left", False), ("right", True)]
        )
        hist = {"left": list(left or []), "right": list(right or [])}
        for side, _ in sides:
            hist[side] += [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        yield hist["left"], hist["right"], "", gr.skip()
        with _LOCK:
            if str(seed or "").strip():
                from transformers import set_seed

                try:
                    set_seed(int(str(seed).strip()))
                except ValueError:
                    pass  # not a number: sample without a fixed seed
            for side, with_adapter in sides:
                chat = Chat(lm, settings, system=str(system or "").strip() or None)
                chat.history = [{"role": m["role"], "content": _content(m)} for m in hist[side][:-2]]
                for partial in chat.stream(chat.messages(text), adapter=with_adapter):
                    hist[side][-1] = {"role": "assistant", "content": partial}
                    yield hist["left"], hist["right"], gr.skip(), gr.skip()
                hist[side][-1] = {"role": "assistant", "content": hist[side][-1]["content"].strip()}
        yield hist["left"], hist["right"], gr.skip(), gr.skip()

    send_inputs = [c["chat_input"], c["chat_mode"], c["chat_base"], c["chat_tuned"], c["chat_system"], c["max_new_tokens"],
                   c["temperature"], c["top_p"], c["repetition_penalty"], c["do_sample"], c["gen_seed"],
                   manager.elems["lang"]]  # fmt: skip
    send_outputs = [c["chat_base"], c["chat_tuned"], c["chat_input"], c["chat_status"]]
    c["chat_send"].click(on_send, send_inputs, send_outputs)
    c["chat_input"].submit(on_send, send_inputs, send_outputs)
    c["chat_clear"].click(lambda: ([], []), None, [c["chat_base"], c["chat_tuned"]])
    return c


def _content(msg: dict) -> str:
    content = msg.get("content")
    if isinstance(content, list):  # gradio may hand back structured content
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content or "")


def _mode_choices(lang: str) -> list[tuple[str, str]]:
    return [(message("mode_adapter", lang), "adapter"), (message("mode_base", lang), "base"),
            (message("mode_compare", lang), "compare")]  # fmt: skip
