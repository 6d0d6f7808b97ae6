"""The instruction-count plugin (insn_count.c): built with gcc once per source, and its marks read back.

The guest (export/on_device.py --marks) emits two marks back to back, then per protocol run one mark
before the encoder, one after it and one after each decoder step. The plugin writes the guest's
running instruction count at each mark, one per line, then "total N" at exit.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from eval.targets.sysroot import require_tools
from lite.errors import TargetRunError, TargetSetupError

SOURCE = Path(__file__).with_name("insn_count.c")


def build(cache: Path) -> Path:
    """cache/plugin/insn_count-<sha of the source>.so, compiled if missing."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out = cache / "plugin" / f"insn_count-{digest}.so"
    if out.is_file():
        return out
    require_tools("gcc")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    done = subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-Wall", "-o", str(tmp), str(SOURCE)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise TargetSetupError(f"{SOURCE}: gcc failed: {done.stderr.strip().splitlines()[0] if done.stderr else ''}")
    os.replace(tmp, out)
    return out


def read_marks(path: Path, runs: int, marks_per_run: int) -> dict:
    """Instruction counts per part of each protocol run, the marks' own cost subtracted.

    Returns {"mark_cost", "runs": [{"encoder", "steps": [...], "sentence"}...]} where sentence =
    encoder + all steps. A missing file or a wrong number of marks is a TargetRunError."""
    if not path.is_file():
        raise TargetRunError(f"{path}: no instruction counts written (was the plugin loaded?)")
    counts = [int(line) for line in path.read_text().splitlines() if line.isdigit()]  # not "total N"
    want = 2 + runs * marks_per_run
    if len(counts) != want:
        raise TargetRunError(f"{path}: {len(counts)} marks, expected {want} (did the guest crash mid-run?)")
    mark_cost = counts[1] - counts[0]  # an empty region: what one mark adds to every region
    out = []
    for r in range(runs):
        m = counts[2 + r * marks_per_run : 2 + (r + 1) * marks_per_run]
        parts = [b - a - mark_cost for a, b in zip(m, m[1:])]
        out.append({"encoder": parts[0], "steps": parts[1:], "sentence": sum(parts)})
    return {"mark_cost": mark_cost, "runs": out}
