"""The error types of the export stage."""

from __future__ import annotations

from pathlib import Path


class ExportError(RuntimeError):
    """An export or its gate failed; the message says which file and why."""


class GateError(ExportError):
    """An artifact missed its parity gate. Besides the one-line message it carries what a caller needs
    to react (compress/pipeline.py fine-tunes with QAT and exports again): the folder it would have been
    published as, its precision, the gate's figures and the criteria it missed."""

    def __init__(self, message: str, artifact: Path, precision: str, figures: dict, missed: list[str]):
        super().__init__(message)
        self.artifact, self.precision, self.figures, self.missed = artifact, precision, figures, missed
