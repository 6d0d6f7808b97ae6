"""`ssh://user@host[:port]`: a real board (phone with Termux, Raspberry Pi, Jetson...) over OpenSSH.

The staged folder is streamed with tar over ssh into ~/.cache/lite-target/<slug> on the board, and
jobs run there with the board's own Python (`--remote-python`, default python3), which needs numpy,
sentencepiece and ai-edge-litert (or tflite-runtime). Key authentication only (BatchMode): a password
prompt would hang a benchmark. Extra OpenSSH options (`--ssh-option IdentityFile=~/.ssh/pi`) pass through.

Host keys: the user's known_hosts decides (StrictHostKeyChecking=yes). A board whose key is not there,
or differs from it, is refused with a one-line error; accepting new keys (StrictHostKeyChecking=accept-new,
or UserKnownHostsFile=FILE with the board's key) is the user's choice, through --ssh-option.

Timeouts: every ssh call (the check, the upload, each job, each fetch) has one (the *_TIMEOUT constants,
per instance as attributes); when it expires the ssh client is killed and the error names the target
and the timeout. Keep-alives notice a board that vanished mid-job within about a minute.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from eval.targets.sysroot import require_tools
from eval.targets.target import Target, TimedPopen
from lite.errors import TargetSetupError, UsageError

_SPEC = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+)(?::(?P<port>\d+))?/?$")
CONNECT_TIMEOUT = 15  # seconds; an unreachable board fails instead of hanging
# Whole-call limits, in seconds: a board that accepts the connection and then stalls must not hang a
# benchmark. Jobs get hours: a slow board translating a full test split takes long.
PROBE_TIMEOUT = CONNECT_TIMEOUT + 120
UPLOAD_TIMEOUT = 30 * 60
FETCH_TIMEOUT = 10 * 60
JOB_TIMEOUT = 4 * 60 * 60
KEEPALIVE = ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]


class SshTarget(Target):
    counts_instructions = False
    probe_timeout, upload_timeout, fetch_timeout, job_timeout = (
        PROBE_TIMEOUT,
        UPLOAD_TIMEOUT,
        FETCH_TIMEOUT,
        JOB_TIMEOUT,
    )

    def __init__(self, spec: str, remote_python: str = "python3", ssh_options: list[str] | None = None):
        m = _SPEC.match(spec)
        if not m:
            raise UsageError(f"--target {spec!r}: expected ssh://user@host[:port]")
        self.name = spec.rstrip("/")
        self.destination = f"{m['user']}@{m['host']}" if m["user"] else m["host"]
        self.port = m["port"] or "22"
        self.python = remote_python
        self.options = []
        for option in ssh_options or []:
            if "=" not in option:
                raise UsageError(f"--ssh-option {option!r}: expected KEY=VALUE (an OpenSSH -o option)")
            self.options += ["-o", option]
        self.remote_dir = f".cache/lite-target/{self.slug}"  # relative: under the remote user's home

    def _ssh(self, remote_command: str) -> list[str]:
        # the user's options first: for each option OpenSSH keeps the first value it is given, so
        # --ssh-option StrictHostKeyChecking=accept-new (or a keep-alive) overrides the defaults after it
        return [
            "ssh",
            "-p",
            self.port,
            *self.options,
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={CONNECT_TIMEOUT}",
            "-o",
            "StrictHostKeyChecking=yes",
            *KEEPALIVE,
            self.destination,
            remote_command,
        ]

    def _timed_out(self, what: str, limit: float) -> str:
        return f"{self.name}: {what} did not finish within {limit:g} s (timeout); is the board up and reachable?"

    def _failure(self, stderr: str) -> str:
        """The reason for an ssh failure, one line: the host-key verdict, else ssh's last line."""
        if "Host key verification failed" in stderr:
            host = self.destination.rpartition("@")[2]
            known = host if self.port == "22" else f"[{host}]:{self.port}"
            add = (
                f"add it (ssh-keyscan -p {self.port} {host} >> ~/.ssh/known_hosts), or name a file holding it "
                "with --ssh-option UserKnownHostsFile=FILE"
            )
            if "HAS CHANGED" in stderr.upper():  # a reinstalled board, or someone in between
                return (
                    f"the host key of {known} differs from the one in known_hosts; check its fingerprint, "
                    f"remove the old one (ssh-keygen -R '{known}') and {add}"
                )
            return f"the host key of {known} is not in known_hosts; check its fingerprint and {add}"
        return (stderr.strip().splitlines() or ["no output"])[-1].strip()

    def prepare(self, log: Callable[[str], None] = lambda _: None) -> None:
        require_tools("ssh", "tar")
        probe = (
            f"{shlex.quote(self.python)} -c 'import numpy, sentencepiece, platform; "
            f"print(platform.machine(), numpy.__version__)'"
        )
        try:
            done = subprocess.run(self._ssh(probe), capture_output=True, text=True, timeout=self.probe_timeout)
        except subprocess.TimeoutExpired:
            raise TargetSetupError(self._timed_out("the connection check", self.probe_timeout)) from None
        if done.returncode == 255 and "Host key verification failed" in done.stderr:
            raise TargetSetupError(f"{self.name}: refused: {self._failure(done.stderr)}")
        if done.returncode != 0:
            raise TargetSetupError(
                f"{self.name}: cannot run {self.python} with numpy and sentencepiece there "
                f"(exit {done.returncode}: {self._failure(done.stderr)})"
            )
        log(f"target: {self.name}: {done.stdout.strip()}")

    def upload(self, stage: Path) -> None:
        parts = [p.name for p in sorted(stage.iterdir()) if p.name in ("runtime", "models", "inputs")]
        tar = subprocess.Popen(["tar", "-ch", "-C", str(stage), *parts], stdout=subprocess.PIPE)  # -h: model symlinks
        d = shlex.quote(self.remote_dir)
        try:
            done = subprocess.run(
                self._ssh(f"rm -rf {d} && mkdir -p {d}/out && tar -x -C {d}"),
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                timeout=self.upload_timeout,
            )
        except subprocess.TimeoutExpired:
            tar.kill()
            tar.wait()
            raise TargetSetupError(self._timed_out(f"the upload of {stage}", self.upload_timeout)) from None
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
        tar.wait()
        if tar.returncode != 0 or done.returncode != 0:
            reason = self._failure(done.stderr) if done.returncode != 0 else "tar failed"
            raise TargetSetupError(f"{self.name}: upload of {stage} failed: {reason}")

    def popen(self, args: list[str], stage: Path, marks: Path | None = None) -> subprocess.Popen:
        if marks is not None:
            raise ValueError(f"{self.name}: instruction counts need an emulated target (qemu:<core>)")
        command = (
            f"cd {shlex.quote(self.remote_dir)} && PYTHONPATH=runtime OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "
            f"TF_CPP_MIN_LOG_LEVEL=2 exec {shlex.quote(self.python)} {shlex.join(args)}"
        )
        what = f"the job `{self.python} {' '.join(args[:2])}`"
        return TimedPopen(
            self._ssh(command),
            self.job_timeout,
            self._timed_out(what, self.job_timeout),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def fetch(self, rel: str, stage: Path, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            with open(tmp, "wb") as out:
                done = subprocess.run(
                    self._ssh(f"cat {shlex.quote(self.remote_dir + '/' + rel)}"),
                    stdout=out,
                    stderr=subprocess.PIPE,
                    text=False,
                    timeout=self.fetch_timeout,
                )
        except subprocess.TimeoutExpired:
            tmp.unlink(missing_ok=True)
            raise TargetSetupError(self._timed_out(f"fetching {rel}", self.fetch_timeout)) from None
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            reason = self._failure(done.stderr.decode(errors="replace"))
            raise TargetSetupError(f"{self.name}: cannot fetch {rel}: {reason}")
        shutil.move(tmp, dest)
