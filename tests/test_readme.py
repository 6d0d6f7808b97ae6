"""README's measured tables equal what the committed JSON says, and every result names its commit."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import readme  # noqa: E402 - importable only once the root is on sys.path

RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))


def test_readme_tables_match_the_json():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rendered, changed = readme.render(text)
    assert changed == [], f"README tables differ from their JSON: {changed} (run python benchmarks/readme.py)"
    assert rendered == text
    marked = set(re.findall(r"<!-- table:([\w-]+) -->", text))
    assert marked == set(readme.TABLES)  # every renderer has its place in the README


def test_a_changed_figure_is_caught(tmp_path):
    """The check fails when a JSON figure changes: proof that it compares values, not just markers."""
    for path in RESULTS:
        shutil.copy(path, tmp_path / path.name)
    arm = json.loads((tmp_path / "arm.json").read_text(encoding="utf-8"))
    arm["results"][0]["translation"]["bleu"] += 1.0
    (tmp_path / "arm.json").write_text(json.dumps(arm), encoding="utf-8")
    _, changed = readme.render((ROOT / "README.md").read_text(encoding="utf-8"), tmp_path)
    assert changed == ["arm"]


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_every_result_names_its_commit(path):
    record = json.loads(path.read_text(encoding="utf-8"))
    assert re.fullmatch(r"[0-9a-f]{40}", record.get("commit") or ""), f"{path.name}: no commit"
    text = path.read_text(encoding="utf-8")
    assert "/work/" not in text and "/tmp/" not in text and "/home/" not in text, f"{path.name}: absolute paths"
