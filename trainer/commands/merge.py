"""``duotune merge``: base model + LoRA adapter -> one standalone model folder.

peft's ``merge_and_unload`` folds the adapter into the base weights in place (so the peak memory is the
base model in the chosen dtype plus the adapter); the result is saved as sharded safetensors. The merged
folder gets the tokenizer the adapter was trained with (its chat template included) and every other
non-weight file of the base folder that it lacks (generation config, remote code, license...), plus a
README saying what it was merged from. It is written to a temporary folder and renamed at the end, so a
failed merge leaves nothing that looks like a model.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from duotune.trainer.common.console import echo
from duotune.trainer.common.errors import UserError
from duotune.trainer.common.files import check_writable, write_error

__all__ = ["MergeVerificationError", "merge_adapter", "WEIGHT_SUFFIXES"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5", ".ckpt", ".gguf")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _is_weight(path: Path) -> bool:
    return path.suffix in WEIGHT_SUFFIXES or path.name in WEIGHT_INDEXES


def merge_adapter(
    adapter: str | Path,
    output_dir: str | Path,
    *,
    base: str | None = None,
    dtype: str = "auto",
    max_shard_size: str | int = "5GB",
    device: str | None = None,
    verify: bool = False,
) -> Path:
    from duotune.trainer.model.inference import load_model_and_tokenizer
    from duotune.trainer.model.load import save_tokenizer

    out = Path(output_dir)
    check_writable(out, "--output-dir", folder=True)
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--output-dir {out} already exists and is not empty; choose a new folder")
    max_shard_size = check_shard_size(max_shard_size)
    adapter = Path(adapter)
    lm = load_model_and_tokenizer(base, adapter, device=device, dtype=dtype, refuse_quantized=True)
    echo(f"base       {lm.base.model_name_or_path} ({lm.base_path}; from {lm.base.where})")
    echo(f"adapter    {adapter}")
    echo(f"dtype      {lm.dtype} on {lm.device}")
    probe, expected = _reference_logits(lm) if verify else (None, None)
    merged = lm.model.merge_and_unload()
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        merged.save_pretrained(str(tmp), max_shard_size=max_shard_size, safe_serialization=True)
        save_tokenizer(lm.tokenizer, tmp)
        copied = _copy_missing(Path(lm.base_path), tmp)
        _write_readme(tmp, lm, adapter, copied)
        tmp.chmod(0o755)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except OSError as e:  # disk full, quota, a file system gone read-only: keep nothing half-written
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise write_error(e, "the merged model to", out) from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    echo(f"merged model in {out.resolve()} ({len(shards)} safetensors file{'s' if len(shards) != 1 else ''})")
    if verify:
        device_, dtype_ = lm.device, lm.dtype
        del merged, lm  # the check reloads the saved folder: free the in-memory copy first
        _verify(out, probe, expected, device_, dtype_)
    return out


_SIZE = re.compile(r"^(\d+)(GIB|MIB|KIB|GB|MB|KB)?$", re.IGNORECASE)  # what from_pretrained's save accepts


def check_shard_size(value: str | int) -> str | int:
    """--max-shard-size: a positive whole number with a unit (5GB, 500MB, 2GiB) or of bytes; returned in
    the form save_pretrained takes (a plain number becomes an int)."""
    m = _SIZE.match(str(value).strip())
    if not m or int(m.group(1)) <= 0:
        raise UserError(
            f"--max-shard-size {value!r}: give a positive whole size such as 5GB, 500MB, 2GiB or 1000000 (bytes)"
        )
    return str(value).strip() if m.group(2) else int(m.group(1))


# relative tolerance of the verification: summation order alone in fp32; one rounding of the merged
# weights to the dtype in half precision
VERIFY_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}


class MergeVerificationError(RuntimeError):
    """The saved merged model does not reproduce base + adapter."""


def _reference_logits(lm):
    """A short chat prompt and base + adapter's logits for it, before the adapter is folded in."""
    import torch

    tok = lm.tokenizer
    messages = [{"role": "user", "content": "Hello, how are you today?"}]
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = messages[0]["content"]
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :64].to(lm.device)
    with torch.no_grad():
        return ids, lm.model(input_ids=ids).logits.float().cpu()


def _verify(out: Path, ids, expected, device: str, dtype: str) -> None:
    """Reload the saved folder with plain transformers and compare its logits with base + adapter's."""
    import torch
    from duotune.trainer.model.load import TORCH_DTYPES, dtype_kwarg
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(out), **dtype_kwarg(getattr(torch, TORCH_DTYPES[dtype])), use_safetensors=True
    )
    model.to(device).eval()
    with torch.no_grad():
        got = model(input_ids=ids).logits.float().cpu()
    scale = float(expected.abs().max()) or 1.0
    diff = float((got - expected).abs().max()) / scale
    bound = VERIFY_TOLERANCE.get(dtype, 1e-4)
    if not diff <= bound:
        del model
        shutil.rmtree(out, ignore_errors=True)  # a folder that looks like the model but is not: gone
        raise MergeVerificationError(
            f"verification failed: the merged model differed from base + adapter by {diff:.3g} (relative, max "
            f"over the logits of a {ids.shape[1]}-token prompt; bound {bound:g} for {dtype}), so {out} was "
            "removed; report this with the adapter"
        )
    echo(
        f"verified: reloaded from {out}, it reproduces base + adapter (relative logit difference {diff:.2g}, "
        f"bound {bound:g} for {dtype})"
    )


def _copy_missing(base: Path, out: Path) -> list[str]:
    """Copy the base folder's non-weight files that the merged folder lacks."""
    copied = []
    for src in sorted(base.rglob("*")):
        rel = src.relative_to(base)
        if not src.is_file() or _is_weight(src) or rel.parts[0].startswith("."):
            continue
        dst = out / rel
        if dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        copied.append(str(rel))
    return copied


def _write_readme(out: Path, lm, adapter: Path, copied: list[str]) -> None:
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    targets = cfg.get("target_modules")
    if isinstance(targets, list):
        targets = ", ".join(sorted(targets))
    lines = [
        "# Merged model",
        "",
        f"Made by `duotune merge` on {_dt.date.today().isoformat()}: the LoRA adapter was folded into the base",
        "weights with peft's `merge_and_unload`; this folder loads with plain transformers",
        "(`AutoModelForCausalLM.from_pretrained`, `AutoTokenizer.from_pretrained`).",
        "",
        f"- base model: `{lm.base.model_name_or_path}`"
        + (f" (revision {lm.base.revision})" if lm.base.revision else ""),
        f"- adapter: `{adapter.resolve()}` (r={cfg.get('r')}, lora_alpha={cfg.get('lora_alpha')}, "
        f"targets: {targets}, DoRA: {bool(cfg.get('use_dora'))})",
        f"- dtype: {lm.dtype}",
        "- tokenizer and chat template: "
        + (
            "the adapter's (as trained)"
            if (adapter / "tokenizer_config.json").is_file()
            else "the base model's"
        ),
    ]
    if copied:
        lines.append(
            f"- copied from the base folder: {', '.join(copied[:12])}" + (" ..." if len(copied) > 12 else "")
        )
    existing = out / "README.md"
    note = "\n".join(lines) + "\n"
    if existing.exists():  # keep the base model card below ours
        note += "\n---\n\n" + existing.read_text(encoding="utf-8")
    existing.write_text(note, encoding="utf-8")
