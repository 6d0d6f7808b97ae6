"""Tests for lite.data: help-page extraction and alignment, corpus splits, user corpus loaders."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from lite.data import (
    DataError,
    build_docs_corpus,
    build_from_help_dirs,
    corpus_is_complete,
    extract_paragraphs,
    filter_long,
    libreoffice,
    load_split,
    read_parallel,
    read_tsv,
    split_sentences,
)

# --------------------------------------------------------------------------- help fixtures

PAGE = """<!DOCTYPE html>
<html lang="{lang}"><head><title>t</title><script>var x = "par_id0";</script></head>
<body><div id="DisplayArea">
<h1 id="hd_id1" dir="auto">{h1}</h1>
<p id="par_id2" class="paragraph" dir="auto"><a name="x"></a>{choose} <span id="swlnsys_1" class="switchinline"><span hidden="true" id="MACtext_1" class="MAC"><span class="emph">{mac}</span></span><span hidden="true" id="defaulttext_1"><span class="emph">{default}</span></span></span><span class="emph"> - {rest}</span>.</p>
<p id="par_id3" class="paragraph" dir="auto">{two}</p>
<p id="par_id4" class="paragraph" dir="auto">{mismatch}</p>
<p id="par_id5" class="paragraph" dir="auto">42</p>
<p id="par_id6" class="paragraph" dir="auto"><img src="x.svg" alt="icon"></p>
<span id="swlnappl_2" class="switch"><span hidden="true" id="CALCtext_2" class="CALC">
  <p id="par_id7" class="paragraph" dir="auto">{calc}</p></span></span>
<p id="par_id8" class="paragraph" dir="auto"><span id="swlnappl_3" class="switchinline"><span hidden="true" id="WRITERtext_3" class="WRITER">{writer}</span><span hidden="true" id="CALCtext_3" class="CALC">Calc only</span></span></p>
<p class="embedded">{choose} not aligned, no id.</p>
</div>
<footer><div id="DEBUG" class="debug"><h3 class="bug">Help content debug info:</h3>
<p id="par_id99" dir="auto">This page is: debug</p></div></footer>
</body></html>
"""  # noqa: E501 - LibreOffice writes each paragraph on one line; the fixture keeps that

EN = dict(
    lang="en-US",
    h1="Load/Save options",
    choose="Choose",
    mac="LibreOffice - Preferences",
    default="Tools - Options",
    rest="Load/Save",
    two="Specifies general settings. Click OK to close the dialog.",
    mismatch="Saves the file. The old one is kept.",
    calc="Choose Sheet - Insert Cells.",
    writer="Choose Table - Insert.",
)
DE = dict(
    lang="de",
    h1="Optionen Laden/Speichern",
    choose="Wählen Sie",
    mac="LibreOffice – Einstellungen",
    default="Extras – Optionen",
    rest="Laden/Speichern",
    two="Legt allgemeine Einstellungen fest. Klicken Sie auf OK, um den Dialog zu schließen.",
    mismatch="Speichert die Datei, die alte bleibt erhalten.",
    calc="Wählen Sie Tabelle – Zellen einfügen.",
    writer="Wählen Sie Tabelle – Einfügen.",
)


def write_help(root: Path, pages: dict[str, str]) -> Path:
    for rel, html in pages.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
    return root


def test_extract_paragraphs_keeps_default_switch_and_drops_hidden_variants() -> None:
    paragraphs = extract_paragraphs(PAGE.format(**EN))
    assert paragraphs == {
        "hd_id1": "Load/Save options",
        "par_id2": "Choose Tools - Options - Load/Save.",
        "par_id3": "Specifies general settings. Click OK to close the dialog.",
        "par_id4": "Saves the file. The old one is kept.",
        "par_id5": "42",
        "par_id6": "",
        "par_id7": "Choose Sheet - Insert Cells.",  # a paragraph inside a block switch is real text
        "par_id8": "Choose Table - Insert.",  # no default alternative: first one is kept
    }


def test_extract_paragraphs_numbers_repeated_ids() -> None:
    html = '<p id="par_id1">a</p><div><p id="par_id1">b</p></div><h2 id="hd_id2">c</h2>'
    assert extract_paragraphs(html) == {"par_id1": "a", "par_id1#2": "b", "hd_id2": "c"}


def test_split_sentences_rules() -> None:
    assert split_sentences("One here. Two there! 3 items? Yes.") == ["One here.", "Two there!", "3 items?", "Yes."]
    assert split_sentences("Use e.g. Writer. Then save.") == ["Use e.g. Writer.", "Then save."]
    assert split_sentences("Wählen Sie z. B. Dateien aus. Dann OK.", "de") == [
        "Wählen Sie z. B. Dateien aus.",
        "Dann OK.",
    ]
    assert split_sentences("Am 1. Januar. Nein.", "de") == ["Am 1. Januar.", "Nein."]
    assert split_sentences("Wählen Sie Format – Zeichen… (Diagramme)", "de") == [
        "Wählen Sie Format – Zeichen… (Diagramme)"
    ]
    assert split_sentences("lowercase. after") == ["lowercase. after"]


def test_build_from_help_dirs_exact_pairs(tmp_path: Path) -> None:
    en = write_help(tmp_path / "en-US", {"text/shared/a.html": PAGE.format(**EN)})
    de = write_help(tmp_path / "de", {"text/shared/a.html": PAGE.format(**DE)})
    out = build_from_help_dirs(
        en, de, tmp_path / "out", name="fixture", tgt_lang="de", valid_fraction=0.0, test_fraction=0.0
    )
    src = (out / "train.en").read_text(encoding="utf-8").splitlines()
    tgt = (out / "train.de").read_text(encoding="utf-8").splitlines()
    assert list(zip(src, tgt)) == [
        ("Load/Save options", "Optionen Laden/Speichern"),
        ("Choose Tools - Options - Load/Save.", "Wählen Sie Extras – Optionen - Laden/Speichern."),
        ("Specifies general settings.", "Legt allgemeine Einstellungen fest."),
        ("Click OK to close the dialog.", "Klicken Sie auf OK, um den Dialog zu schließen."),
        # 2 English sentences, 1 German: kept as one pair
        ("Saves the file. The old one is kept.", "Speichert die Datei, die alte bleibt erhalten."),
        ("Choose Sheet - Insert Cells.", "Wählen Sie Tabelle – Zellen einfügen."),
        ("Choose Table - Insert.", "Wählen Sie Tabelle – Einfügen."),
    ]  # "42" = "42" (no letters) and the image-only paragraph (empty) are dropped
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"] == {"train": 7, "valid": 0, "test": 0}
    assert manifest["paragraphs_aligned"] == 8
    assert manifest["dropped_no_letters"] == 1 and manifest["dropped_empty"] == 1
    assert corpus_is_complete(out, "fixture")
    assert not list(tmp_path.glob("out.tmp-*"))


def _many_pages(root: Path, lang: str, n: int) -> Path:
    shared_en, shared_de = "Choose Tools - Options.", "Wählen Sie Extras – Optionen."
    pages = {}
    for i in range(n):
        own = f"Page {i} explains feature {i}." if lang == "en" else f"Seite {i} erklärt Funktion {i}."
        shared = shared_en if lang == "en" else shared_de
        pages[f"text/module{i % 3}/page{i:03d}.html"] = (
            f'<p id="par_id1">{own}</p><p id="par_id2">{shared}</p><p id="par_id3">'
            + (f"Topic {i}" if lang == "en" else f"Thema {i}")
            + "</p>"
        )
    return write_help(root, pages)


def test_split_by_file_is_deterministic_and_test_never_leaks(tmp_path: Path) -> None:
    en = _many_pages(tmp_path / "en-US", "en", 60)
    de = _many_pages(tmp_path / "de", "de", 60)
    kwargs = dict(tgt_lang="de", valid_fraction=0.2, test_fraction=0.3)
    a = build_from_help_dirs(en, de, tmp_path / "a", **kwargs)
    b = build_from_help_dirs(en, de, tmp_path / "b", **kwargs)
    ma = json.loads((a / "manifest.json").read_text(encoding="utf-8"))
    mb = json.loads((b / "manifest.json").read_text(encoding="utf-8"))
    assert ma["sha256"] == mb["sha256"]
    train = load_split(a, "train", "en", "de")
    test = load_split(a, "test", "en", "de")
    valid = load_split(a, "valid", "en", "de")
    assert train and test and valid
    train_src = {s for s, _ in train}
    assert not train_src & {s for s, _ in test}
    assert not train_src & {s for s, _ in valid}
    # The shared sentence is in train (first file sorted), so test/valid copies were removed, not
    # just deduplicated: it only counts as a leak when its file hashed to another split.
    assert ("Choose Tools - Options.", "Wählen Sie Extras – Optionen.") in train
    # Whole files go to one split: every "Page i" sentence sits with its own "Topic i".
    for split in (train, valid, test):
        pages = {s.split()[1] for s, _ in split if s.startswith("Page")}
        topics = {s.split()[1] for s, _ in split if s.startswith("Topic")}
        assert pages == topics
        for number in pages:
            rel = f"text/module{int(number) % 3}/page{int(number):03d}.html"
            expected = libreoffice.split_of(rel, 0.2, 0.3)
            assert (split is train) == (expected == "train")
            assert (split is test) == (expected == "test")


def test_build_is_atomic_cached_and_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    en = _many_pages(tmp_path / "en-US", "en", 5)
    de = _many_pages(tmp_path / "de", "de", 5)
    out = tmp_path / "corpus"

    def boom(path: Path) -> str:
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(libreoffice, "sha256_file", boom)
        with pytest.raises(OSError):
            build_from_help_dirs(en, de, out, tgt_lang="de")
    assert not out.exists() and not list(tmp_path.glob("corpus.tmp-*"))

    build_from_help_dirs(en, de, out, tgt_lang="de")
    assert corpus_is_complete(out)
    (out / "train.de").write_text("tampered\n", encoding="utf-8")
    assert not corpus_is_complete(out)
    build_from_help_dirs(en, de, out, tgt_lang="de")  # rebuilds over its own folder
    assert corpus_is_complete(out)

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(DataError, match="notes.txt"):
        build_from_help_dirs(en, de, foreign, tgt_lang="de")
    assert (foreign / "notes.txt").exists()


def test_unknown_corpus_name_lists_known(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="docs-en-de, docs-en-fr"):
        build_docs_corpus("docs-en-xx", tmp_path / "x")


def test_missing_apt_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(DataError, match="apt-get: not found on PATH"):
        libreoffice.fetch_help_packages(["libreoffice-help-de"], tmp_path / "cache")


def test_cache_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LITE_CACHE_DIR", str(tmp_path))
    assert libreoffice.default_cache_dir() == tmp_path / "apt"


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get not on PATH (not a Debian/Ubuntu system)")
def test_real_docs_en_de(tmp_path: Path) -> None:
    out = build_docs_corpus("docs-en-de", tmp_path / "docs-en-de", progress=False)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["train"] > 20000
    assert manifest["counts"]["test"] >= 500
    assert manifest["packages"]["libreoffice-help-de"]
    started = time.monotonic()
    build_docs_corpus("docs-en-de", out, progress=False)
    assert time.monotonic() - started < 2.0


# --------------------------------------------------------------------------- user corpora


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def test_read_parallel_ok_with_crlf_bom_and_blank_lines(tmp_path: Path) -> None:
    src = write(tmp_path / "a.en", "\ufeffHello\r\n\r\nWorld \n")
    tgt = write(tmp_path / "a.de", "Hallo\n\nWelt\n")
    assert read_parallel(src, tgt) == [("Hello", "Hallo"), ("World", "Welt")]


def test_read_parallel_missing_file(tmp_path: Path) -> None:
    src = write(tmp_path / "a.en", "x\n")
    with pytest.raises(DataError, match=r"a\.de: file not found"):
        read_parallel(src, tmp_path / "a.de")


def test_read_parallel_empty_file(tmp_path: Path) -> None:
    src = write(tmp_path / "a.en", "x\n")
    tgt = write(tmp_path / "a.de", "")
    with pytest.raises(DataError, match=r"a\.de: file is empty"):
        read_parallel(src, tgt)


def test_read_parallel_invalid_utf8_names_line(tmp_path: Path) -> None:
    src = write(tmp_path / "a.en", "one\ntwo\nthree\n")
    tgt = write(tmp_path / "a.de", b"eins\nzwei\ndr\xe4i\n")  # latin-1 byte
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt)
    assert f"{tgt}:3: invalid UTF-8" in str(err.value)
    assert "\n" not in str(err.value)


def test_read_parallel_mismatched_counts(tmp_path: Path) -> None:
    src = write(tmp_path / "train.en", "a\nb\nc\n")
    tgt = write(tmp_path / "train.de", "a\nb\n")
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt)
    assert str(err.value) == f"{src}: 3 lines but {tgt} has 2 (expected equal line counts)"


def test_read_parallel_one_sided_empty_line(tmp_path: Path) -> None:
    src = write(tmp_path / "a.en", "a\nb\nc\n")
    tgt = write(tmp_path / "a.de", "a\n  \nc\n")
    with pytest.raises(DataError, match=rf"{tgt}:2: empty line but line 2 of {src}"):
        read_parallel(src, tgt)


def test_read_tsv(tmp_path: Path) -> None:
    good = write(tmp_path / "ok.tsv", "Hello\tHallo\n\nWorld\tWelt\n")
    assert read_tsv(good) == [("Hello", "Hallo"), ("World", "Welt")]
    bad = write(tmp_path / "bad.tsv", "a\tb\nc\td\te\n")
    with pytest.raises(DataError, match=rf"{bad}:2: 3 tab-separated columns"):
        read_tsv(bad)
    one = write(tmp_path / "one.tsv", "a\tb\nno tab here\n")
    with pytest.raises(DataError, match=rf"{one}:2: 1 tab-separated columns"):
        read_tsv(one)
    empty_col = write(tmp_path / "col.tsv", "a\t\n")
    with pytest.raises(DataError, match=rf"{empty_col}:1: empty target"):
        read_tsv(empty_col)
    latin = write(tmp_path / "latin.tsv", b"a\tb\n\xff\tc\n")
    with pytest.raises(DataError, match=rf"{latin}:2: invalid UTF-8"):
        read_tsv(latin)
    with pytest.raises(DataError, match="file is empty"):
        read_tsv(write(tmp_path / "empty.tsv", "\n"))


def test_load_split_layouts_and_errors(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    write(plain / "train.en", "a\n")
    write(plain / "train.de", "b\n")
    assert load_split(plain, "train", "en", "de") == [("a", "b")]
    assert load_split(plain, "train", "de", "en") == [("b", "a")]

    fairseq = tmp_path / "fairseq"
    fairseq.mkdir()
    write(fairseq / "valid.de-en.en", "x\n")
    write(fairseq / "valid.de-en.de", "y\n")
    assert load_split(fairseq, "valid", "en", "de") == [("x", "y")]

    tsv = tmp_path / "tsv"
    tsv.mkdir()
    write(tsv / "test.tsv", "s\tt\n")
    assert load_split(tsv, "test", "en", "de") == [("s", "t")]

    with pytest.raises(DataError, match=rf"{plain / 'train.en'}: exists but {plain / 'train.fr'} does not"):
        load_split(plain, "train", "en", "fr")
    with pytest.raises(DataError, match=rf"{plain}: no valid.en \+ valid.de and no valid.tsv"):
        load_split(plain, "valid", "en", "de")
    with pytest.raises(DataError, match="corpus folder not found"):
        load_split(tmp_path / "nope", "train", "en", "de")


def test_filter_long_counts_and_never_truncates() -> None:
    pairs = [("short", "kurz"), ("x" * 11, "y"), ("ok", "z" * 11), ("a" * 10, "b" * 10)]
    kept, dropped = filter_long(pairs, 10)
    assert kept == [("short", "kurz"), ("a" * 10, "b" * 10)]
    assert dropped == 2


def test_data_error_is_one_line() -> None:
    assert str(DataError("a\nb\r\nc")) == "a b c"
    assert os.linesep not in str(DataError("x"))
