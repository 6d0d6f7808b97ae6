"""Analytic MACs: exact hand counts on tiny configs, the paper's published figures, budget fitting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval.fit import fit, parse_count, parse_layers
from lite.config import ModelConfig, load_config
from lite.metrics.macs import count_macs, model_summary

ROOT = Path(__file__).resolve().parents[1]


def test_transformer_by_hand():
    cfg = ModelConfig(arch="transformer", embed_dim=4, ffn_dim=8, encoder_layers=1, decoder_layers=1, attention_heads=1)
    # encoder, 2 tokens: q,k,v,out 4 x (2*4*4) = 128; scores 2*2*4 = 16; values 16; FFN 2 * 2*4*8 = 128
    # decoder, 3 tokens: self q,k,v,out 4 x (3*4*4) = 192; scores/values 3*3*4 = 36 each;
    #   cross q,out 2 x (3*4*4) = 96 + k,v over the 2 source tokens 2 x (2*4*4) = 64; scores/values 3*2*4 = 24 each;
    #   FFN 2 * 3*4*8 = 192
    got = count_macs(cfg, src_len=2, tgt_len=3)
    assert got["encoder"] == 128 + 16 + 16 + 128 == 288
    assert got["decoder"] == 192 + 36 + 36 + 96 + 64 + 24 + 24 + 192 == 664
    assert got["macs"] == 952
    assert got["layers"][1]["cross_proj"] == 160


def test_lsra_lightweight_glu_by_hand():
    cfg = ModelConfig(
        arch="lsra",
        embed_dim=8,
        ffn_dim=8,
        encoder_layers=1,
        decoder_layers=1,
        attention_heads=2,
        conv_type="lightweight",
        conv_glu=True,
        encoder_kernels=[3],
        decoder_kernels=[5],
    )
    # branches are 4 wide. encoder, 2 tokens: attention 4 x (2*4*4) + 2 x (2*2*4) = 160;
    #   GLU value+gate 2 x (2*4*4) = 64, conv 2*3*4 = 24, out Linear 2*4*4 = 32; FFN 2 * 2*8*8 = 256
    # decoder, 3 tokens: attention 4 x (3*4*4) + 2 x (3*3*4) = 264; GLU 2 x (3*4*4) = 96, conv 3*5*4 = 60,
    #   out 3*4*4 = 48; cross (full width 8) 2 x (3*8*8) + 2 x (2*8*8) + 2 x (3*2*8) = 736; FFN 2 * 3*8*8 = 384
    got = count_macs(cfg, src_len=2, tgt_len=3)
    assert got["encoder"] == 160 + 64 + 24 + 32 + 256 == 536
    assert got["decoder"] == 264 + 96 + 60 + 48 + 736 + 384 == 1588
    assert got["layers"][0]["conv"] == 24 and got["layers"][1]["glu"] == 96


def test_lsra_dynamic_without_glu_by_hand():
    cfg = ModelConfig(
        arch="lsra",
        embed_dim=8,
        ffn_dim=8,
        encoder_layers=1,
        decoder_layers=1,
        attention_heads=2,
        conv_type="dynamic",
        conv_glu=False,
        encoder_kernels=[3],
        decoder_kernels=[5],
    )
    # the GLU becomes one Linear (2*4*4 = 32 / 3*4*4 = 48) and the kernels are predicted:
    #   encoder 2 tokens * 4 channels * 2 heads * 3 taps = 48, decoder 3 * 4 * 2 * 5 = 120
    got = count_macs(cfg, src_len=2, tgt_len=3)
    assert got["layers"][0]["conv_in"] == 32 and got["layers"][0]["conv_kernel"] == 48
    assert got["encoder"] == 160 + 32 + 48 + 24 + 32 + 256 == 552
    assert got["decoder"] == 264 + 48 + 120 + 60 + 48 + 736 + 384 == 1660


# Lite Transformer (Wu et al. 2020), Table 3, WMT'14 En-Fr: (MACs in millions, params without embeddings in millions)
PAPER = {
    "wmt14-en-fr-transformer-128": (87, 2.8),
    "wmt14-en-fr-lsra-200": (90, 2.9),
    "wmt14-en-fr-lsra-408": (360, 11.7),
    "wmt14-en-fr-lsra-496": (527, 17.3),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_wmt_figures(name):
    summary = model_summary(load_config(ROOT / "configs/paper" / f"{name}.yaml").model)
    macs_m, params_m = PAPER[name]
    # the paper prints whole millions; our counts sit 0.2-0.7% above the printed LSRA figures
    # (90.66M vs 90M, 360.61M vs 360M, 528.75M vs 527M) with the parameter counts exact: within 1%,
    # the agreement target the cross-checks use
    assert abs(summary["macs"] / 1e6 - macs_m) / macs_m < 0.01
    assert round(summary["params_no_embed"] / 1e6, 1) == params_m


def test_default_configs_have_equal_macs():
    lsra = count_macs(load_config(ROOT / "configs/default.yaml").model)["macs"]
    transformer = count_macs(load_config(ROOT / "configs/default-transformer.yaml").model)["macs"]
    assert abs(lsra - transformer) / transformer < 0.05


@pytest.mark.parametrize("family", ["lsra", "transformer"])
@pytest.mark.parametrize("budget", ["100M", "300M", "500M"])
def test_fit_is_closest_under_budget(family, budget):
    limit = parse_count(budget)
    cfg, macs = fit(family, limit)
    assert macs == count_macs(cfg)["macs"] <= limit
    step = 8 if family == "lsra" else 4
    wider = fit(family, 10 * limit)[0].__class__(
        **{
            **cfg.__dict__,
            "embed_dim": cfg.embed_dim + step,
            "ffn_dim": (cfg.embed_dim + step) * (1 if family == "lsra" else 4),
        }
    )
    assert count_macs(wider)["macs"] > limit  # the next width up would not fit
    assert macs > 0.9 * limit


def test_fit_parsing_and_errors():
    assert parse_count("1.5G") == 1_500_000_000 and parse_count("250k") == 250_000
    assert parse_layers("6+6") == (6, 6) and parse_layers("3+2") == (3, 2)
    with pytest.raises(ValueError, match="--macs"):
        parse_count("lots")
    with pytest.raises(ValueError, match="below the smallest"):
        fit("lsra", 1000)


def test_macs_and_fit_commands(tmp_path):
    def run(*a):
        return subprocess.run([sys.executable, "-m", "lite", *a], capture_output=True, text=True, cwd=ROOT)

    done = run("macs", "--config", "configs/paper/wmt14-en-fr-lsra-200.yaml", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["macs"] == count_macs(load_config(ROOT / "configs/paper/wmt14-en-fr-lsra-200.yaml").model)["macs"]
    assert {"attn_proj", "attn_scores", "attn_values", "glu", "conv_kernel", "conv", "ffn", "cross_proj"} <= set(
        data["layers"][6]
    )
    out = tmp_path / "fit.yaml"
    done = run("fit", "--family", "lsra", "--macs", "100M", "--out", str(out))
    assert done.returncode == 0, done.stderr
    cfg = load_config(out)  # the written YAML is a loadable config
    assert cfg.model.embed_dim == 208 and count_macs(cfg.model)["macs"] <= 100_000_000
    done = run("fit", "--family", "lsra", "--macs", "many")
    assert done.returncode == 2 and "--macs" in done.stderr
