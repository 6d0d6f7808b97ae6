"""Sparse attention: the block kernel computes exactly what the pattern's definition allows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model as sparse_model

from lite.sparse.block_attention import block_sparse_attention
from lite.sparse.patterns import HeadPattern, compile_layout, reference_mask


def dense_reference(q, k, v, masks: np.ndarray, key_padding_mask=None, fill=-1e4):
    """Masked dense attention over [H, n, n] boolean masks: the slow, obvious version."""
    allowed = torch.as_tensor(masks)[None]
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    scores = (q @ k.transpose(-1, -2)).masked_fill(~allowed, fill)
    return (torch.softmax(scores, -1) * allowed) @ v


PATTERNS = {
    "local": [HeadPattern(kind="local", window=8)] * 2,
    "local+global": [HeadPattern(kind="local", window=8, global_tokens=[0, 5])] * 2,
    "dilated": [HeadPattern(kind="local", window=4, dilation=2)] * 2,
    "random-blocks": [HeadPattern(kind="local", window=8, random_blocks=2, seed=3)] * 2,
    "no-diagonal": [HeadPattern(kind="local", window=8, diagonal=False, global_tokens=[2])] * 2,
    "blocks": [
        HeadPattern(kind="blocks", block=4, blocks=[[0], [0, 1], [1, 2, 5], [3], [0, 4], [2, 5, 6]]),
        HeadPattern(kind="blocks", block=4, blocks=[[1], [1], [2, 3], [3, 4], [4], [5, 9], [6]]),
    ],
    "mixed-heads": [
        HeadPattern(kind="local", window=8, global_tokens=[1]),
        HeadPattern(kind="local", window=4, dilation=2, random_blocks=1, block=4),
    ],
}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", list(PATTERNS))
@pytest.mark.parametrize("n", [37, 40])
def test_block_kernel_equals_masked_dense(name, causal, n):
    heads = PATTERNS[name]
    gen = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(2, len(heads), n, 16, generator=gen) for _ in range(3))
    pad = torch.zeros(2, n, dtype=torch.bool)
    pad[1, n - 6 :] = True  # the second sequence is shorter
    masks = np.stack([reference_mask(h, n, causal) for h in heads])
    layout = compile_layout(heads, n, causal)
    for key_padding_mask in (None, pad):
        want = dense_reference(q, k, v, masks, key_padding_mask)
        got = block_sparse_attention(q, k, v, layout, key_padding_mask)
        with torch.no_grad():  # inference: the softmax runs in place on the scores
            got_inference = block_sparse_attention(q, k, v, layout, key_padding_mask)
        assert (got - want).abs().max().item() < 1e-5, name
        assert (got_inference - want).abs().max().item() < 1e-5, name


def test_block_kernel_skips_blocks():
    """A local window of 8 at n=64 computes 3 key blocks of 4 per query block, not 16."""
    layout = compile_layout([HeadPattern(kind="local", window=8)], 64, causal=False)
    assert layout.block == 4 and layout.key_blocks.shape == (1, 16, 3)
    assert compile_layout([HeadPattern(kind="local", window=8)], 64, causal=True).key_blocks.shape == (1, 16, 2)


def test_reference_mask_definitions():
    local = reference_mask(HeadPattern(kind="local", window=4), 6, causal=False)
    assert local[3].tolist() == [False, True, True, True, True, True]  # |3 - j| <= 2
    dil = reference_mask(HeadPattern(kind="local", window=4, dilation=2), 8, causal=True)
    assert np.nonzero(dil[6])[0].tolist() == [2, 4, 6]
    glob = reference_mask(HeadPattern(kind="local", window=2, global_tokens=[0], diagonal=False), 5, causal=False)
    assert glob[0].tolist() == [False, True, True, True, True] and glob[:, 0].tolist() == [False] + [True] * 4


SPARSE_MODELS = {
    "lsra-local+global": dict(
        arch="lsra",
        encoder_patterns=[[HeadPattern(kind="local", window=4, global_tokens=[0])]],
        decoder_patterns=[[HeadPattern(kind="local", window=4, random_blocks=1, seed=1)]],
    ),
    "transformer-mixed": dict(
        arch="transformer",
        encoder_patterns=[
            [HeadPattern(kind="local", window=4, dilation=2, diagonal=False), HeadPattern()]
        ],  # a dense head: masked dense core
        decoder_patterns=[
            [HeadPattern(kind="local", window=6)],
            [HeadPattern(kind="blocks", block=2, blocks=[[0], [0, 1], [1, 2], [0, 3]])],
        ],
    ),
}


@pytest.mark.parametrize("name", list(SPARSE_MODELS))
def test_sparse_model_decodes_incrementally_like_the_full_pass(name):
    """Full pass: block kernel over the whole target; step by step: masked rows of the reference mask."""
    model = sparse_model(**SPARSE_MODELS[name])
    g = torch.Generator().manual_seed(1)
    src, prev = torch.randint(4, 60, (3, 11), generator=g), torch.randint(4, 60, (3, 9), generator=g)
    src[0, 7:] = 0
    full = model(src, prev)
    memory, pad = model.encode(src)
    cache: dict = {}
    steps = torch.cat([model.decode(prev[:, i : i + 1], memory, pad, cache) for i in range(prev.shape[1])], dim=1)
    assert (full - steps).abs().max().item() < 1e-5


def test_a_local_window_limits_what_a_token_sees():
    """Window 4 (2 keys each side) over 2 layers, convolution kernels reaching 1 and 2: a change at
    source position 10 reaches positions 6..10 and nothing before; with global token 0 it reaches 0."""
    local = [[HeadPattern(kind="local", window=4)]]
    src = torch.randint(4, 60, (1, 11), generator=torch.Generator().manual_seed(2))
    changed = src.clone()
    changed[0, 10] = 5 if src[0, 10] != 5 else 6
    model = sparse_model(arch="lsra", encoder_patterns=local)
    a, b = model.encode(src)[0][0], model.encode(changed)[0][0]
    assert torch.equal(a[:6], b[:6]) and not torch.equal(a[6:], b[6:])
    model = sparse_model(arch="lsra", encoder_patterns=[[HeadPattern(kind="local", window=4, global_tokens=[0])]])
    a, b = model.encode(src)[0][0], model.encode(changed)[0][0]
    assert not torch.equal(a[0], b[0])


def test_patterns_in_yaml_config(tmp_path):
    from lite.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text(
        "model:\n  attention_heads: 4\n  encoder_patterns:\n    - [{kind: local, window: 16, global_tokens: [0]}]\n"
    )
    cfg = load_config(path)
    shape = cfg.model.layer_shape("encoder", 2)
    assert [p.window for p in shape.patterns] == [16] * 4 and shape.patterns[0].global_tokens == [0]
    assert cfg.model.layer_shape("decoder", 0).patterns is None
    path.write_text("model:\n  encoder_patterns:\n    - [{kind: local, window: 1}]\n")
    with pytest.raises(ConfigError, match=r"model.encoder_patterns\[0\]\[0\].window must be >= 2"):
        load_config(path)
    path.write_text("model:\n  encoder_patterns:\n    - [{kind: local, widow: 8}]\n")
    with pytest.raises(ConfigError, match=r"model.encoder_patterns\[0\]\[0\]: unknown key\(s\) widow"):
        load_config(path)
    path.write_text(
        "model:\n  attention_heads: 4\n  encoder_patterns:\n    - [{kind: local, window: 8}, {kind: dense}]\n"
    )
    with pytest.raises(ConfigError, match=r"encoder_patterns\[0\] must have 1 or 4 head patterns"):
        load_config(path)


@pytest.mark.parametrize("name", ["local", "local+global", "dilated", "random-blocks", "blocks"])
def test_mac_count_is_what_the_kernel_multiplies(name):
    """computed_pairs * d * 2 (scores and values) == the matmul MACs torch's flop counter sees."""
    from torch.utils.flop_counter import FlopCounterMode

    from lite.sparse.patterns import computed_pairs

    heads, n, d = PATTERNS[name], 40, 16
    q, k, v = (torch.randn(1, len(heads), n, d) for _ in range(3))
    layout = compile_layout(heads, n, causal=False)
    with FlopCounterMode(display=False) as counter:
        block_sparse_attention(q, k, v, layout)
    assert counter.get_total_flops() // 2 == computed_pairs(heads, n, causal=False) * d * 2
    assert computed_pairs(heads, n, causal=False) < len(heads) * n * n  # and it is less than dense


def test_sparse_encoder_macs_grow_linearly():
    from lite.config import ModelConfig
    from lite.metrics.macs import count_macs

    cfg = ModelConfig(
        vocab_size=100, max_positions=4096, encoder_patterns=[[HeadPattern(kind="local", window=32, global_tokens=[0])]]
    )
    scores = [count_macs(cfg, n, 30)["layers"][0]["attn_scores"] for n in (512, 1024, 2048)]
    assert scores[1] - scores[0] == (scores[2] - scores[1]) // 2  # linear in n (a constant per token)
    dense = ModelConfig(vocab_size=100, max_positions=4096)
    assert count_macs(dense, 2048, 30)["layers"][0]["attn_scores"] > 20 * scores[2]


def test_representatives_equal_a_direct_computation():
    """ERNIE-Sparse window summaries: every query of a representatives head also sees, per block, the
    mean key/value of the block's real tokens; global query rows do not. Written out naively here."""
    heads = [
        HeadPattern(kind="local", window=8, global_tokens=[3], representatives=True),
        HeadPattern(kind="local", window=8),
    ]
    n, d, b = 37, 16, 4
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 2, n, d, generator=gen) for _ in range(3))
    pad = torch.zeros(2, n, dtype=torch.bool)
    pad[1, 25:] = True  # blocks 7 and 8 of the second sequence: part pads, all pads
    layout = compile_layout(heads, n, causal=False)
    assert layout.representatives == 10
    for key_padding_mask in (None, pad):
        got = block_sparse_attention(q, k, v, layout, key_padding_mask)
        for s in range(2):
            real = torch.ones(n, dtype=torch.bool) if key_padding_mask is None else ~key_padding_mask[s]
            for h, p in enumerate(heads):
                allowed = torch.as_tensor(reference_mask(p, n, causal=False)) & real[None, :]
                scores = (q[s, h] @ k[s, h].T).masked_fill(~allowed, -1e4)
                keys_v = v[s, h]
                if p.representatives:
                    blocks = [torch.arange(i, min(i + b, n)) for i in range(0, n, b)]
                    kept = [idx[real[idx]] for idx in blocks]
                    rep_k = torch.stack([k[s, h, i].mean(0) if len(i) else torch.zeros(d) for i in kept])
                    rep_v = torch.stack([v[s, h, i].mean(0) if len(i) else torch.zeros(d) for i in kept])
                    rep_ok = torch.tensor([len(i) > 0 for i in kept])[None, :].expand(n, -1).clone()
                    rep_ok[3] = False  # the global query row sees the tokens themselves
                    scores = torch.cat([scores, (q[s, h] @ rep_k.T).masked_fill(~rep_ok, -1e4)], dim=1)
                    allowed = torch.cat([allowed, rep_ok], dim=1)
                    keys_v = torch.cat([keys_v, rep_v])
                want = (torch.softmax(scores, -1) * allowed) @ keys_v
                assert (got[s, h] - want).abs().max().item() < 1e-5, (s, h)
