"""Graph files stored xz-compressed in a model folder (export.pack: xz), and read back in memory.

Why: pruning zeroes most weights, but .tflite / .onnx store every tensor densely, so the zeros cost
as much disk as any other value. A standard compressor (xz, stdlib lzma) turns runs of zeros and
repeated bytes into almost nothing, so what a device downloads and stores shrinks honestly, without
a custom sparse format. The runtime decompresses a graph in memory at load time and hands the bytes
to the interpreter: runtime memory stays the unpacked size (plus the packed bytes while loading);
only the bytes on disk shrink.

    model.tflite      -> model.tflite.xz
    encoder.onnx      -> encoder.onnx.xz   (decoder.onnx likewise)

Standard library only: the torch-free runtime reads packed folders.
"""

from __future__ import annotations

import lzma
from pathlib import Path

from lite.errors import ModelFolderError
from lite.files import atomic_path

PACKINGS = ("none", "xz")  # the values of export.pack
SUFFIX = ".xz"
PRESET = 9 | lzma.PRESET_EXTREME
MAX_DICT = 64 << 20  # preset 9's dictionary


def is_packed(path: str | Path) -> bool:
    return str(path).endswith(SUFFIX)


def _filters(size: int) -> list[dict]:
    # A dictionary larger than the file finds nothing more; capping it at the file size keeps the
    # output of preset 9e while the compressor and (what matters on a phone) the decompressor need
    # memory for the file size instead of 64 MiB.
    return [{"id": lzma.FILTER_LZMA2, "preset": PRESET, "dict_size": max(4096, min(MAX_DICT, size))}]


def pack_bytes(data: bytes) -> bytes:
    """`data` as an xz stream (CRC64-checked), with the settings every packed graph uses."""
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=_filters(len(data)))


def pack_file(path: Path) -> Path:
    """Write path + ".xz" (atomically) and remove `path`; returns the new path."""
    path = Path(path)
    out = path.with_name(path.name + SUFFIX)
    data = path.read_bytes()
    with atomic_path(out) as tmp:
        tmp.write_bytes(pack_bytes(data))
    path.unlink()
    return out


def read_graph(path: Path) -> bytes:
    """The graph's bytes: decompressed when the name ends in .xz, else the file as it is.
    A missing, truncated or corrupt file is a one-line ModelFolderError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFolderError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not is_packed(path):
        return data
    try:
        return lzma.decompress(data, format=lzma.FORMAT_XZ)
    except lzma.LZMAError as exc:  # truncation, a flipped bit (CRC64), or not xz at all
        raise ModelFolderError(f"{path}: not a valid xz file ({exc})") from None
