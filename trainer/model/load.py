"""Tokenizer, base model and LoRA adapter."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

from duotune.trainer.common.errors import UserError, first_line
from duotune.trainer.model.hub import ModelSource
from duotune.trainer.model.hub import resolve_model as hub_resolve_model
from duotune.trainer.recipe import Recipe

__all__ = [
    "ModelSource",
    "resolve_model",
    "load_tokenizer",
    "load_tokenizer_from",
    "load_causal_lm",
    "load_model",
    "apply_lora",
    "lora_config_for",
    "linear_module_names",
    "count_parameters",
    "model_type",
    "save_tokenizer",
    "TORCH_DTYPES",
]

log = logging.getLogger(__name__)

# peft (0.21) reads `model.is_gradient_checkpointing`, which transformers 5 deprecated; nothing a user
# can act on, so it is not shown (here and in inference.py, which imports this module).
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# config attributes that switch dropout on in common architectures (zeroed for deterministic runs)
DROPOUT_KEYS = (
    "attention_dropout",
    "hidden_dropout",
    "dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)


def resolve_model(recipe: Recipe) -> ModelSource:
    """The recipe's model as a local folder (downloaded from its hub if needed)."""
    return hub_resolve_model(
        recipe.model_name_or_path,
        hub=None if recipe.hub == "auto" else recipe.hub,
        revision=recipe.revision,
        cache_dir=recipe.cache_dir,
        trust_remote_code=recipe.trust_remote_code,
        allow_pickle_weights=recipe.allow_pickle_weights,
    )


def dtype_kwarg(dtype) -> dict[str, Any]:
    """``from_pretrained``'s keyword for the weights' dtype: transformers 5 renamed torch_dtype to dtype,
    and 4.45 (the openMind stack) knows only torch_dtype."""
    import transformers

    return {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": dtype}


def load_tokenizer(source: ModelSource, recipe: Recipe):
    return load_tokenizer_from(Path(source.path), source.spec, trust_remote_code=recipe.trust_remote_code)


def load_tokenizer_from(folder: Path, name: str, *, trust_remote_code: bool = False):
    """The tokenizer of a folder, after checking that its files parse (each problem names the file)."""
    from duotune.trainer.model.checks import check_tokenizer_files
    from transformers import AutoTokenizer

    check_tokenizer_files(folder, trust_remote_code=trust_remote_code)
    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer of {name} from {folder}: {first_line(e)}") from None


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' own load report while loading: duotune checks it and names what is wrong."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_causal_lm(path: str, name: str, **kwargs):
    """AutoModelForCausalLM.from_pretrained, refusing weights that do not fit the config (missing,
    unexpected or other-shaped tensors) instead of initialising those layers at random."""
    from duotune.trainer.model.checks import loading_problems, shape_mismatches
    from transformers import AutoModelForCausalLM

    with _quiet_transformers():
        try:
            # not ignore_mismatched_sizes: on transformers 4.45 it initialises every weight first (slow on
            # 7B, and it draws from the random generator, so the LoRA init that follows would change)
            model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kwargs)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load the model {name}: {first_line(e)}") from None
        except RuntimeError:  # both stacks raise this for tensors of another shape: find them, or re-raise
            mismatched = shape_mismatches(
                Path(path), trust_remote_code=kwargs.get("trust_remote_code", False)
            )
            if not mismatched:
                raise
            info = {"mismatched_keys": mismatched}
    problem = loading_problems(info, Path(path))
    if problem:
        raise UserError(problem)
    return model


def load_model(source: ModelSource, recipe: Recipe, *, precision: str, attn_implementation: str):
    """The base model in the training precision (adapters stay fp32, see apply_lora)."""
    import torch

    kwargs: dict[str, Any] = {
        **dtype_kwarg(getattr(torch, TORCH_DTYPES[precision])),
        "trust_remote_code": recipe.trust_remote_code,
        "attn_implementation": attn_implementation,
        # safetensors only, unless the recipe explicitly trusts pickle weights
        "use_safetensors": None if recipe.allow_pickle_weights else True,
    }
    if recipe.deterministic:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(source.path, trust_remote_code=recipe.trust_remote_code)
        for name in DROPOUT_KEYS:
            if isinstance(getattr(config, name, None), float):
                setattr(config, name, 0.0)
        kwargs["config"] = config
    model = load_causal_lm(source.path, source.spec, **kwargs)
    if recipe.gradient_checkpointing:
        # use_reentrant=False works with frozen inputs; enable_input_require_grads keeps the reentrant
        # variant (which some remote-code models force) from silently producing no gradients.
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.20's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model.config.use_cache = False
    return model


def model_type(source: ModelSource) -> str | None:
    """The model_type its config.json declares (read without loading anything), None if unreadable."""
    import json

    try:
        return json.loads((Path(source.path) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def linear_module_names(model) -> list[str]:
    """Short names of every linear layer except the output head (what `lora_target: all` means)."""
    import torch

    try:
        from transformers.pytorch_utils import Conv1D  # GPT-2 style linear layers
    except ImportError:  # pragma: no cover
        Conv1D = ()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, module in model.named_modules():
        if module is head or not name:
            continue
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def lora_config_for(recipe: Recipe, model):
    from peft import LoraConfig, TaskType

    if recipe.pissa_init:
        init: Any = "pissa" if recipe.pissa_iter == -1 else f"pissa_niter_{recipe.pissa_iter}"
    else:
        init = True
    target = linear_module_names(model) if recipe.lora_target == ["all"] else list(recipe.lora_target)
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=recipe.lora_rank,
        lora_alpha=recipe.resolved_lora_alpha,
        lora_dropout=recipe.lora_dropout,
        target_modules=target,
        modules_to_save=list(recipe.additional_target) if recipe.additional_target else None,
        bias="none",
        use_rslora=recipe.use_rslora,
        use_dora=recipe.use_dora,
        init_lora_weights=init,
    )


def apply_lora(model, recipe: Recipe):
    """Wrap the model with a LoRA adapter; trainable weights stay fp32 whatever the base dtype."""
    from peft import get_peft_model

    config = lora_config_for(recipe, model)
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
        raise UserError(
            f"cannot attach LoRA with lora_target={recipe.lora_target} additional_target="
            f"{recipe.additional_target}: {first_line(e)} (module names in this model: {', '.join(names[:30])})"
        ) from None


def save_tokenizer(tokenizer, out: str | Path) -> None:
    """Save the tokenizer so that both stacks load it: transformers 4.45 (openMind) understands neither
    the TokenizersBackend class name nor chat_template.jinja, so keep a classic class name and the
    template inside tokenizer_config.json."""
    import json

    tokenizer.save_pretrained(str(out), save_jinja_files=False)
    cfg_path = Path(out) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    if isinstance(tokenizer.chat_template, str):
        cfg["chat_template"] = tokenizer.chat_template
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    stale = Path(out) / "chat_template.jinja"
    if stale.exists():
        stale.unlink()


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
