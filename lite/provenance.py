"""Where a saved figure came from: the code (git commit, dirty tree), the packages that computed it,
the config and seed, the machine, the thread count, the date and the command.

Every results file the project writes (train.json, results.json, each artifacts.json row, every
benchmark JSON) carries one of these records under "provenance", so a number can be traced to the
command that reproduces it. Standard library only (the torch-free runtime's side may call it too).

The config hash is over the resolved config (`config_sha256`): the same settings give the same hash
whatever the YAML's comments or key order, and `benchmarks/headline.py` reuses a run only when it
matches.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# The distributions whose versions decide the figures (training, tokenizer, scoring, export, runtimes).
PACKAGES = (
    "torch",
    "numpy",
    "sentencepiece",
    "sacrebleu",
    "torch-pruning",
    "onnx",
    "onnxruntime",
    "ai-edge-litert",
    "litert-torch",
    "ai-edge-quantizer",
    "ctranslate2",
)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """{"commit": sha or None outside a checkout, "dirty": tracked files differ from the commit}."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None where it is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def config_sha256(config: Any) -> str:
    """sha256 of a resolved config (a RunConfig or its dict) as canonical JSON."""
    if not isinstance(config, dict):
        from lite.config import to_dict  # a dataclass config; lite.config imports nothing heavy

        config = to_dict(config)
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def relative(path: str | Path) -> str:
    """`path` relative to the repository root when it lies inside it (saved results must not hold the
    absolute paths of the machine that ran them); otherwise as given."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed, program name shortened to what a user runs (`lite ...`, `python x.py`),
    absolute paths inside the repository made relative to it."""
    argv = [relative(a) if os.path.isabs(a) else a for a in (sys.argv if argv is None else argv)]
    if argv and Path(argv[0]).name in ("lite", "__main__.py"):
        argv[0] = "lite"
    elif argv and argv[0].endswith(".py"):
        argv = ["python", *argv]
    return shlex.join(argv)


def provenance(
    config: Any = None, seed: int | None = None, threads: int | None = None, command: str | None = None
) -> dict[str, Any]:
    """The record saved beside a figure (see the module docstring)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        **git_state(),
        "versions": {"python": platform.python_version(), **package_versions()},
        "seed": seed,
        "config_sha256": None if config is None else config_sha256(config),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "load_average": load,  # 1/5/15-minute load when the record was written: a busy machine shows here
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else command_line(),
    }


def stamped(
    record: dict[str, Any], config: Any = None, seed: int | None = None, threads: int | None = None
) -> dict[str, Any]:
    """`record` with "commit" on top and the full "provenance" record (every benchmark JSON's shape)."""
    prov = provenance(config, seed=seed, threads=threads)
    return {"commit": prov["commit"], "dirty": prov["dirty"], **record, "provenance": prov}
