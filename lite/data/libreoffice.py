"""Parallel corpora built from the LibreOffice help, as shipped in Debian packages.

Every help page exists in each language with the same paragraph ids (par_id..., hd_id...), so
paragraphs align exactly by (help file, id). The packages are fetched with apt into a private
state directory, so no root is needed and the system's configured apt sources are reused.

Pipeline: fetch_help_packages -> extract_paragraphs per file -> align by (file, id)
-> sentence split -> filter + dedupe -> split by help file -> drop leaked pairs -> write.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, Sequence

from lite.errors import DataError
from lite.files import sha256_file

# Bump when extraction, filtering or splitting changes: a cached corpus built by an older
# version no longer matches and is rebuilt.
FORMAT_VERSION = 1

# corpus name -> (source language, target language)
KNOWN_CORPORA: dict[str, tuple[str, str]] = {
    "docs-en-de": ("en", "de"),
    "docs-en-fr": ("en", "fr"),
}
HELP_PACKAGES: dict[str, str] = {
    "en": "libreoffice-help-en-us",
    "de": "libreoffice-help-de",
    "fr": "libreoffice-help-fr",
}
# language -> directory name under usr/share/libreoffice/help/
HELP_LANG_DIRS: dict[str, str] = {"en": "en-US", "de": "de", "fr": "fr"}
HELP_ROOT = Path("usr/share/libreoffice/help")

# Fractions of help files (not of lines: the help repeats text, a line split would leak).
VALID_FRACTION = 0.02
TEST_FRACTION = 0.035
# Identical sides with at least this many words are an untranslated paragraph, not a
# name or identifier that legitimately stays the same.
UNTRANSLATED_MIN_WORDS = 4
# A side more than this many times longer than the other (longer side at least
# LENGTH_RATIO_MIN_CHARS) is a stale or loose translation of a changed paragraph, or a misalignment.
MAX_LENGTH_RATIO = 3.0
LENGTH_RATIO_MIN_CHARS = 20

SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------- HTML extraction

_VOID_TAGS = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_SKIP_TAGS = frozenset({"script", "style", "footer", "head"})
# Characters that would break a one-sentence-per-line file or are invisible noise.
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"), None)


def _clean(text: str) -> str:
    text = text.translate(_INVISIBLE)
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return " ".join(text.split())


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str]
    children: list["_Node | str"]


class _TreeParser(HTMLParser):
    """Builds a small element tree; forgiving about stray or missing end tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("#root", {}, [])
        self._stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = _Node(tag, {k: v or "" for k, v in attrs}, [])
        self._stack[-1].children.append(node)
        if tag not in _VOID_TAGS:
            self._stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._stack[-1].children.append(_Node(tag, {k: v or "" for k, v in attrs}, []))

    def handle_endtag(self, tag: str) -> None:
        # Close up to the matching open element; an end tag with no opener is ignored, so
        # one malformed tag cannot swallow the rest of the page.
        for i in range(len(self._stack) - 1, 0, -1):
            if self._stack[i].tag == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self._stack[-1].children.append(data)


def _is_switch(node: _Node) -> bool:
    return bool({"switchinline", "switch"} & set(node.attrs.get("class", "").split()))


def _render(node: _Node | str, out: list[str]) -> None:
    """Append the visible text of a paragraph's subtree.

    Switches hold alternatives (MAC/WIN/default, or WRITER/CALC/...), each marked `hidden`;
    the help viewer shows the `default...` one, so that is kept. A switch without a default
    (module-specific text) keeps its first alternative, otherwise its text would vanish from
    both languages and leave fragments like "- Hatch tab.". Other hidden elements are dropped.
    """
    if isinstance(node, str):
        out.append(node)
        return
    if node.tag == "br":
        out.append(" ")
        return
    if node.tag in _SKIP_TAGS:
        return
    if _is_switch(node):
        options = [c for c in node.children if isinstance(c, _Node)]
        chosen = next(
            (c for c in options if c.attrs.get("id", "").startswith("default")), options[0] if options else None
        )
        if chosen is not None:
            for child in chosen.children:
                _render(child, out)
        return
    if "hidden" in node.attrs:
        return
    for child in node.children:
        _render(child, out)


def _collect(node: _Node, found: list[tuple[str, str]]) -> None:
    for child in node.children:
        if isinstance(child, str):
            continue
        el_id = child.attrs.get("id", "")
        if child.tag in _SKIP_TAGS or el_id == "DEBUG":  # scripts, footer debug block
            continue
        if el_id.startswith(("par_id", "hd_id")):
            parts: list[str] = []
            for grandchild in child.children:
                _render(grandchild, parts)
            found.append((el_id, _clean("".join(parts))))
        else:
            _collect(child, found)


def extract_paragraphs(html_text: str) -> dict[str, str]:
    """Map each par_id/hd_id element of a help page to its visible, whitespace-normalised text.

    Repeated ids within the page get the keys `id#2`, `id#3`, ... in document order.
    """
    parser = _TreeParser()
    parser.feed(html_text)
    parser.close()
    found: list[tuple[str, str]] = []
    _collect(parser.root, found)
    paragraphs: dict[str, str] = {}
    for el_id, text in found:
        key, n = el_id, 2
        # An id can occur several times in one page (embedded sections, repeated blocks);
        # number the repeats so both languages pair them by occurrence.
        while key in paragraphs:
            key, n = f"{el_id}#{n}", n + 1
        paragraphs[key] = text
    return paragraphs


# --------------------------------------------------------------------------- sentence splitting

# Hand-written, because no multilingual sentence splitter is available offline in the
# dependency set; the split is only used when both sides yield the same number of sentences.
_BOUNDARY = re.compile(r"(?<!\.)[.!?](?!\.)[\"'\u00bb\u201d\u2019)\]]*\s+")
_ABBREVIATIONS: dict[str, frozenset[str]] = {
    "en": frozenset("e.g i.e etc vs approx no nr fig cf mr mrs ms dr st ca incl".split()),
    "de": frozenset("z.b d.h u.a bzw ggf usw vgl evtl inkl ca nr bspw sog z.t u.u s.o s.u o.ä etc abb max min".split()),
    "fr": frozenset("p.ex ex etc cf env n° no m mm mme p éd resp".split()),
}
_OPENERS = "\"'\u00ab\u201c\u201e\u2018(\u00bf\u00a1"


def _bare(word: str) -> str:
    return word.lstrip(_OPENERS).rstrip(".").lower()


def split_sentences(text: str, lang: str = "en") -> list[str]:
    """Split after . ! ? when whitespace and an uppercase letter, digit or opening quote follow.

    No split after a known abbreviation ("e.g.", "bzw.", "z. B."), after a bare number (German
    ordinals such as "1. Januar"), or inside an ellipsis ("..."; the German help ends menu
    names with one, "Optionen…", so ellipses are never treated as sentence ends).
    """
    abbrevs = _ABBREVIATIONS.get(lang, _ABBREVIATIONS["en"])
    sentences: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        after = text[m.end() :].split(maxsplit=1)
        nxt = after[0] if after else ""
        if not nxt or not (nxt[0].isupper() or nxt[0].isdigit() or nxt[0] in _OPENERS):
            continue
        before = text[start : m.start() + 1].split()
        if not before:
            continue
        if text[m.start()] == ".":
            bare = _bare(before[-1])
            if bare in abbrevs or bare.isdigit():
                continue
            # "z. B." is two one-letter words: look at the pair.
            if len(bare) == 1 and (
                (len(before) > 1 and f"{_bare(before[-2])}.{bare}" in abbrevs)
                or (nxt.endswith(".") and f"{bare}.{_bare(nxt)}" in abbrevs)
            ):
                continue
        sentences.append(text[start : m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


# --------------------------------------------------------------------------- alignment


def _help_files(lang_dir: Path) -> list[str]:
    root = lang_dir / "text"
    return sorted(p.relative_to(lang_dir).as_posix() for p in root.rglob("*.html") if p.is_file())


def _read_html(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: invalid UTF-8 (expected a UTF-8 encoded help page)") from None


def align_help_dirs(
    src_dir: Path, tgt_dir: Path, progress: bool = False
) -> tuple[list[tuple[str, str, str, str]], int]:
    """Pair paragraphs of two language directories (each holding text/**.html) by (file, id).

    Returns ([(relative file, id, source text, target text)] in sorted file and document order,
    number of help files present in both languages).
    """
    src_files = _help_files(src_dir)
    if not src_files:
        raise DataError(f"{src_dir / 'text'}: no .html help files found (expected text/**/*.html)")
    common = [rel for rel in src_files if (tgt_dir / rel).is_file()]
    if not common:
        raise DataError(
            f"{tgt_dir / 'text'}: none of the {len(src_files)} help files of {src_dir} "
            "exist here (expected the same relative paths in both languages)"
        )
    items: Iterable[str] = common
    if progress:
        from tqdm import tqdm

        items = tqdm(common, desc="help files", unit="file", mininterval=1.0)
    aligned: list[tuple[str, str, str, str]] = []
    for rel in items:
        src = extract_paragraphs(_read_html(src_dir / rel))
        tgt = extract_paragraphs(_read_html(tgt_dir / rel))
        aligned.extend((rel, pid, text, tgt[pid]) for pid, text in src.items() if pid in tgt)
    return aligned, len(common)


def _has_letter(text: str) -> bool:
    return any(c.isalpha() for c in text)


def split_of(rel_path: str, valid_fraction: float = VALID_FRACTION, test_fraction: float = TEST_FRACTION) -> str:
    """Deterministic split of a help file: a hash of its relative path picks the bucket."""
    bucket = int(hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:8], 16) / 0x100000000
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + valid_fraction:
        return "valid"
    return "train"


def make_pairs(
    aligned: Sequence[tuple[str, str, str, str]],
    src_lang: str,
    tgt_lang: str,
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> tuple[dict[str, list[tuple[str, str]]], dict[str, object]]:
    """Sentence-split, filter, dedupe and split aligned paragraphs into train/valid/test.

    Returns ({split: [(src, tgt)]}, statistics for the manifest).
    """
    stats: dict[str, int] = dict.fromkeys(
        [
            "paragraphs_split",
            "paragraphs_kept_whole",
            "dropped_empty",
            "dropped_no_letters",
            "dropped_untranslated",
            "dropped_length_ratio",
            "dropped_duplicate",
        ],
        0,
    )
    splits: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    files_per_split: dict[str, set[str]] = {s: set() for s in SPLITS}
    seen: set[tuple[str, str]] = set()
    for rel, _pid, src, tgt in aligned:
        if not src or not tgt:
            stats["dropped_empty"] += 1
            continue
        src_sents, tgt_sents = split_sentences(src, src_lang), split_sentences(tgt, tgt_lang)
        if len(src_sents) > 1 and len(src_sents) == len(tgt_sents):
            stats["paragraphs_split"] += 1
            candidates = list(zip(src_sents, tgt_sents))
        else:
            stats["paragraphs_kept_whole"] += 1
            candidates = [(src, tgt)]
        split = split_of(rel, valid_fraction, test_fraction)
        for pair in candidates:
            s, t = pair
            if s == t and not _has_letter(s):
                stats["dropped_no_letters"] += 1
                continue
            if s == t and len(s.split()) >= UNTRANSLATED_MIN_WORDS:
                stats["dropped_untranslated"] += 1
                continue
            longer, shorter = max(len(s), len(t)), min(len(s), len(t))
            if longer >= LENGTH_RATIO_MIN_CHARS and longer > MAX_LENGTH_RATIO * shorter:
                stats["dropped_length_ratio"] += 1
                continue
            if pair in seen:  # embedded sections repeat across pages; first file wins
                stats["dropped_duplicate"] += 1
                continue
            seen.add(pair)
            splits[split].append(pair)
            files_per_split[split].add(rel)

    # A test or valid pair whose exact source sentence is also in train would measure recall,
    # not translation; remove it (and keep valid disjoint from test too).
    train_src = {s for s, _ in splits["train"]}
    n_test = len(splits["test"])
    splits["test"] = [p for p in splits["test"] if p[0] not in train_src]
    test_src = {s for s, _ in splits["test"]}
    n_valid = len(splits["valid"])
    splits["valid"] = [p for p in splits["valid"] if p[0] not in train_src and p[0] not in test_src]
    info: dict[str, object] = dict(stats)
    info["leaked_removed"] = {"valid": n_valid - len(splits["valid"]), "test": n_test - len(splits["test"])}
    info["help_files_per_split"] = {s: len(files_per_split[s]) for s in SPLITS}
    return splits, info


# --------------------------------------------------------------------------- output


def _expected_files(src_lang: str, tgt_lang: str) -> list[str]:
    return [f"{s}.{lang}" for s in SPLITS for lang in (src_lang, tgt_lang)]


def corpus_is_complete(out_dir: Path, name: str | None = None) -> bool:
    """True when out_dir/manifest.json exists, is current and every listed checksum matches."""
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("format_version") != FORMAT_VERSION:
            return False
        if name is not None and manifest.get("name") != name:
            return False
        files: dict[str, str] = manifest["sha256"]
        if not files:
            return False
        return all(sha256_file(out_dir / fname) == digest for fname, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_replaceable(out_dir: Path, allowed: set[str]) -> None:
    # Never delete a folder we did not write: a user pointing out_dir at their own data
    # should get an error, not an empty directory.
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DataError(f"{out_dir}: exists and is not a directory (expected a corpus folder)")
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in allowed)
        if foreign:
            raise DataError(
                f"{out_dir}: holds files this builder did not write ({', '.join(foreign[:3])}); "
                "expected an empty or previously built corpus folder"
            )


def write_corpus(
    out_dir: Path, splits: dict[str, list[tuple[str, str]]], src_lang: str, tgt_lang: str, manifest: dict[str, object]
) -> Path:
    """Write {split}.{lang} files and manifest.json atomically (build in a temp dir, then rename)."""
    out_dir = Path(out_dir)
    names = _expected_files(src_lang, tgt_lang)
    _check_replaceable(out_dir, set(names) | {"manifest.json"})
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f"{out_dir.name}.tmp-*"):  # left by killed builds
        suffix = stale.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and not _pid_alive(int(suffix)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir.parent / f"{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        digests: dict[str, str] = {}
        for split in SPLITS:
            for side, lang in ((0, src_lang), (1, tgt_lang)):
                fname = f"{split}.{lang}"
                with open(tmp / fname, "w", encoding="utf-8", newline="\n") as f:
                    for pair in splits[split]:
                        f.write(pair[side] + "\n")
                digests[fname] = sha256_file(tmp / fname)
        full = dict(manifest)
        full["counts"] = {s: len(splits[s]) for s in SPLITS}
        full["sha256"] = digests
        # The manifest is written last: its presence with matching checksums marks completion.
        (tmp / "manifest.json").write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out_dir.exists():
            old = out_dir.parent / f"{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def build_from_help_dirs(
    src_dir: Path,
    tgt_dir: Path,
    out_dir: Path,
    *,
    name: str = "docs",
    src_lang: str = "en",
    tgt_lang: str = "de",
    packages: dict[str, str] | None = None,
    progress: bool = False,
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> Path:
    """Build a corpus from two extracted help language directories (each with text/**.html).

    This is everything build_docs_corpus does after apt; tests call it on small fixtures.
    """
    return _build(
        Path(src_dir),
        Path(tgt_dir),
        Path(out_dir),
        name,
        src_lang,
        tgt_lang,
        packages or {},
        progress,
        valid_fraction,
        test_fraction,
        time.monotonic(),
    )


def _build(
    src_dir: Path,
    tgt_dir: Path,
    out_dir: Path,
    name: str,
    src_lang: str,
    tgt_lang: str,
    packages: dict[str, str],
    progress: bool,
    valid_fraction: float,
    test_fraction: float,
    started: float,
) -> Path:
    aligned, n_files = align_help_dirs(Path(src_dir), Path(tgt_dir), progress=progress)
    splits, info = make_pairs(aligned, src_lang, tgt_lang, valid_fraction, test_fraction)
    if not splits["train"]:
        raise DataError(
            f"{src_dir}: no usable sentence pairs after alignment with {tgt_dir} "
            "(expected paragraphs with matching par_id/hd_id ids)"
        )
    manifest: dict[str, object] = {
        "name": name,
        "format_version": FORMAT_VERSION,
        "source_language": src_lang,
        "target_language": tgt_lang,
        "source": "LibreOffice help (MPL-2.0), aligned by (help file, paragraph id)",
        "packages": dict(packages),
        "help_files": n_files,
        "paragraphs_aligned": len(aligned),
        "split_by": "sha1 of help file path",
        "fractions": {"valid": valid_fraction, "test": test_fraction},
        **info,
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    manifest["build_seconds"] = round(time.monotonic() - started, 2)
    return write_corpus(Path(out_dir), splits, src_lang, tgt_lang, manifest)


# --------------------------------------------------------------------------- apt


@dataclass(frozen=True)
class HelpPackage:
    """A downloaded and extracted Debian package."""

    name: str
    version: str
    deb: Path
    root: Path  # extracted package tree (contains usr/share/libreoffice/help/...)


def default_cache_dir() -> Path:
    """~/.cache/lite/apt, or $LITE_CACHE_DIR/apt when that variable is set."""
    base = os.environ.get("LITE_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "lite") / "apt"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E:")]
    return (errors or lines or ["(no output)"])[-1]


def _run(cmd: list[str], cwd: Path | None = None, where: Path | None = None) -> str:
    """Run a tool; on failure raise a one-line DataError naming `where` and the tool's own error."""
    env = dict(os.environ, LC_ALL="C")  # stable, English messages to quote in errors
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        raise DataError(
            f"{cmd[0]}: not found on PATH (expected apt-get and dpkg-deb, i.e. a Debian or Ubuntu system)"
        ) from None
    if proc.returncode != 0:
        shown = " ".join(a for i, a in enumerate(cmd) if a != "-o" and (i == 0 or cmd[i - 1] != "-o"))
        raise DataError(
            f"{where or cmd[-1]}: `{shown}` failed with exit code {proc.returncode}: "
            f"{_last_line(proc.stderr or proc.stdout)}"
        )
    return proc.stdout


def _apt_options(state: Path) -> list[str]:
    opts = {
        "Dir::State": state,
        "Dir::State::Lists": state / "lists",
        "Dir::State::status": state / "status",
        "Dir::Cache": state / "cache",
        "Debug::NoLocking": "1",  # the private state dir is ours; no system lock needed
    }
    # As root apt drops to the _apt user for downloads, which cannot write to our cache
    # and warns; as a normal user there is no sandbox to configure.
    if getattr(os, "geteuid", lambda: -1)() == 0:
        opts["APT::Sandbox::User"] = "root"
    args: list[str] = []
    for key, value in opts.items():
        args += ["-o", f"{key}={value}"]
    return args


def _find_deb(debs: Path, package: str) -> Path | None:
    found = sorted(debs.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def fetch_help_packages(packages: Sequence[str], cache_dir: Path | None = None) -> list[HelpPackage]:
    """Download (once) and extract Debian packages with apt, without root.

    Uses a private apt state directory under cache_dir and the system's apt sources. A .deb
    already in the cache is reused without touching the network, so rebuilds work offline.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    state, debs, extract = cache / "state", cache / "debs", cache / "extract"
    for d in (state / "lists" / "partial", state / "cache" / "archives" / "partial", debs, extract):
        d.mkdir(parents=True, exist_ok=True)
    (state / "status").touch()

    missing = [p for p in packages if _find_deb(debs, p) is None]
    if missing:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise DataError(
                    f"{tool}: not found on PATH; the LibreOffice help corpora are built "
                    f"from the Debian packages {', '.join(packages)} (expected a Debian or "
                    "Ubuntu system; otherwise bring a corpus folder, see lite.data.parallel)"
                )
        apt = ["apt-get", *_apt_options(state)]
        lists_empty = not any(p.is_file() for p in (state / "lists").iterdir())
        if lists_empty:
            _run([*apt, "update"], where=state)
        # Download into a staging dir so a half-downloaded file never looks like a cached .deb.
        staging = debs / f".incoming-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            try:
                _run([*apt, "download", *missing], cwd=staging, where=state)
            except DataError:
                if lists_empty:
                    raise
                _run([*apt, "update"], where=state)  # stale lists name versions the mirror no longer has
                _run([*apt, "download", *missing], cwd=staging, where=state)
            for deb in staging.glob("*.deb"):
                os.replace(deb, debs / deb.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    result: list[HelpPackage] = []
    for package in packages:
        deb = _find_deb(debs, package)
        if deb is None:
            raise DataError(
                f"{debs}: apt reported success but no {package}_*.deb arrived (expected the downloaded package file)"
            )
        version = _run(["dpkg-deb", "-f", str(deb), "Version"], where=deb).strip()
        root = extract / deb.stem
        if not (root / ".complete").exists():
            tmp = extract / f"{deb.stem}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                _run(["dpkg-deb", "-x", str(deb), str(tmp)], where=deb)
                (tmp / ".complete").touch()
                shutil.rmtree(root, ignore_errors=True)
                os.replace(tmp, root)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        result.append(HelpPackage(package, version, deb, root))
    return result


def build_docs_corpus(name: str, out_dir: Path, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Build (or reuse) the LibreOffice help corpus `name` ("docs-en-de", "docs-en-fr") in out_dir.

    Writes {train,valid,test}.{src,tgt} and manifest.json. Returns out_dir immediately when its
    manifest exists and every checksum matches.
    """
    if name not in KNOWN_CORPORA:
        raise DataError(
            f"{name}: unknown built-in corpus (expected one of {', '.join(KNOWN_CORPORA)}, "
            "or a folder of parallel files)"
        )
    out_dir = Path(out_dir)
    if corpus_is_complete(out_dir, name):
        return out_dir
    src_lang, tgt_lang = KNOWN_CORPORA[name]
    started = time.monotonic()
    pkgs = fetch_help_packages([HELP_PACKAGES[src_lang], HELP_PACKAGES[tgt_lang]], cache_dir)
    dirs = []
    for pkg, lang in zip(pkgs, (src_lang, tgt_lang)):
        d = pkg.root / HELP_ROOT / HELP_LANG_DIRS[lang]
        if not d.is_dir():
            raise DataError(
                f"{pkg.deb}: no {HELP_ROOT / HELP_LANG_DIRS[lang]} inside (expected the LibreOffice help HTML tree)"
            )
        dirs.append(d)
    # `started` is taken before apt so build_seconds covers download and extraction too.
    return _build(
        dirs[0],
        dirs[1],
        out_dir,
        name,
        src_lang,
        tgt_lang,
        {p.name: p.version for p in pkgs},
        progress,
        VALID_FRACTION,
        TEST_FRACTION,
        started,
    )
