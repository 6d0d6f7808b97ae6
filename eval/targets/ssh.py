"""`ssh://user@host[:port]`: a real board (phone with Termux, Raspberry Pi, Jetson...) over OpenSSH.

The staged folder is streamed with tar over ssh into ~/.cache/lite-target/<slug> on the board, and
jobs run there with the board's own Python (`--remote-python`, default python3), which needs numpy,
sentencepiece and ai-edge-litert (or tflite-runtime). Key authentication only (BatchMode): a password
prompt would hang a benchmark. Extra OpenSSH options (`--ssh-option IdentityFile=~/.ssh/pi`) pass through.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from eval.targets.errors import TargetSetupError
from eval.targets.sysroot import require_tools
from eval.targets.target import Target

_SPEC = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+)(?::(?P<port>\d+))?/?$")
CONNECT_TIMEOUT = 15  # seconds; an unreachable board fails instead of hanging


class SshTarget(Target):
    counts_instructions = False

    def __init__(self, spec: str, remote_python: str = "python3", ssh_options: list[str] | None = None):
        m = _SPEC.match(spec)
        if not m:
            raise ValueError(f"--target {spec!r}: expected ssh://user@host[:port]")
        self.name = spec.rstrip("/")
        self.destination = f"{m['user']}@{m['host']}" if m["user"] else m["host"]
        self.port = m["port"] or "22"
        self.python = remote_python
        self.options = []
        for option in ssh_options or []:
            if "=" not in option:
                raise ValueError(f"--ssh-option {option!r}: expected KEY=VALUE (an OpenSSH -o option)")
            self.options += ["-o", option]
        self.remote_dir = f".cache/lite-target/{self.slug}"  # relative: under the remote user's home

    def _ssh(self, remote_command: str) -> list[str]:
        # the user's options first: for each option OpenSSH keeps the first value it is given
        return ["ssh", "-p", self.port, *self.options, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
                "-o", "StrictHostKeyChecking=accept-new", self.destination, remote_command]

    def prepare(self, log: Callable[[str], None] = lambda _: None) -> None:
        require_tools("ssh", "tar")
        probe = (f"{shlex.quote(self.python)} -c 'import numpy, sentencepiece, platform; "
                 f"print(platform.machine(), numpy.__version__)'")
        done = subprocess.run(self._ssh(probe), capture_output=True, text=True, timeout=CONNECT_TIMEOUT + 120)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise TargetSetupError(f"{self.name}: cannot run {self.python} with numpy and sentencepiece there "
                                   f"(exit {done.returncode}: {last})")
        log(f"target: {self.name}: {done.stdout.strip()}")

    def upload(self, stage: Path) -> None:
        parts = [p.name for p in sorted(stage.iterdir()) if p.name in ("runtime", "models", "inputs")]
        tar = subprocess.Popen(["tar", "-ch", "-C", str(stage), *parts], stdout=subprocess.PIPE)  # -h: model symlinks
        d = shlex.quote(self.remote_dir)
        done = subprocess.run(self._ssh(f"rm -rf {d} && mkdir -p {d}/out && tar -x -C {d}"), stdin=tar.stdout,
                              capture_output=True, text=True)
        tar.wait()
        if tar.returncode != 0 or done.returncode != 0:
            raise TargetSetupError(f"{self.name}: upload of {stage} failed: {done.stderr.strip() or 'tar failed'}")

    def popen(self, args: list[str], stage: Path, marks: Path | None = None) -> subprocess.Popen:
        if marks is not None:
            raise ValueError(f"{self.name}: instruction counts need an emulated target (qemu:<core>)")
        command = (f"cd {shlex.quote(self.remote_dir)} && PYTHONPATH=runtime OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "
                   f"TF_CPP_MIN_LOG_LEVEL=2 exec {shlex.quote(self.python)} {shlex.join(args)}")
        return subprocess.Popen(self._ssh(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def fetch(self, rel: str, stage: Path, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.tmp")
        with open(tmp, "wb") as out:
            done = subprocess.run(self._ssh(f"cat {shlex.quote(self.remote_dir + '/' + rel)}"), stdout=out,
                                  stderr=subprocess.PIPE, text=False)
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise TargetSetupError(f"{self.name}: cannot fetch {rel}: {done.stderr.decode(errors='replace').strip()}")
        shutil.move(tmp, dest)
