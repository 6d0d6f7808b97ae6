"""The one exception the data layer raises for bad or missing input."""
from __future__ import annotations


class DataError(Exception):
    """Input data is missing or malformed.

    The message is a single line that names the file (and the 1-based line number where one
    applies) and says what was expected, so a user can fix the file without reading a traceback.
    """

    def __init__(self, message: str) -> None:
        # Multi-line messages get lost in log tails and CLI summaries; keep one line.
        super().__init__(" ".join(message.splitlines()).strip())
