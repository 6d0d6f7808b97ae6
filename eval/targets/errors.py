"""Errors of the target stage; each message is one line naming the target, tool or file at fault."""


class TargetError(RuntimeError):
    """Base: `lite` prints the message and exits non-zero."""


class TargetSetupError(TargetError):
    """A tool is missing or a preparation step (apt, pip, gcc, ssh) failed."""


class TargetRunError(TargetError):
    """A job on the target failed."""
