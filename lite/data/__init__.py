"""Real parallel data: the built-in LibreOffice help corpora and loaders for user corpora.

Only the standard library (and tqdm for progress) is used here, so data preparation works
before torch is installed and on machines that only run the exported model.
"""

from lite.data.libreoffice import (
    KNOWN_CORPORA,
    build_docs_corpus,
    build_from_help_dirs,
    corpus_is_complete,
    extract_paragraphs,
    fetch_help_packages,
    split_sentences,
)
from lite.data.parallel import filter_long, load_split, read_parallel, read_tsv
from lite.errors import DataError

__all__ = [
    "DataError",
    "KNOWN_CORPORA",
    "build_docs_corpus",
    "build_from_help_dirs",
    "corpus_is_complete",
    "extract_paragraphs",
    "fetch_help_packages",
    "split_sentences",
    "filter_long",
    "load_split",
    "read_parallel",
    "read_tsv",
]
