"""Analytic MAC count under the Lite Transformer convention (docs/design.md):

mult-adds of one forward pass with a 30-token source and a 30-token target, encoder plus
decoder, excluding embedding lookups and the output (vocabulary) projection; attention score
and value matmuls included; convolutions counted as T*K*C. Elementwise work (softmax, GLU
product, LayerNorm, residuals, biases) is not counted.

Each layer is broken down into the parts an engineer trims separately:
attn_proj, attn_scores, attn_values (self-attention, or the LSRA attention branch),
glu (or the plain input Linear of a conv branch without GLU), conv_kernel (dynamic kernel
prediction), conv (the depthwise convolution), conv_out, cross_proj, cross_scores, cross_values, ffn.
"""

from __future__ import annotations

from dataclasses import replace

from lite.config import LayerShape, ModelConfig
from lite.models.seq2seq import EncoderDecoder, count_parameters
from lite.sparse.patterns import computed_pairs


def _attention(
    prefix: str, t_q: int, t_k: int, d_model: int, d_kv: int, width: int, pairs: int | None = None, head_dim: int = 1
) -> dict[str, int]:
    """q/out projections over t_q queries, k/v projections over t_k keys, scores and weighted values.
    pairs: the (query, key) entries a sparse core computes, summed over heads of head_dim (None: dense)."""
    core = t_q * t_k * width if pairs is None else pairs * head_dim
    return {
        f"{prefix}_proj": t_q * d_model * width * 2 + t_k * d_kv * width * 2,
        f"{prefix}_scores": core,
        f"{prefix}_values": core,
    }


def _conv_branch(t: int, dim: int, shape: LayerShape, cfg: ModelConfig) -> dict[str, int]:
    """dim: the branch's input/output width; shape.conv_width channels inside (fewer when pruned)."""
    width, heads, kernel = shape.conv_width, len(shape.conv_channels), shape.kernel
    parts = {"glu" if cfg.conv_glu else "conv_in": t * dim * width * (2 if cfg.conv_glu else 1)}
    if cfg.conv_type == "dynamic":
        parts["conv_kernel"] = t * width * heads * kernel
    parts["conv"] = t * kernel * width
    parts["conv_out"] = t * width * dim
    return parts


def _mixer(t: int, shape: LayerShape, cfg: ModelConfig, decoder: bool) -> dict[str, int]:
    d = cfg.embed_dim
    width = shape.heads * shape.head_dim
    # Sparse encoder heads: what the block kernel (or masked dense fallback) computes. The decoder runs
    # one step at a time over its cache slots, masked: dense work whatever its pattern.
    pairs = computed_pairs(shape.patterns, t, causal=False) if shape.patterns and not decoder else None
    in_dim = d if cfg.arch == "transformer" else d // 2
    attn = _attention("attn", t, t, in_dim, in_dim, width, pairs, shape.head_dim)
    return attn if cfg.arch == "transformer" else attn | _conv_branch(t, d - d // 2, shape, cfg)


def count_macs(cfg: ModelConfig, src_len: int = 30, tgt_len: int = 30) -> dict:
    """{"macs", "encoder", "decoder", "src_len", "tgt_len", "layers": [{"name", parts..., "total"}]}.
    Per-layer widths (structured pruning) are read from cfg.layer_shape."""
    d = cfg.embed_dim
    layers = []
    for i in range(cfg.encoder_layers):
        shape = cfg.layer_shape("encoder", i)
        parts = _mixer(src_len, shape, cfg, decoder=False) | {"ffn": 2 * src_len * d * shape.ffn}
        layers.append({"name": f"encoder.{i}", **parts})
    for i in range(cfg.decoder_layers):
        shape = cfg.layer_shape("decoder", i)
        parts = _mixer(tgt_len, shape, cfg, decoder=True) | _attention(
            "cross", tgt_len, src_len, d, d, shape.cross_heads * shape.cross_head_dim
        )
        parts["ffn"] = 2 * tgt_len * d * shape.ffn
        layers.append({"name": f"decoder.{i}", **parts})
    for layer in layers:
        layer["total"] = sum(v for k, v in layer.items() if k != "name")
    enc = sum(layer["total"] for layer in layers if layer["name"].startswith("encoder"))
    dec = sum(layer["total"] for layer in layers if layer["name"].startswith("decoder"))
    return {"macs": enc + dec, "encoder": enc, "decoder": dec, "src_len": src_len, "tgt_len": tgt_len, "layers": layers}


def model_summary(cfg: ModelConfig, src_len: int = 30, tgt_len: int = 30) -> dict:
    """MACs plus parameter counts (with and without token embeddings) of a config."""
    model = EncoderDecoder(replace(cfg, vocab_size=cfg.vocab_size or 8000))
    return count_macs(cfg, src_len, tgt_len) | {
        "params": count_parameters(model),
        "params_no_embed": count_parameters(model, include_embeddings=False),
        "vocab_size": model.cfg.vocab_size,
    }
