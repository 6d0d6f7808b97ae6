"""The vocabulary shortlist: per sentence, the target tokens the decoder may produce.

The lexical shortlist of fast CPU translation engines (Marian/Bergamot, CTranslate2's vocabulary map):
for each source token its `per_source` most likely target tokens under a lexical translation table
learned from the training corpus (lite/data/lexicon.py), plus the `frequent` most frequent target
tokens and eos. The decoder then scores only the sentence's candidates: the output projection, the
largest single matmul of a decoder step (embed_dim x vocab_size), shrinks to embed_dim x candidates,
and the softmax is taken over the candidates.

Stored as one .npz of int32 arrays, loaded with allow_pickle=False (no code runs on load):
    frequent    [N]                  the most frequent target tokens, most frequent first
    offsets     [vocab_size + 1]     CSR row pointers: source id s owns targets[offsets[s]:offsets[s+1]]
    targets     [offsets[-1]]        per source id, its best target ids, most likely first
    header      [3]                  vocab_size, eos id, format version

numpy and the standard library only: the on-device runtime reads it (eval/targets/target.py RUNTIME_FILES).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lite.errors import ModelFolderError
from lite.files import atomic_path

FORMAT_VERSION = 1
FILE_NAME = "shortlist.npz"


@dataclass(frozen=True)
class Shortlist:
    frequent: np.ndarray  # int32 [N]
    offsets: np.ndarray  # int32 [vocab_size + 1]
    targets: np.ndarray  # int32 [offsets[-1]]
    vocab_size: int
    eos: int

    def candidates(self, src_ids: list[int] | np.ndarray) -> np.ndarray:
        """Sorted unique target ids a sentence with these source ids may produce (eos included)."""
        src = np.asarray(src_ids, dtype=np.int64)
        src = src[(src >= 0) & (src < self.vocab_size)]
        rows = [self.targets[self.offsets[s] : self.offsets[s + 1]] for s in np.unique(src)]
        return np.unique(np.concatenate([self.frequent, np.array([self.eos], np.int32), *rows])).astype(np.int32)

    def mask(self, src_ids: list[int] | np.ndarray) -> np.ndarray:
        """bool [vocab_size]: True at the candidates of `src_ids`."""
        keep = np.zeros(self.vocab_size, dtype=bool)
        keep[self.candidates(src_ids)] = True
        return keep


def save_shortlist(shortlist: Shortlist, path: Path) -> None:
    """Write atomically (temp file, then rename)."""
    header = np.array([shortlist.vocab_size, shortlist.eos, FORMAT_VERSION], dtype=np.int32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temp name
            np.savez(
                f, frequent=shortlist.frequent, offsets=shortlist.offsets, targets=shortlist.targets, header=header
            )


def load_shortlist(path: Path, vocab_size: int | None = None) -> Shortlist:
    """Read and check a shortlist file; anything malformed is a ModelFolderError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ("frequent", "offsets", "targets", "header")}
    except FileNotFoundError:
        raise ModelFolderError(f"{path}: shortlist file not found (`lite shortlist RUN` learns one)") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFolderError(f"{path}: not a shortlist file ({str(exc).splitlines()[0]})") from None
    header, offsets = arrays["header"], arrays["offsets"]
    if header.shape != (3,) or int(header[2]) != FORMAT_VERSION:
        raise ModelFolderError(f"{path}: header {header.tolist()}; expected [vocab_size, eos, {FORMAT_VERSION}]")
    size, eos = int(header[0]), int(header[1])
    problems = [
        (vocab_size is not None and size != vocab_size, f"vocab_size {size}, the model has {vocab_size}"),
        (offsets.shape != (size + 1,), f"offsets of shape {offsets.shape}, expected ({size + 1},)"),
        (not all(a.dtype == np.int32 and a.ndim == 1 for a in arrays.values()), "arrays must be 1-D int32"),
    ]
    for bad, what in problems:
        if bad:
            raise ModelFolderError(f"{path}: {what}")
    targets, frequent = arrays["targets"], arrays["frequent"]
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != targets.size:
        raise ModelFolderError(f"{path}: offsets must rise from 0 to the number of targets ({targets.size})")
    ids = np.concatenate([targets, frequent, [eos]])
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        raise ModelFolderError(f"{path}: target ids must lie in [0, {size})")
    return Shortlist(frequent, offsets, targets, size, eos)
