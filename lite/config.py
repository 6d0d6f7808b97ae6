"""Run configuration: YAML files mapped onto dataclasses, unknown keys rejected (lite/records.py from_dict).

A config file has the sections `data`, `tokenizer`, `model`, `train`, `decode`, `budget`, `export`.
Every field has a default, so a file only states what differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from lite.errors import ConfigError
from lite.records import from_dict
from lite.sparse.patterns import HeadPattern, check_pattern, runs_blockwise

FORMATS = ("tflite", "onnx")


class Precision(StrEnum):
    """How an exported graph stores its numbers; the one list of them. fp32 is the reference the others'
    parity gates compare with. dynamic-int8: int8 weights, activations quantized at run time; int8: int8
    weights and activations with ranges calibrated on training sentences."""

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC_INT8 = "dynamic-int8"
    INT8 = "int8"


PRECISIONS = tuple(p.value for p in Precision)  # for messages and membership tests on plain strings


@dataclass
class DataConfig:
    corpus: str = "docs-en-de"  # a built-in corpus name, or a folder of parallel files
    src_lang: str = "en"
    tgt_lang: str = "de"
    max_chars: int = 400  # longer pairs are dropped (and counted), never truncated
    max_train_pairs: int | None = None  # a slice of the training split, for smoke runs
    max_test_pairs: int | None = None


@dataclass
class TokenizerConfig:
    vocab_size: int = 8000
    model_type: str = "unigram"  # sentencepiece: unigram or bpe
    character_coverage: float = 1.0
    max_sentences: int = 300000  # sentencepiece input_sentence_size


@dataclass
class ModelConfig:
    arch: str = "lsra"  # lsra (Lite Transformer) or transformer (baseline)
    embed_dim: int = 256
    ffn_dim: int = 256
    encoder_layers: int = 3
    decoder_layers: int = 3
    attention_heads: int = 4  # heads of the attention branch (lsra) or of every attention (transformer)
    cross_attention_heads: int | None = None  # defaults to attention_heads
    # LSRA convolution branch
    conv_type: str = "lightweight"  # lightweight or dynamic
    conv_glu: bool = True
    conv_heads: int | None = None  # kernel-sharing heads; defaults to attention_heads
    encoder_kernels: list[int] = field(default_factory=lambda: [3, 7, 15])
    decoder_kernels: list[int] = field(default_factory=lambda: [3, 7, 15])
    # shape of the block and regularisation
    pre_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    weight_dropout: float = 0.0  # DropConnect on the normalised convolution kernels
    share_embeddings: bool = True  # joint vocabulary: encoder, decoder and output share one matrix
    positions: str = "sinusoidal"  # sinusoidal (frozen) or learned
    max_positions: int = 256
    vocab_size: int = 0  # filled from the tokenizer; 0 means "not yet known"
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    # Per-layer widths, written by structured pruning (compress/structured.py). None: every layer has
    # the widths above. Head widths never change (pruning removes whole heads).
    encoder_heads: list[int] | None = None  # attention (branch) heads per encoder layer
    decoder_heads: list[int] | None = None  # self-attention (branch) heads per decoder layer
    cross_heads: list[int] | None = None  # encoder-decoder attention heads per decoder layer
    encoder_ffn: list[int] | None = None  # FFN hidden units per encoder layer
    decoder_ffn: list[int] | None = None
    encoder_conv: list[list[int]] | None = None  # LSRA: convolution-branch channels kept per kernel head
    decoder_conv: list[list[int]] | None = None
    # Sparse self-attention (lite/sparse/patterns.py): per layer, a list of head patterns. One layer
    # entry applies to every layer, one head entry to every head of the layer. None: dense.
    encoder_patterns: list[list[HeadPattern]] | None = None
    decoder_patterns: list[list[HeadPattern]] | None = None

    def pattern_row(self, stack: str, layer: int) -> list[HeadPattern] | None:
        """The head patterns written for a layer (one entry may stand for every layer), or None."""
        table = self.decoder_patterns if stack == "decoder" else self.encoder_patterns
        if not table:
            return None
        return table[layer] if len(table) > 1 else table[0]

    def head_patterns(self, stack: str, layer: int, heads: int) -> list[HeadPattern] | None:
        """The patterns of the `heads` self-attention heads of a layer, or None when it is dense."""
        row = self.pattern_row(stack, layer)
        if row is None:
            return None
        return list(row) * heads if len(row) == 1 else list(row)

    def layer_shape(self, stack: str, layer: int) -> "LayerShape":
        """The widths of encoder (stack="encoder") or decoder layer `layer`, pruned or not."""
        decoder = stack == "decoder"
        attn_width = self.embed_dim // 2 if self.arch == "lsra" else self.embed_dim
        cross_heads = self.cross_attention_heads or self.attention_heads
        conv_heads = self.conv_heads or self.attention_heads
        conv_width = self.embed_dim - self.embed_dim // 2

        def pick(values: list | None, default):
            return default if values is None else values[layer]

        heads = pick(self.decoder_heads if decoder else self.encoder_heads, self.attention_heads)
        return LayerShape(
            heads=heads,
            head_dim=attn_width // self.attention_heads,
            ffn=pick(self.decoder_ffn if decoder else self.encoder_ffn, self.ffn_dim),
            conv_channels=(
                None
                if self.arch != "lsra"
                else list(
                    pick(self.decoder_conv if decoder else self.encoder_conv, [conv_width // conv_heads] * conv_heads)
                )
            ),
            kernel=(self.decoder_kernels if decoder else self.encoder_kernels)[layer] if self.arch == "lsra" else 0,
            cross_heads=pick(self.cross_heads, cross_heads) if decoder else 0,
            cross_head_dim=self.embed_dim // cross_heads,
            patterns=self.head_patterns(stack, layer, heads),
            max_len=self.max_positions,
        )


@dataclass(frozen=True)
class LayerShape:
    """What one layer is built with (ModelConfig.layer_shape)."""

    heads: int  # self-attention heads (LSRA: of the attention branch)
    head_dim: int
    ffn: int
    conv_channels: list[int] | None  # LSRA: channels per kernel head of the convolution branch
    kernel: int  # LSRA: convolution kernel size
    cross_heads: int  # decoder only
    cross_head_dim: int
    patterns: list[HeadPattern] | None = None  # self-attention (branch) head patterns; None: dense
    max_len: int = 0  # the longest sequence (model.max_positions): learned block masks are sized by it

    @property
    def conv_width(self) -> int:
        return sum(self.conv_channels or [])


@dataclass
class TrainConfig:
    seed: int = 1
    threads: int = 2
    max_tokens: int = 2200  # target tokens per batch (sources pad to the longest in the batch)
    update_freq: int = 1  # gradient accumulation
    optimizer: str = "adam"
    lr: float = 1.5e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.0
    schedule: str = "inverse_sqrt"  # inverse_sqrt or cosine
    warmup_steps: int = 100
    warmup_init_lr: float = 1e-7
    min_lr: float = 1e-5  # cosine floor
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    max_steps: int = 100000
    max_minutes: float | None = None  # wall-clock limit; stops at the next step boundary
    max_epochs: int = 1000
    validate_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 5
    average_last: int = 1  # average the weights of the last N step checkpoints at the end
    patience: int = 0  # early stop after N validations without improvement (0: off)
    sar_weight: float = 0.0  # ERNIE-Sparse SAR: weight of the symmetric KL, sparse vs dense attention
    dist_timeout_s: float = 600  # several processes: a collective waiting longer than this ends the job


@dataclass
class DecodeConfig:
    beam: int = 1
    lenpen: float = 1.0
    max_len_a: float = 1.2  # max target length = a * source length + b
    max_len_b: int = 10
    batch_size: int = 64
    shortlist: bool = False  # score only the sentence's shortlist candidates (needs `lite shortlist RUN`)


@dataclass
class ShortlistConfig:
    """How `lite shortlist RUN` learns the vocabulary shortlist (lite/data/lexicon.py, lite/shortlist.py)."""

    frequent: int = 100  # the most frequent target tokens, always candidates
    per_source: int = 50  # per source token, its most likely target tokens under IBM model 1
    iterations: int = 5  # EM iterations of IBM model 1
    max_pairs: int | None = None  # training pairs used (None: all of the training split)


@dataclass
class BudgetConfig:
    """What a shippable model must meet; the budget report marks each artifact pass/fail with the margin.
    None means "no budget on this quantity"."""

    max_macs: int | None = None  # mult-adds, paper convention (30+30 tokens)
    max_size_mb: float | None = None  # file size on disk, MB = 1e6 bytes
    max_latency_ms: float | None = None  # per sentence, on each measured target
    min_bleu: float | None = None  # on the test split


@dataclass
class ParityThresholds:
    """What an exported artifact must meet against PyTorch on `export.parity_sentences` test sentences."""

    max_logit_diff: float  # largest |logit difference| over every teacher-forced step and vocabulary entry
    min_top1: float  # share of those steps whose argmax agrees
    max_bleu_drop: float  # BLEU of PyTorch greedy minus BLEU of the artifact's greedy, same sentences
    # greedy BLEU of the fp32 artifact of the same format and model.pt minus this artifact's, same
    # sentences: what shipping this precision instead of fp32 costs. None: not checked (the gate then
    # needs no fp32 artifact)
    max_bleu_drop_vs_fp32: float | None = None


@dataclass
class ParityConfig:
    """Thresholds per precision; int8 is allowed to move logits, not to change the translations much."""

    fp32: ParityThresholds = field(default_factory=lambda: ParityThresholds(1e-3, 0.995, 0.2))
    fp16: ParityThresholds = field(default_factory=lambda: ParityThresholds(0.25, 0.98, 0.5))
    dynamic_int8: ParityThresholds = field(default_factory=lambda: ParityThresholds(4.0, 0.9, 1.5))
    int8: ParityThresholds = field(default_factory=lambda: ParityThresholds(6.0, 0.85, 2.0))


@dataclass
class ExportConfig:
    """Static shapes of the exported graphs and the gates they pass (export/)."""

    formats: list[str] = field(default_factory=lambda: ["tflite", "onnx"])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "dynamic-int8", "int8"])
    max_src_len: int = 128  # longer sources are truncated (with a warning) by the runtime
    src_buckets: list[int] = field(default_factory=lambda: [32, 64])  # extra, shorter encoder signatures (TFLite)
    # with a shortlist, TFLite decoder steps without the output projection (decode_<B>_hidden): faster
    # shortlisted decoding, but each signature repeats the graph structure (default run, dynamic int8:
    # 7,998,736 bytes with them, 7,471,472 without)
    hidden_steps: bool = True
    max_target_len: int = 160  # self-attention cache slots: output tokens + 1
    parity_sentences: int = 100  # real test sentences decoded by PyTorch and by the artifact
    calibration_sentences: int = 200  # real training sentences for static int8
    pack: str = (
        "none"  # "none" or "xz": graph files stored xz-compressed (pruned zeros shrink on disk; same size in memory)
    )
    parity: ParityConfig = field(default_factory=ParityConfig)


@dataclass
class RunConfig:
    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    shortlist: ShortlistConfig = field(default_factory=ShortlistConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def validate(cfg: RunConfig, where: str) -> None:
    m = cfg.model
    checks = [
        (m.arch in ("lsra", "transformer"), "model.arch", "lsra or transformer"),
        (m.conv_type in ("lightweight", "dynamic"), "model.conv_type", "lightweight or dynamic"),
        (m.positions in ("sinusoidal", "learned"), "model.positions", "sinusoidal or learned"),
        (m.embed_dim % 2 == 0, "model.embed_dim", "an even width (LSRA splits it in half)"),
        (cfg.train.schedule in ("inverse_sqrt", "cosine"), "train.schedule", "inverse_sqrt or cosine"),
        (cfg.tokenizer.model_type in ("unigram", "bpe"), "tokenizer.model_type", "unigram or bpe"),
        (cfg.decode.beam >= 1, "decode.beam", ">= 1"),
        (cfg.shortlist.frequent >= 1, "shortlist.frequent", ">= 1"),
        (cfg.shortlist.per_source >= 1, "shortlist.per_source", ">= 1"),
        (cfg.shortlist.iterations >= 1, "shortlist.iterations", ">= 1"),
        (cfg.shortlist.max_pairs is None or cfg.shortlist.max_pairs >= 1, "shortlist.max_pairs", "null or >= 1"),
        (set(cfg.export.formats) <= set(FORMATS), "export.formats", f"a list from {FORMATS}"),
        (set(cfg.export.precisions) <= set(PRECISIONS), "export.precisions", f"a list from {PRECISIONS}"),
        (cfg.export.pack in ("none", "xz"), "export.pack", "none or xz"),
        (
            all(0 < b < cfg.export.max_src_len for b in cfg.export.src_buckets),
            "export.src_buckets",
            f"lengths between 1 and export.max_src_len - 1 ({cfg.export.max_src_len - 1})",
        ),
        (
            cfg.export.max_src_len <= m.max_positions,
            "export.max_src_len",
            f"<= model.max_positions ({m.max_positions})",
        ),
        (
            1 < cfg.export.max_target_len <= m.max_positions,
            "export.max_target_len",
            f"2..model.max_positions ({m.max_positions})",
        ),
        (cfg.export.parity_sentences >= 1, "export.parity_sentences", ">= 1"),
        (
            cfg.export.parity.fp32.max_bleu_drop_vs_fp32 is None,
            "export.parity.fp32.max_bleu_drop_vs_fp32",
            "null (fp32 is the reference it would compare with)",
        ),
    ]
    for precision in PRECISIONS:
        name = precision.replace("-", "_")
        limits: ParityThresholds = getattr(cfg.export.parity, name)
        checks += [
            (limits.max_logit_diff >= 0, f"export.parity.{name}.max_logit_diff", ">= 0"),
            (0 <= limits.min_top1 <= 1, f"export.parity.{name}.min_top1", "a share in [0, 1]"),
            (limits.max_bleu_drop >= 0, f"export.parity.{name}.max_bleu_drop", ">= 0 (BLEU points)"),
            (
                limits.max_bleu_drop_vs_fp32 is None or limits.max_bleu_drop_vs_fp32 >= 0,
                f"export.parity.{name}.max_bleu_drop_vs_fp32",
                "null or >= 0 (BLEU points)",
            ),
        ]
    if m.arch == "lsra":
        branch = m.embed_dim // 2
        checks += [
            (
                len(m.encoder_kernels) == m.encoder_layers,
                "model.encoder_kernels",
                f"{m.encoder_layers} kernel sizes (one per encoder layer)",
            ),
            (
                len(m.decoder_kernels) == m.decoder_layers,
                "model.decoder_kernels",
                f"{m.decoder_layers} kernel sizes (one per decoder layer)",
            ),
            (
                branch % m.attention_heads == 0,
                "model.attention_heads",
                f"a divisor of the attention branch width {branch}",
            ),
            (
                branch % (m.conv_heads or m.attention_heads) == 0,
                "model.conv_heads",
                f"a divisor of the convolution branch width {branch}",
            ),
        ]
    else:
        checks.append(
            (m.embed_dim % m.attention_heads == 0, "model.attention_heads", f"a divisor of embed_dim {m.embed_dim}")
        )
    checks.append(
        (
            m.embed_dim % (m.cross_attention_heads or m.attention_heads) == 0,
            "model.cross_attention_heads",
            f"a divisor of embed_dim {m.embed_dim}",
        )
    )
    for name in (
        "encoder_heads",
        "encoder_ffn",
        "encoder_conv",
        "decoder_heads",
        "cross_heads",
        "decoder_ffn",
        "decoder_conv",
    ):
        values = getattr(m, name)
        layers = m.encoder_layers if name.startswith("encoder") else m.decoder_layers
        if values is None:
            continue
        flat = [sum(v) for v in values] if name.endswith("conv") else values
        checks += [
            (len(values) == layers, f"model.{name}", f"{layers} entries (one per layer)"),
            (all(v >= 1 for v in flat), f"model.{name}", "positive widths"),
        ]
        if name.endswith("conv"):
            heads = m.conv_heads or m.attention_heads
            checks.append(
                (
                    m.arch == "lsra" and all(len(v) == heads for v in values),
                    f"model.{name}",
                    f"per layer, {heads} channel counts (one per convolution head; LSRA only)",
                )
            )
    for ok, fld, expected in checks:
        if not ok:
            raise ConfigError(f"{where}: {fld} must be {expected}")
    for stack in ("encoder", "decoder"):
        table = getattr(m, f"{stack}_patterns")
        if table is None:
            continue
        layers = getattr(m, f"{stack}_layers")
        if len(table) not in (1, layers):
            raise ConfigError(f"{where}: model.{stack}_patterns must have 1 or {layers} entries (one per layer)")
        for i in range(layers):
            heads = m.layer_shape(stack, i).heads
            row = m.pattern_row(stack, i)
            if len(row) not in (1, heads):
                raise ConfigError(f"{where}: model.{stack}_patterns[{i}] must have 1 or {heads} head patterns")
            for h, pattern in enumerate(row):
                problem = check_pattern(pattern, f"model.{stack}_patterns[{i}][{h}]")
                if problem:
                    raise ConfigError(f"{where}: {problem}")
            if any(p.representatives for p in row) and (stack == "decoder" or not runs_blockwise(row)):
                raise ConfigError(
                    f"{where}: model.{stack}_patterns[{i}]: representatives need an encoder layer whose "
                    "heads are all local/blocks with one block size (they run on the block kernel only)"
                )


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML of `path` ({} when empty); ConfigError naming the file if missing or not YAML."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML run config; raise ConfigError naming the file and field on any problem."""
    path = Path(path)
    cfg = from_dict(RunConfig, read_yaml(path, "config"), str(path))
    validate(cfg, str(path))
    return cfg


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def model_config_from_dict(data: dict) -> ModelConfig:
    return from_dict(ModelConfig, data, "model")
