"""Learned attention patterns (DAM, learned neighbour degree) and SAR: they train, they binarise into
fixed patterns that compute exactly what the learned heads computed at eval, and SAR measures only
the topology."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from lite.sparse.learned import DAM_LOGIT_SCALE, LearnedCore, binarise, kept_share, learned_cores, sparsity_loss
from lite.sparse.patterns import HeadPattern
from lite.sparse.sar import dense_topology, sar_term, symmetric_kl

DAM = HeadPattern(kind="dam", block=4, penalty=1.0)
DEGREE = HeadPattern(kind="degree", window=6, penalty=1.0)


def batch(seed: int = 1, src_len: int = 23, tgt_len: int = 17):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 60, (3, src_len), generator=g)
    src[0, src_len - 5 :] = 0  # a padded source
    return src, torch.randint(4, 60, (3, tgt_len), generator=g)


def scramble(model) -> None:
    """Learned state as after training: some block gates closed, radii moved off their start."""
    g = torch.Generator().manual_seed(7)
    for core in learned_cores(model):
        for logits in core.dam_logits:  # logits ~ N(0, 2^2)
            logits.data = torch.randn(logits.shape, generator=g) * 2 / DAM_LOGIT_SCALE
        if core.radius is not None:  # radii 1.4 and 2.6 tokens
            core.radius.data = torch.tensor([1.4, 2.6])[: len(core.radius)] / core.radius_scale


@pytest.mark.parametrize("arch", ["lsra", "transformer"])
def test_binarised_model_computes_what_the_learned_one_did_at_eval(arch):
    model = tiny_model(arch=arch, encoder_patterns=[[DAM]], decoder_patterns=[[DAM, DEGREE], [DEGREE]])
    scramble(model)
    src, prev = batch()
    want = model(src, prev)
    fixed = binarise(model)
    assert not learned_cores(fixed)
    for layer in fixed.encoder:  # binarised DAM heads are block-structured: they run on the block kernel
        assert layer.mixer.attn.sparse.blockwise
    assert [p.kind for p in fixed.cfg.decoder_patterns[0]] == ["blocks", "local"]
    assert [p.window for p in fixed.cfg.decoder_patterns[1]] == [2, 6]  # radius round(1.4) = 1, round(2.6) = 3
    assert (fixed(src, prev) - want).abs().max().item() < 1e-5
    # the closed gates are really gone: a binarised DAM head keeps fewer than all of its blocks
    kept = kept_share(fixed.cfg, "encoder", 64, causal=False)
    assert all(0 < share < 1 for row in kept for share in row)


def test_dam_gate_is_a_relaxed_bernoulli_with_hard_eval():
    core = LearnedCore([HeadPattern(kind="dam", block=2, temperature=0.5)], max_len=8)
    core.dam_logits[0].data = torch.tensor([[3.0, -3.0, 0.5, -0.5]] * 4) / DAM_LOGIT_SCALE
    torch.manual_seed(0)
    soft = torch.stack([core.gate(0, 8, 8, causal=False, soft=True) for _ in range(400)]).mean(0)
    hard = core.gate(0, 8, 8, causal=False, soft=False)
    # E[sigmoid((l + logistic noise) / t)] with t < 1 sits between sigmoid(l) and the hard gate
    assert soft[0, 0] == 1 and hard[0, 0] == 1  # a query block always keeps its own block
    assert 0.9 < soft[2, 0] < 1 and soft[2, 2] == 1 and 0 < soft[0, 2] < 0.1
    assert hard[0].tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
    assert 0.5 < soft[0, 4] < 0.8 and 0.2 < soft[0, 6] < 0.5


def test_the_sparsity_penalty_prunes_keys_during_training():
    """With only the sparsity term, the optimizer closes DAM gates and shrinks the learned radius."""
    model = tiny_model(arch="lsra", encoder_patterns=[[DAM, DEGREE]]).train()
    src, prev = batch()
    before = kept_share(binarise(model).cfg, "encoder", 64, causal=False)
    optimizer = torch.optim.Adam([p for c in learned_cores(model) for p in c.parameters()], lr=0.1)
    terms = []
    for _ in range(5):
        model(src, prev)
        loss = sparsity_loss(model)
        terms.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = kept_share(binarise(model.eval()).cfg, "encoder", 64, causal=False)
    assert terms[-1] < terms[0]
    assert after[0][0] < before[0][0] and after[0][1] < before[0][1]
    assert model.encoder[0].mixer.attn.learned.radii()[0] < DEGREE.radius
    model.eval()
    model(src, prev)
    assert sparsity_loss(model) == 0.0  # the term exists in training only


def test_sar_is_zero_when_both_topologies_are_the_same():
    src, prev = batch()
    keep = prev.ne(0)
    dense = tiny_model(arch="lsra")
    assert sar_term(dense, dense(src, prev), lambda: dense(src, prev), keep).item() == 0.0
    # a window wider than the sequence is the dense topology too
    wide = tiny_model(arch="lsra", encoder_patterns=[[HeadPattern(kind="local", window=128)]])
    assert sar_term(wide, wide(src, prev), lambda: wide(src, prev), keep).item() < 1e-9
    narrow = tiny_model(arch="lsra", encoder_patterns=[[HeadPattern(kind="local", window=2)]])
    sparse_logits = narrow(src, prev)
    with dense_topology(narrow):
        dense_logits = narrow(src, prev)
    assert narrow.encoder[0].mixer.attn.dense_topology is False  # restored after the block
    sar = sar_term(narrow, sparse_logits, lambda: narrow(src, prev), keep)
    assert sar.item() > 1e-4
    assert sar.item() == pytest.approx(symmetric_kl(sparse_logits, dense_logits, keep).item(), rel=1e-6)


def test_symmetric_kl_value():
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, torch.log(torch.tensor(3.0))]])
    # p = (1/2, 1/2), q = (1/4, 3/4): KL(p||q) + KL(q||p) = sum (p - q) log(p / q)
    want = 0.25 * torch.log(torch.tensor(2.0)) - 0.25 * torch.log(torch.tensor(2 / 3))
    assert symmetric_kl(a, b).item() == pytest.approx(want.item(), rel=1e-6)


def test_learned_patterns_in_yaml_config(tmp_path):
    from lite.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text(
        "model:\n  encoder_patterns:\n    - [{kind: dam, block: 16, penalty: 0.1}]\n"
        "  decoder_patterns:\n    - [{kind: degree, window: 32, penalty: 0.1}]\ntrain:\n  sar_weight: 0.5\n"
    )
    cfg = load_config(path)
    assert cfg.train.sar_weight == 0.5 and cfg.model.layer_shape("encoder", 0).patterns[0].kind == "dam"
    for body, message in (
        ("[{kind: dam}]", r"encoder_patterns\[0\]\[0\].block must be >= 1 for a dam pattern"),
        ("[{kind: degree, window: 1}]", r"\.window must be >= 2 for a degree pattern"),
        ("[{kind: dam, block: 4, global_tokens: [0]}]", r"a dam head takes no global_tokens"),
        ("[{kind: degree, window: 8, temperature: 0}]", r"temperature > 0"),
    ):
        path.write_text(f"model:\n  encoder_patterns:\n    - {body}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_training_ships_the_binarised_model(tmp_path, small_corpus, small_tokenizer):
    """lite train with learned heads and SAR: model.pt holds fixed patterns, the summary their shares."""
    from test_train import prepared_run

    from lite.checkpoint import load_model
    from lite.train import train

    paths, cfg = prepared_run(tmp_path, "learned", small_corpus, small_tokenizer, max_steps=6, sar_weight=0.5)
    cfg.model.encoder_patterns = [[HeadPattern(kind="dam", block=8, penalty=0.5)]]
    cfg.model.decoder_patterns = [[HeadPattern(kind="degree", window=8, penalty=0.5)]]
    summary = train(cfg, paths, progress=False)
    model = load_model(paths.model)
    assert {p.kind for row in model.cfg.encoder_patterns for p in row} == {"blocks"}
    assert {p.kind for row in model.cfg.decoder_patterns for p in row} == {"local"}
    assert len(summary["encoder_kept_share"]) == 2 and all(0 < s <= 1 for r in summary["decoder_kept_share"] for s in r)
    records = [line for line in paths.metrics.read_text().splitlines() if '"event": "train"' in line]
    assert records  # and the training loss (with SAR and penalties) was finite
    assert all("NaN" not in r and "Infinity" not in r for r in records)
