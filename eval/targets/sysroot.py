"""An arm64 Python to run the on-device runtime under qemu-user: built once, cached, no root needed.

    <cache>/arm64/
      apt/          a private APT state (arm64 package lists, downloaded .debs); the system's own sources
      sysroot/      Debian's arm64 python3 + libstdc++6 + libgomp1 and their dependencies, unpacked
      wheels/       aarch64 wheels of ai-edge-litert, numpy, sentencepiece (pip --platform, host versions)
      cores/<core>/ the sysroot seen through symlinks, plus the core's own proc/cpuinfo (qemu -L root)
      plugin/       the instruction-count plugin, built with gcc (eval/targets/plugin.py)
      ready.json    what was built; its presence (with the same recipe) makes prepare() a no-op

<cache> is $LITE_CACHE_DIR, else $XDG_CACHE_HOME/lite-edge, else ~/.cache/lite-edge.
No chroot, no binfmt: qemu-aarch64 -L <cores/core> runs <sysroot>/usr/bin/python3.X directly.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eval.targets.cores import Core, cpuinfo
from lite.errors import TargetSetupError
from lite.files import write_json_atomic

DEBS = ["python3", "libstdc++6", "libgomp1"]  # the interpreter; the C++ runtime and OpenMP the wheels link
WHEELS = ["ai-edge-litert", "numpy", "sentencepiece"]  # the torch-free runtime's imports, at the host's versions
GLIBC_TAGS = range(17, 37)  # manylinux_2_17 .. manylinux_2_36 (bookworm's glibc)
STEP_TIMEOUT = 30 * 60  # seconds per preparation command: a stalled mirror fails instead of hanging


def cache_dir() -> Path:
    if os.environ.get("LITE_CACHE_DIR"):
        return Path(os.environ["LITE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lite-edge"


@dataclass(frozen=True)
class Sysroot:
    root: Path  # <cache>/arm64

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    @property
    def python(self) -> Path:
        """The arm64 interpreter (a path inside the sysroot: qemu runs it as the guest program)."""
        return self.sysroot / "usr" / "bin" / json.loads((self.root / "ready.json").read_text())["python"]

    def core_root(self, core: Core) -> Path:
        """The qemu -L folder for `core`: the sysroot plus that core's /proc/cpuinfo (made on first use)."""
        view = self.root / "cores" / core.name
        info = cpuinfo(core, os.cpu_count() or 1)  # qemu-user shows the guest the host's processor count
        if not (view / "proc" / "cpuinfo").is_file() or (view / "proc" / "cpuinfo").read_text() != info:
            tmp = view.with_name(f".{core.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "proc").mkdir(parents=True)
            for entry in self.sysroot.iterdir():
                (tmp / entry.name).symlink_to(Path("..", "..", "sysroot", entry.name))
            (tmp / "proc" / "cpuinfo").write_text(info)
            shutil.rmtree(view, ignore_errors=True)
            os.replace(tmp, view)
        return view


def recipe() -> dict:
    """What a prepared sysroot must match; a change (e.g. a new numpy on the host) rebuilds it."""
    versions = {}
    for name in WHEELS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise TargetSetupError(
                f"{name} is not installed on the host; the target gets the host's version (run `make setup`)"
            ) from None
    return {"debs": DEBS, "wheels": versions, "schema": 1}


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes preparing at once wait for each other
        yield


def _run(cmd: list[str], what: str, env: dict | None = None) -> str:
    """Run one preparation command; its failure or timeout is a TargetSetupError naming `what`."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise TargetSetupError(f"{what} did not finish within {STEP_TIMEOUT} s (timeout)") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TargetSetupError(f"{what} failed (exit {done.returncode}): {tail[0]}")
    return done.stdout


def require_tools(*tools: str) -> None:
    hints = {
        "qemu-aarch64": "apt-get install qemu-user",
        "apt-get": "a Debian/Ubuntu host",
        "dpkg-deb": "apt-get install dpkg",
        "gcc": "apt-get install gcc",
        "ssh": "apt-get install openssh-client",
    }
    for tool in tools:
        if shutil.which(tool) is None:
            raise TargetSetupError(f"{tool} not found on PATH ({hints.get(tool, 'install it')}; `make setup` does)")


def _download_debs(apt: Path) -> list[Path]:
    """The arm64 .debs of DEBS and their dependencies, through a private APT configuration."""
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()  # an empty dpkg status: apt resolves every dependency down to libc6
    (apt / "apt.conf").write_text(
        'APT::Architecture "arm64";\nAPT::Architectures { "arm64"; };\n'
        f'Dir::State "{apt}";\nDir::State::Lists "{apt}/lists";\nDir::State::status "{apt}/status";\n'
        f'Dir::Cache "{apt}/cache";\nDir::Etc::Preferences "/dev/null";\nDir::Etc::PreferencesParts "/dev/null";\n'
        'Debug::NoLocking "true";\n'
    )  # our own state: no system lock to take (and no root needed)
    env = dict(os.environ, APT_CONFIG=str(apt / "apt.conf"), DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "-q", "update"], "apt-get update (arm64 package lists)", env)
    _run(
        ["apt-get", "-q", "-y", "--download-only", "--no-install-recommends", "install", *DEBS],
        "apt-get download of the arm64 packages",
        env,
    )
    debs = sorted((apt / "cache" / "archives").glob("*.deb"))
    if not debs:
        raise TargetSetupError(f"{apt}: apt downloaded no arm64 packages")
    return debs


def _unpack(debs: list[Path], dest: Path) -> str:
    """dpkg-deb -x every package into dest; returns the interpreter's name (python3.X)."""
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(dest)], f"dpkg-deb -x {deb.name}")
    for name in ("bin", "lib", "sbin"):  # merged-/usr layouts keep only usr/<name>
        if not (dest / name).exists() and (dest / "usr" / name).is_dir():
            (dest / name).symlink_to(Path("usr", name))
    pythons = sorted(p.name for p in (dest / "usr" / "bin").glob("python3.*") if p.name[8:].isdigit())
    if not pythons:
        raise TargetSetupError(f"{dest}: the arm64 packages contain no usr/bin/python3.X")
    return pythons[-1]


def _install_wheels(dest: Path, python: str, versions: dict) -> None:
    """pip --platform: aarch64 wheels for the sysroot's Python, never built from source."""
    py = python.removeprefix("python")  # "3.11"
    platforms = ["manylinux2014_aarch64"] + [f"manylinux_2_{v}_aarch64" for v in GLIBC_TAGS]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-warn-conflicts",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        py,
        "--abi",
        f"cp{py.replace('.', '')}",
        "--target",
        str(dest),
        *[a for p in platforms for a in ("--platform", p)],
        *[f"{name}=={version}" for name, version in versions.items()],
    ]
    _run(cmd, "pip install of the aarch64 wheels")


def prepare(log: Callable[[str], None] = lambda _: None) -> Sysroot:
    """The cached arm64 sysroot and wheels, built now if missing or made for another recipe."""
    require_tools("qemu-aarch64", "apt-get", "dpkg-deb")
    root = cache_dir() / "arm64"
    want = recipe()
    with _locked(root):
        ready = root / "ready.json"
        if ready.is_file() and {k: v for k, v in json.loads(ready.read_text()).items() if k != "python"} == want:
            return Sysroot(root)
        ready.unlink(missing_ok=True)
        log(f"target: preparing the arm64 sysroot in {root} (once; about a minute)")
        debs = _download_debs(root / "apt")
        log(f"target: unpacking {len(debs)} arm64 packages")
        for name in ("sysroot", "wheels", "cores"):
            shutil.rmtree(root / name, ignore_errors=True)
        tmp = root / ".sysroot.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        python = _unpack(debs, tmp)
        os.replace(tmp, root / "sysroot")
        log(f"target: aarch64 wheels for {python}: " + ", ".join(f"{k}=={v}" for k, v in want["wheels"].items()))
        tmp = root / ".wheels.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _install_wheels(tmp, python, want["wheels"])
        os.replace(tmp, root / "wheels")
        write_json_atomic(want | {"python": python}, ready)
    return Sysroot(root)
