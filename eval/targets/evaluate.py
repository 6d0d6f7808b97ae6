"""`lite evaluate RUN --target T`: run exported TFLite folders on a target and record what it measured.

Per artifact of RUN/artifacts.json (default: every TFLite folder):
  bleu         the split (or its first --limit sentences) translated greedily ON the target, scored on the host
  agreement    share of output lines identical to the host runtime's on the same sentences
  instructions (qemu:<core> only) aarch64 instructions of the 30-token protocol sentence: the encoder pass,
               each of 30 decoder steps, and their sum, after one warm-up run (the cold run kept too)
  reference    the protocol again with TFLite's reference kernels on target and host: are the logits
               bit-identical? (integer kernels should be; float ones may differ in the last bits)
  latency_ms   (ssh:// only) the latency protocol with the board's own clock: median of --repeats runs

Written to RUN/targets/<target>/<artifact>.json (+ the target's hypotheses) and summarised under
"targets" -> <target> in that artifact's row of RUN/artifacts.json, where `lite report` reads it.
A record made from the same manifest with the same settings is reused, so an interrupted matrix resumes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.targets.plugin import read_marks
from eval.targets.target import RUNTIME_FILES, Target, stage_runtime
from export.manifest import read_manifest
from export.on_device import STEPS, run_protocol
from export.runtime import Translator
from lite.artifacts import ArtifactRow, artifacts_path, find_row, read_rows, update_row
from lite.config import RunConfig
from lite.data.corpus import load_pairs
from lite.errors import DataError, ModelFolderError, RunFolderError, TargetRunError, UsageError
from lite.files import read_json, sha256_file, write_json_atomic, write_text_atomic
from lite.metrics.bleu import score
from lite.provenance import provenance
from lite.run import RunPaths

ROOT = Path(__file__).resolve().parents[2]
SRC_LEN = 30  # the protocol sentence: 29 pieces + eos, as benchmarks/latency.py


def protocol_source(paths: RunPaths, pairs: list[tuple[str, str]], tokenizer_path: Path) -> dict:
    """The first sentence of `pairs` that is exactly SRC_LEN tokens with eos (else the first longer, cut)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    eos = sp.eos_id()
    for cut in (False, True):
        for i, (src, _) in enumerate(pairs):
            pieces = sp.encode(src)
            if len(pieces) + 1 == SRC_LEN or (cut and len(pieces) + 1 > SRC_LEN):
                return {"index": i, "text": src, "ids": pieces[: SRC_LEN - 1] + [eos], "truncated": cut}
    raise DataError(f"{paths.root}: no test sentence has {SRC_LEN} tokens for the instruction-count protocol")


def _job(
    target: Target,
    args: list[str],
    stage: Path,
    what: str,
    marks: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> str:
    """Run `python ARGS` on the target; stdout (streamed to on_line, if given) or TargetRunError."""
    proc = target.popen(args, stage, marks)
    out: list[str] = []
    errors: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None
    # stderr drains in a thread: a job that logs a lot must not block on a full pipe while we read stdout
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    for line in proc.stdout:
        out.append(line)
        if on_line:
            on_line(line)
    reader.join()
    err = "".join(errors)
    if proc.wait() != 0:
        lines = [ln for ln in err.strip().splitlines() if "INFO:" not in ln] or ["no error output"]
        raise TargetRunError(f"{target.name}: {what} failed (exit {proc.returncode}): {lines[-1]}")
    return "".join(out)


def _job_json(target: Target, args: list[str], stage: Path, what: str, marks: Path | None = None) -> dict:
    """A job whose stdout is one JSON result (export.on_device); anything else is a TargetRunError."""
    text = _job(target, args, stage, what, marks)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        last = (text.strip().splitlines() or ["nothing"])[-1]
        raise TargetRunError(f"{target.name}: {what} printed no JSON result: {last[:200]}") from None


def select_artifacts(paths: RunPaths, names: list[str] | None) -> list[ArtifactRow]:
    """Rows of RUN/artifacts.json to run: `names`, or every TFLite folder ('all' or None)."""
    path = artifacts_path(paths.root)
    rows = read_rows(paths.root)
    if not names or names == ["all"]:
        chosen = [r for r in rows if r.format == "tflite"]
        if not chosen:
            raise RunFolderError(f"{path}: no TFLite artifact (run `lite export {paths.root}` first)")
        return chosen
    chosen = []
    for name in names:
        row = find_row(paths.root, name)
        if row.format != "tflite":
            raise UsageError(f"{path}: artifact {name!r} is {row.format}; targets run TFLite folders")
        if not (paths.root / row.path / "manifest.json").is_file():
            raise ModelFolderError(f"{paths.root / row.path}: model folder missing (re-run `lite export`)")
        chosen.append(row)
    return chosen


def evaluate_on_target(
    cfg: RunConfig,
    paths: RunPaths,
    target: Target,
    names: list[str] | None = None,
    split: str = "test",
    limit: int | None = None,
    reference: bool = True,
    repeats: int = 50,
    progress: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> list[dict]:
    """Run each chosen artifact on `target` (see the module docstring); returns their records.

    Each artifact's record is written before the next one runs, so an interrupted call resumes."""
    plan = _plan(cfg, paths, target, names, split, limit, reference, repeats, log)
    stage = _stage(plan.out_dir, paths, plan.rows, [s for s, _ in plan.pairs])
    uploaded = False
    records = []
    for row in plan.rows:
        manifest_sha = sha256_file(paths.root / row.path / "manifest.json")
        old = _reusable(paths, target, plan, row, manifest_sha, log)
        if old is not None:
            records.append(old | {"cached": True})
            continue
        if not uploaded:
            target.upload(stage)
            uploaded = True
        started = time.monotonic()
        shortlist = read_manifest(paths.root / row.path, verify=False).shortlist is not None
        outputs = _run_jobs(target, stage, plan, row, progress, shortlist)
        records.append(_write_record(paths, target, plan, row, manifest_sha, outputs, started))
    return records


@dataclass(frozen=True)
class _Plan:
    """What every artifact of one call shares."""

    rows: list[ArtifactRow]  # the artifacts to run: rows of RUN/artifacts.json
    pairs: list[tuple[str, str]]  # (source, reference) sentences, --limit applied
    split: str
    source: dict  # the protocol sentence: index, text, ids, truncated
    settings: dict  # what a record must have been made with to be reused
    out_dir: Path  # RUN/targets/<target slug>
    reference: bool  # run the reference-kernel protocol
    repeats: int  # latency protocol runs (boards)


def _plan(
    cfg: RunConfig,
    paths: RunPaths,
    target: Target,
    names: list[str] | None,
    split: str,
    limit: int | None,
    reference: bool,
    repeats: int,
    log: Callable[[str], None],
) -> _Plan:
    """Select and prepare: the artifacts, the sentences, the protocol sentence (chosen from the whole
    split, before --limit cuts it), the target made ready, and the settings that key reuse."""
    rows = select_artifacts(paths, names)
    pairs, _ = load_pairs(cfg.data, split)
    source = protocol_source(paths, pairs, paths.tokenizer)
    if limit:
        pairs = pairs[:limit]
    target.prepare(log)
    code = [ROOT / f for f in RUNTIME_FILES] + [ROOT / "eval/targets" / f for f in ("insn_count.c", "qemu.py")]
    settings = {
        "split": split,
        "sentences": len(pairs),
        "limit": limit,
        "reference": reference,
        "code_sha256": hashlib.sha256(b"".join(p.read_bytes() for p in code)).hexdigest()[:16],
        "protocol_ids": source["ids"],
        "repeats": repeats if not target.counts_instructions else None,
    }
    out_dir = paths.root.resolve() / "targets" / target.slug
    return _Plan(rows, pairs, split, source, settings, out_dir, reference, repeats)


def _stage(out_dir: Path, paths: RunPaths, rows: list[ArtifactRow], sources: list[str]) -> Path:
    """Stage the job files in out_dir/stage: the runtime, a link per model folder (models/<name>), the
    source sentences (inputs/src.txt) and an empty out/ for what the jobs write."""
    stage = out_dir / "stage"
    stage_runtime(ROOT, stage)
    (stage / "models").mkdir(parents=True, exist_ok=True)
    for row in rows:
        link = stage / "models" / row.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((paths.root / row.path).resolve())
    (stage / "out").mkdir(exist_ok=True)
    write_text_atomic("".join(s + "\n" for s in sources), stage / "inputs" / "src.txt")
    return stage


def _reusable(
    paths: RunPaths, target: Target, plan: _Plan, row: ArtifactRow, manifest_sha: str, log: Callable[[str], None]
) -> dict | None:
    """The artifact's record if one was made from the same manifest with the same settings, else None.
    A reused record is summarised again (idempotent), so the artifact's row always holds this summary."""
    record_path = plan.out_dir / f"{row.name}.json"
    old = read_json(record_path, {})
    if old.get("manifest_sha256") != manifest_sha or old.get("settings") != plan.settings:
        return None
    log(f"target: {target.name} {row.name}: reusing {record_path}")
    _summarise(paths, row.name, target, old)
    return old


@dataclass
class _Outputs:
    """What one artifact's jobs on the target left on the host, not yet compared with anything."""

    translation: str  # the hypotheses, one per line (also saved as <name>.<split>.greedy.hyp)
    seconds: dict[str, float] = field(default_factory=dict)  # per job: its time on the target
    counts: dict | None = None  # the instruction-count protocol's result
    marks: Path | None = None  # the plugin's instruction counts at each mark
    logits: Path | None = None  # the reference-kernel logits, fetched from the target
    latency: dict | None = None  # the latency protocol's result
    shortlist_counts: dict | None = None  # the instruction-count protocol over the shortlist's candidates
    shortlist_marks: Path | None = None


def _run_jobs(
    target: Target, stage: Path, plan: _Plan, row: ArtifactRow, progress: bool, shortlist: bool = False
) -> _Outputs:
    """Run on the target: the translation, the instruction-count protocol (emulated cores; again over the
    shortlist's candidates when the folder has one), the reference-kernel protocol (unless --no-reference)
    and the latency protocol (boards, whose own clock counts: an emulator's clock measures the emulator)."""
    from tqdm import tqdm

    name, model = row.name, f"models/{row.name}"
    ids = ",".join(map(str, plan.source["ids"]))
    protocol = ["-m", "export.on_device", "protocol", "--model", model, "--ids", ids]
    begun = time.monotonic()
    bar = tqdm(
        total=len(plan.pairs), desc=f"{target.name} {name}", unit="sent", disable=not progress, dynamic_ncols=True
    )
    translate = ["-m", "export.runtime", "--model", model, "--file", "inputs/src.txt", "--beam", "1", "--threads", "1"]
    out = _Outputs(_job(target, translate, stage, "translation", on_line=lambda _: bar.update()))
    bar.close()
    out.seconds["translation"] = time.monotonic() - begun
    write_text_atomic(out.translation, plan.out_dir / f"{name}.{plan.split}.greedy.hyp")
    if target.counts_instructions:
        begun, out.marks = time.monotonic(), plan.out_dir / f"{name}.marks"
        counting = [*protocol, "--runs", "2", "--marks"]
        out.counts = _job_json(target, counting, stage, "instruction count", marks=out.marks)
        out.seconds["instructions"] = time.monotonic() - begun
        if shortlist:  # the same protocol decoding over the sentence's candidates: what the shortlist saves
            begun, out.shortlist_marks = time.monotonic(), plan.out_dir / f"{name}.shortlist.marks"
            args = [*counting, "--shortlist"]
            out.shortlist_counts = _job_json(target, args, stage, "instruction count (shortlist)", out.shortlist_marks)
            out.seconds["instructions_shortlist"] = time.monotonic() - begun
    if plan.reference:
        begun, rel = time.monotonic(), f"out/{name}.reference.npy"
        args = [*protocol, "--runs", "1", "--kernels", "reference", "--logits", rel]
        _job(target, args, stage, "reference-kernel protocol")
        out.logits = plan.out_dir / f"{name}.reference.npy"
        target.fetch(rel, stage, out.logits)
        out.seconds["reference"] = time.monotonic() - begun
    if not target.counts_instructions:
        latency = ["-m", "export.on_device", "latency", "--model", model, "--ids", ids, "--repeats", str(plan.repeats)]
        out.latency = _job_json(target, latency, stage, "latency")
    return out


def _write_record(
    paths: RunPaths, target: Target, plan: _Plan, row: ArtifactRow, manifest_sha: str, outputs: _Outputs, started: float
) -> dict:
    """Read the jobs' outputs against the host runtime on the same inputs, write the record to
    RUN/targets/<target>/<name>.json and summarise it in the artifact's row; returns the record."""
    folder = paths.root / row.path
    host = Translator(folder, num_threads=1)
    record: dict = {
        "target": target.name,
        "artifact": row.name,
        "manifest_sha256": manifest_sha,
        "settings": plan.settings,
        "protocol_source": {k: plan.source[k] for k in ("index", "text", "truncated")},
        "translation": _translation(outputs, host, plan.pairs),
    }
    host_tokens = run_protocol(host, plan.source["ids"], STEPS)
    if outputs.counts is not None:
        seconds = outputs.seconds["instructions"]
        record["instructions"] = _instructions(outputs.counts, outputs.marks, host_tokens, seconds)
    if outputs.shortlist_counts is not None:
        host_short = Translator(folder, num_threads=1, shortlist=True)
        shortlisted = run_protocol(host_short, plan.source["ids"], STEPS, shortlist=True)
        record["instructions_shortlist"] = _instructions(
            outputs.shortlist_counts, outputs.shortlist_marks, shortlisted, outputs.seconds["instructions_shortlist"]
        )
    if outputs.logits is not None:
        record["reference"] = _reference(outputs, folder, plan.source["ids"])
    if outputs.latency is not None:
        result = outputs.latency
        record["latency"] = {k: result[k] for k in ("median_ms", "p10_ms", "p90_ms", "min_ms", "runs", "machine")}
        record["latency"]["tokens_equal_host"] = result["tokens"] == host_tokens
    record["seconds"] = round(time.monotonic() - started, 1)
    write_json_atomic(record, plan.out_dir / f"{row.name}.json")
    _summarise(paths, row.name, target, record)
    return record


def _translation(outputs: _Outputs, host: Translator, pairs: list[tuple[str, str]]) -> dict:
    """BLEU of the target's hypotheses, the host runtime's BLEU on the same sentences, and how many
    lines the two share."""
    hyps = outputs.translation.splitlines()
    host_hyps = list(host.translate([s for s, _ in pairs], beam=1))
    refs = [t for _, t in pairs]
    on_target, on_host = score(hyps, refs), score(host_hyps, refs)
    same = sum(a == b for a, b in zip(hyps, host_hyps))
    return {
        "sentences": len(pairs),
        "bleu": on_target["bleu"],
        "chrf": on_target["chrf"],
        "host_bleu": on_host["bleu"],
        "identical_lines": same,
        "agreement": round(same / max(len(pairs), 1), 4),
        "seconds": round(outputs.seconds["translation"], 1),
        "bleu_signature": on_target.get("bleu_signature"),
    }


def _instructions(result: dict, marks: Path | None, host_tokens: list[int], job_seconds: float) -> dict:
    """The protocol's instruction counts: the warm run's encoder, steps and sentence, the cold run's
    sentence and encoder. `seconds` is the job's time plus reading its marks."""
    begun = time.monotonic()
    assert marks is not None
    counts = read_marks(marks, 2, result["marks_per_run"])
    cold, warm = counts["runs"]
    return {
        "encoder": warm["encoder"],
        "step_mean": round(float(np.mean(warm["steps"]))),
        "step_min": min(warm["steps"]),
        "step_max": max(warm["steps"]),
        "sentence": warm["sentence"],
        "cold_sentence": cold["sentence"],
        "cold_encoder": cold["encoder"],
        "mark_cost": counts["mark_cost"],
        "steps": len(warm["steps"]),
        "tokens_equal_host": result["tokens"] == host_tokens,
        "guest_machine": result["machine"],
        "seconds": round(job_seconds + time.monotonic() - begun, 1),
    }


def _reference(outputs: _Outputs, folder: Path, ids: list[int]) -> dict:
    """The target's reference-kernel logits against the host's: bit-identical? (integer kernels should
    be; float ones may differ in the last bits). `seconds` is the job's time plus the host's run."""
    begun = time.monotonic()
    assert outputs.logits is not None
    theirs = np.load(outputs.logits)
    mine: list = []
    run_protocol(Translator(folder, num_threads=1, kernels="reference"), ids, STEPS, logits=mine)
    ours = np.stack(mine)
    return {
        "bit_identical": bool(theirs.shape == ours.shape and theirs.tobytes() == ours.tobytes()),
        "max_abs_diff": float(np.abs(theirs - ours).max()) if theirs.shape == ours.shape else None,
        "top1_agreement": float((theirs.argmax(-1) == ours.argmax(-1)).mean()),
        "seconds": round(outputs.seconds["reference"] + time.monotonic() - begun, 1),
    }


def _summarise(paths: RunPaths, name: str, target: Target, record: dict) -> None:
    """The record's headline figures into the artifact's row of RUN/artifacts.json."""
    t = record["translation"]
    summary = {
        "bleu": t["bleu"],
        "host_bleu": t["host_bleu"],
        "agreement": t["agreement"],
        "sentences": t["sentences"],
        "split": record["settings"]["split"],
        "seconds": record["seconds"],
        "provenance": provenance(threads=1),
    }
    if "instructions" in record:
        summary["instructions"] = {k: record["instructions"][k] for k in ("encoder", "step_mean", "sentence")}
    if "reference" in record:
        summary["reference_bit_identical"] = record["reference"]["bit_identical"]

    def update(row: ArtifactRow) -> None:
        row.targets = (row.targets or {}) | {target.name: summary}
        if "instructions" in record:  # the report's per-target column: instructions per sentence
            row.instructions = (row.instructions or {}) | {target.name: record["instructions"]["sentence"]}
        if "latency" in record:
            row.latency_ms = (row.latency_ms or {}) | {target.name: round(record["latency"]["median_ms"], 2)}

    update_row(paths.root, name, update)
