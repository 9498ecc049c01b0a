"""Batch collators shared by every backend and framework: padded (Seq2Seq) and padding-free."""

from .padding_free import PaddingFreeCollator
from .seq2seq import Seq2SeqCollator, resolve_pad_token_id

__all__ = ["PaddingFreeCollator", "Seq2SeqCollator", "resolve_pad_token_id"]
