"""The `--target` schemes: which Target class a spec like `qemu:cortex-a72` or `ssh://pi@board` makes.

This module sits above the concrete targets (it imports them; they import only target.py), so adding a
scheme is one entry in SCHEMES and no target module knows about the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eval.targets.qemu import QemuTarget
from eval.targets.ssh import SshTarget
from eval.targets.target import Target
from lite.errors import UsageError


@dataclass(frozen=True)
class Scheme:
    prefix: str  # what a spec of this kind starts with
    form: str  # the spec's shape, as the usage error shows it
    make: Callable[[str, str, list[str]], Target]  # (spec, remote Python, ssh options) -> the target


SCHEMES: dict[str, Scheme] = {
    "qemu": Scheme(
        "qemu:", "qemu:<core> (e.g. qemu:cortex-a72)", lambda spec, _py, _opts: QemuTarget(spec.removeprefix("qemu:"))
    ),
    "ssh": Scheme("ssh://", "ssh://user@host[:port]", lambda spec, py, opts: SshTarget(spec, py, opts)),
}


def parse_target(spec: str, remote_python: str = "python3", ssh_options: list[str] | None = None) -> Target:
    """The target `spec` names (`qemu:cortex-a72` or `ssh://user@host[:port]`); anything else is a
    UsageError listing the accepted forms. `remote_python` and `ssh_options` matter to ssh:// only."""
    for scheme in SCHEMES.values():
        if spec.startswith(scheme.prefix):
            return scheme.make(spec, remote_python, ssh_options or [])
    forms = " or ".join(s.form for s in SCHEMES.values())
    raise UsageError(f"--target {spec!r}: expected {forms}")
