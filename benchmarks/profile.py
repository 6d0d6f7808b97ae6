"""Where a decoder step's time (host) and instructions (emulated ARM cores) go, per kernel family.

For each TFLite folder: the latency protocol (the 30-token test source of benchmarks/latency.py, encoder
+ 30 greedy steps, batch 1, one thread) profiled
- on this machine with Linux perf (eval/host_profile.py): ms per encoder and per step, per family;
- on each emulated core with the instruction-count plugin's per-block mode (eval/targets/profile.py):
  guest instructions per encoder and per step, per family.
Families (eval/kernels.py) separate fp32 and int8 matmuls, activation quantization, the packing and
transposing of matmul operands that are not constants (attention over the caches), TFLite kernels
XNNPACK does not run, graph dispatch, libc copies, and the runtime's Python/numpy between graph calls.
Layers share kernels, so a family is not a layer; the output projection's share is what the vocabulary
shortlist removes (benchmarks/results/arm_shortlist.json).

    python benchmarks/profile.py [--run runs/default] [--folders tflite-fp32,tflite-dynamic-int8]
                                 [--extra DIR ...] [--cores cortex-a53,cortex-a72,cortex-a76,neoverse-n1]
                                 [--seconds 10]

Writes benchmarks/results/profile.json and the same record as RUN/profile.json, which `lite report`
shows as its section "Where a decoder step goes".

--extra adds folders outside the run (e.g. a static int8 folder exported with a relaxed BLEU gate, which
`lite export` does not publish); each is named by its manifest's precision and marked unpublished.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy starts a pool
    os.environ[_var] = "1"

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.latency import SRC_LEN, STEPS, pick_source  # noqa: E402 - the same sentence and protocol
from eval.host_profile import profile_host
from eval.targets.profile import profile_on_core
from eval.targets.qemu import QemuTarget
from export.manifest import read_manifest
from lite.files import write_json_atomic
from lite.provenance import command_line, relative, stamped
from lite.run import RunPaths
from lite.tokenizer import Tokenizer

CORES = "cortex-a53,cortex-a72,cortex-a76,neoverse-n1"


def _folders(run: Path, names: str, extra: list[Path]) -> list[tuple[str, Path, bool]]:
    out = [(name, run / "export" / name, True) for name in names.split(",")]
    for folder in extra:
        m = read_manifest(folder)
        out.append((f"{m.format}-{m.precision}", folder, False))
    for name, folder, _ in out:
        if not (folder / "manifest.json").is_file():
            raise SystemExit(f"{folder}: not an exported folder (no manifest.json); run `lite export` first")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs/default")
    parser.add_argument("--folders", default="tflite-fp32,tflite-dynamic-int8")
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="exported folders outside the run")
    parser.add_argument("--cores", default=CORES, help="emulated cores ('' for the host only)")
    parser.add_argument("--seconds", type=float, default=10.0, help="host sampling time per folder")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/profile.json")
    args = parser.parse_args()
    source = pick_source([args.run])
    tokenizer = Tokenizer(args.run / "tokenizer/spm.model")
    ids = tokenizer.encode(source["text"])[: SRC_LEN - 1] + [tokenizer.eos_id]
    cores = [c for c in args.cores.split(",") if c]
    targets = {c: QemuTarget(c) for c in cores}
    for t in targets.values():
        t.prepare(print)
    rows = []
    for name, folder, published in _folders(args.run, args.folders, args.extra):
        host = profile_host(folder, ids, STEPS, args.seconds)
        print(f"host {name}: encoder {host['encoder_ms']:.2f} ms, step {host['step_ms']:.3f} ms", flush=True)
        row = {"artifact": name, "folder": relative(folder), "published": published, "host": host, "cores": {}}
        for core, target in targets.items():
            with tempfile.TemporaryDirectory() as work:
                arm = profile_on_core(target, folder, ids, STEPS, Path(work))
            row["cores"][core] = arm
            print(f"{core} {name}: encoder {arm['encoder'] / 1e6:.2f}M, step {arm['step_mean'] / 1e6:.3f}M", flush=True)
        rows.append(row)
    result = {
        "benchmark": "profile",
        "run": relative(args.run),
        "command": command_line(),
        "protocol": {
            "source": source,
            "src_tokens": SRC_LEN,
            "decoder_steps": STEPS,
            "threads": 1,
            "host": "perf record -e cpu-clock -F 4999 on the protocol loop; encoder loop apart; steps = rest / 30",
            "arm": "qemu-user TCG plugin, instructions per code block of the warm run, named by ELF symbols",
        },
        "results": rows,
    }
    record = stamped(result, threads=1)
    write_json_atomic(record, args.out)
    write_json_atomic(record, RunPaths(args.run).profile)  # the budget report's section
    print(f"wrote {args.out} and {RunPaths(args.run).profile}")


if __name__ == "__main__":
    main()
