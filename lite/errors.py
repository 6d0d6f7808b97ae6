"""Every error a user can cause, under one root that carries the exit code.

`lite` catches `LiteError` only and prints its one-line message; anything else is a bug and keeps its
traceback. Raise the most specific kind: callers act on kinds (a failed parity gate lets `lite compress`
fall back to quantization-aware training; an unsupported model does not).

Standard library only: the on-device runtime imports this module and ships it to targets.
"""

from __future__ import annotations

from pathlib import Path


class LiteError(Exception):
    """Root of the user-facing errors. The message is one line naming the file, field or argument at fault
    and what was expected; `exit_code` is what `lite` exits with."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # multi-line messages get lost in log tails and CLI summaries
        super().__init__(" ".join(str(message).splitlines()).strip())


class UsageError(LiteError, ValueError):
    """A command-line argument or an input text is wrong."""


class ConfigError(LiteError, ValueError):
    """A config or recipe file, or one of its fields, is wrong."""


class DataError(LiteError):
    """Input data (a corpus, a data file) is missing or malformed."""


class RunFolderError(LiteError):
    """A run folder lacks what a stage needs (an earlier stage has not run) or holds a malformed file."""


class ModelFolderError(LiteError, ValueError):
    """An exported model folder is missing, incomplete, corrupt or not ours."""


class DistributedError(LiteError):
    """A collective failed or timed out: a training process died or stopped answering."""


class TargetError(LiteError):
    """An ARM target (emulated core or board) could not run a job."""


class TargetSetupError(TargetError):
    """A tool is missing or a preparation step (apt, pip, gcc, ssh) failed."""


class TargetRunError(TargetError):
    """A job on the target failed."""


class ExportError(LiteError):
    """An export failed; nothing was published."""

    exit_code = 1


class ConversionError(ExportError):
    """The converter or quantizer failed, or the graph it wrote has ops the runtime cannot run."""


class UnsupportedModelError(ExportError):
    """The model uses a feature this format or precision cannot express; another format may."""


class GraphMacMismatchError(ExportError):
    """The MACs read from the exported graph differ from the analytic count of the model."""


class GateError(ExportError):
    """An artifact missed its parity gate. Besides the message it carries what a caller needs to react:
    the folder it would have been published as, its precision, the gate's figures and the missed criteria."""

    def __init__(self, message: str, artifact: Path, precision: str, figures: dict, missed: list[str]) -> None:
        super().__init__(message)
        self.artifact, self.precision, self.figures, self.missed = artifact, precision, figures, missed
