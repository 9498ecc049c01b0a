"""Errors that are the user's to fix.

A :class:`UserError` is printed by the CLI as one line (or one line per problem) without a traceback
and ends the process with exit code 2. Anything else that escapes is a bug in duotune and keeps its
traceback.
"""

from __future__ import annotations

__all__ = ["UserError", "EXIT_USER_ERROR", "first_line"]

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the recipe, the data or the environment that the user can act on.

    ``problems`` holds one line per problem; ``str(err)`` joins them.
    """

    def __init__(self, *problems: str):
        self.problems = [p for p in problems if p]
        super().__init__("\n".join(self.problems))


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for the
    one-line errors that wrap a library's exception."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
