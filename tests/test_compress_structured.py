"""Structured pruning through torch-pruning: exact on known-dead structures, loads with weights_only=True,
exports through the parity gate with the per-layer widths."""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from compress.structured import StructuredConfig, prune_structured
from lite import checkpoint
from lite.batching import collate, encode_pairs
from lite.checkpoint import load_model
from lite.config import ConfigError, load_config, to_dict
from lite.data.corpus import load_pairs
from lite.metrics.macs import count_macs
from lite.models.seq2seq import EncoderDecoder
from lite.run import RunPaths
from lite.tokenizer import Tokenizer

DEAD_CONV = [0, 1, 2, 3, 4, 5, 16, 17]  # 6 channels of head 0, 2 of head 1: unequal heads after pruning


def _batch(run: Path, n: int = 12):
    cfg = load_config(run / "config.yaml")
    pairs, _ = load_pairs(cfg.data, "valid")
    examples, _ = encode_pairs(pairs[:n], Tokenizer(run / "tokenizer" / "spm.model"), cfg.model.max_positions)
    return collate(examples, list(range(len(examples))), cfg.model.pad_id, cfg.model.bos_id), examples


@torch.no_grad()
def _kill(model: EncoderDecoder) -> EncoderDecoder:
    """Zero a quarter of every FFN, the second head of every attention and DEAD_CONV channels of every
    conv branch: these structures then contribute nothing, so removing them must not change the output."""
    model = copy.deepcopy(model)
    for block in list(model.encoder) + list(model.decoder):
        ffn = block.ffn
        dead = torch.arange(0, ffn.fc1.out_features, 4)
        ffn.fc1.weight[dead] = 0
        ffn.fc1.bias[dead] = 0
        ffn.fc2.weight[:, dead] = 0
        for attn in [block.mixer.attn] + ([block.cross] if hasattr(block, "cross") else []):
            head = slice(attn.head_dim, 2 * attn.head_dim)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                proj.weight[head] = 0
                proj.bias[head] = 0
            attn.out_proj.weight[:, head] = 0
        branch = block.mixer.conv
        for lin in (branch.input.value, branch.input.gate):
            lin.weight[DEAD_CONV] = 0
            lin.bias[DEAD_CONV] = 0
        branch.output.weight[:, DEAD_CONV] = 0
    return model


def test_pruning_removes_exactly_the_dead_structures(smoke_run: Path):
    model = _kill(load_model(smoke_run / "model.pt"))
    batch, examples = _batch(smoke_run)
    with torch.no_grad():
        reference = model(batch.src, batch.prev)
    cfg = StructuredConfig(heads=0.5, ffn=0.25, conv=0.25, importance="magnitude")
    pruned, records = prune_structured(copy.deepcopy(model), cfg, examples, log=lambda _: None)
    c = pruned.cfg
    assert c.encoder_heads == [1, 1] and c.decoder_heads == [1, 1] and c.cross_heads == [1, 1]
    assert c.encoder_ffn == [96, 96] and c.decoder_ffn == [96, 96]
    assert c.encoder_conv == [[10, 14], [10, 14]] and c.decoder_conv == [[10, 14], [10, 14]]
    with torch.no_grad():
        out = pruned(batch.src, batch.prev)
    assert out.shape == reference.shape
    assert (out - reference).abs().max().item() < 1e-4
    assert records[0]["params_after"] < records[0]["params_before"]
    macs = count_macs(c)["macs"]
    assert macs < count_macs(model.cfg)["macs"]


def test_pruned_model_saves_as_config_and_weights(smoke_run: Path, tmp_path: Path):
    model = load_model(smoke_run / "model.pt")
    batch, examples = _batch(smoke_run)
    pruned, _ = prune_structured(
        model,
        StructuredConfig(heads=0.5, ffn=0.5, conv=0.5, importance="taylor", taylor_batches=2),
        examples,
        log=lambda _: None,
    )
    path = tmp_path / "model.pt"
    checkpoint.save_atomic(checkpoint.model_record(pruned), path)
    torch.load(path, weights_only=True)  # plain data only
    loaded = load_model(path)
    assert loaded.cfg.encoder_ffn == [64, 64]
    with torch.no_grad():
        assert torch.equal(loaded(batch.src, batch.prev), pruned(batch.src, batch.prev))


def test_iterative_steps_call_finetune_between(smoke_run: Path):
    model = load_model(smoke_run / "model.pt")
    _, examples = _batch(smoke_run)
    seen = []
    pruned, records = prune_structured(
        model,
        StructuredConfig(heads=0.0, ffn=0.5, conv=0.0, iterative_steps=2),
        examples,
        finetune=lambda m, step: seen.append((step, m.encoder[0].ffn.fc1.out_features)),
        log=lambda _: None,
    )
    assert seen == [(1, 96), (2, 64)]
    assert [r["params_after"] for r in records] == sorted((r["params_after"] for r in records), reverse=True)
    assert pruned.cfg.encoder_ffn == [64, 64]


def test_pruned_model_exports_through_the_parity_gate(smoke_run: Path, tmp_path: Path):
    from export.stage import export_run

    run = tmp_path / "pruned"
    run.mkdir()
    shutil.copytree(smoke_run / "tokenizer", run / "tokenizer")
    cfg = load_config(smoke_run / "config.yaml")
    _, examples = _batch(smoke_run)
    pruned, _ = prune_structured(
        load_model(smoke_run / "model.pt"),
        StructuredConfig(heads=0.5, ffn=0.5, conv=0.25),
        examples,
        log=lambda _: None,
    )
    checkpoint.save_atomic(checkpoint.model_record(pruned), run / "model.pt")
    (run / "config.yaml").write_text(__import__("yaml").safe_dump(to_dict(dataclasses.replace(cfg, model=pruned.cfg))))
    manifests = export_run(
        load_config(run / "config.yaml"),
        RunPaths(run),
        ["tflite", "onnx"],
        ["fp32"],
        progress=False,
        log=lambda *_: None,
    )
    for manifest in manifests:
        # the exported graph's MACs equal the analytic count of the pruned widths (checked in export) ...
        assert manifest.macs == count_macs(pruned.cfg)["macs"]
        # ... and the artifact matches PyTorch
        assert manifest.parity["top1"] >= 0.995
        assert manifest.parity["max_logit_diff"] < 1e-3


def test_bad_widths_in_config_are_named(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  encoder_layers: 2\n  encoder_kernels: [3, 7]\n  encoder_ffn: [64]\n")
    with pytest.raises(ConfigError, match="model.encoder_ffn"):
        load_config(bad)
    bad.write_text("model:\n  encoder_layers: 1\n  encoder_kernels: [3]\n  encoder_conv: [[10, 0, 2]]\n")
    with pytest.raises(ConfigError, match="model.encoder_conv"):
        load_config(bad)


def test_dynamic_convolution_channels_are_refused(smoke_run: Path):
    cfg = dataclasses.replace(load_model(smoke_run / "model.pt").cfg, conv_type="dynamic")
    with pytest.raises(ValueError, match="structured.conv"):
        prune_structured(EncoderDecoder(cfg), StructuredConfig(conv=0.25), [], log=lambda _: None)


def test_head_pruning_of_sparse_attention_is_refused():
    from conftest import tiny_model

    from lite.sparse.patterns import HeadPattern

    model = tiny_model(encoder_patterns=[[HeadPattern(kind="local", window=4)]])
    with pytest.raises(ValueError, match="structured.heads: head pruning does not support sparse attention"):
        prune_structured(model, StructuredConfig(heads=0.5), [], log=lambda _: None)
