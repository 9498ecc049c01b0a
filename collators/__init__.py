"""Batch collators shared by every backend and framework."""

from .seq2seq import Seq2SeqCollator, resolve_pad_token_id

__all__ = ["Seq2SeqCollator", "resolve_pad_token_id"]
