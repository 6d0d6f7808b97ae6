"""ListOps generation under the LRA rules, and the sparse LSRA classifier trained on it."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from eval.listops import ClassifierTraining, macs_per_example, train_and_score
from lite.config import ModelConfig
from lite.data.listops import (
    NUM_CLASSES,
    VOCAB,
    ListOpsSpec,
    build_listops,
    depth,
    evaluate,
    read_split,
    sample,
    tokens,
)
from lite.errors import DataError
from lite.models.classifier import SequenceClassifier
from lite.sparse.learned import binarise, learned_cores
from lite.sparse.patterns import HeadPattern


def test_operators_follow_the_lra_definitions():
    assert evaluate(("[MIN", [4, 7, 2])) == 2 and evaluate(("[MAX", [4, 7, 2])) == 7
    assert evaluate(("[MED", [9, 1, 4])) == 4 and evaluate(("[MED", [1, 4, 9, 8])) == 6  # (4 + 8) // 2
    assert evaluate(("[SM", [9, 8, 7])) == 4  # 24 mod 10
    tree = ("[MAX", [2, 9, ("[MIN", [4, 7]), 0])
    assert " ".join(tokens(tree)) == "[MAX 2 9 [MIN 4 7 ] 0 ]" and evaluate(tree) == 9 and depth(tree) == 2


def test_generated_examples_respect_length_depth_and_labels():
    spec = ListOpsSpec()
    rng = random.Random(3)
    lengths, labels = [], set()
    for _ in range(60):
        toks, label = sample(rng, spec)
        lengths.append(len(toks))
        labels.add(label)
        assert spec.min_len <= len(toks) <= spec.max_len and 0 <= label < NUM_CLASSES
        assert set(toks) <= set(VOCAB) and toks.count("]") == sum(t.startswith("[") for t in toks)
        nesting = max_nesting = 0
        for t in toks:
            nesting += t.startswith("[") - (t == "]")
            max_nesting = max(max_nesting, nesting)
        assert max_nesting <= spec.max_depth
    assert len(labels) >= 6 and max(lengths) - min(lengths) > 300


def test_splits_are_cached_and_bad_lines_are_named(tmp_path):
    spec = ListOpsSpec(min_len=20, max_len=60, train=30, test=10, seed=5)
    root = build_listops(tmp_path / "lo", spec, progress=False)
    first = (root / "train.tsv").read_text()
    assert len(first.splitlines()) == 30
    build_listops(root, spec, progress=False)
    assert (root / "train.tsv").read_text() == first  # reused, not regenerated
    examples = read_split(root / "test.tsv")
    assert len(examples) == 10 and all(x[0] == VOCAB.index("<cls>") for x, _ in examples)
    (root / "bad.tsv").write_text("[MAX 1 2 ]\t3\n[MAX 1 X ]\t2\n")
    with pytest.raises(DataError, match=r"bad.tsv:2: expected"):
        read_split(root / "bad.tsv")


BASE = ModelConfig(
    arch="lsra",
    embed_dim=32,
    ffn_dim=64,
    encoder_layers=2,
    decoder_layers=0,
    attention_heads=2,
    encoder_kernels=[3, 7],
    decoder_kernels=[],
    max_positions=128,
    vocab_size=len(VOCAB),
    pad_id=0,
    dropout=0.0,
)


def test_local_global_classifier_computes_fewer_macs():
    """The flop counter sees exactly the pairs the block kernel computes: per layer, scores + values of
    2 heads of width 8 (attention branch 16 = half of 32), dense 101 x 101 pairs per head."""
    from lite.sparse.patterns import computed_pairs

    examples = [([1] + [6 + i % 10 for i in range(100)], 0)]
    local = HeadPattern(kind="local", window=16, global_tokens=[0])
    dense = macs_per_example(SequenceClassifier(BASE, NUM_CLASSES), examples)
    sparse = macs_per_example(SequenceClassifier(replace(BASE, encoder_patterns=[[local]]), NUM_CLASSES), examples)
    pairs = computed_pairs([local] * 2, 101, causal=False)
    assert dense - sparse == 2 * 2 * 8 * (2 * 101 * 101 - pairs) and pairs < 0.3 * 2 * 101 * 101


def test_learned_classifier_binarises_to_the_same_outputs():
    torch.manual_seed(0)
    model = SequenceClassifier(
        replace(BASE, encoder_patterns=[[HeadPattern(kind="dam", block=8), HeadPattern(kind="degree", window=6)]]),
        NUM_CLASSES,
    )
    for core in learned_cores(model):
        core.dam_logits[0].data.normal_(0, 0.2)
    tokens = torch.randint(2, len(VOCAB), (3, 50))
    tokens[0, 40:] = 0
    model.eval()
    fixed = binarise(model)
    assert isinstance(fixed, SequenceClassifier) and not learned_cores(fixed)
    assert (fixed(tokens) - model(tokens)).abs().max().item() < 1e-5


def test_a_short_budget_learns_short_listops(tmp_path):
    """Eight epochs of expressions of 10-30 tokens: above the majority class (the loop and the scoring work)."""
    spec = ListOpsSpec(min_len=10, max_len=30, max_depth=3, train=3000, test=300, seed=2)
    root = build_listops(tmp_path / "short", spec, progress=False)
    train, test = read_split(root / "train.tsv"), read_split(root / "test.tsv")
    cfg = replace(BASE, encoder_patterns=[[HeadPattern(kind="local", window=8, global_tokens=[0])]])
    result = train_and_score(
        cfg, train, test, ClassifierTraining(examples=24000, max_tokens=2000, lr=3e-3), NUM_CLASSES, progress=False
    )
    assert result["test_accuracy"] > result["majority_class_accuracy"] + 0.1
    assert 0 < result["mean_kept_share"] < 1 and result["examples_seen"] >= 24000
    assert result["stopped_by"] == "examples"
