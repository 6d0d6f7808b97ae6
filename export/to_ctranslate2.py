"""Convert a baseline Transformer checkpoint to a CTranslate2 model, and check it decodes like PyTorch.

CTranslate2 (OpenNMT) is the engine a user would pick for fast CPU translation of a plain Transformer;
the latency benchmark runs it beside our runtime on the SAME model. It has no LSRA or sparse attention,
so only `model.arch: transformer` with dense heads converts; anything else is an UnsupportedModelError.

    convert_ctranslate2(model, pieces, out_dir, quantization="int8", shortlist=None) -> out_dir
        out_dir/model.bin, shared/source/target vocabulary files (CTranslate2's own layout), and with a
        shortlist its vocabulary map (vmap.txt: "<source piece>\\t<target pieces>", the line with an
        empty source = the always-allowed frequent tokens) for translate_batch(use_vmap=True).
    check_greedy(model, translator, pieces, sources, ...) -> {"sentences", "identical", "first_mismatch"}
    ctranslate2_run(cfg, paths, quantizations) (`lite ctranslate2 RUN`): RUN/ctranslate2/<type>/ per type,
        each checked on the test split (check.json); float32 must decode every sentence like PyTorch.

The mapping, weight by weight (our blocks: lite/models/blocks.py; CTranslate2's: its TransformerSpec):
    src/tgt_embed.tokens      -> encoder/decoder.embeddings (x sqrt(d): scale_embeddings)
    src/tgt_embed.positions   -> position_encodings.encodings (our table, sinusoidal or learned, as is)
    self-attention q/k/v      -> self_attention.linear[0] (q, k, v stacked), out_proj -> linear[1]
    cross-attention q         -> attention.linear[0]; k, v stacked -> linear[1]; out_proj -> linear[2]
    mix_res/cross_res/ffn_res.norm -> the sublayer's layer_norm (post-norm: after the residual sum)
    ffn.fc1, fc2              -> ffn.linear_0, linear_1;  output (tied) -> decoder.projection
Decoding conventions matched: the source ends with eos, the target starts from bos, LayerNorm eps 1e-5.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lite.config import DecodeConfig, RunConfig
from lite.decode import greedy, max_output_len
from lite.errors import ExportError, GateError, UnsupportedModelError
from lite.files import write_json_atomic
from lite.models.attention import MultiheadAttention
from lite.models.seq2seq import EncoderDecoder
from lite.run import RunPaths
from lite.shortlist import Shortlist
from lite.tokenizer import UNK_ID

QUANTIZATIONS = ("float32", "int8", "int8_float32", "int16")
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which our blocks use


def _require_supported(model: EncoderDecoder) -> None:
    cfg = model.cfg
    if cfg.arch != "transformer":
        raise UnsupportedModelError(
            f"model.arch is {cfg.arch!r}: CTranslate2 runs plain Transformers only (no LSRA convolution branch)"
        )
    for name, module in model.named_modules():
        if isinstance(module, MultiheadAttention) and (module.sparse is not None or module.learned is not None):
            raise UnsupportedModelError(f"{name}: sparse attention heads have no CTranslate2 equivalent")
    heads = {m.num_heads for m in model.modules() if isinstance(m, MultiheadAttention)}
    widths = {m.num_heads * m.head_dim for m in model.modules() if isinstance(m, MultiheadAttention)}
    if len(heads) != 1 or widths != {cfg.embed_dim}:
        raise UnsupportedModelError(
            f"attention heads {sorted(heads)} x widths {sorted(widths)}: CTranslate2 needs one head count "
            f"and heads spanning embed_dim {cfg.embed_dim} in every layer (head-pruned models do not convert)"
        )


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().copy()


def _linear(spec, layer: torch.nn.Linear) -> None:
    spec.weight = _array(layer.weight)
    if layer.bias is not None:
        spec.bias = _array(layer.bias)


def _stacked(spec, layers: list[torch.nn.Linear]) -> None:
    spec.weight = np.concatenate([_array(x.weight) for x in layers])
    spec.bias = np.concatenate([_array(x.bias) for x in layers])


def _norm(spec, norm: torch.nn.LayerNorm) -> None:
    spec.gamma, spec.beta = _array(norm.weight), _array(norm.bias)


def _inputs(spec, embedder) -> None:
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    embeddings.weight = _array(embedder.tokens.weight)
    spec.scale_embeddings = True  # x sqrt(d), as Embedder does
    spec.position_encodings.encodings = _array(embedder.positions.weight)


def _spec(model: EncoderDecoder, pieces: list[str]):
    import ctranslate2

    cfg = model.cfg
    spec = ctranslate2.specs.TransformerSpec.from_config(
        (cfg.encoder_layers, cfg.decoder_layers), cfg.attention_heads, pre_norm=cfg.pre_norm
    )
    _inputs(spec.encoder, model.src_embed)
    _inputs(spec.decoder, model.tgt_embed)
    for layer_spec, block in zip(spec.encoder.layer, model.encoder):
        attn = block.mixer.attn
        _stacked(layer_spec.self_attention.linear[0], [attn.q_proj, attn.k_proj, attn.v_proj])
        _linear(layer_spec.self_attention.linear[1], attn.out_proj)
        _norm(layer_spec.self_attention.layer_norm, block.mix_res.norm)
        _linear(layer_spec.ffn.linear_0, block.ffn.fc1)
        _linear(layer_spec.ffn.linear_1, block.ffn.fc2)
        _norm(layer_spec.ffn.layer_norm, block.ffn_res.norm)
    for layer_spec, block in zip(spec.decoder.layer, model.decoder):
        attn, cross = block.mixer.attn, block.cross
        _stacked(layer_spec.self_attention.linear[0], [attn.q_proj, attn.k_proj, attn.v_proj])
        _linear(layer_spec.self_attention.linear[1], attn.out_proj)
        _norm(layer_spec.self_attention.layer_norm, block.mix_res.norm)
        _linear(layer_spec.attention.linear[0], cross.q_proj)
        _stacked(layer_spec.attention.linear[1], [cross.k_proj, cross.v_proj])
        _linear(layer_spec.attention.linear[2], cross.out_proj)
        _norm(layer_spec.attention.layer_norm, block.cross_res.norm)
        _linear(layer_spec.ffn.linear_0, block.ffn.fc1)
        _linear(layer_spec.ffn.linear_1, block.ffn.fc2)
        _norm(layer_spec.ffn.layer_norm, block.ffn_res.norm)
    if cfg.pre_norm:
        _norm(spec.encoder.layer_norm, model.encoder_norm)
        _norm(spec.decoder.layer_norm, model.decoder_norm)
    _linear(spec.decoder.projection, model.output)
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    spec.config.unk_token = pieces[UNK_ID]
    spec.config.bos_token = spec.config.decoder_start_token = pieces[cfg.bos_id]
    spec.config.eos_token = pieces[cfg.eos_id]
    spec.config.add_source_eos = False  # the caller passes eos, as our batching appends it
    spec.config.layer_norm_epsilon = LAYER_NORM_EPS
    return spec


def write_vmap(shortlist: Shortlist, pieces: list[str], path: Path) -> None:
    """CTranslate2's vocabulary map of our shortlist: per source piece its candidate pieces, and the line
    with an empty source for the frequent tokens every sentence may produce (eos included)."""
    if shortlist.vocab_size != len(pieces):
        raise ExportError(f"shortlist vocabulary {shortlist.vocab_size} != tokenizer vocabulary {len(pieces)}")
    lines = ["\t" + " ".join(pieces[int(t)] for t in [*shortlist.frequent, shortlist.eos])]
    for source in range(shortlist.vocab_size):
        row = shortlist.targets[shortlist.offsets[source] : shortlist.offsets[source + 1]]
        if len(row):
            lines.append(pieces[source] + "\t" + " ".join(pieces[int(t)] for t in row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def convert_ctranslate2(
    model: EncoderDecoder,
    pieces: list[str],
    out_dir: Path,
    quantization: str = "int8",
    shortlist: Shortlist | None = None,
) -> Path:
    """Write the CTranslate2 model of `model` (tokenizer pieces in id order) to out_dir: built in a
    temporary folder beside it and renamed into place, so a failed conversion leaves no half folder."""
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization {quantization!r}: expected one of {', '.join(QUANTIZATIONS)}")
    _require_supported(model)
    if len(pieces) != model.cfg.vocab_size:
        raise ExportError(f"tokenizer has {len(pieces)} pieces, the model's vocabulary is {model.cfg.vocab_size}")
    if any(" " in p or "\t" in p or "\n" in p for p in pieces):
        raise ExportError("a tokenizer piece contains whitespace: CTranslate2's vocabulary files cannot hold it")
    spec = _spec(model.eval(), pieces)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the published folder gets the usual mode
    try:
        if shortlist is not None:
            write_vmap(shortlist, pieces, tmp / "vmap.source.txt")
            spec.register_vocabulary_mapping(str(tmp / "vmap.source.txt"))
        spec.validate()
        spec.optimize(quantization=quantization)
        spec.save(str(tmp))
        (tmp / "vmap.source.txt").unlink(missing_ok=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ctranslate2_greedy(
    translator, pieces: list[str], sources: list[list[int]], max_len: int, never: list[int], use_vmap: bool = False
) -> list[list[int]]:
    """Greedy CTranslate2 decoding of source id lists (eos included) -> target id lists without eos; the ids
    `never` are suppressed (bos and pad: our decoder never generates them)."""
    ids = {p: i for i, p in enumerate(pieces)}
    results = translator.translate_batch(
        [[pieces[i] for i in s] for s in sources],
        beam_size=1,
        max_decoding_length=max_len,
        min_decoding_length=0,  # its default 1 forbids an empty output; ours allows it
        use_vmap=use_vmap,
        suppress_sequences=[[pieces[i]] for i in never],
    )
    return [[ids[p] for p in r.hypotheses[0]] for r in results]


def check_greedy(
    model: EncoderDecoder,
    translator,
    pieces: list[str],
    sources: list[list[int]],
    decode: DecodeConfig,
    batch_size: int = 32,
    shortlist: Shortlist | None = None,
) -> dict:
    """Greedy tokens of PyTorch and of the CTranslate2 model on the same length-sorted batches of `sources`
    (id lists ending with eos), the same length limit, with or without the shortlist (its vmap on the
    CTranslate2 side, which allows the union of a batch's candidates, so PyTorch gets that union too): how
    many sentences decode to identical tokens, and the first that does not."""
    cfg = model.eval().cfg
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    identical, first = 0, None
    for start in range(0, len(order), batch_size):
        chunk = [sources[i] for i in order[start : start + batch_size]]
        src = torch.full((len(chunk), max(map(len, chunk))), cfg.pad_id, dtype=torch.long)
        for row, s in enumerate(chunk):
            src[row, : len(s)] = torch.tensor(s)
        allowed = None
        if shortlist is not None:  # CTranslate2 applies its map to the batch: the union of the sentences' sets
            union = np.logical_or.reduce([shortlist.mask(s) for s in chunk])
            allowed = torch.from_numpy(np.repeat(union[None], len(chunk), axis=0))
        ours = greedy(model, src, decode, allowed)
        limit = max_output_len(max(map(len, chunk)), model, decode)
        theirs = ctranslate2_greedy(translator, pieces, chunk, limit, [cfg.bos_id, cfg.pad_id], shortlist is not None)
        for k, (a, b) in enumerate(zip(ours, theirs)):
            if a == b:
                identical += 1
            elif first is None:
                first = {"sentence": order[start + k], "pytorch": a, "ctranslate2": b}
    return {"sentences": len(sources), "identical": identical, "first_mismatch": first}


def ctranslate2_run(cfg: RunConfig, paths: RunPaths, quantizations: list[str], progress: bool = True) -> list[dict]:
    """RUN/model.pt -> RUN/ctranslate2/<quantization>/ per quantization, each checked on the run's test split:
    greedy tokens against PyTorch (without and, when RUN has a shortlist, with it as the vocabulary map) and
    greedy BLEU, saved as check.json in the folder. A float32 conversion that decodes any test sentence
    differently from PyTorch is a conversion bug: GateError, and its folder is removed."""
    import ctranslate2

    from lite.checkpoint import load_model
    from lite.data.corpus import load_pairs
    from lite.metrics.bleu import score
    from lite.provenance import provenance
    from lite.shortlist import load_shortlist
    from lite.tokenizer import Tokenizer

    torch.set_num_threads(cfg.train.threads)
    model = load_model(paths.model).eval()
    tokenizer = Tokenizer(paths.tokenizer)
    pieces = [tokenizer.sp.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    shortlist = load_shortlist(paths.shortlist, tokenizer.vocab_size) if paths.shortlist.is_file() else None
    pairs, _ = load_pairs(cfg.data, "test")
    limit = model.cfg.max_positions - 1
    encoded = tokenizer.encode_batch([s for s, _ in pairs])
    sources = [ids[:limit] + [model.cfg.eos_id] for ids in encoded if ids]
    references = [t for (_, t), ids in zip(pairs, encoded) if ids]
    decode = replace(cfg.decode, beam=1)
    records = []
    for quantization in quantizations:
        out = paths.root / "ctranslate2" / quantization
        convert_ctranslate2(model, pieces, out, quantization, shortlist)
        translator = ctranslate2.Translator(str(out), device="cpu", inter_threads=1, intra_threads=cfg.train.threads)
        record: dict = {"quantization": quantization, "test_sentences": len(sources)}
        for use_vmap in (False, True) if shortlist is not None else (False,):
            key = "with_vmap" if use_vmap else "full_vocabulary"
            check = check_greedy(model, translator, pieces, sources, decode, shortlist=shortlist if use_vmap else None)
            if quantization == "float32" and check["identical"] != check["sentences"]:
                shutil.rmtree(out, ignore_errors=True)
                raise GateError(
                    f"{out}: the float32 CTranslate2 model decodes {check['sentences'] - check['identical']} of "
                    f"{check['sentences']} test sentences differently from PyTorch ({key}; first: "
                    f"{check['first_mismatch']})",
                    out,
                    quantization,
                    check,
                    ["greedy tokens identical"],
                )
            hyps = translate_ctranslate2(translator, tokenizer, pieces, sources, decode, model, use_vmap)
            record[key] = {
                "identical_to_pytorch": check["identical"],
                "first_mismatch": check["first_mismatch"],
                "bleu": score(hyps, references)["bleu"],
            }
        record["provenance"] = provenance(cfg, seed=cfg.train.seed, threads=cfg.train.threads)
        write_json_atomic(record, out / "check.json")
        if progress:
            line = ", ".join(
                f"{k}: {v['identical_to_pytorch']}/{len(sources)} identical, BLEU {v['bleu']:.2f}"
                for k, v in record.items()
                if isinstance(v, dict) and "bleu" in v
            )
            print(f"{out}: {line}")
        records.append(record)
    return records


def translate_ctranslate2(
    translator,
    tokenizer,
    pieces: list[str],
    sources: list[list[int]],
    decode: DecodeConfig,
    model: EncoderDecoder,
    use_vmap: bool = False,
) -> list[str]:
    """Greedy detokenized translations of `sources` (batches of decode.batch_size in length order, the length
    limit of our decoder per batch), in input order."""
    cfg = model.cfg
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out = [""] * len(sources)
    for start in range(0, len(order), decode.batch_size):
        idx = order[start : start + decode.batch_size]
        chunk = [sources[i] for i in idx]
        limit = max_output_len(max(map(len, chunk)), model, decode)
        for i, hyp in zip(
            idx, ctranslate2_greedy(translator, pieces, chunk, limit, [cfg.bos_id, cfg.pad_id], use_vmap)
        ):
            out[i] = tokenizer.decode(hyp)
    return out
