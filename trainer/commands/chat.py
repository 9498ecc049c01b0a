"""``duotune chat``: talk to a model (and its adapter) through its chat template, tokens streamed as they
come. ``--prompt`` answers once and exits; ``--compare`` shows the base model's and the adapter's answers
to the same prompt side by side. In the interactive loop, ``/reset`` clears the history and ``exit`` or
Ctrl-D leaves.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import click

__all__ = ["GenerationSettings", "Chat", "stop_token_ids", "side_by_side"]

# end-of-turn markers of common chat templates; generation stops at whichever the template uses
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|EOT|>")


@dataclass
class GenerationSettings:
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    do_sample: bool = True

    def kwargs(self) -> dict:
        kw = {
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": 1,  # an empty reply is never an answer; the end-of-turn token waits one step
            "repetition_penalty": self.repetition_penalty,
            "do_sample": self.do_sample,
        }
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        return kw


def stop_token_ids(tokenizer, model) -> list[int]:
    ids: list[int] = []
    for value in (
        tokenizer.eos_token_id,
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ):
        for v in value if isinstance(value, list) else [value]:
            if v is not None and v not in ids:
                ids.append(int(v))
    template = str(getattr(tokenizer, "chat_template", "") or "")
    vocab = tokenizer.get_vocab()
    for marker in END_OF_TURN:
        if marker in template and marker in vocab and vocab[marker] not in ids:
            ids.append(vocab[marker])
    return ids


def side_by_side(left_title: str, left: str, right_title: str, right: str, width: int | None = None) -> str:
    width = width or shutil.get_terminal_size((120, 20)).columns
    col = max(20, (width - 3) // 2)

    def block(title: str, text: str) -> list[str]:
        lines = [title, "-" * min(col, max(len(title), 10))]
        for para in text.splitlines() or [""]:
            lines += textwrap.wrap(para, col) or [""]
        return lines

    a, b = block(left_title, left), block(right_title, right)
    rows = max(len(a), len(b))
    a += [""] * (rows - len(a))
    b += [""] * (rows - len(b))
    return "\n".join(f"{x:<{col}} | {y}" for x, y in zip(a, b, strict=True))


class Chat:
    def __init__(self, loaded, settings: GenerationSettings, system: str | None = None):
        self.lm = loaded
        self.settings = settings
        self.system = system
        self.history: list[dict] = []
        self.stop_ids = stop_token_ids(loaded.tokenizer, loaded.model)
        from duotune.collators import resolve_pad_token_id

        self.pad_id = resolve_pad_token_id(loaded.tokenizer)[0]

    def messages(self, user: str) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history + [{"role": "user", "content": user}]

    def _inputs(self, messages: list[dict]) -> dict:
        tok = self.lm.tokenizer
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        enc = tok(text, add_special_tokens=False, return_tensors="pt", return_token_type_ids=False)
        return {
            "input_ids": enc["input_ids"].to(self.lm.device),
            "attention_mask": enc["attention_mask"].to(self.lm.device),
        }

    def _generate(self, inputs: dict, adapter: bool, streamer):
        import torch

        model = self.lm.model
        use_base = not adapter and hasattr(model, "disable_adapter")
        ctx = model.disable_adapter() if use_base else contextlib.nullcontext()
        with ctx, torch.no_grad():
            return model.generate(
                **inputs,
                streamer=streamer,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                **self.settings.kwargs(),
            )

    def generate(self, messages: list[dict], *, adapter: bool = True, stream: bool = False) -> str:
        from transformers import TextStreamer

        tok = self.lm.tokenizer
        inputs = self._inputs(messages)
        streamer = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True) if stream else None
        out = self._generate(inputs, adapter, streamer)
        return tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    def stream(self, messages: list[dict], *, adapter: bool = True) -> Iterator[str]:
        """The answer so far, each time it grows (generation runs in a thread; the web UI streams it)."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
        inputs = self._inputs(messages)
        failed: list[BaseException] = []

        def work() -> None:
            try:
                self._generate(inputs, adapter, streamer)
            except BaseException as e:  # handed to the caller below, after the stream ends
                failed.append(e)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text
        thread.join()
        if failed:
            raise failed[0]

    def answer(self, user: str, stream: bool = True) -> str:
        reply = self.generate(self.messages(user), stream=stream)
        self.history += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        return reply

    def compare(self, user: str) -> tuple[str, str]:
        messages = self.messages(user)
        return self.generate(messages, adapter=False), self.generate(messages, adapter=True)

    def loop(self, compare: bool = False) -> None:
        click.echo("Type a message; /reset clears the conversation; exit or Ctrl-D leaves.", err=True)
        while True:
            try:
                user = input("user> ")
            except EOFError:
                click.echo("", err=True)
                return
            cmd = user.strip()
            if not cmd:
                continue
            if cmd in ("exit", "quit", "/exit", "/quit"):
                return
            if cmd == "/reset":
                self.history = []
                click.echo("(conversation cleared)", err=True)
                continue
            if compare:
                base, tuned = self.compare(cmd)
                click.echo(side_by_side("base model", base, "with adapter", tuned))
                self.history += [{"role": "user", "content": cmd}, {"role": "assistant", "content": tuned}]
            else:
                sys.stdout.write("assistant> ")
                sys.stdout.flush()
                self.answer(cmd, stream=True)
