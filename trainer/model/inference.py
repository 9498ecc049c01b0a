"""Loading a base model (and optionally a LoRA adapter) for merge, chat and eval.

The base of an adapter is, in order: ``--base``/``--model`` if given; the ``model_name_or_path`` of the
run that trained it (its ``run_config.yaml``, next to it or one folder up for ``checkpoint-N``), which
keeps the hub and revision it came from; else ``base_model_name_or_path`` of ``adapter_config.json``.
The tokenizer comes from the adapter folder when it has one (it carries the chat template training used).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duotune.trainer.common.errors import UserError, first_line

__all__ = ["BaseSpec", "adapter_base", "load_model_and_tokenizer", "pick_device", "LoadedModel", "DTYPES"]

DTYPES = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class BaseSpec:
    model_name_or_path: str
    hub: str | None = None
    revision: str | None = None
    cache_dir: str | None = None
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    where: str = ""


def _check_adapter(adapter: Path) -> None:
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(
            f"--adapter {adapter}: no adapter_config.json there; give the output_dir of a training run"
        )


def adapter_base(adapter: Path) -> BaseSpec:
    import yaml

    _check_adapter(adapter)
    for run_config in (adapter / "run_config.yaml", adapter.parent / "run_config.yaml"):
        if run_config.is_file():
            cfg = yaml.safe_load(run_config.read_text(encoding="utf-8")) or {}
            if cfg.get("model_name_or_path"):
                hub = cfg.get("hub")
                return BaseSpec(
                    cfg["model_name_or_path"],
                    hub=None if hub in (None, "auto") else hub,
                    revision=cfg.get("revision"),
                    cache_dir=cfg.get("cache_dir"),
                    trust_remote_code=bool(cfg.get("trust_remote_code")),
                    allow_pickle_weights=bool(cfg.get("allow_pickle_weights")),
                    where=str(run_config),
                )
    base = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise UserError(f"--adapter {adapter}: its adapter_config.json names no base model; pass --base")
    return BaseSpec(base, where=str(adapter / "adapter_config.json"))


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    base: BaseSpec
    base_path: str
    adapter: Path | None
    device: str
    dtype: str
    backend: Any


def pick_device(device: str | None):
    """A backend and its device string for inference (`auto`: NPU, CUDA, MPS, then CPU)."""
    from duotune.backends import BackendError, select_backend

    try:
        backend, _ = select_backend(device or "auto")
    except BackendError as e:
        raise UserError(str(e)) from None
    return backend


def resolve_dtype(dtype: str, backend, base_path: str):
    """`auto`: the backend's training default on accelerators (bf16/fp16), the model's own dtype elsewhere."""
    import torch
    from duotune.trainer.model.load import TORCH_DTYPES

    if dtype == "auto":
        if backend.prefers_half_precision:
            dtype = backend.default_precision()[0]
        else:
            try:
                config = json.loads((Path(base_path) / "config.json").read_text(encoding="utf-8"))
                # transformers 5 writes `dtype`, 4.x `torch_dtype`
                saved = config.get("dtype") or config.get("torch_dtype") or "float32"
            except (OSError, ValueError, AttributeError):
                saved = "float32"
            dtype = {"bfloat16": "bf16", "float16": "fp16"}.get(str(saved), "fp32")
    elif backend.is_accelerator:
        support = backend.supports_precision(dtype)
        if not support.ok:
            raise UserError(f"--dtype {dtype} on {backend.name}: {support.reason}")
    return dtype, getattr(torch, TORCH_DTYPES[dtype])


def load_model_and_tokenizer(
    model: str | None,
    adapter: str | Path | None,
    *,
    device: str | None = None,
    dtype: str = "auto",
    hub: str | None = None,
    trust_remote_code: bool | None = None,
    refuse_quantized: bool = False,
) -> LoadedModel:
    from duotune.trainer.model.hub import resolve_model
    from duotune.trainer.model.load import dtype_kwarg
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir = Path(adapter) if adapter else None
    if adapter_dir is not None:
        base = adapter_base(adapter_dir)
        if model:
            base = BaseSpec(model, hub=hub, trust_remote_code=base.trust_remote_code, where="--base/--model")
    elif model:
        base = BaseSpec(model, hub=hub, where="--model")
    else:
        raise UserError("give --model (a base model) and/or --adapter (a trained adapter folder)")
    remote = base.trust_remote_code if trust_remote_code is None else trust_remote_code
    backend = pick_device(device)
    source = resolve_model(
        base.model_name_or_path,
        hub=base.hub,
        revision=base.revision,
        cache_dir=base.cache_dir,
        trust_remote_code=remote,
        allow_pickle_weights=base.allow_pickle_weights,
    )
    dtype_name, torch_dtype = resolve_dtype(dtype, backend, source.path)
    if refuse_quantized:
        _refuse_quantized(source.path)
    tok_dir = (
        adapter_dir
        if adapter_dir and (adapter_dir / "tokenizer_config.json").is_file()
        else Path(source.path)
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), trust_remote_code=remote)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer from {tok_dir}: {first_line(e)}") from None
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            source.path,
            **dtype_kwarg(torch_dtype),
            trust_remote_code=remote,
            use_safetensors=None if base.allow_pickle_weights else True,
        )
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the model {base.model_name_or_path}: {first_line(e)}") from None
    if adapter_dir is not None:
        from peft import PeftModel

        try:
            loaded = PeftModel.from_pretrained(loaded, str(adapter_dir))
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise UserError(
                f"the adapter {adapter_dir} does not fit the base {base.model_name_or_path}: {first_line(e)}"
            ) from None
    dev = backend.device()
    loaded.to(dev)
    loaded.eval()
    return LoadedModel(loaded, tokenizer, base, source.path, adapter_dir, dev, dtype_name, backend)


def _refuse_quantized(path: str) -> None:
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return
    q = cfg.get("quantization_config")
    if q:
        method = q.get("quant_method", "quantized") if isinstance(q, dict) else "quantized"
        raise UserError(
            f"the base model at {path} is {method}-quantized: merging a LoRA into quantized weights is not exact; "
            "merge into the unquantized (bf16/fp16) base model instead"
        )
