"""`qemu:<core>`: the aarch64 runtime under qemu-user with a named Cortex/Neoverse core model.

Runs the Debian arm64 python3 of the cached sysroot (eval/targets/sysroot.py) with the aarch64 wheels,
the core's own /proc/cpuinfo, and optionally the instruction-count plugin. The guest shares the host's
files, so upload and fetch are no-ops. Wall time here is emulation speed, not the core's speed: only
the instruction counts are reported as a property of the core.

Every job has a time limit (JOB_TIMEOUT, per instance as `job_timeout`): a guest that hangs is killed
and the error names the core and the limit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from eval.targets import plugin
from eval.targets.cores import get_core
from eval.targets.sysroot import Sysroot, prepare
from eval.targets.target import Target, TimedPopen

# seconds per job: emulation is slow, and a full test split of a large model translates for hours
JOB_TIMEOUT = 12 * 60 * 60


class QemuTarget(Target):
    counts_instructions = True
    job_timeout: float = JOB_TIMEOUT

    def __init__(self, core: str):
        self.core = get_core(core)  # an unknown name fails here, before anything is built
        self.name = f"qemu:{core}"
        self.sysroot: Sysroot | None = None
        self.plugin: Path | None = None

    def prepare(self, log: Callable[[str], None] = lambda _: None) -> None:
        self.sysroot = prepare(log)
        self.plugin = plugin.build(self.sysroot.root)

    def upload(self, stage: Path) -> None:
        pass  # qemu-user opens host paths

    def command(
        self, args: list[str], stage: Path, marks: Path | None = None, profile: tuple[Path, list[int]] | None = None
    ) -> tuple[list[str], dict]:
        """The host command line and environment of `python ARGS` on this core. `profile` = (file, mark
        numbers): the plugin also writes instructions per code block at those marks (needs `marks`)."""
        if self.sysroot is None:
            self.prepare()
        assert self.sysroot is not None and self.plugin is not None
        cmd = [
            shutil.which("qemu-aarch64") or "qemu-aarch64",
            "-cpu",
            self.core.name,
            "-L",
            str(self.sysroot.core_root(self.core)),
        ]
        if marks is not None:
            snaps = f",profile={profile[0]},snaps={':'.join(map(str, profile[1]))}" if profile else ""
            cmd += ["-plugin", f"{self.plugin},out={marks}{snaps}"]
        # -S: no site module, so no host site-packages leak in (x86 wheels would fail to load);
        # -P: the working folder is not on sys.path, so files appearing there cannot change what
        # the import system lists, and with it the instruction count
        cmd += [str(self.sysroot.python), "-S", "-P", *args]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONPATH": f"{stage.resolve() / 'runtime'}:{self.sysroot.wheels}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        return cmd, env

    def popen(
        self, args: list[str], stage: Path, marks: Path | None = None, profile: tuple[Path, list[int]] | None = None
    ) -> subprocess.Popen:
        cmd, env = self.command(args, stage, marks, profile)
        expired = (
            f"{self.name}: the job `python {' '.join(args[:2])}` did not finish within {self.job_timeout:g} s "
            "(timeout); emulation is slow: --limit N translates fewer sentences"
        )
        return TimedPopen(
            cmd,
            self.job_timeout,
            expired,
            cwd=stage,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def fetch(self, rel: str, stage: Path, dest: Path) -> None:
        if (stage / rel).resolve() != dest.resolve():
            shutil.copyfile(stage / rel, dest)
