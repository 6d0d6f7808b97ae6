"""The self-describing model folder: manifest.json beside the graphs and the tokenizer.

    model.tflite | encoder.onnx + decoder.onnx     the graphs (export/to_tflite.py, export/to_onnx.py),
                                                   or the same names + ".xz" (export.pack: xz,
                                                   export/packing.py; "bytes" is then the packed size)
    spm.model                                      the sentencepiece tokenizer
    manifest.json                                  config, vocabulary ids, precision, shapes, MACs,
                                                   parity figures, and sha256 + size of every file

Standard library only: the on-device runtime reads it where torch does not exist.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lite.files import sha256_file, write_json_atomic

MANIFEST = "manifest.json"
SCHEMA = 1


class ModelFolderError(ValueError):
    """A model folder is missing, incomplete, corrupt or not ours; the message names the file."""


def write_manifest(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write folder/manifest.json = record + {"schema", "files": {name: {"sha256", "bytes"}}} over every
    other file in the folder (atomically); returns what was written."""
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}
    manifest = {"schema": SCHEMA, **record, "files": files}
    write_json_atomic(manifest, folder / MANIFEST)
    return manifest


def read_manifest(folder: Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of a model folder; with verify, every listed file must exist with its checksum."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: model folder not found")
    if not path.is_file():
        raise ModelFolderError(f"{path}: not found (is {folder} a folder written by `lite export`?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{path}: not valid JSON ({exc})") from None
    missing = [k for k in ("schema", "format", "precision", "files", "graphs", "tokenizer") if k not in manifest]
    if missing:
        raise ModelFolderError(f"{path}: missing field(s) {', '.join(missing)}")
    if manifest["schema"] != SCHEMA:
        raise ModelFolderError(f"{path}: schema {manifest['schema']!r}, this runtime reads schema {SCHEMA}")
    if verify:
        for name, meta in manifest["files"].items():
            file = folder / name
            if not file.is_file():
                raise ModelFolderError(f"{file}: listed in {MANIFEST} but missing")
            if file.stat().st_size != meta["bytes"] or sha256_file(file) != meta["sha256"]:
                raise ModelFolderError(f"{file}: checksum mismatch with {MANIFEST} (corrupt or modified file)")
    return manifest
