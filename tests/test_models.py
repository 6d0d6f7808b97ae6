"""Model behaviour: causality, incremental decoding equals the full pass, beam 1 equals greedy."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import tiny_model as tiny

from lite.checkpoint import load, load_model, model_record, save_atomic
from lite.config import DecodeConfig
from lite.decode import beam_search, greedy
from lite.errors import ConfigError, RunFolderError
from lite.models.convolution import DynamicConv, LightweightConv
from lite.models.seq2seq import EncoderDecoder, count_parameters

VARIANTS = [
    dict(arch="lsra", conv_type="lightweight", conv_glu=True),
    dict(arch="lsra", conv_type="dynamic", conv_glu=True),
    dict(arch="lsra", conv_type="lightweight", conv_glu=False, pre_norm=True),
    dict(arch="transformer"),
]


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 60, (3, 9), generator=g)
    src[0, 6:] = 0  # a padded source
    prev = torch.randint(4, 60, (3, 8), generator=g)
    return src, prev


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_incremental_decoding_equals_full_pass(variant):
    model = tiny(**variant)
    src, prev = batch()
    full = model(src, prev)
    memory, pad = model.encode(src)
    cache: dict = {}
    steps = torch.cat([model.decode(prev[:, i : i + 1], memory, pad, cache) for i in range(prev.shape[1])], dim=1)
    assert (full - steps).abs().max().item() < 1e-5
    assert cache["step"] == prev.shape[1]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_decoder_never_sees_the_future(variant):
    model = tiny(**variant)
    src, prev = batch()
    changed = prev.clone()
    changed[:, 5] = (changed[:, 5] + 7) % 56 + 4
    a, b = model(src, prev), model(src, changed)
    assert torch.equal(a[:, :5], b[:, :5])
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-4  # and the change is visible from position 5 on


@pytest.mark.parametrize("conv", [LightweightConv, DynamicConv])
def test_causal_convolution_is_causal_and_matches_steps(conv):
    torch.manual_seed(0)
    layer = conv(8, 5, 2, causal=True).eval()
    x = torch.randn(2, 7, 8)
    y = layer(x)
    x2 = x.clone()
    x2[:, 4] += 1.0
    assert torch.equal(layer(x2)[:, :4], y[:, :4])
    padded = torch.cat([torch.zeros(2, 4, 8), x], dim=1)
    steps = torch.cat([layer.step(padded[:, t : t + 5]) for t in range(7)], dim=1)
    assert (steps - y).abs().max() < 1e-6


def test_encoder_convolution_is_centred():
    """A non-causal kernel of 3 mixes t-1, t, t+1 and nothing further away."""
    layer = LightweightConv(4, 3, 1, causal=False).eval()
    x = torch.zeros(1, 9, 4)
    x[0, 4] = 1.0
    nonzero = layer(x)[0].abs().sum(-1).nonzero().flatten().tolist()
    assert nonzero == [3, 4, 5]


def test_padding_does_not_change_encoder_output():
    model = tiny(arch="lsra")
    src, _ = batch()
    memory, _ = model.encode(src[:1, :6])
    memory_padded, _ = model.encode(src[:1])  # same sentence followed by 3 pads
    assert (memory - memory_padded[:, :6]).abs().max() < 1e-5


@pytest.mark.parametrize("variant", VARIANTS[:2] + VARIANTS[3:], ids=["lightweight", "dynamic", "transformer"])
def test_beam_one_equals_greedy(variant):
    model = tiny(**variant)
    src, _ = batch(3)
    cfg = DecodeConfig(beam=1, max_len_a=1.0, max_len_b=5)
    assert beam_search(model, src, cfg) == greedy(model, src, cfg)


def test_beam_search_scores_at_least_greedy():
    """With no length penalty the beam's best hypothesis is never less likely than greedy's."""
    model = tiny(arch="lsra")
    src, _ = batch(4)

    @torch.no_grad()
    def logprob(hyp: list[int], row: int) -> float:
        tokens = torch.tensor([[model.cfg.bos_id] + hyp + [model.cfg.eos_id]])
        lp = torch.log_softmax(model(src[row : row + 1], tokens[:, :-1]), -1)[0]
        return float(lp.gather(1, tokens[0, 1:, None]).sum())

    cfg = DecodeConfig(max_len_a=0.0, max_len_b=6, lenpen=0.0)
    g = greedy(model, src, cfg)
    b = beam_search(model, src, DecodeConfig(beam=4, max_len_a=0.0, max_len_b=6, lenpen=0.0))
    for row in range(src.shape[0]):
        assert logprob(b[row], row) >= logprob(g[row], row) - 1e-4


def test_checkpoint_loads_with_weights_only(tmp_path):
    model = tiny(arch="lsra", conv_type="dynamic")
    save_atomic(model_record(model), tmp_path / "m.pt")
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["model_config"]["conv_type"] == "dynamic"
    loaded = load_model(tmp_path / "m.pt")
    src, prev = batch()
    assert torch.equal(loaded(src, prev), model(src, prev))


def test_damaged_checkpoints_are_run_folder_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(RunFolderError, match=r"garbage\.pt: not a readable checkpoint"):
        load(garbage)
    model = tiny()
    save_atomic({"model": model.state_dict()}, tmp_path / "no-config.pt")
    with pytest.raises(RunFolderError, match=r"no-config\.pt: not a checkpoint of this pipeline \(no model_config\)"):
        load_model(tmp_path / "no-config.pt")
    record = model_record(model)
    record["model_config"]["embed_dim"] = 48
    save_atomic(record, tmp_path / "other-shape.pt")
    with pytest.raises(RunFolderError, match=r"other-shape\.pt: weights do not match the model config"):
        load_model(tmp_path / "other-shape.pt")


def test_bad_shapes_in_a_constructor_are_config_errors():
    with pytest.raises(ConfigError, match="model.vocab_size is not set"):
        EncoderDecoder(replace(tiny().cfg, vocab_size=0))
    with pytest.raises(ConfigError, match="channels 32 not divisible by heads 3"):
        LightweightConv(32, 3, 3, causal=False, weight_dropout=0.0)


def test_shared_embeddings_counted_once():
    model = tiny(arch="transformer")
    d, v = 32, 60
    assert count_parameters(model) - count_parameters(model, include_embeddings=False) == v * d
