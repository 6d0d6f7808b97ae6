"""The vocabulary shortlist: IBM model 1 learns a known lexicon, the file round-trips and refuses damage,
and on the smoke run decoding with the shortlist equals full decoding for every sentence whose full
output lies among its candidates, in PyTorch and in the torch-free runtime; the shortlist travels into
exported folders under the manifest's checksums."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import lite

from export.manifest import read_manifest
from export.runtime import Translator
from lite.checkpoint import load_model
from lite.config import DecodeConfig, ShortlistConfig, load_config
from lite.data.corpus import load_pairs
from lite.data.lexicon import build_shortlist, ibm1
from lite.decode import greedy
from lite.errors import ModelFolderError
from lite.run import RunPaths
from lite.shortlist import Shortlist, load_shortlist, save_shortlist
from lite.tokenizer import Tokenizer


def _synthetic_corpus(seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Source words 3..9 translate to target word s + 10, in shuffled order; every target sentence
    also has token 19, which no source word explains (the NULL token's job)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(300):
        src = rng.choice(np.arange(3, 10), size=rng.integers(1, 5), replace=False).tolist()
        tgt = [s + 10 for s in src] + [19]
        rng.shuffle(tgt)
        pairs.append((src, tgt))
    return pairs


def test_ibm1_learns_the_lexicon_deterministically():
    pairs = _synthetic_corpus()
    lexicon = ibm1(pairs, vocab_size=20, iterations=10)
    again = ibm1(pairs, vocab_size=20, iterations=10)
    assert np.array_equal(lexicon.prob, again.prob)  # EM from a uniform start: no randomness
    sums = np.bincount(lexicon.source, weights=lexicon.prob)
    np.testing.assert_allclose(sums[np.unique(lexicon.source)], 1.0, rtol=1e-9)
    for s in range(3, 10):
        rows = lexicon.source == s
        best = lexicon.target[rows][lexicon.prob[rows].argmax()]
        assert best == s + 10, (s, best)
        assert lexicon.prob[rows].max() > 0.9
    null = lexicon.source == 20
    assert lexicon.target[null][lexicon.prob[null].argmax()] == 19


def test_shortlist_keeps_the_best_targets_and_the_frequent_ones():
    pairs = _synthetic_corpus()
    lexicon = ibm1(pairs, vocab_size=20, iterations=10)
    shortlist = build_shortlist(
        lexicon, [t for _, t in pairs], ShortlistConfig(frequent=1, per_source=2), special=(0, 1), eos=2
    )
    assert shortlist.frequent.tolist() == [19]  # in every target sentence
    for s in range(3, 10):
        row = shortlist.targets[shortlist.offsets[s] : shortlist.offsets[s + 1]]
        assert len(row) == 2 and row[0] == s + 10
    assert shortlist.candidates([4, 7, 2]).tolist() == sorted({2, 19, 14, 17} | set(_row(shortlist, 4, 7)))
    assert shortlist.candidates([]).tolist() == [2, 19]  # eos and the frequent tokens always
    assert shortlist.mask([4]).sum() == len(shortlist.candidates([4]))


def _row(shortlist: Shortlist, *sources: int) -> list[int]:
    return [int(t) for s in sources for t in shortlist.targets[shortlist.offsets[s] : shortlist.offsets[s + 1]]]


def test_the_file_round_trips_and_damage_is_one_line(tmp_path):
    pairs = _synthetic_corpus()
    shortlist = build_shortlist(ibm1(pairs, 20, 5), [t for _, t in pairs], ShortlistConfig(), (0, 1), 2)
    path = tmp_path / "shortlist.npz"
    save_shortlist(shortlist, path)
    again = load_shortlist(path, vocab_size=20)
    for name in ("frequent", "offsets", "targets"):
        assert np.array_equal(getattr(again, name), getattr(shortlist, name))
    assert (again.vocab_size, again.eos) == (20, 2)
    with pytest.raises(ModelFolderError, match="vocab_size 20, the model has 8000"):
        load_shortlist(path, vocab_size=8000)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFolderError, match="not a shortlist file"):
        load_shortlist(path)
    with pytest.raises(ModelFolderError, match="shortlist file not found"):
        load_shortlist(tmp_path / "absent.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, frequent=np.array([25], np.int32), offsets=np.zeros(21, np.int32), targets=np.zeros(0, np.int32),
             header=np.array([20, 2, 1], np.int32))  # fmt: skip
    with pytest.raises(ModelFolderError, match=r"target ids must lie in \[0, 20\)"):
        load_shortlist(bad)


@pytest.fixture(scope="module")
def shortlisted(smoke_run, tmp_path_factory) -> Path:
    """A copy of the smoke run (the shared one stays without a shortlist) with `lite shortlist` run on it."""
    run = tmp_path_factory.mktemp("shortlisted") / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("export", "artifacts.json", "checkpoints", "eval"))
    done = lite("shortlist", str(run), "--quiet")
    assert done.returncode == 0, done.stderr.decode()
    assert "entries from 10000 pairs" in done.stdout.decode()
    return run


def test_lite_shortlist_writes_the_file_and_its_summary_once(shortlisted):
    summary = json.loads((shortlisted / "shortlist.json").read_text())
    assert summary["train_pairs"] == 10000 and summary["vocab_size"] == 1000
    assert 100 < summary["valid_candidates_mean"] < 1000 and summary["valid_reference_coverage"] > 0.9
    again = lite("shortlist", str(shortlisted), "--quiet")
    assert again.returncode == 0 and again.stdout.decode().startswith("(cached) ")


def _test_sources(run: Path, n: int = 40) -> list[list[int]]:
    """Source ids (eos included) of the first `n` test sentences short enough for the exported graphs."""
    cfg = load_config(run / "config.yaml")
    tokenizer = Tokenizer(RunPaths(run).tokenizer)
    pairs, _ = load_pairs(cfg.data, "test")
    ids = tokenizer.encode_batch([s for s, _ in pairs])
    return [s + [cfg.model.eos_id] for s in ids if len(s) < cfg.export.max_src_len][:n]


def _check_covered_equal(full: list[list[int]], short: list[list[int]], cands: list[np.ndarray], eos: int) -> int:
    """Shortlist output = full output where the full output (and eos) are candidates; elsewhere the
    shortlist output is made of candidates. Returns how many sentences were covered."""
    covered = 0
    for f, s, c in zip(full, short, cands):
        if set(f) | {eos} <= set(c.tolist()):
            assert s == f
            covered += 1
        else:
            assert set(s) <= set(c.tolist())
    return covered


def test_pytorch_shortlist_decoding_equals_full_decoding_when_covered(shortlisted):
    model = load_model(RunPaths(shortlisted).model)
    shortlist = load_shortlist(RunPaths(shortlisted).shortlist, model.cfg.vocab_size)
    sources = _test_sources(shortlisted)
    cfg = DecodeConfig(beam=1)
    full, short = [], []
    for ids in sources:  # one sentence at a time: batching pads, and the property is per sentence
        src = torch.tensor([ids])
        full += greedy(model, src, cfg)
        short += greedy(model, src, cfg, torch.from_numpy(shortlist.mask(ids))[None])
    cands = [shortlist.candidates(ids) for ids in sources]
    covered = _check_covered_equal(full, short, cands, model.cfg.eos_id)
    assert covered >= len(sources) // 2, covered  # not vacuous
    assert full != short  # and the shortlist did cut somewhere


def _with_shortlist(exported: Path, run: Path, name: str, dest: Path) -> Path:
    """An exported folder of the smoke run with the shortlist added as `lite export` adds it."""
    from export.manifest import write_manifest

    folder = Path(shutil.copytree(exported / "export" / name, dest))
    shutil.copyfile(RunPaths(run).shortlist, folder / "shortlist.npz")
    manifest = read_manifest(folder)
    manifest.shortlist = "shortlist.npz"
    write_manifest(folder, manifest)
    return folder


def test_runtime_shortlist_decoding_equals_full_decoding_when_covered(exported, shortlisted, tmp_path):
    folder = _with_shortlist(exported, shortlisted, "tflite-fp32", tmp_path / "m")
    full, short = Translator(folder, shortlist=False), Translator(folder, shortlist=True)
    assert full.shortlist is None and short.shortlist is not None
    sources = _test_sources(shortlisted)
    full_out = [full.greedy(ids) for ids in sources]
    short_out = [short.greedy(ids) for ids in sources]
    cands = [short.candidates(ids) for ids in sources]
    covered = _check_covered_equal(full_out, short_out, cands, full.eos)
    assert covered >= len(sources) // 2 and full_out != short_out
    # beam search over the candidates keeps to them
    for ids, c in zip(sources[:5], cands):
        assert set(short.beam_search(ids, 2, 1.0)) <= set(c.tolist())


def test_the_shortlist_is_checksummed_and_required_when_asked_for(exported, shortlisted, tmp_path):
    folder = _with_shortlist(exported, shortlisted, "tflite-fp32", tmp_path / "m")
    done = lite("translate", "--model", str(folder), "--shortlist", "Click OK.")
    assert done.returncode == 0 and done.stdout.decode().strip(), done.stderr.decode()
    data = bytearray((folder / "shortlist.npz").read_bytes())
    data[-30] ^= 1
    (folder / "shortlist.npz").write_bytes(bytes(data))
    done = lite("translate", "--model", str(folder), "--shortlist", "Click OK.")
    assert done.returncode == 2 and "shortlist.npz: checksum mismatch with manifest.json" in done.stderr.decode()
    plain = exported / "export" / "tflite-fp32"
    done = lite("translate", "--model", str(plain), "--shortlist", "Click OK.")
    err = done.stderr.decode().splitlines()
    assert done.returncode == 2 and err == [f"lite translate: error: {plain}: this model folder has no shortlist "
                                            "(export a run that has one)"]  # fmt: skip


def test_export_carries_the_shortlist_and_gates_its_shortlisted_steps(shortlisted):
    done = lite("export", str(shortlisted), "--format", "tflite", "--precision", "fp32", "--quiet")
    assert done.returncode == 0, done.stderr.decode()
    folder = shortlisted / "export" / "tflite-fp32"
    manifest = read_manifest(folder)
    assert manifest.shortlist == "shortlist.npz" and "shortlist.npz" in manifest.files
    assert (folder / "shortlist.npz").read_bytes() == RunPaths(shortlisted).shortlist.read_bytes()
    assert manifest.settings["shortlist_sha256"] == manifest.files["shortlist.npz"].sha256
    # a decoder step without the output projection per batch size, gated like the rest; the runtime
    # projects its hidden state onto the candidates' rows of the projection it reads from the file
    assert manifest.projection is not None
    assert {"decode_1_hidden", "decode_2_hidden"} <= set(manifest.converter["signatures"])
    gate = manifest.parity["shortlist"]
    assert gate["max_logit_diff"] < 1e-3 and gate["top1"] == 1.0 and gate["bleu_drop"] == 0.0
    translator = Translator(folder, shortlist=True)
    ids = _test_sources(shortlisted, 1)[0]
    cands = translator.candidates(ids)
    assert translator.backend.hidden and translator.backend.table.shape == (1000, manifest.model_config["embed_dim"])
    states = [translator.initial_state(translator.encode(ids), 1, 10) for _ in range(2)]
    rows = []
    for pos, token in enumerate([translator.bos, 5, 17]):
        short = translator.step(states[0], np.array([token]), pos, cands)
        full = translator.step(states[1], np.array([token]), pos)
        np.testing.assert_allclose(short, full[:, cands], atol=1e-4)
        rows.append(short[0])
    step = translator.decoding(translator.encode(ids), 10, cands)  # the fast path's hidden session
    for pos, token in enumerate([translator.bos, 5, 17]):
        np.testing.assert_allclose(step(token, pos), rows[pos], rtol=1e-6, atol=1e-6)
    for extra in ([], ["--artifact", "tflite-fp32"]):
        done = lite("evaluate", str(shortlisted), "--beam", "1", "--shortlist", "--quiet", *extra)
        assert done.returncode == 0, done.stderr.decode()
        assert " greedy-shortlist: BLEU " in done.stdout.decode()
    record = json.loads((shortlisted / "results.json").read_text())["test/greedy-shortlist"]
    assert record["shortlist_sha256"] == manifest.files["shortlist.npz"].sha256 and record["sentences"] == 200


def test_hidden_steps_only_where_the_runtime_can_use_them():
    from dataclasses import replace

    from export.stage import _hidden_steps
    from lite.config import RunConfig

    cfg = RunConfig()
    assert _hidden_steps(cfg, "tflite", "dynamic-int8", "shortlist.npz")
    assert not _hidden_steps(cfg, "tflite", "dynamic-int8", None)  # no shortlist
    assert not _hidden_steps(cfg, "onnx", "fp32", "shortlist.npz")  # ONNX keeps the full step
    assert not _hidden_steps(cfg, "tflite", "fp16", "shortlist.npz")  # weights dequantized in the graph
    off = replace(cfg, export=replace(cfg.export, hidden_steps=False))
    assert not _hidden_steps(off, "tflite", "int8", "shortlist.npz")


def test_a_run_without_a_shortlist_says_how_to_make_one(smoke_run):
    run = str(smoke_run)
    calls = (["evaluate", run, "--beam", "1", "--shortlist", "--quiet"], ["translate", run, "Hello", "--shortlist"])
    for args in calls:
        done = lite(*args)
        err = done.stderr.decode().strip().splitlines()
        assert done.returncode != 0 and len(err) == 1, done.stderr.decode()
        assert "shortlist.npz: no shortlist in this run; run `lite shortlist" in err[0]


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="qemu-user not installed (make setup installs it)")
def test_an_emulated_core_counts_the_shortlisted_protocol_too(shortlisted):
    done = lite("export", str(shortlisted), "--format", "tflite", "--precision", "fp32", "--quiet")  # reused if made
    assert done.returncode == 0, done.stderr.decode()
    args = ["--target", "qemu:cortex-a76", "--artifact", "tflite-fp32", "--limit", "3", "--no-reference", "--quiet"]
    done = lite("evaluate", str(shortlisted), *args)
    assert done.returncode == 0, done.stderr.decode()
    record = json.loads((shortlisted / "targets" / "qemu-cortex-a76" / "tflite-fp32.json").read_text())
    full, short = record["instructions"], record["instructions_shortlist"]
    assert full["tokens_equal_host"] and short["tokens_equal_host"]  # each against the host's own run
    # the smoke vocabulary is 1,000 pieces: the candidates' projection is the part that shrinks
    assert 0 < short["step_mean"] < full["step_mean"]
    assert short["sentence"] == pytest.approx(short["encoder"] + 30 * short["step_mean"], rel=1e-3)
