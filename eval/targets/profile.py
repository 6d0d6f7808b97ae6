"""Where an emulated core's instructions go: the protocol's instructions per function and kernel family.

The instruction-count job of `lite evaluate --target qemu:<core>` (export/on_device protocol, two
runs, marks around the encoder and every step) runs once more with the plugin's profile mode: at the
warm run's first mark, after its encoder and after its last step the plugin snapshots the instructions
executed per code block (eval/targets/insn_count.c); the guest saves its /proc/self/maps. Differences of
snapshots give the encoder's and the steps' instructions per block, eval/targets/symbols.py names the
function of each block and eval/kernels.py its family. The totals are checked against the marks' own
counts of the same regions (they differ by the marks' cost only).
"""

from __future__ import annotations

from pathlib import Path

from eval.kernels import by_family, top
from eval.targets.plugin import read_marks
from eval.targets.qemu import QemuTarget
from eval.targets.symbols import attribute, read_maps
from eval.targets.target import stage_runtime
from lite.errors import TargetRunError

ROOT = Path(__file__).resolve().parents[2]


def read_snapshots(path: Path) -> list[dict[int, int]]:
    """The plugin's profile file: per snapshot, instructions per block start address (summed over
    re-translations of one address)."""
    snaps: list[dict[int, int]] = []
    for line in path.read_text().splitlines():
        if line.startswith("snap"):
            snaps.append({})
            continue
        if not snaps:
            raise TargetRunError(f"{path}: block counts before the first snapshot line")
        addr, n = line.split()
        a = int(addr, 16)
        snaps[-1][a] = snaps[-1].get(a, 0) + int(n)
    return snaps


def _diff(after: dict[int, int], before: dict[int, int]) -> dict[int, int]:
    return {a: n - before.get(a, 0) for a, n in after.items() if n != before.get(a, 0)}


def profile_on_core(
    target: QemuTarget, folder: Path, ids: list[int], steps: int, work: Path, shortlist: bool = False
) -> dict:
    """Instructions of the warm protocol run of `folder` on `target`: encoder and mean step, per kernel
    family and for the top functions of a step. `work` holds the staged job and the raw files."""
    stage = work / "stage"
    stage_runtime(ROOT, stage)
    for sub in ("models", "out"):
        (stage / sub).mkdir(parents=True, exist_ok=True)
    link = stage / "models" / "model"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(folder.resolve())
    marks, profile = work / "marks.txt", work / "blocks.txt"
    per_run = steps + 2
    warm = 2 + per_run  # two marks measure a mark, then the first (cold) run's marks
    snaps = [warm, warm + 1, warm + per_run - 1]  # before the encoder, after it, after the last step
    args = ["-m", "export.on_device", "protocol", "--model", "models/model", "--ids", ",".join(map(str, ids))]
    args += ["--steps", str(steps), "--runs", "2", "--marks", "--maps", "out/maps.txt"]
    args += ["--shortlist"] if shortlist else []
    job = target.popen(args, stage, marks, (profile, snaps))
    _, err = job.communicate()  # TargetRunError naming the core if the job outlives the target's limit
    if job.returncode != 0:
        last = (err.strip().splitlines() or ["no error output"])[-1]
        raise TargetRunError(f"{target.name}: profile job failed (exit {job.returncode}): {last}")
    counted = read_marks(marks, 2, per_run)["runs"][1]
    blocks = read_snapshots(profile)
    if len(blocks) != 3:
        raise TargetRunError(f"{profile}: {len(blocks)} snapshots, expected 3")
    maps = read_maps(stage / "out" / "maps.txt")
    encoder = attribute(_diff(blocks[1], blocks[0]), maps)
    step = {k: n / steps for k, n in attribute(_diff(blocks[2], blocks[1]), maps).items()}
    fam_enc, fam_step = by_family(encoder), by_family(step)
    return {
        "encoder": sum(encoder.values()),
        "step_mean": round(sum(step.values())),
        "marks": {"encoder": counted["encoder"], "step_mean": round(sum(counted["steps"]) / steps)},
        "families": {f: {"encoder": round(fam_enc[f]), "step": round(fam_step[f])} for f in fam_enc},
        "top_step": [e | {"count": round(e["count"])} for e in top(step)],
    }
