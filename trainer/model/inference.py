"""Loading a base model (and optionally a LoRA adapter) for merge, chat and eval.

The base of an adapter is, in order: ``--base``/``--model`` if given; the ``model_name_or_path`` of the
run that trained it (its ``run_config.yaml``, next to it or one folder up for ``checkpoint-N``), which
keeps the hub and revision it came from; else ``base_model_name_or_path`` of ``adapter_config.json``.
The tokenizer comes from the adapter folder when it has one (it carries the chat template training used).
"""

from __future__ import annotations

import json
import warnings
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


def read_run_config(adapter: Path) -> tuple[dict[str, Any], Path | None]:
    """The run_config.yaml of the run that trained an adapter (next to it, or one folder up for a
    checkpoint-N), as a mapping, and its path; ({}, None) when there is none."""
    from duotune.trainer.common.files import read_yaml_mapping

    for run_config in (adapter / "run_config.yaml", adapter.parent / "run_config.yaml"):
        if run_config.is_file():
            hint = "restore it, or pass --base (and --cutoff-len for eval)"
            return read_yaml_mapping(run_config, "run config", hint), run_config
    return {}, None


def adapter_base(adapter: Path) -> BaseSpec:
    from duotune.trainer.model.checks import check_adapter_folder

    check_adapter_folder(adapter)
    cfg, run_config = read_run_config(adapter)
    base = cfg.get("model_name_or_path")
    if base:
        if not isinstance(base, str):
            raise UserError(
                f"run config {run_config}: model_name_or_path must be a string, got {base!r}; pass --base"
            )
        hub = cfg.get("hub")
        return BaseSpec(
            base,
            hub=None if hub in (None, "auto") else str(hub),
            revision=cfg.get("revision"),
            cache_dir=cfg.get("cache_dir"),
            trust_remote_code=cfg.get("trust_remote_code") is True,
            allow_pickle_weights=cfg.get("allow_pickle_weights") is True,
            where=str(run_config),
        )
    config_path = adapter / "adapter_config.json"
    base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")  # checked above
    if not base or not isinstance(base, str):
        raise UserError(f"--adapter {adapter}: its adapter_config.json names no base model; pass --base")
    return BaseSpec(base, where=str(config_path))


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
    from duotune.trainer.model.load import dtype_kwarg, load_causal_lm, load_tokenizer_from

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
    try:
        source = resolve_model(
            base.model_name_or_path,
            hub=base.hub,
            revision=base.revision,
            cache_dir=base.cache_dir,
            trust_remote_code=remote,
            allow_pickle_weights=base.allow_pickle_weights,
        )
    except UserError as e:
        if base.where.startswith("--"):
            raise
        raise UserError(
            f"the adapter's base model {base.model_name_or_path} (named in {base.where}) cannot be used: "
            f"{str(e).splitlines()[0]}; pass --base MODEL"
        ) from None
    dtype_name, torch_dtype = resolve_dtype(dtype, backend, source.path)
    if refuse_quantized:
        _refuse_quantized(source.path)
    tok_dir = (
        adapter_dir
        if adapter_dir and (adapter_dir / "tokenizer_config.json").is_file()
        else Path(source.path)
    )
    tokenizer = load_tokenizer_from(tok_dir, base.model_name_or_path, trust_remote_code=remote)
    loaded = load_causal_lm(
        source.path,
        base.model_name_or_path,
        **dtype_kwarg(torch_dtype),
        trust_remote_code=remote,
        use_safetensors=None if base.allow_pickle_weights else True,
    )
    if adapter_dir is not None:
        loaded = _apply_adapter(loaded, adapter_dir, base)
    dev = backend.device()
    loaded.to(dev)
    loaded.eval()
    return LoadedModel(loaded, tokenizer, base, source.path, adapter_dir, dev, dtype_name, backend)


def _apply_adapter(model, adapter_dir: Path, base: BaseSpec):
    """The base model with the adapter on it, after checking that each LoRA matrix fits the layer it
    adapts, and that every LoRA layer got its weights from the file."""
    from duotune.trainer.model.checks import check_adapter_fits, check_adapter_folder, check_adapter_loaded
    from peft import PeftModel

    shapes = check_adapter_folder(adapter_dir)
    check_adapter_fits(model, adapter_dir, shapes)
    try:
        with warnings.catch_warnings():  # peft's warning about missing keys: check_adapter_loaded says more
            warnings.simplefilter("ignore", UserWarning)
            model = PeftModel.from_pretrained(model, str(adapter_dir))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(
            f"the adapter {adapter_dir} does not fit the base {base.model_name_or_path}: {first_line(e)}"
        ) from None
    check_adapter_loaded(model, adapter_dir, shapes)
    return model


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
