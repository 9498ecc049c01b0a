"""The components of the UI by ``elem_id``, and what changes on each of them when the language does.

Recipe fields are registered under their recipe key (which is also their ``elem_id``: tests, scripts
and users' browser automation find a field by the key they know from YAML). Other components are
registered under the ``elem_id`` their text has in :mod:`.locales`.
"""

from __future__ import annotations

from typing import Any

from .form import FormField
from .locales import GROUPS, recipe_help, recipe_label, ui_text

__all__ = ["Manager"]


class Manager:
    def __init__(self) -> None:
        self.elems: dict[str, Any] = {}  # elem_id -> component (UI texts from locales.UI)
        self.fields: dict[str, tuple[Any, FormField]] = {}  # recipe key -> (component, field)
        self.groups: dict[str, Any] = {}  # recipe group -> its container (label translated)
        self.advanced: dict[str, Any] = {}  # recipe group -> its "advanced" accordion

    def add(self, elem_id: str, component: Any) -> Any:
        self.elems[elem_id] = component
        return component

    def add_field(self, fld: FormField, component: Any) -> Any:
        self.fields[fld.key] = (component, fld)
        return component

    def field_components(self) -> list[Any]:
        return [c for c, _ in self.fields.values()]

    def field_keys(self) -> list[str]:
        return list(self.fields)

    @staticmethod
    def field_texts(fld: FormField, lang: str) -> dict[str, str]:
        return {"label": recipe_label(fld.key, lang), "info": recipe_help(fld.key, lang, fld.help)}

    def translatable(self) -> list[Any]:
        """Every component whose texts depend on the language, in a fixed order."""
        return (
            list(self.elems.values())
            + self.field_components()
            + list(self.groups.values())
            + list(self.advanced.values())
        )

    def language_updates(self, lang: str) -> list[Any]:
        """gr.update(...) for each of translatable(), in the same order."""
        import gradio as gr

        updates = []
        for elem_id in self.elems:
            texts = {}
            for what in ("label", "info", "value", "placeholder"):
                text = ui_text(elem_id, lang, what)
                if text is not None:
                    texts[what] = text
            updates.append(gr.update(**texts) if texts else gr.update())
        for _comp, fld in self.fields.values():
            updates.append(gr.update(**self.field_texts(fld, lang)))
        for group in self.groups:
            updates.append(gr.update(label=group_title(group, lang)))
        for group in self.advanced:
            updates.append(gr.update(label=advanced_title(group, lang)))
        return updates


def group_title(group: str, lang: str) -> str:
    entry = GROUPS.get(group)
    if entry is None:  # a group the recipe gained after this file: its own name
        return group.replace("_", " ").capitalize()
    return entry.get(lang, entry["en"])


def advanced_title(group: str, lang: str) -> str:
    word = {"en": "More", "zh": "更多"}.get(lang, "More")
    return f"{word}: {group_title(group, lang).lower() if lang == 'en' else group_title(group, lang)}"
