"""ARM targets: the smoke model's TFLite folders on emulated aarch64 cores (qemu-user) and over SSH.

Everything runs for real: Debian's arm64 python3, the aarch64 wheels, qemu-aarch64 with a named core,
the instruction-count plugin built with gcc, and an sshd on a loopback port whose Python is the
emulated one.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, lite

from eval.targets.plugin import read_marks
from eval.targets.qemu import QemuTarget
from eval.targets.sysroot import prepare
from eval.targets.target import stage_runtime
from lite.config import load_config
from lite.data.corpus import load_pairs
from lite.metrics.bleu import score

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-aarch64") is None and not os.environ.get("CI"),
    reason="qemu-user not installed (make setup installs it)",
)


@pytest.fixture(scope="module")
def a72() -> QemuTarget:
    target = QemuTarget("cortex-a72")
    target.prepare()
    return target


def test_sysroot_is_prepared_once_and_cached(a72):
    ready = a72.sysroot.root / "ready.json"
    before = ready.stat().st_mtime_ns
    started = time.monotonic()
    again = prepare()
    assert time.monotonic() - started < 2.0  # a cache hit reads one JSON file
    assert ready.stat().st_mtime_ns == before
    assert json.loads(ready.read_text())["python"].startswith("python3.")
    assert (again.wheels / "ai_edge_litert").is_dir() and not (again.wheels / "torch").exists()
    cpuinfo = (a72.sysroot.core_root(a72.core) / "proc" / "cpuinfo").read_text()
    assert "CPU part\t: 0xd08" in cpuinfo  # Cortex-A72's MIDR part number


def test_wrong_core_and_missing_model_are_one_line_errors(exported, tmp_path):
    done = lite("evaluate", str(exported), "--target", "qemu:cortex-a99")
    err = done.stderr.decode()
    assert done.returncode == 2 and "unknown ARM core 'cortex-a99'" in err and "cortex-a72" in err
    assert len(err.strip().splitlines()) == 1
    done = lite("evaluate", str(exported), "--target", "qemu:cortex-a72", "--artifact", "tflite-int4")
    err = done.stderr.decode()
    assert done.returncode == 2 and "no artifact named 'tflite-int4'" in err and "tflite-int8" in err
    done = lite("evaluate", str(exported), "--target", "qemu:cortex-a72", "--artifact", "onnx-int8")
    assert done.returncode == 2 and "targets run TFLite folders" in done.stderr.decode()
    done = lite("evaluate", str(exported), "--target", "telnet://board")
    assert done.returncode == 2 and "expected qemu:<core>" in done.stderr.decode()


def _count(target: QemuTarget, folder: Path, stage: Path, marks: Path) -> dict:
    proc = target.popen(
        [
            "-m",
            "export.on_device",
            "protocol",
            "--model",
            str(folder),
            "--ids",
            "5,9,14,22,31,2",
            "--runs",
            "2",
            "--marks",
            "--steps",
            "10",
        ],
        stage,
        marks,
    )
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert json.loads(out)["machine"] == "aarch64"
    return read_marks(marks, 2, 12)


def test_instruction_counts_are_deterministic(a72, exported, tmp_path):
    stage_runtime(ROOT, tmp_path)
    folder = (exported / "export" / "tflite-int8").resolve()
    first = _count(a72, folder, tmp_path, tmp_path / "a.marks")
    second = _count(a72, folder, tmp_path, tmp_path / "b.marks")
    assert first == second  # every count, run to run
    warm, cold = first["runs"][1], first["runs"][0]
    assert warm["encoder"] > 100_000 and len(warm["steps"]) == 10
    assert warm["sentence"] == warm["encoder"] + sum(warm["steps"])
    assert cold["sentence"] > warm["sentence"]  # the first run also prepares the kernels
    assert 0 < first["mark_cost"] < 50_000  # a mark is one failing close(): small beside a decoder step
    assert min(warm["steps"]) > 10 * first["mark_cost"]


def test_emulated_evaluation_scores_the_targets_own_outputs(exported, tmp_path):
    done = lite(
        "evaluate",
        str(exported),
        "--target",
        "qemu:cortex-a72",
        "--artifact",
        "tflite-int8",
        "--limit",
        "12",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr.decode()
    record = json.loads((exported / "targets" / "qemu-cortex-a72" / "tflite-int8.json").read_text())
    hyps = (exported / "targets" / "qemu-cortex-a72" / "tflite-int8.test.greedy.hyp").read_text().splitlines()
    pairs, _ = load_pairs(load_config(exported / "config.yaml").data, "test")
    assert len(hyps) == 12 and record["translation"]["sentences"] == 12
    assert record["translation"]["bleu"] == score(hyps, [t for _, t in pairs[:12]])["bleu"]
    assert record["instructions"]["guest_machine"] == "aarch64"
    i = record["instructions"]
    assert i["sentence"] == pytest.approx(i["encoder"] + 30 * i["step_mean"], rel=1e-3)
    assert record["reference"]["bit_identical"] is True  # integer reference kernels: same bits on ARM and x86
    row = next(r for r in json.loads((exported / "artifacts.json").read_text()) if r["name"] == "tflite-int8")
    assert row["targets"]["qemu:cortex-a72"]["instructions"]["sentence"] == i["sentence"]
    assert row["instructions"]["qemu:cortex-a72"] == i["sentence"]  # the budget report's column
    done = lite("report", str(exported), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr.decode()
    report = (tmp_path / "report.md").read_text()
    assert "instructions qemu:cortex-a72" in report and f"{i['sentence']:,}" in report
    assert "qemu:cortex-a72" not in row.get("latency_ms", {})  # emulated wall time is never reported as latency
    again = lite(
        "evaluate",
        str(exported),
        "--target",
        "qemu:cortex-a72",
        "--artifact",
        "tflite-int8",
        "--limit",
        "12",
        "--quiet",
    )
    assert again.returncode == 0 and "(cached)" in again.stdout.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def sshd(tmp_path):
    """An sshd on 127.0.0.1 with temporary host and user keys; "known_hosts" holds its host key."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd):
        if os.environ.get("CI"):
            pytest.fail("sshd missing: make setup installs openssh-server")
        pytest.skip("sshd not installed")
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "user.pub").read_text())
    os.chmod(tmp_path / "authorized_keys", 0o600)
    port = _free_port()
    # what the user would have after checking the board's fingerprint: its key in a known_hosts file
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {(tmp_path / 'host.pub').read_text()}")
    (tmp_path / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "PermitRootLogin prohibit-password\nKbdInteractiveAuthentication no\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(tmp_path / "sshd_config")], stderr=subprocess.PIPE)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield {"port": port, "key": tmp_path / "user", "known_hosts": tmp_path / "known_hosts"}
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture()
def loopback_sshd(sshd, tmp_path, a72):
    """The sshd, with an aarch64 python3 wrapper as the board's Python."""
    board = tmp_path / "python3-aarch64"
    cmd, env = a72.command([], tmp_path)  # the emulated interpreter, as the board's own Python
    board.write_text(
        f'#!/bin/sh\nexport PYTHONPATH="$PYTHONPATH:{a72.sysroot.wheels}" PYTHONHASHSEED=0\nexec {" ".join(cmd)} "$@"\n'
    )
    board.chmod(0o755)
    return sshd | {"python": str(board)}


def test_ssh_target_end_to_end_on_loopback(exported, loopback_sshd):
    d = loopback_sshd
    spec = f"ssh://{getpass.getuser()}@127.0.0.1:{d['port']}"
    done = lite(
        "evaluate",
        str(exported),
        "--target",
        spec,
        "--artifact",
        "tflite-int8",
        "--limit",
        "6",
        "--repeats",
        "3",
        "--remote-python",
        d["python"],
        "--ssh-option",
        f"IdentityFile={d['key']}",
        "--ssh-option",
        f"UserKnownHostsFile={d['known_hosts']}",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr.decode()
    slug = spec.replace("://", "-").replace(":", "-")
    record = json.loads((exported / "targets" / slug / "tflite-int8.json").read_text())
    assert record["latency"]["machine"] == "aarch64" and record["latency"]["runs"] == 3
    assert record["latency"]["median_ms"] > 0
    assert record["translation"]["sentences"] == 6 and "instructions" not in record
    assert record["reference"]["bit_identical"] is True  # fetched back over ssh and compared on the host
    row = next(r for r in json.loads((exported / "artifacts.json").read_text()) if r["name"] == "tflite-int8")
    assert row["latency_ms"][spec] == round(record["latency"]["median_ms"], 2)


def test_unreachable_ssh_board_is_a_clear_error(exported):
    done = lite(
        "evaluate",
        str(exported),
        "--target",
        f"ssh://nobody@127.0.0.1:{_free_port()}",
        "--artifact",
        "tflite-int8",
        "--ssh-option",
        "ConnectTimeout=3",
    )
    err = done.stderr.decode()
    assert done.returncode == 2 and "cannot run python3" in err and len(err.strip().splitlines()) == 1


def test_unknown_host_key_is_refused(exported, sshd, tmp_path):
    """No automatic acceptance: a board whose key is not in the user's known_hosts is refused, its key not recorded."""
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    spec = f"ssh://{getpass.getuser()}@127.0.0.1:{sshd['port']}"
    done = lite(
        "evaluate",
        str(exported),
        "--target",
        spec,
        "--artifact",
        "tflite-int8",
        "--ssh-option",
        f"IdentityFile={sshd['key']}",
        "--ssh-option",
        f"UserKnownHostsFile={empty}",
        "--ssh-option",
        "GlobalKnownHostsFile=/dev/null",
    )
    err = done.stderr.decode().splitlines()
    assert done.returncode == 2 and empty.read_text() == ""  # nothing was added either
    assert err == [
        f"lite evaluate: error: {spec}: refused: the host key of [127.0.0.1]:{sshd['port']} is not in "
        f"known_hosts; check its fingerprint and add it (ssh-keyscan -p {sshd['port']} 127.0.0.1 >> "
        "~/.ssh/known_hosts), or name a file holding it with --ssh-option UserKnownHostsFile=FILE"
    ]


def test_a_stalled_board_times_out_with_one_line(tmp_path):
    """A board that accepts the connection and then says nothing: each ssh call ends at its timeout."""
    from eval.targets.evaluate import _job
    from eval.targets.ssh import SshTarget
    from lite.errors import TargetError

    with socket.socket() as silent:  # listens, never answers: ssh waits for a banner that never comes
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        spec = f"ssh://nobody@127.0.0.1:{silent.getsockname()[1]}"
        target = SshTarget(spec, ssh_options=[f"UserKnownHostsFile={tmp_path / 'none'}"])
        target.probe_timeout = target.job_timeout = 2
        started = time.monotonic()
        with pytest.raises(TargetError) as probe:
            target.prepare()
        with pytest.raises(TargetError) as job:
            _job(target, ["-m", "export.runtime", "--model", "models/x"], tmp_path, "translation")
        assert time.monotonic() - started < 20
    assert str(probe.value) == (
        f"{spec}: the connection check did not finish within 2 s (timeout); is the board up and reachable?"
    )
    assert str(job.value) == (
        f"{spec}: the job `python3 -m export.runtime` did not finish within 2 s (timeout); "
        "is the board up and reachable?"
    )


def test_bad_target_specs_are_usage_errors():
    from eval.targets.cores import UnknownCoreError
    from eval.targets.registry import parse_target
    from lite.errors import UsageError

    assert parse_target("qemu:cortex-a72").name == "qemu:cortex-a72"
    assert parse_target("ssh://pi@board:2222").name == "ssh://pi@board:2222"
    with pytest.raises(UsageError, match=r"--target 'telnet://board': expected qemu:<core> .* or ssh://"):
        parse_target("telnet://board")
    with pytest.raises(UnknownCoreError, match="unknown ARM core 'cortex-a99'") as core:
        parse_target("qemu:cortex-a99")
    assert isinstance(core.value, UsageError) and isinstance(core.value, ValueError)
    with pytest.raises(UsageError, match=r"--target 'ssh://a@b@c': expected ssh://user@host\[:port\]"):
        parse_target("ssh://a@b@c")
    with pytest.raises(UsageError, match="--ssh-option 'BatchMode': expected KEY=VALUE"):
        parse_target("ssh://pi@board", ssh_options=["BatchMode"])


def test_truncated_marks_are_a_run_error(tmp_path):
    from lite.errors import TargetRunError

    (tmp_path / "m").write_text("10\n20\n30\ntotal 40\n")
    with pytest.raises(TargetRunError, match="3 marks, expected 6"):
        read_marks(tmp_path / "m", 2, 2)
    with pytest.raises(TargetRunError, match="no instruction counts written"):
        read_marks(tmp_path / "none", 2, 2)


def test_a_hung_emulated_job_times_out_naming_the_core(tmp_path, monkeypatch):
    """The qemu command swapped for a sleeper: the job is killed at the target's limit, one-line error."""
    from eval.targets.evaluate import _job
    from lite.errors import TargetRunError

    target = QemuTarget("cortex-a53")
    target.job_timeout = 1
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    monkeypatch.setattr(target, "command", lambda args, stage, marks=None, profile=None: (sleeper, dict(os.environ)))
    started = time.monotonic()
    with pytest.raises(TargetRunError) as job:
        _job(target, ["-m", "export.runtime", "--model", "models/x"], tmp_path, "translation")
    assert time.monotonic() - started < 15
    assert str(job.value) == (
        "qemu:cortex-a53: the job `python -m export.runtime` did not finish within 1 s (timeout); "
        "emulation is slow: --limit N translates fewer sentences"
    )


def test_profile_names_the_kernels_and_adds_up_to_the_marks(a72, exported, tmp_path):
    """The plugin's per-block mode: every instruction of the warm run lands in a named function's family,
    the totals equal the marks' counts of the same regions (up to one mark's cost), and the kernels are
    the ones the precision runs: XNNPACK float gemm in fp32, int8 gemm and activation quantization in int8."""
    from eval.targets.profile import profile_on_core

    ids = [5, 9, 14, 22, 31, 2]
    fp32 = profile_on_core(a72, exported / "export" / "tflite-fp32", ids, 10, tmp_path / "fp32")
    int8 = profile_on_core(a72, exported / "export" / "tflite-int8", ids, 10, tmp_path / "int8")
    for p in (fp32, int8):
        assert 0 <= p["encoder"] - p["marks"]["encoder"] < 50_000
        assert abs(p["step_mean"] - p["marks"]["step_mean"]) < 50_000
        assert sum(f["step"] for f in p["families"].values()) == pytest.approx(p["step_mean"], abs=20)
        assert p["families"]["other"]["step"] < 0.05 * p["step_mean"]  # nearly everything is named
    assert fp32["families"]["fp32 matmul"]["step"] > 0.2 * fp32["step_mean"]
    assert fp32["families"]["int8 matmul"]["step"] == 0 and fp32["families"]["quantize/dequantize"]["step"] == 0
    assert int8["families"]["int8 matmul"]["step"] > 0 and int8["families"]["quantize/dequantize"]["step"] > 0
    assert any(e["symbol"].startswith("xnn_f32_gemm") for e in fp32["top_step"])
