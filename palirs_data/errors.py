"""The one error type users see.

A :class:`PalirsInputError` carries a single line that names the file, key or molecule at
fault and what is wrong with it. Stage scripts turn it into that line on stderr and exit 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PalirsInputError(ValueError):
    """Bad input: a one-line message naming the culprit (file, key, molecule)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class StageFailed(RuntimeError):
    """A stage ran but its result is not acceptable (e.g. too many failed single points)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
