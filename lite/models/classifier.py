"""A sequence classifier built from the encoder blocks: the LSRA (or Transformer) encoder of
seq2seq.py, sparse attention heads included, then the mean of the states over the non-pad positions
-> class logits (mean pooling: a model whose heads see only a local window still pools everything).
Used for ListOps (lite/data/listops.py, eval/listops.py)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lite.config import ModelConfig
from lite.errors import ConfigError
from lite.models.blocks import EncoderBlock
from lite.models.seq2seq import Embedder


class SequenceClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ConfigError("model.vocab_size is not set")
        self.cfg = cfg
        self.num_classes = num_classes
        tokens = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        nn.init.normal_(tokens.weight, std=cfg.embed_dim**-0.5)
        self.embed = Embedder(tokens, cfg)
        self.encoder = nn.ModuleList(EncoderBlock(cfg, i) for i in range(cfg.encoder_layers))
        self.norm = nn.LayerNorm(cfg.embed_dim) if cfg.pre_norm else nn.Identity()
        self.head = nn.Sequential(
            nn.Linear(cfg.embed_dim, cfg.embed_dim), nn.ReLU(), nn.Linear(cfg.embed_dim, num_classes)
        )

    def rebuilt(self, cfg: ModelConfig) -> "SequenceClassifier":
        """The same classifier with another config (lite.sparse.learned.binarise uses it)."""
        return SequenceClassifier(cfg, self.num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, T] -> logits [B, num_classes]."""
        pad = tokens.eq(self.cfg.pad_id)
        x = self.embed(tokens)
        for block in self.encoder:
            x = block(x, pad)
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        pooled = (self.norm(x) * keep).sum(1) / keep.sum(1).clamp_min(1)
        return self.head(F.dropout(pooled, p=self.cfg.dropout, training=self.training))
