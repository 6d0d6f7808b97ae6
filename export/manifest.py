"""The self-describing model folder: manifest.json beside the graphs and the tokenizer.

    model.tflite | encoder.onnx + decoder.onnx     the graphs (export/to_tflite.py, export/to_onnx.py),
                                                   or the same names + ".xz" (export.pack: xz,
                                                   export/packing.py; "bytes" is then the packed size)
    spm.model                                      the sentencepiece tokenizer
    manifest.json                                  config, vocabulary ids, precision, shapes, MACs,
                                                   parity figures, and sha256 + size of every file

Trust rules (read_manifest, and the runtime for what a graph itself names): every name the manifest
uses as a file ("files" keys, "graphs" values, "tokenizer") is a relative path that stays inside the
folder, symlinks resolved; every file the runtime loads (graphs, ONNX external weight files, the
tokenizer) is listed in "files" and, with verify, matches its size and sha256 before anything reads it.

Standard library only: the on-device runtime reads it where torch does not exist.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from lite.errors import ModelFolderError
from lite.files import sha256_file, write_json_atomic

MANIFEST = "manifest.json"
SCHEMA = 1
GRAPH_ROLES = {"tflite": ("tflite",), "onnx": ("encoder", "decoder")}  # the "graphs" keys each format needs


def write_manifest(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write folder/manifest.json = record + {"schema", "files": {name: {"sha256", "bytes"}}} over every
    other file in the folder (atomically); returns what was written."""
    files = {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    manifest = {"schema": SCHEMA, **record, "files": files}
    write_json_atomic(manifest, folder / MANIFEST)
    return manifest


def read_manifest(folder: Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of a model folder, checked by the trust rules of the module docstring; with verify,
    every listed file must also exist with its size and sha256. ModelFolderError (one line) otherwise."""
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
    if not isinstance(manifest, dict):
        raise ModelFolderError(f"{path}: expected a JSON object, found {type(manifest).__name__}")
    missing = [k for k in ("schema", "format", "precision", "files", "graphs", "tokenizer") if k not in manifest]
    if missing:
        raise ModelFolderError(f"{path}: missing field(s) {', '.join(missing)}")
    if manifest["schema"] != SCHEMA:
        raise ModelFolderError(f"{path}: schema {manifest['schema']!r}, this runtime reads schema {SCHEMA}")
    roles = GRAPH_ROLES.get(manifest["format"])
    if roles is None:
        raise ModelFolderError(f"{path}: format {manifest['format']!r}; expected one of {', '.join(GRAPH_ROLES)}")
    files, graphs = manifest["files"], manifest["graphs"]
    if not isinstance(files, dict):
        raise ModelFolderError(
            f'{path}: "files" is {type(files).__name__}; expected an object {{file name: {{"sha256", "bytes"}}}}'
        )
    if not isinstance(graphs, dict) or sorted(graphs) != sorted(roles):
        raise ModelFolderError(f'{path}: "graphs" is {graphs!r}; expected file names for {", ".join(roles)}')
    for name, meta in files.items():
        member_path(folder, name, "files key")
        if not (
            isinstance(meta, dict)
            and isinstance(meta.get("sha256"), str)
            and isinstance(meta.get("bytes"), int)
            and not isinstance(meta.get("bytes"), bool)
        ):
            raise ModelFolderError(f'{path}: files[{name!r}] is {meta!r}; expected {{"sha256": hex, "bytes": int}}')
    loaded = {f"graphs.{role}": graphs[role] for role in roles} | {"tokenizer": manifest["tokenizer"]}
    for field, name in loaded.items():
        member_path(folder, name, field)
    if not any(name in files for name in loaded.values()):
        raise ModelFolderError(
            f'{path}: "files" lists none of the files the runtime loads; expected sha256 '
            f"and bytes of {', '.join(loaded.values())}"
        )
    for field, name in loaded.items():
        require_listed(folder, manifest, name, field)
    if verify:
        for name, meta in files.items():
            file = folder / name
            if not file.is_file():
                raise ModelFolderError(f"{file}: listed in {MANIFEST} but missing")
            size = file.stat().st_size
            digest = sha256_file(file) if size == meta["bytes"] else None  # a size mismatch needs no hashing
            if digest != meta["sha256"]:
                found = f"{size} bytes" + (f", sha256 {digest[:16]}..." if digest else "")
                raise ModelFolderError(
                    f"{file}: checksum mismatch with {MANIFEST} (expected {meta['bytes']} bytes, "
                    f"sha256 {meta['sha256'][:16]}...; found {found}): corrupt or modified file"
                )
    return manifest


def member_path(folder: Path, name: Any, field: str) -> Path:
    """folder / name, if `name` (the manifest's `field`) is a relative path that stays inside the folder
    once symlinks are resolved; ModelFolderError naming the field otherwise."""
    where = Path(folder) / MANIFEST
    expected = f"expected a file name inside {folder}"
    if not isinstance(name, str) or not name:
        raise ModelFolderError(f"{where}: {field} is {name!r}; {expected}")
    # both flavours: a folder written on one system may be read on the other
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        raise ModelFolderError(f"{where}: {field} = {name!r} is an absolute path; {expected}")
    if ".." in PurePosixPath(name).parts or ".." in PureWindowsPath(name).parts:
        raise ModelFolderError(f"{where}: {field} = {name!r} leaves the model folder; {expected}")
    file = Path(folder) / name
    try:
        root, real = Path(folder).resolve(), file.resolve()
    except (OSError, ValueError) as exc:  # a symlink loop, a NUL byte
        raise ModelFolderError(f"{where}: {field} = {name!r} is not a usable path ({exc}); {expected}") from None
    if real == root:
        raise ModelFolderError(f"{where}: {field} = {name!r} names the folder itself; {expected}")
    if not real.is_relative_to(root):
        raise ModelFolderError(
            f"{where}: {field} = {name!r} resolves to {real}, outside the model folder (a symlink?); {expected}"
        )
    return file


def require_listed(folder: Path, manifest: dict[str, Any], name: str, field: str) -> Path:
    """folder / name for a file the runtime is about to load: inside the folder and listed in "files"
    (read_manifest with verify has checked every listed file's size and sha256)."""
    file = member_path(folder, name, field)
    if name not in manifest["files"]:
        raise ModelFolderError(
            f"{file}: loaded by the runtime ({field}) but not listed in {MANIFEST}; "
            'expected its sha256 and bytes under "files"'
        )
    return file


# ONNX protobuf field numbers (onnx.proto) on the way from a model to its tensors' external_data
_SUBMESSAGES = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}


def onnx_external_data(data: bytes) -> list[str]:
    """The "location" of every tensor stored outside an ONNX model (its .onnx.data files), read from the
    serialized bytes with a minimal protobuf reader: the runtime has no onnx package to parse it with."""
    view = memoryview(data)
    found: list[str] = []

    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if i >= len(view) or shift > 63:
                raise ValueError("truncated varint")
            byte = view[i]
            value |= (byte & 0x7F) << shift
            i, shift = i + 1, shift + 7
            if byte < 0x80:
                return value, i

    def walk(kind: str, start: int, end: int) -> None:
        entry: dict[int, bytes] = {}
        i = start
        while i < end:
            key, i = varint(i)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, i = varint(i)
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            elif wire == 2:
                size, i = varint(i)
                if i + size > end:
                    raise ValueError("field runs past its message")
                if kind == "entry" and number in (1, 2):
                    entry[number] = bytes(view[i : i + size])
                elif number in _SUBMESSAGES.get(kind, {}):
                    walk(_SUBMESSAGES[kind][number], i, i + size)
                i += size
            else:
                raise ValueError(f"wire type {wire}")
        if i != end:
            raise ValueError("message runs past its end")
        if kind == "entry" and entry.get(1) == b"location":
            found.append(entry.get(2, b"").decode("utf-8", errors="replace"))

    walk("model", 0, len(view))
    return found
