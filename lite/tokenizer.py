"""Joint sentencepiece vocabulary for source and target (the file the on-device runtime uses too)."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import sentencepiece as spm

from lite.config import TokenizerConfig

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def train_tokenizer(sentences: list[str], cfg: TokenizerConfig, out_prefix: Path, seed: int = 1) -> Path:
    """Train a joint model on `sentences`; writes out_prefix.model/.vocab atomically, returns the .model path."""
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    sentences = [s for s in sentences if s.strip()]
    if len(sentences) > cfg.max_sentences:
        sentences = random.Random(seed).sample(sentences, cfg.max_sentences)
    with tempfile.TemporaryDirectory(dir=out_prefix.parent) as tmp:
        text = Path(tmp) / "input.txt"
        text.write_text("\n".join(sentences) + "\n", encoding="utf-8")
        prefix = Path(tmp) / "spm"
        spm.SentencePieceTrainer.train(
            input=str(text), model_prefix=str(prefix), vocab_size=cfg.vocab_size,
            model_type=cfg.model_type, character_coverage=cfg.character_coverage,
            pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
            input_sentence_size=cfg.max_sentences, shuffle_input_sentence=True, seed_sentencepiece_size=200000,
            num_threads=os.cpu_count() or 1, minloglevel=2, hard_vocab_limit=False,
        )
        for ext in (".model", ".vocab"):
            os.replace(f"{prefix}{ext}", f"{out_prefix}{ext}")
    return Path(f"{out_prefix}.model")


class Tokenizer:
    """Thin wrapper: text <-> ids, with the special ids the model config expects."""

    def __init__(self, model_path: Path | str):
        self.path = Path(model_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: sentencepiece model not found (run the tokenizer stage first)")
        self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
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
