"""ListOps (Nangia & Bowman 2018) with the Long Range Arena rules, generated locally.

An example is a nested list expression over the digits 0-9 and its value, the class (10 classes):

    [MAX 2 9 [MIN 4 7 ] 0 ]  -> 9

Operators: MIN, MAX, MED (the median, rounded down to an integer) and SM (sum modulo 10). As in
LRA: trees at most 10 levels deep, 2-10 arguments per operator, a node below the depth limit is an
operator with probability 0.25 (else a digit), and only expressions of 500-2000 tokens are kept
(rejection sampling). Unlike LRA's files there are no extra "(" ")" tokens around sub-lists: the
brackets of the operators already carry the structure.

Written by hand because no package ships the generator (LRA's is a script in its repository).
Splits are written as TSV (tokens, label) under data/listops/ and reused when their settings match.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from lite.errors import DataError
from lite.files import atomic_path

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
CLOSE = "]"
DIGITS = tuple(str(d) for d in range(10))
PAD, CLS = "<pad>", "<cls>"
VOCAB = (PAD, CLS, *OPERATORS, CLOSE, *DIGITS)  # token id = index
NUM_CLASSES = 10


@dataclass(frozen=True)
class ListOpsSpec:
    min_len: int = 500
    max_len: int = 2000
    max_depth: int = 10
    max_args: int = 10
    op_prob: float = 0.25
    train: int = 4000
    test: int = 500
    seed: int = 0


class _TooLong(Exception):
    pass


def _tree(rng: random.Random, spec: ListOpsSpec, depth: int, budget: list[int]):
    """A digit (int) or (operator, [children]); raises _TooLong once more than max_len tokens exist."""
    if depth < spec.max_depth and rng.random() < spec.op_prob or depth == 1:
        op = rng.choice(OPERATORS)
        budget[0] += 2  # the operator and its closing bracket
        children = [_tree(rng, spec, depth + 1, budget) for _ in range(rng.randint(2, spec.max_args))]
        return op, children
    budget[0] += 1
    if budget[0] > spec.max_len:
        raise _TooLong
    return rng.randrange(10)


def evaluate(tree) -> int:
    """The value of an expression tree (digit or (operator, children))."""
    if isinstance(tree, int):
        return tree
    op, children = tree
    values = sorted(evaluate(c) for c in children)
    if op == "[MIN":
        return values[0]
    if op == "[MAX":
        return values[-1]
    if op == "[MED":
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) // 2
    return sum(values) % 10  # [SM


def tokens(tree) -> list[str]:
    if isinstance(tree, int):
        return [str(tree)]
    op, children = tree
    return [op, *(t for c in children for t in tokens(c)), CLOSE]


def depth(tree) -> int:
    return 0 if isinstance(tree, int) else 1 + max(depth(c) for c in tree[1])


def sample(rng: random.Random, spec: ListOpsSpec) -> tuple[list[str], int]:
    """One (tokens, label) with min_len <= len(tokens) <= max_len."""
    while True:
        budget = [0]
        try:
            tree = _tree(rng, spec, 1, budget)
        except (_TooLong, RecursionError):
            continue
        toks = tokens(tree)
        if spec.min_len <= len(toks) <= spec.max_len:
            return toks, evaluate(tree)


def build_listops(root: Path, spec: ListOpsSpec = ListOpsSpec(), progress: bool = True) -> Path:
    """train.tsv and test.tsv of `spec` under root (generated once; reused while spec.json matches)."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = root / "spec.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == asdict(spec):
        return root
    rng = random.Random(spec.seed)
    for split, count in (("train", spec.train), ("test", spec.test)):
        with atomic_path(root / f"{split}.tsv") as tmp, tmp.open("w", encoding="utf-8") as out:
            for _ in tqdm(range(count), desc=f"ListOps {split}", disable=not progress, unit="ex"):
                toks, label = sample(rng, spec)
                out.write(f"{' '.join(toks)}\t{label}\n")
    with atomic_path(stamp) as tmp:
        tmp.write_text(json.dumps(asdict(spec)))
    return root


def read_split(path: Path) -> list[tuple[list[int], int]]:
    """(token ids, label) pairs of a TSV split, each sequence starting with <cls>."""
    ids = {t: i for i, t in enumerate(VOCAB)}
    examples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            text, label = line.split("\t")
            examples.append(([ids[CLS]] + [ids[t] for t in text.split()], int(label)))
        except (ValueError, KeyError) as exc:
            raise DataError(
                f"{path}:{n}: expected '<tokens>\\t<label 0-9>' over the ListOps vocabulary ({exc})"
            ) from None
    return examples
