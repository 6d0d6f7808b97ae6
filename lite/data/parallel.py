"""Loaders for parallel corpora that users bring: line-aligned text files and TSV.

Supported layouts of a corpus folder, for a split such as "train":
- train.en + train.de            plain parallel files (also what fairseq's prepare scripts write)
- train.en-de.en + train.en-de.de  fairseq raw-text naming (either language order in the middle)
- train.tsv                      source<TAB>target per line (first column is the source)

Lines are split on "\\n" only (a trailing "\\r" is removed), not on the other Unicode line
separators str.splitlines() knows, so line numbers agree with `wc -l` and with the other side.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator, Sequence

from lite.errors import ConfigError, DataError

Pair = tuple[str, str]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line without newline) of a UTF-8 text file."""
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "file not found"
        raise DataError(f"{path}: {what} (expected a UTF-8 text file)")
    with open(path, "rb") as f:  # binary, so a bad byte can be reported with its line number
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{number}: invalid UTF-8 byte 0x{raw[e.start]:02x} at column "
                    f"{e.start + 1} (expected UTF-8 text)"
                ) from None
            if number == 1:
                line = line.removeprefix("\ufeff")  # editors on Windows add a byte-order mark
            yield number, line.rstrip("\n").rstrip("\r")


def _check_not_empty(path: Path, count: int) -> None:
    if count == 0:
        raise DataError(f"{path}: file is empty (expected one sentence per line)")


def read_parallel(src_path: Path, tgt_path: Path) -> list[Pair]:
    """Read two line-aligned files into (source, target) pairs, stripped of outer whitespace.

    Lines empty on both sides are skipped; a line empty on one side only is an error, because
    it usually means the files drifted out of alignment there.
    """
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    src_lines, tgt_lines = _lines(src_path), _lines(tgt_path)
    pairs: list[Pair] = []
    counts = [0, 0]  # lines read, source and target
    texts = [0, 0]  # non-blank lines, source and target
    while True:
        s = next(src_lines, None)
        t = next(tgt_lines, None)
        if s is None or t is None:
            # Read the rest of the longer file so the message can give both totals
            # (this also validates its UTF-8).
            for side, first, rest in ((0, s, src_lines), (1, t, tgt_lines)):
                for number, line in itertools.chain([first] if first else [], rest):
                    counts[side] = number
                    texts[side] += bool(line.strip())
            break
        number, src, tgt = s[0], s[1].strip(), t[1].strip()
        counts = [number, number]
        texts[0] += bool(src)
        texts[1] += bool(tgt)
        if src and tgt:
            pairs.append((src, tgt))
        elif src or tgt:
            empty, other = (src_path, tgt_path) if not src else (tgt_path, src_path)
            raise DataError(
                f"{empty}:{number}: empty line but line {number} of {other} is not "
                "(expected both sides empty or both non-empty)"
            )
    _check_not_empty(src_path, texts[0])
    _check_not_empty(tgt_path, texts[1])
    n_src, n_tgt = counts
    if n_src != n_tgt:
        raise DataError(f"{src_path}: {n_src} lines but {tgt_path} has {n_tgt} (expected equal line counts)")
    return pairs


def read_tsv(path: Path) -> list[Pair]:
    """Read source<TAB>target lines (no quoting, no header). Blank lines are skipped."""
    path = Path(path)
    pairs: list[Pair] = []
    for number, line in _lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise DataError(
                f"{path}:{number}: {len(cols)} tab-separated columns (expected exactly 2: source<TAB>target)"
            )
        src, tgt = cols[0].strip(), cols[1].strip()
        if not src or not tgt:
            side = "source (column 1)" if not src else "target (column 2)"
            raise DataError(f"{path}:{number}: empty {side} (expected text in both columns)")
        pairs.append((src, tgt))
    _check_not_empty(path, len(pairs))
    return pairs


def load_split(folder: Path, split: str, src: str, tgt: str) -> list[Pair]:
    """Load one split ("train", "valid", "test", ...) of a corpus folder as (src, tgt) pairs.

    Prefers {split}.{src} + {split}.{tgt}, then fairseq's {split}.{src}-{tgt}.{lang} naming,
    then {split}.tsv.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"{folder}: corpus folder not found (expected a folder with {split}.{src} + {split}.{tgt} or {split}.tsv)"
        )
    candidates: Sequence[tuple[Path, Path]] = [
        (folder / f"{split}.{src}", folder / f"{split}.{tgt}"),
        (folder / f"{split}.{src}-{tgt}.{src}", folder / f"{split}.{src}-{tgt}.{tgt}"),
        (folder / f"{split}.{tgt}-{src}.{src}", folder / f"{split}.{tgt}-{src}.{tgt}"),
    ]
    for src_file, tgt_file in candidates:
        if src_file.is_file() and tgt_file.is_file():
            return read_parallel(src_file, tgt_file)
    tsv = folder / f"{split}.tsv"
    if tsv.is_file():
        return read_tsv(tsv)
    # One side present without the other is a different mistake from nothing at all: say which.
    for src_file, tgt_file in candidates:
        if src_file.is_file() or tgt_file.is_file():
            have, lacking = (src_file, tgt_file) if src_file.is_file() else (tgt_file, src_file)
            raise DataError(
                f"{have}: exists but {lacking} does not (expected both language sides of the {split} split)"
            )
    raise DataError(
        f"{folder}: no {split}.{src} + {split}.{tgt} and no {split}.tsv "
        f"(expected parallel files or a TSV for the {split} split)"
    )


def filter_long(pairs: Sequence[Pair], max_chars: int) -> tuple[list[Pair], int]:
    """Drop pairs with a side longer than max_chars characters; return (kept, number dropped).

    Long pairs are dropped rather than truncated: a cut sentence no longer matches its
    translation. The caller reports the count.
    """
    if max_chars <= 0:
        raise ConfigError(f"data.max_chars must be positive, got {max_chars}")
    kept = [p for p in pairs if len(p[0]) <= max_chars and len(p[1]) <= max_chars]
    return kept, len(pairs) - len(kept)
