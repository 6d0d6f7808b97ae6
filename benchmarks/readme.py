"""README's measured tables, rendered from the committed JSON under benchmarks/results/.

Each table sits in README.md between `<!-- table:NAME -->` and `<!-- /table:NAME -->`; this script
rewrites what is between the markers from the JSON the table names, so a figure in the README is
always one a benchmark saved (with its commit). `--check` changes nothing and exits 1 naming every
table that differs (tests/test_readme.py runs it).

    python benchmarks/readme.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.kernels import COLUMNS, column_shares, places  # noqa: E402 - after the path insert

RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"


def _markdown(head: str, rows: list[str]) -> str:
    """A markdown table: the header row, its separator (one `---` per header cell), then `rows`."""
    cells = head.count("|") - 1
    return "\n".join([head, "|" + " --- |" * cells, *rows]) + "\n"


def _mb(x: float) -> str:
    return f"{x / 1e6:.1f}M"


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "not measured"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s"


def headline_table(d: dict) -> str:
    """Per model: MACs, params, steps, tokens/s, valid ppl, BLEU greedy / beam, chrF."""
    head = (
        "| model | MACs | params (w/o emb.) | steps | stopped by | target tok/s | valid ppl | BLEU greedy "
        "| BLEU beam | chrF beam | decoding |"
    )
    lines = []
    for m in d["models"]:
        name = "LSRA" if m["family"] == "lsra" else "Transformer"
        lines.append(
            f"| {name} (`{m['config']}`) | {_mb(m['macs'])} | {m['params'] / 1e6:.2f}M "
            f"({m['params_no_embed'] / 1e6:.2f}M) | {m['steps']:,} | {m['stop_reason']} "
            f"| {m['target_tokens_per_s']:,.0f} | {m['valid_ppl']:.2f} | {m['bleu_greedy']:.2f} "
            f"| {m['bleu_beam']:.2f} | {m['chrf_beam']:.2f} | {m['decoding_beam']} |"
        )
    return _markdown(head, lines)


def headline_stages_table(d: dict) -> str:
    """Wall time of each `make compress` stage per model."""
    stages = list(d["stage_commands"])
    head, lines = "| model | " + " | ".join(stages) + " | total |", []
    for m in d["models"]:
        times = [m["stage_seconds"].get(s) for s in stages]
        total = None if None in times else sum(times)
        lines.append(f"| {m['config']} | " + " | ".join(_minutes(t) for t in times) + f" | {_minutes(total)} |")
    return _markdown(head, lines)


def arm_table(d: dict) -> str:
    """Instructions per sentence, BLEU on target vs host, bit-identity: per core and artifact."""
    head = (
        "| core | artifact | instructions / sentence | encoder | decoder step (mean) | cold first sentence "
        "| BLEU target | BLEU host | identical lines | reference kernels | emulated eval (s) |"
    )
    lines = []
    for r in d["results"]:
        i, t, ref = r["instructions"], r["translation"], r.get("reference", {})
        same = "bit-identical" if ref.get("bit_identical") else (f"max diff {ref['max_abs_diff']:.1e}" if ref else "-")
        lines.append(
            f"| {r['target'].removeprefix('qemu:')} | {r['artifact']} | {i['sentence'] / 1e6:.1f}M "
            f"| {i['encoder'] / 1e6:.1f}M | {i['step_mean'] / 1e6:.2f}M | {i['cold_sentence'] / 1e6:.1f}M "
            f"| {t['bleu']:.2f} | {t['host_bleu']:.2f} | {t['agreement']:.1%} | {same} | {r['seconds']:.0f} |"
        )
    return _markdown(head, lines)


def listops_table(d: dict) -> str:
    """Accuracy and cost per attention variant."""
    head = "| variant | test accuracy | majority class | MACs / example | share of pairs kept | CPU minutes |"
    lines = []
    order = [n for n in d.get("models", {}) if n in d["results"]] or list(d["results"])
    for name in order:
        r = d["results"][name]
        share = f"{r['mean_kept_share']:.3f}" if "mean_kept_share" in r else "1"
        lines.append(
            f"| {name} | {r['test_accuracy']:.3f} | {r['majority_class_accuracy']:.3f} "
            f"| {_mb(r['macs_per_example'])} | {share} | {r['train_cpu_minutes']:.1f} |"
        )
    return _markdown(head, lines)


def attention_table(d: dict) -> str:
    """Dense vs local+global per part, runtime and length: time, peak memory, MACs."""
    by = {(r["part"], r["runtime"], r["n"], r["kind"]): r for r in d["rows"]}
    head = (
        "| part | runtime | n | dense ms | local+global ms | speedup | dense peak MB | l+g peak MB "
        "| less peak memory | less memory per call | fewer MACs |"
    )
    lines = []
    for (part, runtime, n, kind), dense in by.items():
        if kind != "dense" or (part, runtime, n, "local+global") not in by:
            continue
        sparse = by[(part, runtime, n, "local+global")]
        # per-call memory: PyTorch only (TFLite allocates its arena before the first call), and only where
        # both sides allocate more than 0.5 MB per call (below that the ratio is noise)
        call = (
            f"{dense['call_mb'] / sparse['call_mb']:.1f}x"
            if runtime == "pytorch" and min(dense["call_mb"], sparse["call_mb"]) > 0.5
            else "n/a"
        )
        lines.append(
            f"| {part} | {runtime} | {n} | {dense['ms']:.1f} | {sparse['ms']:.1f} "
            f"| {dense['ms'] / sparse['ms']:.1f}x | {dense['peak_mb']:.0f} | {sparse['peak_mb']:.0f} "
            f"| {dense['peak_mb'] / sparse['peak_mb']:.1f}x | {call} | {dense['macs'] / sparse['macs']:.1f}x |"
        )
    return _markdown(head, lines)


def compression_table(d: dict) -> str:
    """The size chain: bytes on disk and xz-packed, params, MACs, BLEU, ratio against the first stage."""
    head = (
        "| stage | on disk | xz | params | MACs | test BLEU (artifact) | x smaller (as stored) | x smaller (xz both) |"
    )
    lines = []
    for s in d["chain"]:
        lines.append(
            f"| {s['stage']} ({s['artifact']}) | {s['bytes_on_disk'] / 1e6:.2f} MB | {s['bytes_xz'] / 1e6:.2f} MB "
            f"| {s['params']:,} | {_mb(s['macs'])} | {s['bleu']:.2f} | {s['x_smaller']:.1f} "
            f"| {s['x_smaller_xz_both']:.1f} |"
        )
    return _markdown(head, lines)


def shortlist_table(d: dict) -> str:
    """Greedy test BLEU and latency with and without the vocabulary shortlist, per engine."""
    head = (
        "| engine | test BLEU | with shortlist | ms / sentence | with shortlist | ms / step | with shortlist "
        "| speed-up |"
    )
    lines = [
        f"| PyTorch (greedy, batched) | {d['bleu_test_greedy']['pytorch']:.2f} "
        f"| {d['bleu_test_greedy']['pytorch-shortlist']:.2f} | | | | | |",
    ]
    for name, a in d["artifacts"].items():
        s, t = a["sentence"], a["step_ms"]
        lines.append(
            f"| {name} | {a['bleu']:.2f} | {a['bleu_shortlist']:.2f} | {s['full']['median_ms']:.2f} "
            f"| {s['shortlist']['median_ms']:.2f} | {t['full']:.3f} | {t['shortlist']:.3f} "
            f"| {a['speedup_sentence']:.2f}x |"
        )
    return _markdown(head, lines)


def latency_table(d: dict) -> str:
    """Per run and engine: the latency protocol's median, against eager and both bounds, and throughput."""
    head = (
        "| model | engine | ms / sentence | vs eager | x compute bound | x traffic bound "
        "| sentences/s (test split) | BLEU (test split) |"
    )
    lines = []
    model = {"lsra": "LSRA", "transformer": "Transformer"}
    for r in d["results"]:
        through = next((t["engines"] for t in d.get("throughput", []) if t["run"] == r["run"]), {})
        for name, e in r["engines"].items():
            if e.get("status") != "ok":
                continue
            t = through.get(name, {})
            rate = f"{t['sentences_per_s']:.0f}" if t else ""
            bleu = f"{t['bleu']:.2f}" if t else ""
            lines.append(
                f"| {model.get(r['arch'], r['arch'])} | {name} | {e['median_ms']:.2f} | {e['speedup_vs_eager']:.2f}x "
                f"| {e['x_compute_bound']:.1f}x | {e['x_traffic_bound']:.1f}x | {rate} | {bleu} |"
            )
    return _markdown(head, lines)


def runtime_overhead_table(d: dict) -> str:
    """Per TFLite folder: a decoder step and the time outside the graph, general path vs fast path."""
    head = (
        "| model | folder | step ms (general) | step ms (fast) | graph ms | outside the graph, us (general -> fast) "
        "| Python share (fast) |"
    )
    lines = []
    for r in d["results"]:
        g, f = r["dict"], r["session"]
        name = r["folder"] + (" + shortlist" if r["shortlist"] else "")
        lines.append(
            f"| {Path(r['run']).name} | {name} | {g['step_ms']:.3f} | {f['step_ms']:.3f} | {f['graph_ms']:.3f} "
            f"| {g['outside_graph_us']:.0f} -> {f['outside_graph_us']:.0f} | {f['python_share']:.0%} |"
        )
    return _markdown(head, lines)


def arm_shortlist_table(d: dict) -> str:
    """Per emulated core and folder: guest instructions per sentence and per step, without and with the shortlist."""
    head = "| core | artifact | M instructions / sentence | with shortlist | M / step | with shortlist | step ratio |"
    lines = []
    for r in d["results"]:
        f, s = r["full"], r["shortlist"]
        lines.append(
            f"| {r['core']} | {r['artifact']} | {f['sentence'] / 1e6:.1f} | {s['sentence'] / 1e6:.1f} "
            f"| {f['step_mean'] / 1e6:.2f} | {s['step_mean'] / 1e6:.2f} | {r['step_ratio']:.2f}x |"
        )
    return _markdown(head, lines)


def profile_table(d: dict) -> str:
    """Per folder and machine: one decoder step's time (host) or instructions (emulated core), and the
    share of each kernel family."""
    head = "| artifact | where | encoder | step | " + " | ".join(COLUMNS) + " |"
    lines = []
    for r in d["results"]:
        name = r["artifact"] + ("" if r["published"] else " (unpublished)")
        for where, p, key in places(r):
            shares = column_shares(p["families"], key).values()
            if where == "host":
                size = f"{p['encoder_ms']:.2f} ms | {p['step_ms']:.3f} ms"
            else:
                size = f"{p['encoder'] / 1e6:.1f}M | {p['step_mean'] / 1e6:.2f}M"
            lines.append(f"| {name} | {where} | {size} | " + " | ".join(f"{x:.0%}" for x in shares) + " |")
    return _markdown(head, lines)


# table name -> (JSON file under benchmarks/results/, renderer)
TABLES: dict[str, tuple[str, Callable[[dict], str]]] = {
    "headline": ("headline.json", headline_table),
    "headline-stages": ("headline.json", headline_stages_table),
    "arm": ("arm.json", arm_table),
    "listops": ("listops.json", listops_table),
    "listops-short": ("listops-short.json", listops_table),
    "attention": ("attention_scaling.json", attention_table),
    "compression": ("compression.json", compression_table),
    "shortlist": ("shortlist.json", shortlist_table),
    "latency": ("latency.json", latency_table),
    "runtime-overhead": ("runtime_overhead.json", runtime_overhead_table),
    "arm-shortlist": ("arm_shortlist.json", arm_shortlist_table),
    "profile": ("profile.json", profile_table),
}


def render(text: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """README text with every marked table rendered; also the names of the tables that changed."""
    changed = []

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in TABLES:
            raise SystemExit(f"{README.name}: unknown table marker {name!r} (known: {', '.join(TABLES)})")
        file, renderer = TABLES[name]
        path = results / file
        if not path.is_file():
            raise SystemExit(f"{path}: missing (table {name!r} of {README.name} is rendered from it)")
        commit = json.loads(path.read_text(encoding="utf-8")).get("commit")
        table = renderer(json.loads(path.read_text(encoding="utf-8")))
        body = f"\n{table}\n<sub>from `benchmarks/results/{file}`, commit {str(commit)[:10]}</sub>\n"
        if match.group(2) != body:
            changed.append(name)
        return f"<!-- table:{name} -->{body}<!-- /table:{name} -->"

    return re.sub(r"<!-- table:([\w-]+) -->(.*?)<!-- /table:\1 -->", fill, text, flags=re.S), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its JSON")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    new, changed = render(text)
    if args.check:
        for name in changed:
            print(
                f"{README.name}: table {name!r} differs from benchmarks/results/{TABLES[name][0]} "
                f"(run `python benchmarks/readme.py`)",
                file=sys.stderr,
            )
        return 1 if changed else 0
    if new != text:
        tmp = README.with_name(f".{README.name}.tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(README)
    print(f"{README.name}: {len(changed)} table(s) rewritten" + (f" ({', '.join(changed)})" if changed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
