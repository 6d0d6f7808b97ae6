"""The self-describing model folder: manifest.json beside the graphs and the tokenizer.

    model.tflite | encoder.onnx + decoder.onnx     the graphs (export/to_tflite.py, export/to_onnx.py),
                                                   or the same names + ".xz" (export.pack: xz,
                                                   export/packing.py; "bytes" is then the packed size)
    spm.model                                      the sentencepiece tokenizer
    shortlist.npz                                  the vocabulary shortlist, when the run has one
                                                   (lite/shortlist.py)
    manifest.json                                  config, vocabulary ids, precision, shapes, MACs,
                                                   parity figures, and sha256 + size of every file:
                                                   a `Manifest` (its docstring gives every field)

The manifest is loaded with the strict loader the configs use (lite/records.py): an unknown key or a
value of the wrong type is refused, naming manifest.json and the field.

Trust rules (read_manifest, and the runtime for what a graph itself names): every name the manifest
uses as a file ("files" keys, "graphs" values, "tokenizer") is a relative path that stays inside the
folder, symlinks resolved; every file the runtime loads (graphs, ONNX external weight files, the
tokenizer) is listed in "files" and, with verify, matches its size and sha256 before anything reads it.

Standard library only (lite/records.py too): the on-device runtime reads it where neither torch nor
PyYAML exists.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from lite.errors import ConfigError, ModelFolderError
from lite.files import sha256_file, write_json_atomic
from lite.records import from_dict, required_fields

MANIFEST = "manifest.json"
SCHEMA = 1
GRAPH_ROLES = {"tflite": ("tflite",), "onnx": ("encoder", "decoder")}  # the "graphs" keys each format needs
FORMAT_FIELDS = {"tflite": ("src_lens", "batches"), "onnx": ()}  # optional fields a format requires


@dataclass
class FileEntry:
    """One file of the folder as it was written."""

    sha256: str  # hex digest
    bytes: int


@dataclass
class TokenIds:
    """The special token ids of the model's vocabulary."""

    pad: int
    bos: int
    eos: int


@dataclass
class DecodeDefaults:
    """The run's decode settings: what the runtime uses unless told otherwise."""

    beam: int
    lenpen: float  # hypothesis score / (length + 1) ** lenpen
    max_len_a: float  # at most a * source length + b output tokens
    max_len_b: int
    shortlist: bool = False  # decode with the folder's shortlist unless told otherwise


@dataclass
class GraphMacs:
    """MACs read from the exported graph files beside the analytic count at the same lengths (the
    exporter refuses a folder where they differ)."""

    graph: int  # encoder + `steps` decoder steps, output projection excluded
    analytic: int  # lite.metrics.macs at src_len source tokens and `steps` steps + export.graphs.own_key_macs
    src_len: int
    steps: int
    output_projection_per_step: int  # the logits matmul of one decoder step, counted apart


@dataclass(kw_only=True)
class Manifest:
    """manifest.json of a model folder. Field by field, in the order written:

        schema                SCHEMA; a folder with another schema is refused
        format                tflite | onnx
        precision             fp32 | fp16 | dynamic-int8 | int8
        graphs                graph role -> file name: {"tflite"} or {"encoder", "decoder"} (GRAPH_ROLES);
                              names end in ".xz" when packed
        tokenizer             the sentencepiece model's file name
        shortlist             the vocabulary shortlist's file name (lite/shortlist.py); absent without one
        model_config          the lite.config.ModelConfig the graphs were traced from, as a dict
        src_lang, tgt_lang    the language pair
        ids                   pad, bos and eos ids
        vocab_size            entries of the logits
        max_src_len           longest source the graphs take (eos included); the runtime truncates longer ones
        target_slots          self-attention cache slots: output tokens + 1
        max_positions         the model's position table size
        src_lens, batches     TFLite only: the encode_<S> source lengths and decode_<B> batch sizes
        projection            TFLite with a shortlist only: {"subgraph", "tensor"}, where decode_1 keeps
                              the output projection's weight; the runtime reads it to project
                              decode_<B>_hidden onto the candidates' rows
        cache                 decoder cache tensor name -> shape at batch 1, in graph input order
                              (export/graph_io.py GraphIO.caches at target_slots)
        decode                the run's decode settings (DecodeDefaults)
        macs                  analytic MACs per sentence (paper convention, lite.metrics.macs)
        graph_macs            the graph count that agrees with it (GraphMacs)
        ops                   operator -> count over the folder's graphs
        converter             what the converter reported (recipe, signatures or routes, timings)
        convert_seconds       conversion wall time
        pack                  "xz" when the graphs are packed (export.pack); absent otherwise
        graph_bytes_unpacked  packed only: graph role -> bytes of the plain graph
        pack_seconds          packed only: packing wall time
        settings              what the export depends on (format, precision, model.pt sha256, config
                              sections); a folder with the same settings is reused
        parity                the parity gate's figures and thresholds; absent until the gate ran
        files                 file name -> FileEntry for every other file of the folder (write_manifest)

    Optional fields a folder does not have are null here and absent on disk.
    """

    schema: int = SCHEMA
    format: str
    precision: str
    graphs: dict[str, str]
    tokenizer: str
    shortlist: str | None = None
    model_config: dict
    src_lang: str
    tgt_lang: str
    ids: TokenIds
    vocab_size: int
    max_src_len: int
    target_slots: int
    max_positions: int
    src_lens: list[int] | None = None
    batches: list[int] | None = None
    projection: dict[str, int] | None = None
    cache: dict[str, list[int]]
    decode: DecodeDefaults
    macs: int
    graph_macs: GraphMacs
    ops: dict[str, int]
    converter: dict
    convert_seconds: float
    pack: str | None = None
    graph_bytes_unpacked: dict[str, int] | None = None
    pack_seconds: float | None = None
    settings: dict
    parity: dict | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if not data["decode"]["shortlist"]:  # absent when off: manifests from before it read back unchanged
            del data["decode"]["shortlist"]
        return data

    def graph_bytes(self) -> int:
        """Bytes of the graphs the folder ships (tokenizer and manifest aside); packed graphs count packed."""
        return sum(self.files[name].bytes for name in self.graphs.values())


# on disk every manifest has these (the writer fills schema and files)
REQUIRED = ("schema", *required_fields(Manifest), "files")


def write_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Write folder/manifest.json: `manifest` with schema SCHEMA and "files" = sha256 and size of every
    other file in the folder (atomically); returns what was written."""
    files = {
        p.name: FileEntry(sha256=sha256_file(p), bytes=p.stat().st_size)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    manifest = dataclasses.replace(manifest, schema=SCHEMA, files=files)
    write_json_atomic(manifest.to_json(), folder / MANIFEST)
    return manifest


def read_manifest(folder: Path, verify: bool = True) -> Manifest:
    """The manifest of a model folder, loaded strictly (unknown keys and wrong types refused) and checked
    by the trust rules of the module docstring; with verify, every listed file must also exist with its
    size and sha256. ModelFolderError (one line) otherwise."""
    folder = Path(folder)
    path = folder / MANIFEST
    data = _read_json(folder, path)
    _check_layout(path, data)
    try:
        manifest = from_dict(Manifest, data, str(path))
    except ConfigError as exc:
        raise ModelFolderError(str(exc)) from None
    _check_names(folder, manifest)
    if verify:
        _verify_files(folder, manifest)
    return manifest


def _read_json(folder: Path, path: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: model folder not found")
    if not path.is_file():
        raise ModelFolderError(f"{path}: not found (is {folder} a folder written by `lite export`?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _check_layout(path: Path, data: dict[str, Any]) -> None:
    """What must hold before the fields can be read at all: every required field, this schema, a known
    format with its graph roles, and "files" entries of sha256 and size."""
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ModelFolderError(f"{path}: missing field(s) {', '.join(missing)}")
    if data["schema"] != SCHEMA:
        raise ModelFolderError(f"{path}: schema {data['schema']!r}, this runtime reads schema {SCHEMA}")
    fmt = data["format"]
    if not isinstance(fmt, str) or fmt not in GRAPH_ROLES:
        raise ModelFolderError(f"{path}: format {fmt!r}; expected one of {', '.join(GRAPH_ROLES)}")
    missing = [k for k in FORMAT_FIELDS[fmt] if data.get(k) is None]
    if missing:
        raise ModelFolderError(f"{path}: missing field(s) {', '.join(missing)} (needed by {fmt} graphs)")
    roles = GRAPH_ROLES[fmt]
    files, graphs = data["files"], data["graphs"]
    if not isinstance(files, dict):
        raise ModelFolderError(
            f'{path}: "files" is {type(files).__name__}; expected an object {{file name: {{"sha256", "bytes"}}}}'
        )
    if not isinstance(graphs, dict) or sorted(graphs) != sorted(roles):
        raise ModelFolderError(f'{path}: "graphs" is {graphs!r}; expected file names for {", ".join(roles)}')
    for name, meta in files.items():
        if not (
            isinstance(meta, dict)
            and isinstance(meta.get("sha256"), str)
            and isinstance(meta.get("bytes"), int)
            and not isinstance(meta.get("bytes"), bool)
        ):
            raise ModelFolderError(f'{path}: files[{name!r}] is {meta!r}; expected {{"sha256": hex, "bytes": int}}')


def _check_names(folder: Path, manifest: Manifest) -> None:
    """Every name used as a file stays inside the folder; the files the runtime loads are listed."""
    path = folder / MANIFEST
    for name in manifest.files:
        member_path(folder, name, "files key")
    loaded = {f"graphs.{role}": name for role, name in manifest.graphs.items()} | {"tokenizer": manifest.tokenizer}
    if manifest.shortlist is not None:
        loaded["shortlist"] = manifest.shortlist
    for field_name, name in loaded.items():
        member_path(folder, name, field_name)
    if not any(name in manifest.files for name in loaded.values()):
        raise ModelFolderError(
            f'{path}: "files" lists none of the files the runtime loads; expected sha256 '
            f"and bytes of {', '.join(loaded.values())}"
        )
    for field_name, name in loaded.items():
        require_listed(folder, manifest, name, field_name)


def _verify_files(folder: Path, manifest: Manifest) -> None:
    """Every listed file exists with the size and sha256 the manifest gives."""
    for name, meta in manifest.files.items():
        file = folder / name
        if not file.is_file():
            raise ModelFolderError(f"{file}: listed in {MANIFEST} but missing")
        size = file.stat().st_size
        digest = sha256_file(file) if size == meta.bytes else None  # a size mismatch needs no hashing
        if digest != meta.sha256:
            found = f"{size} bytes" + (f", sha256 {digest[:16]}..." if digest else "")
            raise ModelFolderError(
                f"{file}: checksum mismatch with {MANIFEST} (expected {meta.bytes} bytes, "
                f"sha256 {meta.sha256[:16]}...; found {found}): corrupt or modified file"
            )


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


def require_listed(folder: Path, manifest: Manifest, name: str, field: str) -> Path:
    """folder / name for a file the runtime is about to load: inside the folder and listed in "files"
    (read_manifest with verify has checked every listed file's size and sha256)."""
    file = member_path(folder, name, field)
    if name not in manifest.files:
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
