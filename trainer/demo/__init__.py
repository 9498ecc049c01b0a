"""The bundled demo: a tiny Llama-architecture chat model and a counselling dataset.

``demo://tiny-llama`` is built on first use, deterministically, from code in this file: a byte-level
BPE tokenizer trained on the bundled conversations (Chinese and English) with a DeepSeek-style chat
template, and a 2-layer Llama whose weights are drawn from a seeded generator. Nothing is downloaded.
The result is cached (``$DUOTUNE_CACHE`` or ``~/.cache/duotune``) and written so that both the current
transformers and the openMind stack (transformers 4.45) load it: a classic ``tokenizer_class`` and the
chat template inside ``tokenizer_config.json``, classic keys in ``config.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from duotune.trainer.common.errors import UserError

__all__ = ["DEMO_MODELS", "DEMO_DATA_FILE", "demo_model_path", "is_demo_id", "cache_home"]

HERE = Path(__file__).resolve().parent
DEMO_DATA_FILE = HERE / "counselling_demo.json"
BUILDER_VERSION = "3"

BOS, EOS = "<s>", "</s>"

# The DeepSeek-LLM chat format, as the reference recipe's model uses it.
DEMO_CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

DEMO_MODELS = {
    "tiny-llama": {
        "vocab_size": 1024,
        "hidden_size": 128,
        "intermediate_size": 352,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "seed": 1234,
        "init_std": 0.02,
        # A short full-parameter pretraining on the clients' side of the conversations (inputs and
        # system prompts, never the counsellor replies) so the demo fine-tunes a model that has seen the
        # languages, like a real one, while the replies are still new to it. A LoRA on a purely random
        # 2-layer model barely moves its loss; on this one the demo's loss falls by about 1.5 nats.
        "pretrain_steps": 60,
        "pretrain_block": 128,
        "pretrain_batch": 16,
        "pretrain_lr": 3e-3,
    }
}


def cache_home() -> Path:
    env = os.environ.get("DUOTUNE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "duotune"


def is_demo_id(model_id: str) -> bool:
    return model_id.startswith("demo://")


def demo_model_path(model_id: str = "demo://tiny-llama") -> Path:
    """Return the folder of a demo model, building it on first use."""
    name = model_id[len("demo://") :] if is_demo_id(model_id) else model_id
    spec = DEMO_MODELS.get(name)
    if spec is None:
        raise UserError(
            f"model {model_id!r}: unknown demo model; available: "
            + ", ".join(f"demo://{k}" for k in DEMO_MODELS)
        )
    digest = hashlib.sha256(
        json.dumps(
            {"v": BUILDER_VERSION, "spec": spec, "template": DEMO_CHAT_TEMPLATE}, sort_keys=True
        ).encode()
        + DEMO_DATA_FILE.read_bytes()
    ).hexdigest()[:12]
    target = cache_home() / "demo" / f"{name}-{digest}"
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build_demo_model(tmp, spec)
        for f in [tmp, *tmp.iterdir()]:
            f.chmod(0o755 if f.is_dir() else 0o644)
        try:
            os.replace(tmp, target)  # atomic: a half-built folder never looks complete
        except OSError:
            if not (target / "model.safetensors").is_file():  # lost a race to a parallel builder: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _corpus() -> list[str]:
    """Every demo conversation as the chat template renders it (so the role words become tokens)."""
    rows = json.loads(DEMO_DATA_FILE.read_text(encoding="utf-8"))
    texts = []
    for row in rows:
        parts = []
        for turn in row["conversation"]:
            if turn.get("system"):
                parts.append(turn["system"] + "\n\n")
            parts.append(f"User: {turn['input']}\n\nAssistant: {turn['output']}")
        texts.append("".join(parts))
    return texts


def build_tokenizer(out: Path, vocab_size: int, model_max_length: int) -> int:
    """Train a byte-level BPE on the demo corpus and save it; returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    special = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in (BOS, EOS)
    }
    config = {
        # A classic class name and the template inside this file: transformers 4.45 (openMind) reads
        # neither TokenizersBackend nor chat_template.jinja.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": None,  # like many chat models; the collator documents its fallback
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": special,
        "chat_template": DEMO_CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / "special_tokens_map.json").write_text(json.dumps({"bos_token": BOS, "eos_token": EOS}, indent=2))
    return tok.get_vocab_size()


def build_demo_model(out: Path, spec: dict) -> None:
    import torch
    from safetensors.torch import save_file

    vocab = build_tokenizer(out, spec["vocab_size"], spec["max_position_embeddings"])
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    h, inter, layers = spec["hidden_size"], spec["intermediate_size"], spec["num_hidden_layers"]
    heads, kv_heads = spec["num_attention_heads"], spec["num_key_value_heads"]
    head_dim = h // heads
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": h,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": spec["max_position_embeddings"],
        "initializer_range": spec["init_std"],
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": tok.token_to_id(BOS),
        "eos_token_id": tok.token_to_id(EOS),
        "torch_dtype": "float32",
        "use_cache": True,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}, indent=2)
    )
    # Weights are drawn in a fixed order from one seeded generator, independent of how any transformers
    # version initialises modules, so every stack trains the very same model.
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (heads * head_dim, h),
                p + "self_attn.k_proj.weight": (kv_heads * head_dim, h),
                p + "self_attn.v_proj.weight": (kv_heads * head_dim, h),
                p + "self_attn.o_proj.weight": (h, heads * head_dim),
                p + "mlp.gate_proj.weight": (inter, h),
                p + "mlp.up_proj.weight": (inter, h),
                p + "mlp.down_proj.weight": (h, inter),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
            }
        )
    shapes["lm_head.weight"] = (vocab, h)
    gen = torch.Generator().manual_seed(spec["seed"])
    tensors = {}
    for name in sorted(shapes):
        if name.endswith("norm.weight"):
            tensors[name] = torch.ones(shapes[name])
        else:
            tensors[name] = torch.randn(shapes[name], generator=gen) * config["initializer_range"]
    if spec.get("pretrain_steps"):
        _pretrain(tensors, config, tok, spec)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "README.md").write_text(
        "Tiny random-weight Llama built by duotune for its demo and tests (not a useful language model).\n"
    )


def _pretrain_texts() -> list[str]:
    rows = json.loads(DEMO_DATA_FILE.read_text(encoding="utf-8"))
    texts = []
    for row in rows:
        for turn in row["conversation"]:
            texts.extend(turn[k] for k in ("system", "input") if turn.get(k))
    return texts


def _llama_loss(params: dict, config: dict, ids):
    """Next-token loss of a Llama decoder written out in plain torch (the same maths and parameter
    names as transformers' LlamaForCausalLM), so the demo build depends on torch alone and is
    bit-identical whichever transformers version builds it."""
    import torch
    import torch.nn.functional as F

    def rms(x, w):
        x32 = x.float()
        return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + config["rms_norm_eps"]))

    def rotate_half(x):
        a, b = x.chunk(2, dim=-1)
        return torch.cat((-b, a), dim=-1)

    batch, seq = ids.shape
    heads, kv_heads, dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    inv_freq = 1.0 / (config["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    mask = torch.full((seq, seq), float("-inf")).triu(1)
    h = F.embedding(ids, params["model.embed_tokens.weight"])  # deterministic backward, unlike indexing
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms(h, params[p + "input_layernorm.weight"])
        q = (x @ params[p + "self_attn.q_proj.weight"].T).view(batch, seq, heads, dim).transpose(1, 2)
        k = (x @ params[p + "self_attn.k_proj.weight"].T).view(batch, seq, kv_heads, dim).transpose(1, 2)
        v = (x @ params[p + "self_attn.v_proj.weight"].T).view(batch, seq, kv_heads, dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = (q @ k.transpose(-1, -2)) / dim**0.5 + mask
        attn = F.softmax(scores, dim=-1) @ v
        h = (
            h
            + attn.transpose(1, 2).reshape(batch, seq, heads * dim) @ params[p + "self_attn.o_proj.weight"].T
        )
        x = rms(h, params[p + "post_attention_layernorm.weight"])
        gate = F.silu(x @ params[p + "mlp.gate_proj.weight"].T)
        h = h + (gate * (x @ params[p + "mlp.up_proj.weight"].T)) @ params[p + "mlp.down_proj.weight"].T
    logits = rms(h, params["model.norm.weight"]) @ params["lm_head.weight"].T
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def _pretrain(tensors: dict, config: dict, tok, spec: dict) -> None:
    """Plain next-token training of all weights on the client texts, in a fixed order, fp32 on CPU."""
    import torch

    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    stream: list[int] = []
    for text in _pretrain_texts():
        stream.extend([bos, *tok.encode(text).ids, eos])
    block = spec["pretrain_block"]
    blocks = torch.tensor(stream[: len(stream) // block * block]).view(-1, block)
    gen = torch.Generator().manual_seed(spec["seed"])
    params = {k: v.requires_grad_(True) for k, v in tensors.items()}
    steps = spec["pretrain_steps"]
    opt = torch.optim.AdamW(params.values(), lr=spec["pretrain_lr"], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=spec["pretrain_lr"], total_steps=steps, pct_start=0.1
    )
    for _ in range(steps):
        idx = torch.randint(0, blocks.shape[0], (spec["pretrain_batch"],), generator=gen)
        loss = _llama_loss(params, config, blocks[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    for v in params.values():
        v.requires_grad_(False)
