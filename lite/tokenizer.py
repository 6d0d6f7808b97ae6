"""Joint sentencepiece vocabulary for source and target (the file the on-device runtime uses too)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import sentencepiece as spm

from lite.config import TokenizerConfig
from lite.errors import RunFolderError
from lite.files import atomic_path, write_text_atomic

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def train_tokenizer(
    sentences: list[str], cfg: TokenizerConfig, out_prefix: Path, seed: int = 1, threads: int = 1
) -> Path:
    """Train a joint model on `sentences`; writes out_prefix.model/.vocab atomically, returns the .model path.

    The same sentences, config, seed and thread count give the same bytes: sentences go in through an
    iterator and the model comes out through a writer, because a file-based run stores its temp input
    and output paths inside the model; and sentencepiece's result depends on how many threads share
    the work (measured: 1 and 2 threads give different models), so the count is the caller's."""
    sentences = [s for s in sentences if s.strip()]
    if len(sentences) > cfg.max_sentences:
        sentences = random.Random(seed).sample(sentences, cfg.max_sentences)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=cfg.vocab_size,
        model_type=cfg.model_type,
        character_coverage=cfg.character_coverage,
        pad_id=PAD_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        input_sentence_size=cfg.max_sentences,
        shuffle_input_sentence=True,
        seed_sentencepiece_size=200000,
        num_threads=threads,
        minloglevel=2,
        hard_vocab_limit=False,
    )
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = "".join(
        f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n" for i in range(processor.get_piece_size())
    )
    path = Path(f"{out_prefix}.model")
    with atomic_path(path) as tmp:
        tmp.write_bytes(model.getvalue())
    write_text_atomic(vocab, Path(f"{out_prefix}.vocab"))  # for people: piece and score per id
    return path


class Tokenizer:
    """Thin wrapper: text <-> ids, with the special ids the model config expects."""

    def __init__(self, model_path: Path | str):
        self.path = Path(model_path)
        if not self.path.is_file():
            raise RunFolderError(f"{self.path}: sentencepiece model not found (run the tokenizer stage first)")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (OSError, RuntimeError) as exc:  # sentencepiece's own error for a damaged file
            raise RunFolderError(f"{self.path}: not a sentencepiece model ({str(exc).strip()})") from None
        self.pad_id, self.bos_id, self.eos_id = self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id()

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i not in (self.pad_id, self.bos_id, self.eos_id)])
