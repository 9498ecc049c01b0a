"""Conversations -> token ids and labels, exactly as the model will see them at inference.

The whole conversation is rendered once with the tokenizer's chat template and tokenized once, so the
training tokens equal ``apply_chat_template(messages, tokenize=True)``. Labels come from character
spans: for each assistant turn, the text it must produce is what the conversation up to and including
that turn adds after the generation prompt of the conversation before it, i.e.
``render(messages[:k+1])[len(render(messages[:k], add_generation_prompt=True)):]`` minus trailing
whitespace. That is the reply plus the template's end-of-turn tokens (EOS for DeepSeek, ``<|im_end|>``
for ChatML); the whitespace after an end-of-turn token is never generated, so it is not learned. A token
is learned when any of its characters falls in such a span, so a token straddling the prompt/reply
boundary (`` reply`` after ``Assistant:``) is learned. Every other token gets ``IGNORE_INDEX``.

Examples longer than ``cutoff_len`` keep their beginning; a reply cut by the limit is learned up to the
cut. Examples with no learned token left are dropped and counted, never trained on silently.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duotune.trainer.common.errors import UserError
from duotune.trainer.common.files import atomic_write_text

__all__ = ["IGNORE_INDEX", "ChatEncoder", "EncodedData", "encode_dataset", "tokenizer_fingerprint"]

IGNORE_INDEX = -100
ENCODING_VERSION = "1"  # bump when the encoding rules change, to invalidate caches
DROP_NO_LEARNED = "no learned token within cutoff_len"


class TemplateNotIncremental(Exception):
    pass


class ChatEncoder:
    """Encode one conversation (list of messages) into input_ids and labels."""

    def __init__(self, tokenizer, cutoff_len: int):
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(
                f"tokenizer {type(tokenizer).__name__} is not a fast (Rust) tokenizer; duotune needs "
                "character offsets to place labels. Provide tokenizer.json with the model"
            )
        self.tokenizer = tokenizer
        self.cutoff_len = cutoff_len

    def render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )

    def learned_spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character spans the model learns to produce."""
        full = self.render(messages)
        spans: list[tuple[int, int]] = []
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self.render(messages[:k], generation_prompt=True)
            upto = self.render(messages[: k + 1])
            if not upto.startswith(prompt) or not full.startswith(upto):
                raise TemplateNotIncremental
            end = len(upto.rstrip())
            if end > len(prompt):
                spans.append((len(prompt), end))
        return full, spans

    @staticmethod
    def labels_from_offsets(
        input_ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]
    ) -> list[int]:
        labels = [IGNORE_INDEX] * len(input_ids)
        prev_end = 0
        j = 0  # spans are sorted and disjoint; walk them with the tokens
        for i, (start, end) in enumerate(offsets):
            # Some tokenizers trim whitespace out of offsets (" reply" -> "reply"): give a token the gap
            # before it too, so coverage is contiguous and whitespace tokens are never orphaned.
            lo = min(start, prev_end)
            hi = max(end, lo)
            prev_end = max(prev_end, end)
            while j < len(spans) and spans[j][1] <= lo and not (hi == lo == spans[j][1] == spans[j][0]):
                j += 1
            if j == len(spans):
                break
            s, e = spans[j]
            if (lo < e and hi > s) or (hi == lo and s <= lo < e):
                labels[i] = input_ids[i]
        return labels

    def encode_texts(
        self, messages_batch: list[list[dict]], sources: list[str] | None = None
    ) -> list[dict[str, Any]]:
        from jinja2 import TemplateError

        rendered = []
        for i, messages in enumerate(messages_batch):
            where = sources[i] if sources else f"example {i}"
            try:
                rendered.append(self.learned_spans(messages))
            except TemplateNotIncremental:
                raise UserError(_not_incremental_message(where)) from None
            except (TemplateError, TypeError) as e:  # the model's own template can reject content
                raise UserError(f"the chat template failed on {where}: {e}") from None
        enc = self.tokenizer(
            [text for text, _ in rendered],
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
        )
        out = []
        for (_, spans), ids, offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"], strict=True):
            labels = self.labels_from_offsets(ids, [tuple(o) for o in offsets], spans)
            n_full = len(ids)
            ids, labels = ids[: self.cutoff_len], labels[: self.cutoff_len]
            n_learned = sum(1 for x in labels if x != IGNORE_INDEX)
            out.append(
                {
                    "input_ids": ids,
                    "labels": labels,
                    "length": len(ids),
                    "num_tokens_full": n_full,
                    "num_learned": n_learned,
                }
            )
        return out

    def encode(self, messages: list[dict]) -> dict[str, Any]:
        return self.encode_texts([messages])[0]


# ---------------------------------------------------------------------------------------------------
# Whole datasets, batched and cached


@dataclass
class EncodedData:
    """The encoded examples (a datasets.Dataset) and what happened on the way."""

    dataset: Any  # datasets.Dataset: input_ids, labels, length, num_tokens_full, num_learned, source
    rows_read: int
    dropped: Counter = field(default_factory=Counter)
    formats: str = ""
    cache_hit: bool = False
    cache_file: str = ""

    @property
    def num_examples(self) -> int:
        return len(self.dataset)

    def stats(self) -> dict[str, Any]:
        """Counts and length percentiles of the kept examples, for preview and the start of train."""
        import numpy as np

        lengths = np.asarray(self.dataset["length"], dtype=np.int64)
        learned = np.asarray(self.dataset["num_learned"], dtype=np.int64)
        full = np.asarray(self.dataset["num_tokens_full"], dtype=np.int64)
        pct: dict[str, int] = {}
        if len(lengths):
            for q in (50, 90, 99):
                pct[f"p{q}"] = int(np.percentile(lengths, q, method="nearest"))
            pct["max"] = int(lengths.max())
        return {
            "rows_read": self.rows_read,
            "examples": int(len(lengths)),
            "dropped": dict(self.dropped),
            "truncated": int((full > lengths).sum()),
            "tokens": int(lengths.sum()),
            "learned_tokens": int(learned.sum()),
            "length_percentiles": pct,
        }


def tokenizer_fingerprint(tokenizer) -> str:
    """Changes whenever tokenization or the chat template could change."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else repr(tokenizer.get_vocab()).encode())
    h.update(str(tokenizer.chat_template).encode())
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _cache_root() -> Path:
    from datasets import config as ds_config

    return Path(ds_config.HF_DATASETS_CACHE) / "duotune"


def encode_dataset(
    specs: list[str],
    tokenizer,
    *,
    dataset_format: str,
    cutoff_len: int,
    max_samples: int | None,
    skip_invalid_rows: bool,
    num_proc: int | None = None,
    use_cache: bool = True,
) -> EncodedData:
    """Read, check and encode every dataset file; reuse the cached result when nothing changed."""
    from duotune.trainer.data.load import file_digest, load_examples, resolve_dataset_path

    paths = [resolve_dataset_path(s) for s in specs]
    key = hashlib.sha256(
        json.dumps(
            {
                "v": ENCODING_VERSION,
                "files": [file_digest(p) for p in paths],
                "format": dataset_format,
                "cutoff_len": cutoff_len,
                "max_samples": max_samples,
                "skip_invalid_rows": skip_invalid_rows,
                "tokenizer": tokenizer_fingerprint(tokenizer),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    cache_dir = _cache_root() / key
    arrow_path = cache_dir / "encoded.arrow"
    meta_path = cache_dir / "meta.json"

    import datasets

    if use_cache and arrow_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        ds = _keep_learnable(datasets.Dataset.from_file(str(arrow_path)))
        return EncodedData(
            ds,
            meta["rows_read"],
            Counter(meta["dropped"]),
            meta["formats"],
            cache_hit=True,
            cache_file=str(arrow_path),
        )

    examples, report = load_examples(
        specs, dataset_format, max_samples=max_samples, skip_invalid_rows=skip_invalid_rows
    )
    encoder = ChatEncoder(tokenizer, cutoff_len)
    encoder.encode_texts([examples[0]["messages"]], [examples[0]["source"]])  # fail fast on a bad template
    raw = datasets.Dataset.from_list(examples)
    cache_dir.mkdir(parents=True, exist_ok=True)
    ds = raw.map(
        _encode_batch,
        batched=True,
        batch_size=256,
        fn_kwargs={"encoder": encoder},
        remove_columns=["messages"],
        num_proc=num_proc if num_proc and num_proc > 1 and len(raw) > num_proc * 256 else None,
        cache_file_name=str(arrow_path) if use_cache else None,
        new_fingerprint=key,
        load_from_cache_file=False,
        desc="Tokenizing",
    )
    dropped = Counter(report.skipped_reasons())
    n_no_learned = int(sum(1 for n in ds["num_learned"] if n == 0))
    if n_no_learned:
        dropped[DROP_NO_LEARNED] += n_no_learned
    meta = {
        "rows_read": sum(s.rows_read for s in report.sources),
        "dropped": dict(dropped),
        "formats": report.describe_formats(),
    }
    if use_cache:
        atomic_write_text(meta_path, json.dumps(meta))
    return EncodedData(
        _keep_learnable(ds),
        meta["rows_read"],
        dropped,
        meta["formats"],
        cache_file=str(arrow_path) if use_cache else "",
    )


def _keep_learnable(ds):
    """Drop examples whose learned tokens were all cut by cutoff_len (they are counted, not trained)."""
    import numpy as np

    keep = np.flatnonzero(np.asarray(ds["num_learned"]) > 0)
    return ds if len(keep) == len(ds) else ds.select(keep, keep_in_memory=True)


def _encode_batch(batch: dict[str, list], encoder: ChatEncoder) -> dict[str, list]:
    encoded = encoder.encode_texts(batch["messages"], batch["source"])
    out: dict[str, list] = {
        k: [] for k in ("input_ids", "labels", "length", "num_tokens_full", "num_learned")
    }
    for item in encoded:
        for k in out:
            out[k].append(item[k])
    return out


def _not_incremental_message(source: str) -> str:
    from duotune.trainer.data.templates import BUILTIN_TEMPLATES

    return (
        f"the chat template changes earlier turns when a turn is added ({source}), so the reply tokens "
        "cannot be located; set `template:` to one of " + ", ".join(BUILTIN_TEMPLATES)
    )
