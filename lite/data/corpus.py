"""Resolve a config's `data.corpus` to sentence pairs: a built-in corpus name or a user's folder."""

from __future__ import annotations

import os
from pathlib import Path

from lite.config import DataConfig
from lite.data.libreoffice import KNOWN_CORPORA, build_docs_corpus
from lite.data.parallel import filter_long, load_split
from lite.errors import DataError

BUILTIN_CORPORA = tuple(KNOWN_CORPORA)


def data_root() -> Path:
    """Where built-in corpora are built: $LITE_DATA_DIR, else ./data."""
    return Path(os.environ.get("LITE_DATA_DIR", "data"))


def corpus_dir(cfg: DataConfig, build: bool = True) -> Path:
    """The folder holding {split}.{lang} files; built-in corpora are built (cached) on first use."""
    if cfg.corpus in BUILTIN_CORPORA:
        out = data_root() / cfg.corpus
        if build:
            build_docs_corpus(cfg.corpus, out)
        return out
    folder = Path(cfg.corpus)
    if not folder.is_dir():
        raise DataError(
            f"data.corpus: {cfg.corpus!r} is neither a built-in corpus ({', '.join(BUILTIN_CORPORA)}) nor a folder"
        )
    return folder


def load_pairs(cfg: DataConfig, split: str) -> tuple[list[tuple[str, str]], dict]:
    """Pairs of one split after the length filter, and a record of what was dropped."""
    pairs = load_split(corpus_dir(cfg), split, cfg.src_lang, cfg.tgt_lang)
    total = len(pairs)
    pairs, too_long = filter_long(pairs, cfg.max_chars)
    limit = cfg.max_train_pairs if split == "train" else cfg.max_test_pairs if split == "test" else None
    if limit is not None:
        pairs = pairs[:limit]
    return pairs, {"split": split, "read": total, "dropped_too_long": too_long, "used": len(pairs)}
