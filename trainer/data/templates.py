"""Built-in chat templates, for tokenizers that ship without one.

``template: auto`` (the default) always prefers the tokenizer's own ``chat_template``: that is what
the model was trained with and what inference servers will render. A named template here replaces it.
Each is a Jinja template in the format transformers' ``apply_chat_template`` runs, written for this
project to reproduce the published prompt formats exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from duotune.trainer.common.errors import UserError

__all__ = [
    "BuiltinTemplate",
    "BUILTIN_TEMPLATES",
    "apply_template_choice",
    "check_template_renders",
    "describe_template",
]


@dataclass(frozen=True)
class BuiltinTemplate:
    name: str
    jinja: str
    # Tokens that must exist as single tokens in the vocabulary for the format to work (the model
    # has to be able to emit its end-of-turn marker as one token).
    required_tokens: tuple[str, ...] = ()
    needs_eos: bool = False
    needs_bos: bool = False


# DeepSeek-LLM chat: <bos>{system}\n\nUser: {q}\n\nAssistant: {a}<eos>...
# The generation prompt is "Assistant:" with no trailing space: the reply's first token carries it.
_DEEPSEEK = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# ChatML (Qwen, Yi, many others): <|im_start|>{role}\n{content}<|im_end|>\n
_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Llama 3 instruct: <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>
_LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim }}"
    "{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Llama 2 chat: <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{q} [/INST] {a} </s>
_LLAMA2 = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = '<<SYS>>\n' + messages[0]['content'] + '\n<</SYS>>\n\n' %}"
    "{% set turns = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)

BUILTIN_TEMPLATES: dict[str, BuiltinTemplate] = {
    "deepseek": BuiltinTemplate("deepseek", _DEEPSEEK, needs_eos=True, needs_bos=True),
    "chatml": BuiltinTemplate("chatml", _CHATML, required_tokens=("<|im_start|>", "<|im_end|>")),
    "llama3": BuiltinTemplate(
        "llama3", _LLAMA3, required_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    ),
    "llama2": BuiltinTemplate("llama2", _LLAMA2, needs_eos=True, needs_bos=True),
}


def apply_template_choice(tokenizer, template: str, model_id: str) -> str:
    """Install the chosen template on ``tokenizer``; return a short description for the console."""
    if template == "auto":
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(
                f"tokenizer of {model_id} has no chat_template; set `template:` to one of "
                + ", ".join(BUILTIN_TEMPLATES)
                + " (the format the model was trained with)"
            )
        check_template_renders(tokenizer, model_id)
        return "the tokenizer's own chat_template"
    spec = BUILTIN_TEMPLATES.get(template)
    if spec is None:
        raise UserError(
            f"recipe key 'template': unknown template {template!r}; use auto or one of "
            + ", ".join(BUILTIN_TEMPLATES)
        )
    vocab = tokenizer.get_vocab()
    missing = [t for t in spec.required_tokens if t not in vocab]
    if spec.needs_eos and tokenizer.eos_token is None:
        missing.append("an eos_token")
    if spec.needs_bos and tokenizer.bos_token is None:
        missing.append("a bos_token")
    if missing:
        raise UserError(
            f"template {template!r} needs {', '.join(missing)}, which the tokenizer of {model_id} lacks; "
            "choose the template the model was trained with (or template: auto)"
        )
    tokenizer.chat_template = spec.jinja
    return f"built-in '{template}'"


def describe_template(tokenizer) -> str:
    """Name the tokenizer's template when it is one of ours, for messages."""
    for spec in BUILTIN_TEMPLATES.values():
        if tokenizer.chat_template == spec.jinja:
            return spec.name
    return "custom"


def check_template_renders(tokenizer, model_id: str) -> None:
    """Render a one-message conversation, so a broken chat template is one clear error at the start."""
    from jinja2 import TemplateError

    try:
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
        )
    except (TemplateError, TypeError, ValueError) as e:
        raise UserError(
            f"the chat template of {model_id} does not render ({type(e).__name__}: {str(e).strip()}); fix "
            "chat_template in its tokenizer_config.json"
        ) from None
