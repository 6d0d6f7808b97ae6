"""Sequence-level knowledge distillation (Kim & Rush 2016): the teacher's translations as training targets.

A small or compressed student learns more easily from the teacher's own (more regular, single-mode)
outputs than from the human references, so its fine-tuning data is the training sources paired with the
teacher's greedy or beam translations. Teacher and student must share the tokenizer: the targets are
token ids, and word-level distillation compares distributions over the same vocabulary.

The translations take a while to compute, so they can be saved as JSON lines `[source ids, target ids]`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import torch
from tqdm import tqdm

from lite.batching import Example
from lite.checkpoint import load_model
from lite.config import DecodeConfig
from lite.decode import beam_search, greedy
from lite.errors import ConfigError, DataError
from lite.files import write_text_atomic
from lite.models.seq2seq import EncoderDecoder
from lite.run import RunPaths
from lite.tokenizer import Tokenizer


@dataclass
class SequenceKDConfig:
    max_sentences: int | None = 20000  # training sources the teacher translates (first N)
    beam: int = 1
    lenpen: float = 1.0
    batch_size: int = 64
    # output length limit a * source length + b, as in decoding
    max_len_a: float = DecodeConfig.max_len_a
    max_len_b: int = DecodeConfig.max_len_b


def _pieces(spm_path: Path) -> list[str]:
    """The vocabulary of a sentencepiece model, in id order (what token ids mean)."""
    sp = Tokenizer(spm_path).sp
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def load_teacher(run_dir: Path, tokenizer_path: Path) -> EncoderDecoder:
    """The trained model of run folder `run_dir` (eval mode), refused when its tokenizer is not the
    student's (`tokenizer_path`)."""
    paths = RunPaths(Path(run_dir))
    if _pieces(paths.tokenizer) != _pieces(Path(tokenizer_path)):
        raise ConfigError(
            f"{paths.tokenizer}: vocabulary differs from the student's {tokenizer_path} "
            "(a teacher must share the tokenizer)"
        )
    return load_model(paths.model)


def teacher_examples(
    teacher: EncoderDecoder, train_ex: list[Example], cfg: SequenceKDConfig, progress: bool = True
) -> list[Example]:
    """(source ids, teacher hypothesis ids + eos) for the first cfg.max_sentences training examples,
    in their order; sources the teacher translates to nothing are dropped."""
    if cfg.beam < 1 or cfg.batch_size < 1:
        raise ConfigError(f"sequence KD: beam and batch_size must be >= 1, got {cfg.beam} and {cfg.batch_size}")
    decode_cfg = DecodeConfig(
        beam=cfg.beam, lenpen=cfg.lenpen, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b, batch_size=cfg.batch_size
    )
    search = greedy if cfg.beam == 1 else beam_search
    sources = [src for src, _ in train_ex[: cfg.max_sentences]]
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    # one source length per batch: the decoder's length limit follows a batch's longest source, so a
    # mixed batch would give a short sentence more room (another translation) than it gets alone;
    # equal lengths also need no padding
    batches: list[list[int]] = []
    for _, group in groupby(order, key=lambda i: len(sources[i])):
        same = list(group)
        batches += [same[start : start + cfg.batch_size] for start in range(0, len(same), cfg.batch_size)]
    hyps: list[list[int]] = [[] for _ in sources]
    teacher.eval()
    bar = tqdm(total=len(sources), disable=not progress, unit="sent", desc="teacher translations", dynamic_ncols=True)
    for chunk in batches:
        src = torch.tensor([sources[i] for i in chunk], dtype=torch.long)
        for i, hyp in zip(chunk, search(teacher, src, decode_cfg)):
            hyps[i] = hyp
        bar.update(len(chunk))
    bar.close()
    eos = teacher.cfg.eos_id
    return [(list(src), hyp + [eos]) for src, hyp in zip(sources, hyps) if hyp]


def write_examples(path: Path, examples: list[Example]) -> None:
    """Examples as JSON lines `[source ids, target ids]`, written atomically."""
    write_text_atomic("".join(json.dumps([list(s), list(t)]) + "\n" for s, t in examples), Path(path))


def _ids(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
    )


def read_examples(path: Path) -> list[Example]:
    """Examples written by write_examples; a missing file or a malformed line is a DataError naming the file
    (and line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: examples file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    examples: list[Example] = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number}: not valid JSON ({exc.msg})") from None
        if not (isinstance(row, list) and len(row) == 2 and _ids(row[0]) and _ids(row[1])):
            raise DataError(
                f"{path}: line {number}: expected [source ids, target ids] (two non-empty lists of token ids)"
            )
        examples.append((row[0], row[1]))
    return examples
