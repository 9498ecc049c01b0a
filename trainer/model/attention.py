"""The attention kernel of a run, and how its micro-batches are laid out: padded to the longest
example, or padding-free (one flattened sequence per micro-batch, see collators/padding_free.py) with
attention confined to each example.

A padding-free batch is exact only if no token attends to another example. The kernel that ensures it,
and how the collator tells it where examples end (``boundaries``), depend on the device and on the
installed transformers:

==================================  ====================================================  ============
where                               kernel                                                boundaries
==================================  ====================================================  ============
CUDA + flash-attn                   FlashAttention-2 varlen (transformers' own)           cu_seqlens
                                                                                          (4.4x: position_ids)
Ascend NPU, transformers >= 5       npu_fusion_attention, TND layout (backends/npu.py)    cu_seqlens
anything else, transformers >= 5    SDPA (or eager) once per example, registered in       cu_seqlens
                                    transformers' AttentionInterface
transformers 4.4x (openMind stack)  SDPA / eager with a block-diagonal 4-D mask           mask4d
==================================  ====================================================  ============

The per-example kernels cost what the examples cost (the sum of their squared lengths), never the
square of the flattened length that a block-diagonal mask costs. Whatever the path, a model whose code
does not hand these boundaries to its attention is trained with padded batches instead (``auto``) or
refused (``padding_free: true``, ``packing: true``): a padding-free batch is never contaminated.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from duotune.trainer.common.errors import UserError

__all__ = [
    "Batching",
    "choose_attention",
    "enable_batching",
    "eager_per_example",
    "has_attention_interface",
    "plan_batching",
    "sdpa_per_example",
]

#: largest block-diagonal mask (bytes) `padding_free: auto` builds on stacks without AttentionInterface
MASK4D_BYTES_LIMIT = 1 << 30
#: model types whose transformers-4.4x code honours a 4-D mask and restarting position_ids
LEGACY_MODEL_TYPES = ("llama", "qwen2", "mistral")
_ITEMSIZE = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class Batching:
    """How the micro-batches of a run are laid out, and why (printed at the start of ``train``)."""

    padding_free: bool
    why: str
    boundaries: str | None = None  # the PaddingFreeCollator's `boundaries`; None for padded batches
    kernel: str = ""  # the attention that keeps examples apart, in words
    attention_name: str | None = None  # registered in AttentionInterface and set on the model, if any
    kernel_fn: Callable | None = None
    packing: bool = False
    forced: bool = False  # padding_free: true or packing: true (an unusable path is an error, not a fallback)

    def describe(self) -> str:
        if not self.padding_free:
            return f"padded to the longest example of each micro-batch ({self.why})"
        layout = (
            "packed rows of whole examples, each micro-batch one flattened sequence"
            if self.packing
            else "padding-free: each micro-batch one flattened sequence"
        )
        return (
            f"{layout}, position_ids restarting at every example, attention kept inside each example by "
            f"{self.kernel} ({self.why})"
        )


def choose_attention(requested: str, backend, precision: str) -> tuple[str, str]:
    """(attn_implementation for from_pretrained, why) for the recipe's flash_attn / attn_implementation."""
    if requested == "auto":
        return backend.attn_implementation(precision)
    if requested == "fa2":
        implementation, why = backend.flash_attention(precision)
        if implementation is None:
            raise UserError(f"flash_attn: fa2 on {backend.name}: {why}")
        return implementation, why
    return requested, "from the recipe"


def has_attention_interface() -> bool:
    """transformers >= 5: attention functions and their mask builders can be registered by name, and
    models pass keyword arguments such as cu_seq_lens_q through to them."""
    try:
        from transformers import AttentionInterface  # noqa: F401
        from transformers.masking_utils import AttentionMaskInterface  # noqa: F401
    except ImportError:
        return False
    return True


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def plan_batching(recipe, backend, attn_implementation: str, precision: str) -> Batching:
    """The layout the recipe asks for on this backend and transformers, before the model is loaded
    (enable_batching confirms it against the model)."""
    wanted = recipe.padding_free
    forced = wanted is True or recipe.packing
    if wanted is False:
        return Batching(False, "padding_free: false in the recipe")
    if recipe.neftune_noise_alpha and not forced:
        return Batching(
            False,
            "NEFTune scales its noise by the padded length of a batch; padding_free: true flattens anyway",
        )
    kernel = backend.varlen_kernel(attn_implementation)
    interface = has_attention_interface()
    common = {"packing": recipe.packing, "forced": forced}
    if kernel is not None and kernel.function is None:  # transformers' FlashAttention-2 varlen
        return Batching(
            True,
            "exact: the varlen kernel never attends across examples",
            "cu_seqlens" if interface else "position_ids",
            kernel.name,
            **common,
        )
    if interface:
        if kernel is not None:
            name, function, why = (
                kernel.name,
                kernel.function,
                f"the {backend.name.upper()} fused varlen kernel",
            )
        elif attn_implementation == "eager":
            name, function, why = "eager attention run once per example", eager_per_example, "exact"
        else:
            name, function = "PyTorch SDPA run once per example", sdpa_per_example
            why = "exact; costs the sum of the examples' squared lengths, not the square of their total"
        return Batching(
            True,
            why,
            "cu_seqlens",
            name,
            attention_name=f"duotune_varlen_{attn_implementation}",
            kernel_fn=function,
            **common,
        )
    version = _transformers_version()
    tokens = recipe.per_device_train_batch_size * recipe.cutoff_len
    mask_gib = tokens**2 * _ITEMSIZE.get(precision, 4) / 2**30
    if mask_gib * 2**30 > MASK4D_BYTES_LIMIT and not forced:
        return Batching(
            False,
            f"transformers {version} has no AttentionInterface, and a block-diagonal mask over up to "
            f"{tokens} tokens would take {mask_gib:.1f} GiB",
        )
    unused = f"; {kernel.name} needs transformers >= 5" if kernel is not None else ""
    return Batching(
        True,
        f"exact; transformers {version} has no AttentionInterface, so a mask of up to {mask_gib:.2f} GiB "
        f"stands in for a varlen kernel{unused}",
        "mask4d",
        f"{attn_implementation} with a block-diagonal 4-D mask",
        **common,
    )


def enable_batching(model, batching: Batching, recipe) -> Batching:
    """Check that ``model`` hands the example boundaries to its attention, and switch it to the
    registered per-example kernel. A model that cannot is trained padded (``auto``) or refused."""
    if not batching.padding_free:
        return batching
    problem = _unsupported(model, batching, recipe)
    if problem:
        if batching.forced:
            what = "packing: true" if batching.packing else "padding_free: true"
            raise UserError(
                f"{what}: {problem}, so flattened examples would attend to each other; "
                "remove it (padded batches are exact) or use a model transformers implements"
            )
        return Batching(False, problem)
    if batching.attention_name:
        _register(batching.attention_name, batching.kernel_fn, _base_implementation(model))
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(batching.attention_name)
        else:  # pragma: no cover - transformers with AttentionInterface but no setter
            model.config._attn_implementation = batching.attention_name
    return batching


def _base_implementation(model) -> str:
    current = getattr(model.config, "_attn_implementation", "sdpa") or "sdpa"
    return "eager" if current == "eager" else "sdpa"


def _unsupported(model, batching: Batching, recipe) -> str | None:
    """Why this model cannot take padding-free batches on this path (None if it can)."""
    config = model.config
    model_type = getattr(config, "model_type", "?")
    if batching.boundaries in ("position_ids", "mask4d"):  # transformers 4.4x
        native = type(model).__module__.startswith("transformers.")
        if model_type not in LEGACY_MODEL_TYPES or not native:
            return (
                f"on transformers {_transformers_version()} only the built-in "
                f"{', '.join(LEGACY_MODEL_TYPES)} models take restarting position_ids and a 4-D mask "
                f"({type(model).__name__} is {'remote code' if not native else model_type})"
            )
        return None
    if not getattr(type(model), "_supports_attention_backend", False):
        return f"{type(model).__name__}'s code does not pass example boundaries to transformers' attention functions"
    if batching.attention_name:  # our kernels implement plain causal attention, nothing more
        if getattr(config, "attn_logit_softcapping", None):
            return f"{model_type} soft-caps its attention logits, which the per-example kernel does not"
        window = (
            getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
        )
        if window and window < recipe.cutoff_len:
            return f"{model_type} uses sliding-window attention ({window} tokens) shorter than cutoff_len"
    return None


# ------------------------------------------------------------------------------------------ kernels
# (1, heads, tokens, head_dim) query/key/value of a flattened micro-batch -> (1, tokens, heads, head_dim)


def _lengths(cu_seqlens) -> list[int]:
    bounds = [int(b) for b in cu_seqlens.tolist()]
    return [end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


def _split(tensor, lengths: list[int], groups: int = 1):
    """The examples of a (1, heads, tokens, head_dim) tensor. torch.split, not slicing: its backward
    concatenates the examples' gradients once, where each slice's backward would fill and add a
    full-length gradient (as many times as there are examples, in every layer)."""
    if groups > 1:  # grouped-query attention: each key/value head serves `groups` query heads
        tensor = tensor.repeat_interleave(groups, dim=1)
    return tensor.split(lengths, dim=2)


def _join(outputs):
    """(1, heads, length, head_dim) per example -> (1, tokens, heads, head_dim), one copy."""
    import torch

    return torch.cat([o.transpose(1, 2) for o in outputs], dim=1)


def sdpa_per_example(query, key, value, cu_seqlens, scale: float, dropout: float):
    """Causal SDPA on each example of the flattened batch separately."""
    import torch.nn.functional as F

    lengths = _lengths(cu_seqlens)
    groups = query.shape[1] // key.shape[1]
    examples = zip(
        _split(query, lengths), _split(key, lengths, groups), _split(value, lengths, groups), strict=True
    )
    return _join(
        [
            F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scale)
            for q, k, v in examples
        ]
    )


def eager_per_example(query, key, value, cu_seqlens, scale: float, dropout: float):
    """Causal attention as plain matmuls (softmax in fp32), on each example separately."""
    import torch
    import torch.nn.functional as F

    lengths = _lengths(cu_seqlens)
    groups = query.shape[1] // key.shape[1]
    outputs = []
    for q, k, v in zip(
        _split(query, lengths), _split(key, lengths, groups), _split(value, lengths, groups), strict=True
    ):
        n = q.shape[2]
        scores = torch.matmul(q, k.transpose(2, 3)) * scale
        future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, torch.finfo(scores.dtype).min)
        weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        weights = F.dropout(weights, p=dropout, training=dropout > 0)
        outputs.append(torch.matmul(weights, v))
    return _join(outputs)


def _register(name: str, kernel_fn: Callable, base: str) -> None:
    """Register ``name`` in transformers' attention and mask interfaces: flattened batches (which
    carry cu_seq_lens_q and no 2-D mask) go to ``kernel_fn``; anything else (a padded evaluation
    batch, generation) to the ``base`` implementation with its usual mask."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    build_mask = eager_mask if base == "eager" else sdpa_mask

    def mask(*args, attention_mask=None, **kwargs):
        if attention_mask is None:
            return None  # flattened: the kernel keeps examples apart; nothing of size T x T is built
        return build_mask(*args, attention_mask=attention_mask, **kwargs)

    def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
        cu_seqlens = _example_bounds(query, attention_mask, kwargs)
        if cu_seqlens is None:
            if base == "sdpa":  # no mask means causal to SDPA
                return sdpa_attention_forward(
                    module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
                )
            if attention_mask is None:  # eager needs the causal mask that `mask` above did not build
                attention_mask = _causal_mask(query, key)
            return _model_eager(module)(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
        _check_plain_causal(kwargs, cu_seqlens)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return kernel_fn(query, key, value, cu_seqlens, scale, dropout), None

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, mask)


def _example_bounds(query, attention_mask, kwargs: dict[str, Any]):
    """cu_seqlens of a flattened batch: as the collator passed them, or, should a model's forward have
    dropped them on the way (an older kernel library's patched forward, say), from where the
    position_ids restart. None for anything that is not one flattened row without a mask."""
    import torch

    if attention_mask is not None or query.shape[0] != 1:
        return None
    cu_seqlens = kwargs.get("cu_seq_lens_q")
    if cu_seqlens is not None:
        return cu_seqlens
    positions = kwargs.get("position_ids")
    if positions is None or positions.shape[-1] != query.shape[2]:
        return None
    starts = (positions.reshape(-1) == 0).nonzero().reshape(-1)
    if starts.numel() < 2 or int(starts[0]) != 0:  # one sequence, or a cached continuation
        return None
    total = torch.tensor([positions.shape[-1]], device=starts.device)
    return torch.cat([starts, total]).to(torch.int32)


def _causal_mask(query, key):
    """Additive causal mask for eager attention, aligned to the end of the keys (a cache may precede)."""
    import torch

    q_len, kv_len = query.shape[-2], key.shape[-2]
    mask = torch.full((q_len, kv_len), torch.finfo(query.dtype).min, dtype=query.dtype, device=query.device)
    return mask.triu(1 + kv_len - q_len)[None, None]


def _model_eager(module) -> Callable:
    return sys.modules[type(module).__module__].eager_attention_forward


def _check_plain_causal(kwargs: dict[str, Any], cu_seqlens) -> None:
    """The per-example kernels compute plain causal attention; refuse anything they would silently drop."""
    extras = [k for k in ("softcap", "s_aux", "sinks", "position_bias") if kwargs.get(k) is not None]
    window = kwargs.get("sliding_window")
    if window is not None and int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) > window:
        extras.append("sliding_window")
    if extras:
        raise RuntimeError(f"padding-free attention got {', '.join(extras)}, which it does not implement")
