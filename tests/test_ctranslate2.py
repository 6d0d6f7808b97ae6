"""The CTranslate2 converter (export/to_ctranslate2.py): a converted baseline Transformer decodes exactly
like PyTorch, with and without the shortlist as its vocabulary map; what cannot convert says so."""

from __future__ import annotations

import ctranslate2  # a dev dependency (pyproject.toml): missing, this module fails rather than skips
import numpy as np
import pytest
import torch
from conftest import lite, tiny_model

from export.to_ctranslate2 import check_greedy, convert_ctranslate2, ctranslate2_greedy, write_vmap
from lite.config import DecodeConfig
from lite.errors import ExportError, UnsupportedModelError
from lite.shortlist import Shortlist

PIECES = ["<pad>", "<s>", "</s>", "<unk>"] + [f"p{i}" for i in range(56)]


def _sources(n: int = 48) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [[int(x) for x in rng.integers(4, 60, size=rng.integers(3, 20))] + [2] for _ in range(n)]


def _transformer(pre_norm: bool):
    model = tiny_model(arch="transformer", pre_norm=pre_norm)
    with torch.no_grad():  # larger weights: peaked, varied distributions rather than near-uniform ones
        for p in model.parameters():
            p.mul_(3)
    return model


def _translator(path):
    return ctranslate2.Translator(str(path), device="cpu", inter_threads=1, intra_threads=1)


def _shortlist() -> Shortlist:
    rng = np.random.default_rng(1)
    rows = [rng.choice(np.arange(4, 60), size=5, replace=False).astype(np.int32) for _ in range(60)]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int32)
    return Shortlist(np.array([4, 5, 6], np.int32), offsets, np.concatenate(rows), vocab_size=60, eos=2)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_float32_decodes_like_pytorch(tmp_path, pre_norm):
    model = _transformer(pre_norm)
    out = convert_ctranslate2(model, PIECES, tmp_path / "ct2", quantization="float32")
    check = check_greedy(model, _translator(out), PIECES, _sources(), DecodeConfig(beam=1))
    assert check["identical"] == check["sentences"] == 48, check["first_mismatch"]
    # not a trivial agreement: the sentences decode to different token sequences
    hyps = ctranslate2_greedy(_translator(out), PIECES, _sources(), 30, [1, 0])
    assert len({tuple(h) for h in hyps}) > 10


def test_vocabulary_map_decodes_like_the_pytorch_shortlist(tmp_path):
    model, shortlist = _transformer(False), _shortlist()
    out = convert_ctranslate2(model, PIECES, tmp_path / "ct2", quantization="float32", shortlist=shortlist)
    vmap = (out / "vmap.txt").read_text().splitlines()
    assert vmap[0] == "\tp0 p1 p2 </s>" and len(vmap) == 61
    check = check_greedy(model, _translator(out), PIECES, _sources(), DecodeConfig(beam=1), shortlist=shortlist)
    assert check["identical"] == 48, check["first_mismatch"]
    # the map is really applied: with it every token is a candidate, without it some are not (one sentence
    # per call: CTranslate2 allows the union of a batch's candidates)
    allowed = [set(shortlist.candidates(s).tolist()) for s in _sources()]
    mapped = [ctranslate2_greedy(_translator(out), PIECES, [s], 30, [1, 0], use_vmap=True)[0] for s in _sources()]
    free = [ctranslate2_greedy(_translator(out), PIECES, [s], 30, [1, 0])[0] for s in _sources()]
    assert all(set(h) <= a for h, a in zip(mapped, allowed))
    assert not all(set(h) <= a for h, a in zip(free, allowed))


def test_int8_is_smaller_and_still_translates(tmp_path):
    model = _transformer(False)
    fp32 = convert_ctranslate2(model, PIECES, tmp_path / "fp32", quantization="float32")
    int8 = convert_ctranslate2(model, PIECES, tmp_path / "int8", quantization="int8")
    assert (int8 / "model.bin").stat().st_size < 0.5 * (fp32 / "model.bin").stat().st_size
    check = check_greedy(model, _translator(int8), PIECES, _sources(), DecodeConfig(beam=1))
    assert check["identical"] >= 24  # int8 rounding may flip near-ties, not most sentences


def test_what_cannot_convert_says_why_and_leaves_nothing(tmp_path):
    with pytest.raises(UnsupportedModelError, match="CTranslate2 runs plain Transformers only"):
        convert_ctranslate2(tiny_model(), PIECES, tmp_path / "lsra")
    with pytest.raises(ExportError, match="quantization 'int4'"):
        convert_ctranslate2(_transformer(False), PIECES, tmp_path / "q", quantization="int4")
    with pytest.raises(ExportError, match="tokenizer has 3 pieces"):
        convert_ctranslate2(_transformer(False), PIECES[:3], tmp_path / "v")
    with pytest.raises(ExportError, match="shortlist vocabulary 60 != tokenizer vocabulary 59"):
        write_vmap(_shortlist(), PIECES[:59], tmp_path / "vmap.txt")
    assert list(tmp_path.iterdir()) == []


def test_cli_rejects_a_bad_quantization(tmp_path):
    done = lite("ctranslate2", str(tmp_path / "run"), "--quantization", "int3")
    assert done.returncode != 0
    err = done.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "--quantization: expected a comma-separated list from float32" in err[0]
