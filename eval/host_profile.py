"""Where a folder's protocol time goes on this machine: `perf` samples per function, then per kernel family.

The protocol is the latency benchmark's (export/on_device.run_protocol: 30-token source, encoder +
30 greedy steps, batch 1, one thread). It runs in a loop in this process for `seconds`, and `perf record`
(Linux perf, sampling the CPU clock at 4999 Hz, attached to this process only while the loop runs)
says in which function each sample landed; a second loop of the encoder alone (steps=0, the decoding
session's setup included, as the instruction marks count it) separates the encoder from the steps. A
family's milliseconds are its share of the samples times the loop's measured time per run; the steps'
figures are the sentence's minus the encoder's. Sampling error: about sqrt(n) samples of n.

Why perf: the TFLite Python API has no op profiler, and perf names the XNNPACK micro-kernels (the
wheel keeps its symbol table), which is what says why one precision costs more than another.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from eval.kernels import by_family, top
from export.on_device import run_protocol
from export.runtime import Translator
from lite.errors import TargetSetupError

FREQUENCY = 4999  # Hz: prime, so the sampling does not lock onto a periodic loop


def _perf() -> str:
    perf = shutil.which("perf")
    if perf is None:
        raise TargetSetupError("perf not found: the host profile samples with Linux perf (apt install linux-perf)")
    return perf


def _sampled(run, seconds: float, out: Path) -> tuple[dict[tuple[str, str], int], float, int]:
    """Run `run()` repeatedly for `seconds` under perf; returns (samples per (library, symbol), ms per run, runs)."""
    data = out / "perf.data"
    perf = subprocess.Popen(
        [_perf(), "record", "-q", "-e", "cpu-clock", "-F", str(FREQUENCY), "-p", str(os.getpid()), "-o", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # attached before the loop starts (idle time takes no cpu-clock samples)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        runs += 1
    elapsed = time.perf_counter() - start
    perf.send_signal(signal.SIGINT)
    _, err = perf.communicate(timeout=120)
    if perf.returncode not in (0, -signal.SIGINT) or not data.is_file():
        raise TargetSetupError(f"perf record failed ({perf.returncode}): {err.strip()[-200:]}")
    report = subprocess.run(
        [_perf(), "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,sym", "-n", "-t", "\t", "-q"],
        capture_output=True,
        text=True,
    )
    samples: dict[tuple[str, str], int] = {}
    for line in report.stdout.splitlines():
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 4 or not fields[1].isdigit():
            continue
        symbol = fields[3].split("] ", 1)[-1]
        key = (Path(fields[2]).name, symbol)
        samples[key] = samples.get(key, 0) + int(fields[1])
    if not samples:
        raise TargetSetupError(f"perf report found no samples ({report.stderr.strip()[-200:]})")
    return samples, elapsed * 1e3 / runs, runs


def _in_ms(samples: dict[tuple[str, str], int], ms_per_run: float) -> dict[tuple[str, str], float]:
    total = sum(samples.values())
    return {k: n / total * ms_per_run for k, n in samples.items()}


def profile_host(folder: Path, ids: list[int], steps: int, seconds: float = 10.0, shortlist: bool = False) -> dict:
    """The host profile of one exported folder: ms per encoder and per step, per kernel family and for
    the top functions, with the sample counts behind them."""
    translator = Translator(folder, num_threads=1, shortlist=shortlist)
    for _ in range(3):  # warm: allocation and first-call costs are not the protocol's
        run_protocol(translator, ids, steps, shortlist=shortlist)
    with tempfile.TemporaryDirectory() as tmp:
        whole, ms_whole, n_whole = _sampled(
            lambda: run_protocol(translator, ids, steps, shortlist=shortlist), seconds, Path(tmp)
        )
    with tempfile.TemporaryDirectory() as tmp:
        encoder_only = lambda: run_protocol(translator, ids, 0, shortlist=shortlist)  # noqa: E731
        enc, ms_enc, n_enc = _sampled(encoder_only, seconds / 3, Path(tmp))
    whole_ms, enc_ms = _in_ms(whole, ms_whole), _in_ms(enc, ms_enc)
    step_ms = {k: (whole_ms.get(k, 0.0) - enc_ms.get(k, 0.0)) / steps for k in whole_ms.keys() | enc_ms.keys()}
    fam_enc, fam_step = by_family(enc_ms), by_family(step_ms)
    return {
        "sentence_ms": round(ms_whole, 3),
        "encoder_ms": round(ms_enc, 3),
        "step_ms": round((ms_whole - ms_enc) / steps, 4),
        "samples": {"sentence": sum(whole.values()), "encoder": sum(enc.values())},
        "runs": {"sentence": n_whole, "encoder": n_enc},
        "families": {f: {"encoder_ms": round(fam_enc[f], 4), "step_ms": round(fam_step[f], 4)} for f in fam_enc},
        "top_step": [e | {"count": round(e["count"], 4)} for e in top(step_ms)],
    }
