"""Where the on-device runtime runs: `qemu:<core>` (emulated, instruction counts) or `ssh://user@host[:port]`.

A target runs `python ARGS` in a staged folder (the torch-free runtime, the model folders, the inputs)
and streams stdout back; the host never imports anything on the target's behalf.
"""

from __future__ import annotations

import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from lite.errors import TargetRunError

# The runtime as shipped: export/runtime.py and the standard-library modules it imports.
RUNTIME_FILES = [
    "export/__init__.py",
    "export/runtime.py",
    "export/manifest.py",
    "export/graph_io.py",
    "export/packing.py",
    "export/on_device.py",
    "lite/__init__.py",
    "lite/errors.py",
    "lite/files.py",
    "lite/records.py",
    "lite/shortlist.py",
]


class TimedPopen(subprocess.Popen):
    """A Popen killed after `limit` seconds; wait() then raises TargetRunError(`message`) instead of
    returning the exit code, so the caller reports the timeout rather than a bare signal."""

    def __init__(self, args: list[str], limit: float, message: str, **kwargs):
        super().__init__(args, **kwargs)
        self.expired, self.message = False, message
        self._timer = threading.Timer(limit, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        self.kill()

    def wait(self, timeout: float | None = None) -> int:
        code = super().wait(timeout)
        self._timer.cancel()
        if self.expired:
            raise TargetRunError(self.message)
        return code


class Target(ABC):
    name: str  # as the user wrote it, e.g. "qemu:cortex-a72"; the key in artifacts.json
    counts_instructions: bool  # whether popen(..., marks=PATH) fills PATH with instruction counts

    @property
    def slug(self) -> str:
        """A folder name for this target's files in the run folder."""
        return "".join(c if c.isalnum() or c in "-_.@" else "-" for c in self.name.replace("://", "-"))

    def prepare(self, log: Callable[[str], None]) -> None:
        """Anything to do once before the first job (build the sysroot, check the connection)."""

    @abstractmethod
    def upload(self, stage: Path) -> None:
        """Make the staged folder available to the target."""

    @abstractmethod
    def popen(self, args: list[str], stage: Path, marks: Path | None = None) -> subprocess.Popen:
        """`python ARGS` on the target in the staged folder; stdout/stderr are text pipes. A job that outlives
        the target's time limit is killed and its wait() raises TargetRunError (see TimedPopen)."""

    @abstractmethod
    def fetch(self, rel: str, stage: Path, dest: Path) -> None:
        """Copy the file `rel` (relative to the staged folder on the target) to `dest` on the host."""


def stage_runtime(root: Path, dest: Path) -> None:
    """Copy the runtime's files (RUNTIME_FILES, from the repo at `root`) into dest/runtime."""
    for rel in RUNTIME_FILES:
        out = dest / "runtime" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes((root / rel).read_bytes())
