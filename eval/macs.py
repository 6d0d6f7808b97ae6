"""Analytic MAC count under the Lite Transformer convention (shared/DESIGN.md):

mult-adds of one forward pass with a 30-token source and a 30-token target, encoder plus
decoder, excluding embedding lookups and the output (vocabulary) projection; attention score
and value matmuls included; convolutions counted as T*K*C. Elementwise work (softmax, GLU
product, LayerNorm, residuals) is not counted.
"""
from __future__ import annotations

from lite.config import ModelConfig


def _attention(t_q: int, t_k: int, d_model: int, d_kv: int, width: int) -> int:
    """q/out projections over t_q, k/v projections over t_k, scores and weighted values."""
    return t_q * d_model * width * 2 + t_k * d_kv * width * 2 + 2 * t_q * t_k * width


def _conv_branch(t: int, width: int, kernel: int, cfg: ModelConfig) -> int:
    heads = cfg.conv_heads or cfg.attention_heads
    macs = t * width * width * (2 if cfg.conv_glu else 1)  # input Linear, or GLU value + gate
    if cfg.conv_type == "dynamic":
        macs += t * width * heads * kernel  # kernel prediction
    macs += t * kernel * width  # depthwise convolution
    return macs + t * width * width  # output Linear


def _mixer(t: int, layer: int, causal: bool, cfg: ModelConfig) -> dict[str, int]:
    d = cfg.embed_dim
    if cfg.arch == "transformer":
        return {"attention": _attention(t, t, d, d, d)}
    half = d // 2
    kernels = cfg.decoder_kernels if causal else cfg.encoder_kernels
    return {"attention": _attention(t, t, half, half, half),
            "convolution": _conv_branch(t, d - half, kernels[layer], cfg)}


def count_macs(cfg: ModelConfig, src_len: int = 30, tgt_len: int = 30) -> dict:
    """{"total": int, "encoder": int, "decoder": int, "layers": [{"name", parts...}]}."""
    d, f = cfg.embed_dim, cfg.ffn_dim
    layers = []
    for i in range(cfg.encoder_layers):
        parts = _mixer(src_len, i, False, cfg) | {"ffn": 2 * src_len * d * f}
        layers.append({"name": f"encoder.{i}", **parts})
    for i in range(cfg.decoder_layers):
        parts = _mixer(tgt_len, i, True, cfg)
        parts["cross_attention"] = _attention(tgt_len, src_len, d, d, d)
        parts["ffn"] = 2 * tgt_len * d * f
        layers.append({"name": f"decoder.{i}", **parts})
    for layer in layers:
        layer["total"] = sum(v for k, v in layer.items() if k != "name")
    enc = sum(l["total"] for l in layers if l["name"].startswith("encoder"))
    dec = sum(l["total"] for l in layers if l["name"].startswith("decoder"))
    return {"total": enc + dec, "encoder": enc, "decoder": dec, "src_len": src_len, "tgt_len": tgt_len, "layers": layers}
