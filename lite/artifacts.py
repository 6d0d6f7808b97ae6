"""RUN/artifacts.json: one row per artifact a run holds, the file every measuring stage writes into.

`lite export` adds a row per published model folder, `lite compress` a row per compressed artifact;
`lite evaluate --artifact` adds BLEU through the on-device runtime and the host latency (eval/latency.py;
`lite evaluate` the same for model.pt on a "pytorch-fp32" row), `lite evaluate --target` the
instructions and BLEU on an ARM target, `benchmarks/latency.py --record` its alternated medians;
`lite report` reads them.
This module is the only one that reads or writes the file: rows are `ArtifactRow`s, loaded with the
strict loader the configs use (unknown keys rejected, so a typo cannot show up as "not measured"), and
every write re-reads the file just before replacing it atomically, so a row another stage wrote
meanwhile is kept.

Every measurement is optional: a missing key or null means "not measured". A row on disk carries only
the keys that have a value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lite.config import PRECISIONS, from_dict
from lite.errors import ConfigError, RunFolderError
from lite.files import read_json, write_json_atomic

ARTIFACTS_FILE = "artifacts.json"
ARTIFACT_FORMATS = ("pytorch", "onnx", "tflite")
REQUIRED_FIELDS = ("name", "path", "format", "precision")


@dataclass
class ArtifactRow:
    """One artifact of a run. Field by field, as stored:

    name          unique within the run; the report row's label (export names it "<format>-<precision>")
    path          relative to the run folder (or absolute): a file, or a model folder (whose size is its
                  manifest's graphs)
    format        pytorch | onnx | tflite
    precision     fp32 | fp16 | dynamic-int8 | int8
    size_bytes    bytes on disk incl. sidecar files (e.g. .onnx.data)
    macs          MACs per sentence (paper convention, lite.metrics.macs); macs_method says how counted
    model_config  the lite.config.ModelConfig dict the artifact was built from, when it differs from
                  model.pt (e.g. pruned); else source_model names a checkpoint holding one
    bleu          per "split/decoding": a number, null, or a results.json-style record with its
                  sacrebleu signature (preferred)
    latency_ms    per target name: wall-clock ms per sentence on real hardware (never emulated time)
    instructions  per target name: guest instructions per sentence counted under emulation
    targets       per target name: the record `lite evaluate --target` wrote (kept for reading)
    provenance    what made the row: commit, versions, seed, config checksum, machine, command
    notes         free text, shown in the report
    """

    name: str
    path: str
    format: str
    precision: str
    size_bytes: int | None = None
    macs: int | None = None
    macs_method: str | None = None
    model_config: dict | None = None
    source_model: str | None = None
    bleu: dict | None = None
    latency_ms: dict | None = None
    instructions: dict | None = None
    targets: dict | None = None
    provenance: dict | None = None
    notes: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(entry: Any, path: Path, index: int) -> ArtifactRow:
    where = f"{path}: artifact {index}"
    if not isinstance(entry, dict):
        raise RunFolderError(f"{where}: expected an object, got {type(entry).__name__}")
    known = [f.name for f in dataclasses.fields(ArtifactRow)]
    unknown = sorted(set(entry) - set(known))
    if unknown:
        raise RunFolderError(f"{where}: unknown key(s) {', '.join(unknown)} (expected: {', '.join(sorted(known))})")
    for key in REQUIRED_FIELDS:
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise RunFolderError(f'{where}: "{key}" is required (a non-empty string)')
    where = f"{path}: artifact {entry['name']!r}"
    try:
        row = from_dict(ArtifactRow, entry, where)
    except ConfigError as exc:
        raise RunFolderError(str(exc)) from None
    if row.format not in ARTIFACT_FORMATS:
        raise RunFolderError(f"{where}: format must be one of {', '.join(ARTIFACT_FORMATS)}, got {row.format!r}")
    if row.precision not in PRECISIONS:
        raise RunFolderError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {row.precision!r}")
    for key in ("size_bytes", "macs"):
        if getattr(row, key) is not None and getattr(row, key) < 0:
            raise RunFolderError(f'{where}: "{key}" must be a non-negative integer or null, got {getattr(row, key)!r}')
    for key in ("latency_ms", "instructions"):
        value = getattr(row, key)
        if value is not None and any(x is not None and not _is_number(x) for x in value.values()):
            raise RunFolderError(f'{where}: "{key}" must map target names to numbers or null')
    return row


def parse_rows(data: Any, path: Path) -> list[ArtifactRow]:
    """Rows of an artifacts.json document, checked field by field; names must be unique."""
    if not isinstance(data, list):
        raise RunFolderError(f"{path}: expected a JSON list of artifacts, got {type(data).__name__}")
    rows, names = [], set()
    for i, entry in enumerate(data):
        row = _check(entry, path, i)
        if row.name in names:
            raise RunFolderError(f"{path}: artifact {row.name!r}: duplicate name")
        names.add(row.name)
        rows.append(row)
    return rows


def artifacts_path(root: Path) -> Path:
    return Path(root) / ARTIFACTS_FILE


def read_rows(root: Path) -> list[ArtifactRow]:
    """The rows of ROOT/artifacts.json; none when the file does not exist."""
    path = artifacts_path(root)
    return parse_rows(read_json(path, []), path)  # a damaged file: RunFolderError from read_json


def write_rows(root: Path, rows: list[ArtifactRow]) -> None:
    write_json_atomic([row.to_json() for row in rows], artifacts_path(root))


def find_row(root: Path, name: str) -> ArtifactRow:
    """The row named `name`; a missing one is a one-line error listing the others."""
    rows = read_rows(root)
    row = next((r for r in rows if r.name == name), None)
    if row is None:
        known = ", ".join(r.name for r in rows) or "none"
        raise RunFolderError(f"{artifacts_path(root)}: no artifact named {name!r} (artifacts: {known})")
    return row


def update_row(root: Path, name: str, update: Callable[[ArtifactRow], None]) -> None:
    """Apply `update` to the row named `name`, re-read just before writing (see the module docstring)."""
    rows = read_rows(root)
    for row in rows:
        if row.name == name:
            update(row)
    write_rows(root, rows)


def put_row(root: Path, row: ArtifactRow, keep: tuple[str, ...] = ()) -> None:
    """Add `row`, replacing the row of the same name; the fields named in `keep` that the old row had
    (measurements of the very same artifact) are carried over."""
    rows = read_rows(root)
    old = next((r for r in rows if r.name == row.name), None)
    if old is not None:
        for key in keep:
            if getattr(old, key) is not None:
                setattr(row, key, getattr(old, key))
    write_rows(root, [r for r in rows if r is not old] + [row])
