"""What the Train tab says next to the form: where the model comes from (and whether the hub's cache
has it), what each device backend offers (as `duotune env` finds it), what the dataset holds, and the
first examples as training sees them. Each check is the CLI's own, with its error messages. No gradio.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from duotune.trainer.common.errors import UserError

from .locales import message

__all__ = ["dataset_info", "device_info", "model_source_info", "preview_examples"]


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def model_source_info(values: dict[str, Any], lang: str = "en") -> tuple[str, str | None]:
    """(markdown about the model's source, the CLI's error for it or None)."""
    from duotune.trainer.model.hub import (
        HUBS,
        cached_snapshot,
        check_model_folder,
        hub_offline,
        parse_model_spec,
    )

    spec = str(values.get("model_name_or_path") or "").strip()
    if not spec:
        return message("info_empty", lang), None
    hub = values.get("hub")
    try:
        ref = parse_model_spec(spec, None if hub in (None, "auto") else hub)
        if ref.kind == "demo":
            return message("info_demo", lang, spec=spec), None
        if ref.kind == "local":
            check_model_folder(ref.path, spec, allow_pickle_weights=bool(values.get("allow_pickle_weights")))
            weights = [p for p in ref.path.iterdir() if p.suffix in (".safetensors", ".bin")]
            size = sum(p.stat().st_size for p in weights)
            return message("info_local", lang, path=ref.path, n=len(weights), size=_size(size)), None
    except UserError as e:
        return "", str(e)
    lines = [message("info_hub", lang, hub=HUBS[ref.hub], repo=ref.repo_id, why=ref.hub_why)]
    folder = cached_snapshot(ref, revision=values.get("revision"), cache_dir=values.get("cache_dir"))
    var = "HF_HUB_OFFLINE=1" if ref.hub == "hf" else "MODELERS_OFFLINE=1"
    if folder is not None:
        lines.append(message("info_cached", lang, folder=folder))
        if hub_offline(ref.hub):
            lines.append(message("info_offline_cached", lang, var=var))
    elif hub_offline(ref.hub):
        lines.append(message("info_offline_missing", lang, var=var, spec=spec))
    else:
        lines.append(message("info_download", lang, hub=HUBS[ref.hub], spec=spec))
    return "\n\n".join(lines), None


@functools.lru_cache(maxsize=8)
def _env(device: str) -> dict[str, Any]:
    from duotune.trainer.commands.env import collect_env

    return collect_env(device)


def device_info(device: str, lang: str = "en") -> tuple[str, int, str | None]:
    """(markdown list of the backends as `duotune env` finds them, the most processes the chosen
    device allows, the error for this device or None)."""
    info = _env(device or "auto")
    rows = []
    for b in info["backends"]:
        mark = "✓" if b["available"] else "✗"
        count = f" × {b['device_count']}" if b.get("device_count", 0) > 1 else ""
        rows.append(f"- {mark} **{b['name']}**{count}: {b['reason']}")
    plan = info["plan"]
    if "error" in plan:
        return "\n".join(rows), 1, plan["error"]
    text = (
        "\n".join(rows)
        + "\n\n"
        + message(
            "info_plan",
            lang,
            req=plan["requested"],
            device=plan["device"],
            why=plan["why"],
            precision=plan["precision"],
            pwhy=plan["precision_why"],
            attn=plan["attn_implementation"],
            framework=plan["framework"],
        )
    )
    return text, _max_processes(info, plan["backend"]), None


def _max_processes(info: dict[str, Any], backend_name: str) -> int:
    """One process per device on accelerators; on the host CPU, gloo data parallel up to 4 processes."""
    import os

    from duotune.backends import get_backend

    backend = get_backend(backend_name)
    if backend.is_accelerator:
        described = next((b for b in info["backends"] if b["name"] == backend_name), {})
        return max(1, int(described.get("device_count", 1)))
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def dataset_info(values: dict[str, Any], lang: str = "en") -> tuple[str, str | None]:
    """(markdown: each dataset file's format, detected or given, and row counts; the CLI's error)."""
    from duotune.trainer.data.load import load_examples

    specs = values.get("dataset") or []
    if not specs:
        return "", None
    try:
        _, report = load_examples(
            list(specs),
            values.get("dataset_format") or "auto",
            max_samples=values.get("max_samples"),
            skip_invalid_rows=bool(values.get("skip_invalid_rows")),
        )
    except UserError as e:
        return "", str(e)
    lines = []
    for spec, src in zip(specs, report.sources, strict=True):
        skipped = sum(src.skipped.values())
        lines.append(
            "- "
            + message(
                "info_data_row",
                lang,
                path=spec,
                fmt=src.format,
                how=message("info_detected" if src.detected else "info_from_recipe", lang),
                rows=src.rows_read,
                used=src.rows_used,
                skipped=message("info_skipped", lang, n=skipped) if skipped else "",
            )
        )
    return "\n".join(lines), None


def preview_examples(recipe, num: int = 3) -> tuple[list[tuple[str, str | None]], str]:
    """The first ``num`` examples as (text, "learned" | None) runs, and the counts `preview` prints:
    the tokenizer, template, encoding and cache are training's own."""
    from duotune.trainer.commands.preview import learned_runs
    from duotune.trainer.data.prepare import describe_data, prepare_data
    from duotune.trainer.data.templates import apply_template_choice
    from duotune.trainer.model.load import load_tokenizer, resolve_model

    source = resolve_model(recipe)
    tokenizer = load_tokenizer(source, recipe)
    template_desc = apply_template_choice(tokenizer, recipe.template, recipe.model_name_or_path)
    data = prepare_data(recipe, tokenizer)
    stats = [("model", source.description), ("cutoff", f"{recipe.cutoff_len} tokens")]
    stats += describe_data(data, template_desc)
    runs: list[tuple[str, str | None]] = []
    ds = data.dataset
    for i in range(min(num, len(ds))):
        row = ds[i]
        cut = f" (cut from {row['num_tokens_full']})" if row["num_tokens_full"] > row["length"] else ""
        head = f"── example {i + 1}: {row['source']} · {row['length']} tokens{cut}, {row['num_learned']} learned ──\n"
        runs.append(("\n" + head if i else head, None))
        for text, learned in learned_runs(tokenizer, row["input_ids"], row["labels"]):
            runs.append((text, "learned" if learned else None))
        runs.append(("\n", None))
    table = "\n".join(f"- **{k}** {v}" for k, v in stats)
    return runs, table


def default_runs_root() -> Path:
    return Path("saves")
