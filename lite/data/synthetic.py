"""Synthetic parallel corpora with a known rule, so tests can tell a model that learns from one that does not.

A source line is `min_len`..`max_len` symbols (length uniform, each symbol uniform with replacement)
from the first `symbols` lowercase letters, separated by single spaces. The target follows from the
source by one of two rules (`task`):

- "shift": copy, each symbol replaced by the next letter of the alphabet used (the last wraps to "a");
  with 10 symbols:  src "c a j b j"  ->  tgt "d b a c a"
- "reverse": the same symbols in reverse order:  src "c a j b j"  ->  tgt "j b j a c"

Every symbol is its own whitespace-separated word, so a sentencepiece model trained on the corpus
gives each symbol one piece, and both tasks are token-level rules. Neither target can be guessed
from the target prefix: the decoder has to read the source through cross-attention at the right
position, so a model with broken encoder-decoder attention, or one trained with a view of the
future target tokens, fails. No valid or test source appears in another split, so exact match on
the test split measures the learned rule, not memorised pairs. "reverse" needs the source length to
find its first position, so small models take noticeably more updates to learn it than "shift".

The folder holds {split}.{src_lang} and {split}.{tgt_lang} for train, valid and test, the plain
parallel naming lite.data.parallel.load_split reads. Pure standard library; the same arguments
give the same bytes.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from pathlib import Path

SPLITS = ("train", "valid", "test")
TASKS = ("shift", "reverse")


def make_target(tokens: list[str], task: str, symbols: int) -> list[str]:
    """The target symbols of source symbols `tokens` under `task` (module docstring)."""
    if task == "reverse":
        return tokens[::-1]
    if task == "shift":
        return [string.ascii_lowercase[(string.ascii_lowercase.index(t) + 1) % symbols] for t in tokens]
    raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def write_synthetic_corpus(
    out: Path,
    task: str = "shift",
    seed: int = 1,
    symbols: int = 10,
    min_len: int = 3,
    max_len: int = 8,
    sizes: Mapping[str, int] | None = None,
    src_lang: str = "src",
    tgt_lang: str = "tgt",
) -> Path:
    """Write the corpus of `task` (module docstring) to folder `out`; returns `out`.

    `sizes` maps split name to pair count (default train 4000, valid 100, test 200). Train pairs may
    repeat; valid and test sources are distinct and appear in no other split.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not 1 <= symbols <= len(string.ascii_lowercase):
        raise ValueError(f"symbols must be 1..{len(string.ascii_lowercase)}, got {symbols}")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    sizes = dict(sizes or {"train": 4000, "valid": 100, "test": 200})
    if set(sizes) != set(SPLITS) or min(sizes.values()) < 1:
        raise ValueError(f"sizes must give a positive count for each of {', '.join(SPLITS)}, got {sizes}")
    rng = random.Random(seed)
    alphabet = string.ascii_lowercase[:symbols]

    def draw() -> str:
        return " ".join(rng.choices(alphabet, k=rng.randint(min_len, max_len)))

    sources = {"train": [draw() for _ in range(sizes["train"])]}
    used = set(sources["train"])
    free = sum(symbols**n for n in range(min_len, max_len + 1)) - len(used)
    if sizes["valid"] + sizes["test"] > free:  # the rejection sampling below would never finish
        raise ValueError(f"{sizes['valid'] + sizes['test']} held-out pairs but only {free} strings unused by train")
    for split in ("valid", "test"):
        sources[split] = []
        while len(sources[split]) < sizes[split]:
            src = draw()
            if src not in used:
                used.add(src)
                sources[split].append(src)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        targets = [" ".join(make_target(s.split(" "), task, symbols)) for s in sources[split]]
        (out / f"{split}.{src_lang}").write_text("".join(s + "\n" for s in sources[split]), encoding="utf-8")
        (out / f"{split}.{tgt_lang}").write_text("".join(t + "\n" for t in targets), encoding="utf-8")
    return out
