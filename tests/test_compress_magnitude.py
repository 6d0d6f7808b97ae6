"""Fine-grained magnitude pruning (compress/magnitude.py) on the trained smoke model: the per-layer
sensitivity sweep, choosing sparsities under a budget, exact masks, and masks surviving optimizer steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.magnitude import (
    SensitivityConfig,
    apply_masks,
    choose_sparsities,
    magnitude_masks,
    prunable_layers,
    sensitivity_sweep,
    sparsity_report,
)
from lite.batching import collate, encode_pairs
from lite.checkpoint import load_model
from lite.config import load_config
from lite.data.corpus import load_pairs
from lite.run import RunPaths
from lite.tokenizer import Tokenizer
from lite.train import batch_loss


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a busy 2-core machine a second thread spin-waits, and the many tiny
    evaluations of a sweep ran 10-40x slower with two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smoke(smoke_run):
    """(model loader, tokenizer, encoded valid examples) of the smoke run."""
    tokenizer = Tokenizer(RunPaths(smoke_run).tokenizer)
    pairs, _ = load_pairs(load_config(smoke_run / "config.yaml").data, "valid")
    model = load_model(smoke_run / "model.pt")
    examples, _ = encode_pairs(pairs, tokenizer, model.cfg.max_positions)
    return (lambda: load_model(smoke_run / "model.pt")), tokenizer, examples


@pytest.fixture(scope="module")
def sweep(smoke):
    load, tokenizer, examples = smoke
    model = load()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = SensitivityConfig(sparsities=[0.0, 0.5, 0.9], valid_sentences=40)
    result = sensitivity_sweep(model, examples, tokenizer, cfg, progress=False)
    return model, before, result


def test_prunable_layers_are_the_block_linears_and_the_tied_embedding_once(smoke):
    model = smoke[0]()
    linears = [m for stack in (model.encoder, model.decoder) for m in stack.modules() if isinstance(m, nn.Linear)]
    layers = prunable_layers(model)
    assert len(layers) == len(linears) + 1
    assert {id(p) for p in layers.values()} == {id(m.weight) for m in linears} | {id(model.output.weight)}
    assert layers["embedding"] is model.output.weight is model.src_embed.tokens.weight
    assert "encoder.0.mixer.attn.q_proj" in layers and "decoder.1.cross.out_proj" in layers
    assert all(p.dim() == 2 for p in layers.values())  # no biases, LayerNorms or conv kernels
    assert "embedding" not in prunable_layers(model, include_embeddings=False)


def test_sweep_covers_every_layer_and_sparsity_and_restores_weights(sweep):
    model, before, result = sweep
    assert result["metric"] == "loss" and result["sparsities"] == [0.0, 0.5, 0.9]
    assert [r["name"] for r in result["layers"]] == list(prunable_layers(model))
    for row in result["layers"]:
        assert set(row["values"]) == set(row["drop"]) == {"0.0", "0.5", "0.9"}
        assert row["params"] == prunable_layers(model)[row["name"]].numel()
        # nothing pruned: the very same network scored again, so exactly no drop: the sweep is
        # deterministic and every earlier point's weights were restored exactly
        assert row["drop"]["0.0"] == 0.0 and row["values"]["0.0"] == result["baseline"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not model.training  # left in eval mode, as it was loaded


def test_sweep_drops_grow_with_sparsity_on_big_layers(sweep):
    _, _, result = sweep
    rows = {r["name"]: r for r in result["layers"]}
    emb = rows["embedding"]["drop"]
    assert 0.0 < emb["0.5"] < emb["0.9"]  # the shared vocabulary matrix is the most sensitive layer
    # insensitive layers wobble by a few 1e-3 nats on 40 sentences: allow that much noise
    big = sorted(result["layers"], key=lambda r: r["params"], reverse=True)[:10]
    monotone = sum(
        r["drop"]["0.0"] <= r["drop"]["0.5"] + 5e-3 and r["drop"]["0.5"] <= r["drop"]["0.9"] + 5e-3 for r in big
    )
    assert monotone >= 8, [(r["name"], r["drop"]) for r in big]
    mean = {s: sum(r["drop"][s] for r in result["layers"]) / len(result["layers"]) for s in ("0.5", "0.9")}
    assert 0.0 < mean["0.5"] < mean["0.9"]


def test_bleu_sweep_drop_is_baseline_minus_value(smoke):
    load, tokenizer, examples = smoke
    cfg = SensitivityConfig(sparsities=[0.9], valid_sentences=8, metric="bleu", include_embeddings=False)
    model = load()
    result = sensitivity_sweep(model, examples, tokenizer, cfg, progress=False)
    assert result["metric"] == "bleu" and len(result["layers"]) == len(prunable_layers(model)) - 1
    for row in result["layers"]:
        assert 0.0 <= row["values"]["0.9"] <= 100.0
        assert row["drop"]["0.9"] == pytest.approx(result["baseline"] - row["values"]["0.9"])


def test_choose_sparsities_takes_the_largest_within_budget():
    sweep = {
        "metric": "loss",
        "baseline": 2.0,
        "sparsities": [0.3, 0.5, 0.7, 0.9],
        "layers": [
            {"name": "robust", "params": 10, "drop": {"0.3": -0.01, "0.5": 0.0, "0.7": 0.01, "0.9": 0.015}},
            {"name": "middle", "params": 10, "drop": {"0.3": 0.001, "0.5": 0.02, "0.7": 0.03, "0.9": 0.5}},
            {"name": "fragile", "params": 10, "drop": {"0.3": 0.05, "0.5": 0.1, "0.7": 0.2, "0.9": 1.0}},
        ],
    }
    assert choose_sparsities(sweep, 0.02) == {"robust": 0.9, "middle": 0.5, "fragile": 0.0}  # == budget counts
    assert choose_sparsities(sweep, 0.0) == {"robust": 0.5, "middle": 0.0, "fragile": 0.0}
    with pytest.raises(ValueError, match="max_drop"):
        choose_sparsities(sweep, -0.1)
    with pytest.raises(ValueError, match="sweep"):
        choose_sparsities({"layers": None}, 0.1)


def test_magnitude_masks_hit_the_exact_count_and_keep_the_largest(smoke):
    model = smoke[0]()
    layers = prunable_layers(model)
    wanted = {
        "embedding": 0.33,
        "encoder.0.ffn.fc1": 0.5,
        "decoder.1.mixer.conv.input.gate": 0.77,
        "decoder.0.cross.q_proj": 0.0,
    }
    masks = magnitude_masks(model, wanted)
    assert set(masks) == set(wanted)
    for name, s in wanted.items():
        w, keep = layers[name].detach(), masks[name]
        assert keep.dtype == torch.bool and keep.shape == w.shape
        assert int((~keep).sum()) == round(s * w.numel())
        if s:
            assert w[keep].abs().min() >= w[~keep].abs().max()
    with pytest.raises(ValueError, match="encoder.9.nothing"):
        magnitude_masks(model, {"encoder.9.nothing": 0.5})
    with pytest.raises(ValueError, match="sparsit"):
        magnitude_masks(model, {"embedding": 1.0})


def test_masks_hold_through_optimizer_steps_with_the_tied_embedding_shared(smoke):
    load, _, examples = smoke
    model = load().train()
    masks = magnitude_masks(model, {name: 0.6 for name in prunable_layers(model)})
    apply_masks(model, masks)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = collate(examples, list(range(16)), model.cfg.pad_id, model.cfg.bos_id)
    for _ in range(3):  # what compress.finetune's after_step hook does, by hand
        optimizer.zero_grad()
        loss, _ = batch_loss(model, batch, 0.1)
        (loss / batch.ntokens).backward()
        optimizer.step()
        emb = prunable_layers(model)["embedding"]
        assert bool(emb.detach()[~masks["embedding"]].ne(0).any())  # the step moved pruned weights off zero
        kept = {name: p.detach()[masks[name]].clone() for name, p in prunable_layers(model).items()}
        apply_masks(model, masks)
        for name, p in prunable_layers(model).items():
            assert bool(p.detach()[~masks[name]].eq(0).all()), name
            assert torch.equal(p.detach()[masks[name]], kept[name]), name  # kept weights untouched
    assert model.output.weight is model.tgt_embed.tokens.weight is model.src_embed.tokens.weight
    report = sparsity_report(model, masks)
    assert [r["name"] for r in report["layers"]] == list(masks)
    for row in report["layers"]:  # at least the masked fraction; a kept weight could be zero by chance
        assert row["zeros"] >= round(0.6 * row["params"]) and row["sparsity"] == row["zeros"] / row["params"]
    assert report["total_params"] == sum(m.numel() for m in masks.values())
    assert report["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert 0 < report["model_sparsity"] < report["sparsity"]
    with pytest.raises(ValueError, match="masks\\['embedding'\\]"):
        apply_masks(model, {"embedding": masks["embedding"][:3]})


def test_bad_sensitivity_config_names_the_field():
    for kwargs, field in (
        ({"metric": "chrf"}, "metric"),
        ({"sparsities": [0.5, 1.0]}, "sparsities"),
        ({"sparsities": []}, "sparsities"),
        ({"valid_sentences": 0}, "valid_sentences"),
        ({"max_drop": -1.0}, "max_drop"),
    ):
        with pytest.raises(ValueError, match=field):
            SensitivityConfig(**kwargs)
