"""Safe file I/O shared by every stage: atomic writes (temp file + rename), JSON reads with
one-line errors, checksums. Standard library only, so lite/data can use it before torch exists."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lite.errors import RunFolderError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is renamed onto `path`, on error removed,
    so an interrupted write never leaves a half-written file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(obj: object, path: Path) -> None:
    write_text_atomic(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", path)


def read_json(path: Path, default: Any = None) -> Any:
    """Parsed JSON of `path`, `default` when the file does not exist. Every caller reads a file a stage
    wrote into a run folder, so a damaged one is a RunFolderError naming it."""
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise RunFolderError(f"{path}: not valid UTF-8 ({exc.reason})") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
