"""The one error type of the export stage."""
from __future__ import annotations


class ExportError(RuntimeError):
    """An export or its gate failed; the message says which file and why."""
