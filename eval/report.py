"""The MAC/BLEU budget report: one row per model and artifact of one or more run folders.

Reads ONLY files the other stages saved; it never trains, decodes or re-scores anything:

    RUN/config.yaml        the run config (lite.config.load_config): model family, corpus, budget
    RUN/model.pt           the trained PyTorch model; its "model_config" gives the analytic MACs and
                           parameters (lite.metrics.macs.model_summary) and its size on disk is the fp32 size.
                           Without model.pt, config.yaml's model section is used (vocab_size from
                           tokenizer.vocab_size) and the size is "not measured".
    RUN/results.json       BLEU per "split/decoding" with the sacrebleu signature (eval/evaluate.py)
    RUN/train.json         training summary (lite/train.py); shown per run, params cross-checked
    RUN/artifacts.json     optional: the compressed / exported artifacts (schema below)

The PyTorch fp32 model (model.pt) is always one row; every entry of artifacts.json is another.

artifacts.json (the contract the prune / quantize / export / measure stages write)
------------------------------------------------------------------------------------
A JSON list of objects, one per artifact file. Unknown keys are rejected (a typo would otherwise show
up as "not measured"). Every measurement is optional: null or a missing key means "not measured".

    [
      {
        "name": "int8-tflite",                 # required, unique within the run; the row's label
        "path": "export/tflite-int8",          # required; relative to the run folder (or absolute): a
                                               #   file, or a model folder (size = its manifest's graphs)
        "format": "tflite",                    # required: pytorch | onnx | tflite
        "precision": "int8",                   # required: fp32 | fp16 | dynamic-int8 | int8
        "size_bytes": 2481234,                 # bytes on disk incl. sidecar files (e.g. .onnx.data)
        "macs": 94371840,                      # MACs counted from the exported graph (paper convention)
        "macs_method": "tflite graph",         # how "macs" was counted (shown as its source)
        "model_config": {...},                 # the lite.config.ModelConfig dict the artifact was built
                                               #   from, when it differs from model.pt (e.g. pruned)
        "source_model": "pruned/model.pt",     # or: a checkpoint holding that "model_config"
        "bleu": {                              # per "split/decoding", as in results.json
          "test/greedy": 23.1,                 #   a number, or null (not measured), or
          "test/beam4-lenpen1": {"bleu": 23.4, "bleu_signature": "nrefs:1|...", "sentences": 1245,
                                 "corpus": "docs-en-de"}   # a results.json-style record (preferred)
        },
        "latency_ms": {"host-x86": 12.3, "pixel7-cpu": null},   # wall-clock ms per sentence on a real
                                               #   target; emulated (qemu) wall time does not belong here
        "instructions": {"qemu:cortex-a72": 41234567},          # guest instructions per sentence,
                                               #   counted under emulation (the honest ARM figure)
        "targets": {"qemu:cortex-a72": {"bleu": 22.1, "host_bleu": 22.1, ...}},   # what `lite evaluate
                                               #   --target` measured there (eval/targets/evaluate.py); kept
                                               #   for reading, the report uses latency_ms / instructions
        "provenance": {"commit": "...", "dirty": false, "versions": {...}, "seed": 1, "config_sha256": "...",
                       "cpu": "...", "threads": 2, "date": "...", "command": "lite export runs/default"},
                                               # lite/provenance.py: what made the row (kept for reading)
        "notes": "static_wi8_ai8 recipe, 200 calibration sentences"   # free text, shown in the report
      }
    ]

Rules the report applies:
- size: the file on disk when it exists (plus "<path>.data" for onnx); otherwise "size_bytes".
- MACs: "macs" when given (a graph count), else the analytic count of the artifact's model config
  ("model_config", else "source_model", else the run's model.pt, since quantization and export do
  not change the mult-adds). Params always come from the analytic model of that config.
- An entry whose path is RUN/model.pt is merged into the model.pt row (e.g. its host latency).
- BLEU: the row's headline BLEU is the test split with the run config's decoding (decode.beam /
  decode.lenpen), else test/greedy, else the first other test decoding. A plain number carries no
  signature; the report shows "signature not recorded".
- Budgets (RUN/config.yaml "budget"): max_macs, max_size_mb (MB = 1e6 bytes), max_latency_ms (every
  measured target must meet it; the margin is the worst target), min_bleu (headline test BLEU).
  Each is PASS, FAIL, "unknown" (quantity not measured, never a pass) or "no budget". The margin is
  value - limit (negative is under a maximum; positive is over a minimum).
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from lite.config import ConfigError, ModelConfig, RunConfig, load_config, model_config_from_dict, to_dict
from lite.files import atomic_path, read_json, write_json_atomic, write_text_atomic
from lite.run import RunPaths

NOT_MEASURED = "not measured"
FORMATS = ("pytorch", "onnx", "tflite")
PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8")
ARTIFACT_KEYS = {
    "name",
    "path",
    "format",
    "precision",
    "size_bytes",
    "macs",
    "macs_method",
    "model_config",
    "source_model",
    "bleu",
    "latency_ms",
    "instructions",
    "targets",
    "notes",
    "provenance",
}
REQUIRED_KEYS = ("name", "path", "format", "precision")
BUDGETS = ("max_macs", "max_size_mb", "max_latency_ms", "min_bleu")
# the per-layer parts of lite.metrics.macs, in the order they are stacked in the plot
MAC_PARTS = (
    "attn_proj",
    "attn_scores",
    "attn_values",
    "glu",
    "conv_in",
    "conv_kernel",
    "conv",
    "conv_out",
    "cross_proj",
    "cross_scores",
    "cross_values",
    "ffn",
)
REPORT_FILES = ("report.md", "report.html", "report.json", "bleu_vs_macs.png", "macs_per_layer.png")


# ----------------------------------------------------------------------------- reading a run folder


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _model_config_of(checkpoint_path: Path) -> dict:
    from lite.checkpoint import load

    record = load(checkpoint_path)  # ValueError naming the file when unreadable
    if not isinstance(record, dict) or not isinstance(record.get("model_config"), dict):
        raise ValueError(f'{checkpoint_path}: no "model_config" in the checkpoint')
    return record["model_config"]


def _parse_model_config(data: dict, where: str) -> ModelConfig:
    try:
        return model_config_from_dict(data)
    except ConfigError as exc:
        raise ValueError(f"{where}: {exc}") from None


_SUMMARY_CACHE: dict[str, dict] = {}


def _summary(mcfg: ModelConfig) -> dict:
    """lite.metrics.macs.model_summary, cached per config (building the model to count params takes a moment)."""
    from lite.metrics.macs import model_summary

    key = json.dumps(to_dict(mcfg), sort_keys=True)
    if key not in _SUMMARY_CACHE:
        _SUMMARY_CACHE[key] = model_summary(mcfg)
    return _SUMMARY_CACHE[key]


def _file_size(path: Path, fmt: str) -> int | None:
    if path.is_dir():  # a model folder from `lite export`: the graphs it ships (tokenizer and manifest aside)
        manifest = read_json(path / "manifest.json", {})
        graphs = [path / g for g in manifest.get("graphs", {}).values()]
        return sum(g.stat().st_size for g in graphs) if graphs and all(g.is_file() for g in graphs) else None
    if not path.is_file():
        return None
    size = path.stat().st_size
    sidecar = path.with_name(path.name + ".data")  # the dynamo ONNX exporter's external weights
    if fmt == "onnx" and sidecar.is_file():
        size += sidecar.stat().st_size
    return size


def _bleu_records(raw: dict, where: str, corpus: str, default_source: str) -> dict[str, dict]:
    """{"split/decoding": {"bleu", "signature", "corpus", "sentences", "source", ...}} from results.json
    or an artifact's "bleu" (numbers or records); null values are kept out (not measured)."""
    out = {}
    if not isinstance(raw, dict):
        raise ValueError(f'{where}: expected a mapping of "split/decoding" to BLEU')
    for key, value in raw.items():
        split, _, decoding = key.partition("/")
        if value is None:
            continue
        if _is_number(value):
            value = {"bleu": value}
        if not isinstance(value, dict) or not (_is_number(value.get("bleu")) or value.get("bleu") is None):
            raise ValueError(f'{where}[{key!r}]: expected a BLEU number or a record with a numeric "bleu"')
        if value.get("bleu") is None:
            continue
        out[key] = {
            "key": key,
            "split": value.get("split", split),
            "decoding": value.get("decoding", decoding or None),
            "bleu": value["bleu"],
            "signature": value.get("bleu_signature"),
            "chrf": value.get("chrf"),
            "chrf_signature": value.get("chrf_signature"),
            "brevity_penalty": value.get("brevity_penalty"),
            "corpus": value.get("corpus", corpus),
            "sentences": value.get("sentences"),
            "source": f"{default_source}[{key!r}]",
        }
    return out


def _headline_bleu(records: dict[str, dict], preferred: str) -> dict | None:
    for key in (f"test/{preferred}", "test/greedy"):
        if key in records:
            return records[key]
    tests = sorted(k for k in records if k.startswith("test/"))
    return records[tests[0]] if tests else None


def _check_artifacts(data: Any, path: Path) -> list[dict]:
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of artifacts, got {type(data).__name__}")
    names = set()
    for i, entry in enumerate(data):
        where = f"{path}: artifact {i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - ARTIFACT_KEYS)
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {', '.join(unknown)} (expected: {', '.join(sorted(ARTIFACT_KEYS))})"
            )
        for key in REQUIRED_KEYS:
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ValueError(f'{where}: "{key}" is required (a non-empty string)')
        where = f"{path}: artifact {entry['name']!r}"
        if entry["name"] in names:
            raise ValueError(f"{where}: duplicate name")
        names.add(entry["name"])
        if entry["format"] not in FORMATS:
            raise ValueError(f"{where}: format must be one of {', '.join(FORMATS)}, got {entry['format']!r}")
        if entry["precision"] not in PRECISIONS:
            raise ValueError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {entry['precision']!r}")
        for key in ("size_bytes", "macs"):
            v = entry.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ValueError(f'{where}: "{key}" must be a non-negative integer or null, got {v!r}')
        for key in ("latency_ms", "instructions"):
            v = entry.get(key, {})
            if v is None:
                continue
            if not isinstance(v, dict) or any(x is not None and not _is_number(x) for x in v.values()):
                raise ValueError(f'{where}: "{key}" must map target names to numbers or null')
        if not isinstance(entry.get("targets", {}), dict):
            raise ValueError(f'{where}: "targets" must map target names to records')
        if entry.get("model_config") is not None and not isinstance(entry["model_config"], dict):
            raise ValueError(f'{where}: "model_config" must be an object (a ModelConfig)')
        for key in ("macs_method", "source_model", "notes"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise ValueError(f'{where}: "{key}" must be a string')
    return data


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive (Windows)
        return str(path)


def _row(
    run: str,
    cfg: RunConfig,
    *,
    artifact: str,
    path: Path | None,
    root: Path,
    fmt: str,
    precision: str,
    mcfg: ModelConfig,
    mcfg_source: str,
    size: int | None,
    size_source: str | None,
    macs_given: int | None,
    macs_source: str | None,
    bleu: dict[str, dict],
    latency: dict,
    instructions: dict,
    notes: str | None,
) -> dict:
    summary = _summary(mcfg)
    analytic_src = f"lite.metrics.macs.count_macs({mcfg_source})"
    macs = macs_given if macs_given is not None else summary["macs"]
    headline = _headline_bleu(bleu, _decoding_name(cfg))
    row = {
        "id": f"{run}/{artifact}",
        "run": run,
        "family": mcfg.arch,
        "artifact": artifact,
        "path": None if path is None else _rel(path, root),
        "format": fmt,
        "precision": precision,
        "macs": macs,
        "macs_analytic": summary["macs"],
        "macs_encoder": summary["encoder"],
        "macs_decoder": summary["decoder"],
        "params": summary["params"],
        "params_no_embed": summary["params_no_embed"],
        "vocab_size": summary["vocab_size"],
        "size_bytes": size,
        "size_mb": None if size is None else size / 1e6,
        "bleu": headline,
        "bleu_all": bleu,
        "latency_ms": dict(latency),
        "instructions": dict(instructions),
        "notes": notes,
        "layers": summary["layers"],
        "model_config": to_dict(mcfg),
        "sources": {
            "macs": macs_source if macs_given is not None else analytic_src,
            "params": f"lite.metrics.macs.model_summary({mcfg_source})",
            "size": size_source,
            "bleu": None if headline is None else headline["source"],
            "latency_ms": None,
            "instructions": None,
        },
        "pareto": False,
    }
    row["budget"] = _budget_checks(row, cfg)
    row["verdict"] = _verdict(row["budget"])
    return row


def _decoding_name(cfg: RunConfig) -> str:
    from eval.evaluate import decoding_name

    return decoding_name(cfg.decode.beam, cfg.decode.lenpen)


def collect_run(run: Path) -> dict:
    """Everything the report needs from one run folder, read from its saved files (nothing recomputed
    except the analytic MAC/parameter counts). Raises ValueError naming the file on a bad input."""
    root = Path(run)
    paths = RunPaths(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a run folder (no such directory)")
    if not paths.config.is_file():
        raise ValueError(f"{paths.config}: no config.yaml in the run folder (not a run folder?)")
    cfg = load_config(paths.config)  # ConfigError (a ValueError) names file and field
    name = root.resolve().name
    notes: list[str] = []

    results_raw = read_json(paths.results, {})
    if not isinstance(results_raw, dict):
        raise ValueError(f'{paths.results}: expected a JSON object of "split/decoding" records')
    results = _bleu_records(results_raw, str(paths.results), cfg.data.corpus, "results.json")
    if not paths.results.is_file():
        notes.append(f"{name}: no results.json (BLEU not measured; run `lite evaluate`)")

    train = read_json(paths.train_summary)
    if train is not None and not isinstance(train, dict):
        raise ValueError(f"{paths.train_summary}: expected a JSON object")

    # the model config: model.pt's own, else config.yaml's model section
    if paths.model.is_file():
        mcfg = _parse_model_config(_model_config_of(paths.model), f"{paths.model} model_config")
        mcfg_source = "model.pt model_config"
        model_size, size_source = paths.model.stat().st_size, "size on disk of model.pt"
    else:
        mcfg = cfg.model if cfg.model.vocab_size else replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size)
        mcfg_source = "config.yaml model" + ("" if cfg.model.vocab_size else ", vocab_size from tokenizer.vocab_size")
        model_size, size_source = None, None
        notes.append(f"{name}: no model.pt (not trained yet?): MACs/params from config.yaml, size not measured")

    artifacts_path = root / "artifacts.json"
    artifacts = _check_artifacts(read_json(artifacts_path), artifacts_path) if artifacts_path.is_file() else []

    model_entry = next((a for a in artifacts if (root / a["path"]).resolve() == paths.model.resolve()), None)
    bleu = dict(results)
    latency, instructions, model_notes = {}, {}, None
    if model_entry is not None:  # measurements of model.pt itself (e.g. host latency) join its row
        extra = _bleu_records(
            model_entry.get("bleu") or {},
            f"{artifacts_path}: artifact {model_entry['name']!r} bleu",
            cfg.data.corpus,
            f"artifacts.json {model_entry['name']!r} bleu",
        )
        bleu = extra | results  # results.json records (with signatures) win
        latency, instructions = model_entry.get("latency_ms") or {}, model_entry.get("instructions") or {}
        model_notes = model_entry.get("notes")
    rows = [
        _row(
            name,
            cfg,
            artifact="model.pt",
            path=paths.model,
            root=root,
            fmt="pytorch",
            precision="fp32",
            mcfg=mcfg,
            mcfg_source=mcfg_source,
            size=model_size,
            size_source=size_source,
            macs_given=None,
            macs_source=None,
            bleu=bleu,
            latency=latency,
            instructions=instructions,
            notes=model_notes,
        )
    ]
    if model_entry is not None:
        rows[0]["sources"]["latency_ms"] = rows[0]["sources"]["instructions"] = (
            f"artifacts.json {model_entry['name']!r}"
        )

    for entry in artifacts:
        if entry is model_entry:
            continue
        label = f"artifacts.json {entry['name']!r}"
        apath = root / entry["path"]
        if entry.get("model_config") is not None:
            a_cfg = _parse_model_config(
                entry["model_config"], f"{artifacts_path}: artifact {entry['name']!r} model_config"
            )
            a_src = f"{label} model_config"
        elif entry.get("source_model"):
            src = root / entry["source_model"]
            a_cfg = _parse_model_config(_model_config_of(src), f"{src} model_config")
            a_src = f"{_rel(src, root)} model_config"
        else:
            a_cfg, a_src = mcfg, mcfg_source
        size, size_src = _file_size(apath, entry["format"]), f"size on disk of {entry['path']}"
        if size is None:
            size = entry.get("size_bytes")
            size_src = None if size is None else f"{label} size_bytes (file not found)"
            notes.append(f"{name}/{entry['name']}: {entry['path']} not found in the run folder")
        elif entry.get("size_bytes") is not None and entry["size_bytes"] != size:
            notes.append(
                f"{name}/{entry['name']}: size_bytes {entry['size_bytes']:,} in artifacts.json "
                f"but {size:,} bytes on disk (the report uses the file on disk)"
            )
        a_bleu = _bleu_records(
            entry.get("bleu") or {},
            f"{artifacts_path}: artifact {entry['name']!r} bleu",
            cfg.data.corpus,
            f"{label} bleu",
        )
        row = _row(
            name,
            cfg,
            artifact=entry["name"],
            path=apath,
            root=root,
            fmt=entry["format"],
            precision=entry["precision"],
            mcfg=a_cfg,
            mcfg_source=a_src,
            size=size,
            size_source=size_src,
            macs_given=entry.get("macs"),
            macs_source=f"{label} macs" + (f" ({entry['macs_method']})" if entry.get("macs_method") else ""),
            bleu=a_bleu,
            latency=entry.get("latency_ms") or {},
            instructions=entry.get("instructions") or {},
            notes=entry.get("notes"),
        )
        row["sources"]["latency_ms"] = row["sources"]["instructions"] = label
        if entry.get("macs") is not None and entry["macs"] != row["macs_analytic"]:
            notes.append(
                f"{name}/{entry['name']}: graph MACs {entry['macs']:,} differ from the analytic "
                f"{row['macs_analytic']:,}"
            )
        rows.append(row)

    if train is not None and "params" in train and train["params"] != rows[0]["params"]:
        notes.append(f"{name}: train.json params {train['params']:,} differ from the analytic {rows[0]['params']:,}")
    train_keys = (
        "stop_reason",
        "steps",
        "epochs",
        "wall_seconds",
        "target_tokens_per_s",
        "best_valid_loss",
        "final_model",
        "final_valid_loss",
        "final_valid_ppl",
        "params",
        "params_no_embed",
        "threads",
        "reproducible",
        "provenance",
    )
    return {
        "run": name,
        "path": str(root),
        "config_name": cfg.name,
        "family": cfg.model.arch,
        "corpus": cfg.data.corpus,
        "decoding": _decoding_name(cfg),
        "budget": to_dict(cfg.budget),
        "train": None if train is None else {k: train.get(k) for k in train_keys if k in train},
        "files": {
            "config": "config.yaml",
            "model": "model.pt" if paths.model.is_file() else None,
            "results": "results.json" if paths.results.is_file() else None,
            "train": "train.json" if train is not None else None,
            "artifacts": "artifacts.json" if artifacts_path.is_file() else None,
        },
        "rows": rows,
        "notes": notes,
    }


# ----------------------------------------------------------------------------- budgets


def _human(n: float, decimals: int = 1) -> str:
    a = abs(n)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= scale:
            return f"{n / scale:.{decimals}f}{suffix}"
    return f"{n:.0f}"


def _check(value: float | None, limit: float | None, *, upper: bool, unit: str, fmt) -> dict:
    if limit is None:
        return {"limit": None, "value": value, "status": "no budget", "margin": None, "text": "no budget"}
    if value is None:
        return {"limit": limit, "value": None, "status": "unknown", "margin": None, "text": f"unknown ({NOT_MEASURED})"}
    margin = value - limit
    ok = margin <= 0 if upper else margin >= 0
    if margin == 0:
        text = f"at the limit ({fmt(limit)} {unit})"
    else:
        text = f"{'-' if margin < 0 else '+'}{fmt(abs(margin))} {unit} {'under' if margin < 0 else 'over'}"
    return {"limit": limit, "value": value, "status": "PASS" if ok else "FAIL", "margin": margin, "text": text}


def _budget_checks(row: dict, cfg: RunConfig) -> dict:
    b = cfg.budget
    checks = {
        "max_macs": _check(row["macs"], b.max_macs, upper=True, unit="MACs", fmt=_human),
        "max_size_mb": _check(row["size_mb"], b.max_size_mb, upper=True, unit="MB", fmt=lambda x: f"{x:.2f}"),
        "min_bleu": _check(
            None if row["bleu"] is None else row["bleu"]["bleu"],
            b.min_bleu,
            upper=False,
            unit="BLEU",
            fmt=lambda x: f"{x:.2f}",
        ),
    }
    measured = {t: v for t, v in row["latency_ms"].items() if v is not None}
    worst = max(measured, key=measured.get) if measured else None
    lat = _check(measured.get(worst), b.max_latency_ms, upper=True, unit="ms", fmt=lambda x: f"{x:.1f}")
    lat["target"] = worst
    if worst is not None and lat["status"] in ("PASS", "FAIL"):
        lat["text"] += f" (worst: {worst})"
        missing = sorted(t for t, v in row["latency_ms"].items() if v is None)
        if missing:
            lat["text"] += f"; {NOT_MEASURED} on {', '.join(missing)}"
    checks["max_latency_ms"] = lat
    return {k: checks[k] for k in BUDGETS}


def _verdict(checks: dict) -> str:
    statuses = [c["status"] for c in checks.values()]
    if "FAIL" in statuses:
        return "FAIL"
    if "unknown" in statuses:
        return "unknown"
    return "PASS" if "PASS" in statuses else "no budget"


# ----------------------------------------------------------------------------- Pareto frontier


def pareto_frontier(rows: list[dict]) -> list[dict]:
    """Rows with both MACs and a headline BLEU that no other row beats (fewer-or-equal MACs and
    higher-or-equal BLEU, one of them strictly), ordered by MACs. Ties on both are all kept."""
    points = [r for r in rows if r["macs"] is not None and r["bleu"] is not None]
    front = []
    for r in points:
        m, b = r["macs"], r["bleu"]["bleu"]
        dominated = any(
            o["macs"] <= m and o["bleu"]["bleu"] >= b and (o["macs"] < m or o["bleu"]["bleu"] > b) for o in points
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r["macs"], -r["bleu"]["bleu"], r["id"]))


# ----------------------------------------------------------------------------- plots


def _save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_bleu_vs_macs(rows: list[dict], frontier: list[dict], budgets: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6))
    ax = fig.add_subplot()
    points = [r for r in rows if r["macs"] is not None and r["bleu"] is not None]
    runs = list(dict.fromkeys(r["run"] for r in rows))
    colors = {run: f"C{i % 10}" for i, run in enumerate(runs)}
    markers = {"pytorch": "o", "onnx": "s", "tflite": "^"}
    if not points:
        ax.text(0.5, 0.5, "no row has both BLEU and MACs measured", ha="center", va="center", transform=ax.transAxes)
    # labels of points at the same spot (fp32 and int8 of one model share the MACs) are stacked
    stack: dict[tuple, int] = {}
    for r in sorted(points, key=lambda r: (r["macs"], -r["bleu"]["bleu"])):
        x, y = r["macs"] / 1e6, r["bleu"]["bleu"]
        ax.scatter(
            [x],
            [y],
            s=70,
            color=colors[r["run"]],
            marker=markers.get(r["format"], "o"),
            zorder=3,
            edgecolors="black",
            linewidths=0.6,
        )
        spot = (round(x, 1), round(y, 0))
        k = stack.get(spot, 0)
        stack[spot] = k + 1
        name = r["artifact"] if len(runs) == 1 else f"{r['run']}: {r['artifact']}"
        ax.annotate(
            f"{name} ({r['format']} {r['precision']})",
            (x, y),
            xytext=(8, 6 - 13 * k),
            textcoords="offset points",
            fontsize=8,
            color="#222222",
        )
    if frontier:
        xs = [r["macs"] / 1e6 for r in frontier]
        ys = [r["bleu"]["bleu"] for r in frontier]
        xmax = max(r["macs"] for r in points) / 1e6
        ax.step(
            xs + [max(xmax, xs[-1]) * 1.02],
            ys + [ys[-1]],
            where="post",
            color="black",
            linestyle="--",
            linewidth=1.2,
            zorder=2,
        )
        ax.scatter(xs, ys, s=190, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
    for key, style, label, axis in (("max_macs", ":", "MAC budget", "x"), ("min_bleu", "-.", "BLEU budget", "y")):
        for value in sorted({b[key] for b in budgets if b.get(key) is not None}):
            if axis == "x":
                ax.axvline(value / 1e6, color="firebrick", linestyle=style, linewidth=1)
                ax.annotate(
                    f"{label} {_human(value)}",
                    (value / 1e6, 0.02),
                    xycoords=("data", "axes fraction"),
                    rotation=90,
                    fontsize=8,
                    color="firebrick",
                    ha="right",
                    va="bottom",
                )
            else:
                ax.axhline(value, color="firebrick", linestyle=style, linewidth=1)
                ax.annotate(
                    f"{label} {value:g}",
                    (0.01, value),
                    xycoords=("axes fraction", "data"),
                    fontsize=8,
                    color="firebrick",
                    va="bottom",
                )
    missing = [r["id"] for r in rows if r not in points]
    if missing and points:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        ax.text(
            0.01,
            0.99,
            f"not plotted (BLEU {NOT_MEASURED}): {shown}",
            transform=ax.transAxes,
            fontsize=8,
            va="top",
            color="#555555",
        )
    ax.set_xlabel("MACs (millions; 30+30 tokens, no embeddings / output projection)")
    ax.set_ylabel("BLEU (test split, headline decoding)")
    ax.set_title("BLEU vs MACs: up and to the left is better")
    ax.grid(True, alpha=0.3)
    if points:
        xs_all = [r["macs"] / 1e6 for r in points] + [b["max_macs"] / 1e6 for b in budgets if b.get("max_macs")]
        lo, hi = min(xs_all), max(xs_all)
        pad = max((hi - lo) * 0.15, hi * 0.05)
        ax.set_xlim(max(lo - pad, 0), hi + pad * 2.5)  # room on the right for the labels
        ys_all = [r["bleu"]["bleu"] for r in points] + [b["min_bleu"] for b in budgets if b.get("min_bleu") is not None]
        ylo, yhi = min(ys_all), max(ys_all)
        ypad = max((yhi - ylo) * 0.15, 1.0)
        ax.set_ylim(max(ylo - ypad, 0), yhi + ypad)
        from matplotlib.lines import Line2D

        handles = [
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markersize=8,
                markerfacecolor=colors[run],
                markeredgecolor="black",
                label=f"run {run}",
            )
            for run in runs
            if any(r["run"] == run for r in points)
        ]
        handles += [
            Line2D(
                [],
                [],
                linestyle="none",
                marker=m,
                markersize=8,
                markerfacecolor="white",
                markeredgecolor="black",
                label=f,
            )
            for f, m in markers.items()
            if any(r["format"] == f for r in points)
        ]
        if frontier:
            handles.append(
                Line2D(
                    [],
                    [],
                    color="black",
                    linestyle="--",
                    marker="o",
                    markersize=11,
                    markerfacecolor="none",
                    label="Pareto frontier",
                )
            )
        ax.legend(handles=handles, fontsize=8, loc="lower right", framealpha=0.9)
    _save_figure(fig, path)


def plot_macs_per_layer(panels: list[dict], path: Path) -> None:
    """panels: [{"title", "layers": lite.metrics.macs layer breakdowns}], one stacked-bar panel each."""
    from matplotlib.figure import Figure

    n = max(len(panels), 1)
    fig = Figure(figsize=(max(6.0, 4.2 * n), 5.2), layout="constrained")
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    parts = [p for p in MAC_PARTS if any(p in layer for panel in panels for layer in panel["layers"])]
    colors = {  # attention blues, convolution greens, cross-attention purples, FFN orange
        "attn_proj": "#1f4e9c",
        "attn_scores": "#4f81d9",
        "attn_values": "#9dbbf0",
        "glu": "#1b7a3a",
        "conv_in": "#1b7a3a",
        "conv_kernel": "#4caf50",
        "conv": "#8fd694",
        "conv_out": "#c7ecc4",
        "cross_proj": "#6a3d9a",
        "cross_scores": "#9e7cc1",
        "cross_values": "#d2c0e6",
        "ffn": "#f28e2b",
    }
    if not panels:
        axes[0].text(0.5, 0.5, "no model", ha="center", va="center", transform=axes[0].transAxes)
    for ax, panel in zip(axes, panels):
        names = [layer["name"].replace("encoder.", "enc ").replace("decoder.", "dec ") for layer in panel["layers"]]
        bottom = [0.0] * len(names)
        for part in parts:
            values = [layer.get(part, 0) / 1e6 for layer in panel["layers"]]
            if any(values):
                ax.bar(
                    names, values, bottom=bottom, color=colors.get(part), label=part, edgecolor="white", linewidth=0.4
                )
                bottom = [b + v for b, v in zip(bottom, values)]
        for i, total in enumerate(bottom):
            ax.annotate(f"{total:.1f}", (i, total), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
        ax.set_title(panel["title"], fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("MACs per layer (millions)")
    handles: dict = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
    ordered = [p for p in parts if p in handles]
    if ordered:
        fig.legend([handles[p] for p in ordered], ordered, loc="outside right center", fontsize=8, title="part")
    fig.suptitle("MACs per layer by part (lite.metrics.macs, 30+30 tokens)")
    _save_figure(fig, path)


# ----------------------------------------------------------------------------- rendering


def _fmt_bleu(b: dict | None) -> str:
    return NOT_MEASURED if b is None else f"{b['bleu']:.2f}"


def _fmt_testset(b: dict | None) -> str:
    if b is None:
        return NOT_MEASURED
    sents = f", {b['sentences']:,} sentences" if b.get("sentences") is not None else ""
    return f"{b.get('corpus') or 'corpus not recorded'} {b['split']}{sents}, {b['decoding']}"


def _fmt_macs(m: int | None) -> str:
    return NOT_MEASURED if m is None else f"{_human(m)} ({m:,})"


def _fmt_size(row: dict) -> str:
    return NOT_MEASURED if row["size_bytes"] is None else f"{row['size_mb']:.2f} MB ({row['size_bytes']:,} B)"


def _fmt_opt(v: Any, fmt) -> str:
    return NOT_MEASURED if v is None else fmt(v)


def _targets(rows: list[dict], key: str) -> list[str]:
    return sorted({t for r in rows for t in r[key]})


def _table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    rows = report["rows"]
    lat_t, ins_t = _targets(rows, "latency_ms"), _targets(rows, "instructions")
    head = (
        [
            "run",
            "family",
            "artifact",
            "format",
            "precision",
            "MACs",
            "params",
            "params w/o embeddings",
            "size on disk",
            "BLEU",
            "BLEU test set",
            "sacrebleu signature",
        ]
        + [f"latency {t} (ms)" for t in lat_t]
        + [f"instructions {t}" for t in ins_t]
        + ["Pareto", "budget verdict"]
    )
    if not lat_t:  # no target measured anywhere: still say so
        head.insert(head.index("Pareto"), "latency (ms)")
    body = []
    for r in rows:
        b = r["bleu"]
        body.append(
            [
                r["run"],
                r["family"],
                r["artifact"],
                r["format"],
                r["precision"],
                _fmt_macs(r["macs"]),
                f"{r['params']:,}",
                f"{r['params_no_embed']:,}",
                _fmt_size(r),
                _fmt_bleu(b),
                _fmt_testset(b),
                NOT_MEASURED if b is None else (b["signature"] or "signature not recorded"),
            ]
            + [_fmt_opt(r["latency_ms"].get(t), lambda v: f"{v:.2f}") for t in lat_t]
            + [_fmt_opt(r["instructions"].get(t), lambda v: f"{v:,.0f}") for t in ins_t]
            + ([] if lat_t else [NOT_MEASURED])
            + ["yes" if r["pareto"] else "", r["verdict"]]
        )
    return head, body


def _budget_cell(check: dict) -> str:
    if check["status"] in ("PASS", "FAIL"):
        return f"{check['status']}: {check['text']}"
    return check["text"]


BUDGET_HEAD = {"max_macs": "MACs", "max_size_mb": "size", "max_latency_ms": "latency", "min_bleu": "BLEU"}


def _budget_limits(budget: dict) -> str:
    parts = []
    if budget.get("max_macs") is not None:
        parts.append(f"MACs <= {_human(budget['max_macs'])} ({budget['max_macs']:,})")
    if budget.get("max_size_mb") is not None:
        parts.append(f"size <= {budget['max_size_mb']:g} MB")
    if budget.get("max_latency_ms") is not None:
        parts.append(f"latency <= {budget['max_latency_ms']:g} ms per sentence")
    if budget.get("min_bleu") is not None:
        parts.append(f"test BLEU >= {budget['min_bleu']:g}")
    return ", ".join(parts) or "no budget set"


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _bleu_detail_rows(report: dict) -> list[list[str]]:
    out = []
    for r in report["rows"]:
        for key, b in sorted(r["bleu_all"].items()):
            out.append(
                [
                    r["id"],
                    key,
                    f"{b['bleu']:.2f}",
                    _fmt_opt(b.get("chrf"), lambda v: f"{v:.2f}"),
                    _fmt_opt(b.get("brevity_penalty"), lambda v: f"{v:.4f}"),
                    _fmt_testset(b),
                    b["signature"] or "signature not recorded",
                    b["source"],
                ]
            )
    return out


BLEU_DETAIL_HEAD = ["row", "split/decoding", "BLEU", "chrF", "BP", "test set", "sacrebleu signature", "from"]
TRAIN_HEAD = ["run", "config", "steps", "stop reason", "wall time", "target tokens/s", "final valid ppl", "final model"]


def _train_rows(report: dict) -> list[list[str]]:
    out = []
    for run in report["runs"]:
        t = run["train"]
        if t is None:
            out.append([run["run"], run["config_name"]] + [NOT_MEASURED] * 6)
            continue
        stop = str(t.get("stop_reason", NOT_MEASURED))
        if t.get("stop_reason") == "max_minutes":  # the step count depended on the machine's speed
            stop += " (stopped by the clock: not reproducible)"
        out.append(
            [
                run["run"],
                run["config_name"],
                _fmt_opt(t.get("steps"), str),
                stop,
                _fmt_opt(t.get("wall_seconds"), lambda v: f"{v / 60:.1f} min"),
                _fmt_opt(t.get("target_tokens_per_s"), lambda v: f"{v:,.0f}"),
                _fmt_opt(t.get("final_valid_ppl"), lambda v: f"{v:.2f}"),
                str(t.get("final_model", NOT_MEASURED)),
            ]
        )
    return out


def _source_rows(report: dict) -> list[list[str]]:
    return [
        [r["id"]] + [r["sources"].get(k) or NOT_MEASURED for k in ("macs", "params", "size", "bleu", "latency_ms")]
        for r in report["rows"]
    ]


SOURCE_HEAD = ["row", "MACs", "params", "size", "BLEU", "latency / instructions"]


def render_markdown(report: dict) -> str:
    head, body = _table_rows(report)
    out = [
        "# MAC/BLEU budget report",
        "",
        f"Runs: {', '.join(r['run'] for r in report['runs'])}. MACs: {report['mac_convention']}. "
        f'Anything not measured shows as "{NOT_MEASURED}"; a budget on an unmeasured quantity is "unknown".',
        "",
        "## Budgets",
        "",
    ]
    out += [f"- **{r['run']}** (config `{r['config_name']}`): {_budget_limits(r['budget'])}" for r in report["runs"]]
    out += [
        "",
        "## Models and artifacts",
        "",
        _md_table(head, body),
        "",
        "## Budget check",
        "",
        _md_table(
            ["row", "verdict"] + [BUDGET_HEAD[k] for k in BUDGETS],
            [[r["id"], r["verdict"]] + [_budget_cell(r["budget"][k]) for k in BUDGETS] for r in report["rows"]],
        ),
        "",
        "## Pareto frontier (BLEU vs MACs, across runs)",
        "",
    ]
    if report["pareto"]:
        out += [
            f"{i}. {p['id']}: {_human(p['macs'])} MACs, BLEU {p['bleu']:.2f}" for i, p in enumerate(report["pareto"], 1)
        ]
    else:
        out.append(f"No row has both MACs and BLEU ({NOT_MEASURED}).")
    out += [
        "",
        "![BLEU vs MACs](bleu_vs_macs.png)",
        "",
        "## MACs per layer",
        "",
        "![MACs per layer](macs_per_layer.png)",
        "",
        "## BLEU by decoding",
        "",
    ]
    detail = _bleu_detail_rows(report)
    out += [
        _md_table(BLEU_DETAIL_HEAD, detail) if detail else f"BLEU {NOT_MEASURED}.",
        "",
        "## Training",
        "",
        _md_table(TRAIN_HEAD, _train_rows(report)),
        "",
        "## Where the numbers come from",
        "",
        _md_table(SOURCE_HEAD, _source_rows(report)),
        "",
    ]
    if report["notes"]:
        out += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(out)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; max-width: 100em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.PASS { background: #dff3e0; color: #14561f; } .FAIL { background: #fbe0e0; color: #8a1414; font-weight: bold; }
.unknown, .nm { color: #777; font-style: italic; } .sig { font-family: monospace; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
"""


def _html_cell(text: str, cls: str = "") -> str:
    if text == NOT_MEASURED or text.startswith("unknown"):
        cls = (cls + " nm").strip()
    return f'<td class="{cls}">{html.escape(text)}</td>' if cls else f"<td>{html.escape(text)}</td>"


def _html_table(head: list[str], body: list[list[str]], classes: list[list[str]] | None = None) -> str:
    rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(body):
        cls = classes[i] if classes else [""] * len(row)
        rows.append("<tr>" + "".join(_html_cell(c, k) for c, k in zip(row, cls)) + "</tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def render_html(report: dict) -> str:
    head, body = _table_rows(report)
    num_cols = {
        i
        for i, h in enumerate(head)
        if h in ("MACs", "params", "params w/o embeddings", "size on disk", "BLEU")
        or h.startswith(("latency", "instructions"))
    }
    classes = [["num" if j in num_cols else "" for j in range(len(head) - 1)] + [r["verdict"]] for r in report["rows"]]
    for row_cls in classes:
        row_cls[head.index("sacrebleu signature")] = "sig"
    budget_body = [[r["id"], r["verdict"]] + [_budget_cell(r["budget"][k]) for k in BUDGETS] for r in report["rows"]]
    budget_cls = [["", r["verdict"]] + [r["budget"][k]["status"] for k in BUDGETS] for r in report["rows"]]
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>MAC/BLEU budget report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>MAC/BLEU budget report</h1>",
        f"<p>Runs: {e(', '.join(r['run'] for r in report['runs']))}. MACs: {e(report['mac_convention'])}. "
        f'Anything not measured shows as <span class="nm">{NOT_MEASURED}</span>; a budget on an unmeasured '
        'quantity is <span class="nm">unknown</span>, never a pass.</p>',
        "<h2>Budgets</h2><ul>",
    ]
    parts += [
        f"<li><b>{e(r['run'])}</b> (config <code>{e(r['config_name'])}</code>): {e(_budget_limits(r['budget']))}</li>"
        for r in report["runs"]
    ]
    parts += [
        "</ul>",
        "<h2>Models and artifacts</h2>",
        _html_table(head, body, classes),
        "<h2>Budget check</h2>",
        _html_table(["row", "verdict"] + [BUDGET_HEAD[k] for k in BUDGETS], budget_body, budget_cls),
        "<h2>Pareto frontier (BLEU vs MACs, across runs)</h2>",
    ]
    if report["pareto"]:
        parts.append(
            "<ol>"
            + "".join(
                f"<li>{e(p['id'])}: {e(_human(p['macs']))} MACs, BLEU {p['bleu']:.2f}</li>" for p in report["pareto"]
            )
            + "</ol>"
        )
    else:
        parts.append(f'<p class="nm">No row has both MACs and BLEU ({NOT_MEASURED}).</p>')
    parts += [
        '<img src="bleu_vs_macs.png" alt="BLEU vs MACs with the Pareto frontier">',
        "<h2>MACs per layer</h2>",
        '<img src="macs_per_layer.png" alt="MACs per layer by part">',
        "<h2>BLEU by decoding</h2>",
    ]
    detail = _bleu_detail_rows(report)
    parts.append(
        _html_table(BLEU_DETAIL_HEAD, detail, [["", "", "num", "num", "num", "", "sig", ""] for _ in detail])
        if detail
        else f'<p class="nm">BLEU {NOT_MEASURED}.</p>'
    )
    parts += [
        "<h2>Training</h2>",
        _html_table(TRAIN_HEAD, _train_rows(report)),
        "<h2>Where the numbers come from</h2>",
        _html_table(SOURCE_HEAD, _source_rows(report)),
    ]
    if report["notes"]:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{e(n)}</li>" for n in report["notes"]] + ["</ul>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- the report


def _comparability_notes(rows: list[dict]) -> list[str]:
    """Headline BLEU scores are comparable (and the Pareto frontier meaningful) only on one test set,
    one decoding and one sacrebleu signature: say where that is not known or not so."""
    notes = []
    unsigned = [r["id"] for r in rows if r["bleu"]["signature"] is None or r["bleu"]["sentences"] is None]
    if unsigned:
        notes.append(
            f"BLEU of {', '.join(unsigned)} was recorded without its sacrebleu signature or sentence "
            "count: its comparability with the other rows is not known"
        )
    for field, what in (
        ("corpus", "test corpora"),
        ("sentences", "test-set sizes"),
        ("signature", "sacrebleu signatures"),
        ("decoding", "decodings"),
    ):
        values = {r["bleu"][field] for r in rows if r["bleu"][field] is not None}
        if len(values) > 1:
            notes.append(
                f"the headline BLEU scores use different {what} ({', '.join(sorted(map(str, values)))}): "
                "compare them, and read the Pareto frontier, with care"
            )
    return notes


def build_report(runs: list[Path]) -> dict:
    """Collect every run and put the rows together (no files written)."""
    if not runs:
        raise ValueError("no run folders given")
    collected = [collect_run(Path(r)) for r in runs]
    names = [c["run"] for c in collected]
    for c in collected:  # two run folders with one name (e.g. a/default, b/default): use their paths
        if names.count(c["run"]) > 1:
            c["run"] = c["path"]
            for row in c["rows"]:
                row["run"], row["id"] = c["path"], f"{c['path']}/{row['artifact']}"
    rows = [row for c in collected for row in c["rows"]]
    frontier = pareto_frontier(rows)
    ids = {r["id"] for r in frontier}
    for r in rows:
        r["pareto"] = r["id"] in ids
    notes = [n for c in collected for n in c["notes"]]
    notes += _comparability_notes([r for r in rows if r["bleu"] is not None])
    return {
        "mac_convention": "mult-adds of one forward pass, 30-token source + 30-token target, without embeddings "
        "or the output projection (lite/metrics/macs.py)",
        "runs": [{k: v for k, v in c.items() if k != "rows" and k != "notes"} for c in collected],
        "rows": rows,
        "pareto": [
            {"id": r["id"], "run": r["run"], "artifact": r["artifact"], "macs": r["macs"], "bleu": r["bleu"]["bleu"]}
            for r in frontier
        ],
        "notes": notes,
    }


def write_report(runs: list[Path], out_dir: Path | None = None) -> dict:
    """Write report.md, report.html, report.json, bleu_vs_macs.png and macs_per_layer.png into
    out_dir (default: the first run's folder); each file atomically. Returns the report.json content
    plus "files": {name: path}."""
    runs = [Path(r) for r in runs]
    report = build_report(runs)
    out_dir = Path(out_dir) if out_dir is not None else runs[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    for run in report["runs"]:
        run["path"] = _rel(Path(run["path"]), out_dir)

    budgets = [r["budget"] for r in report["runs"]]
    rows = report["rows"]
    frontier = [r for r in rows if r["pareto"]]
    frontier.sort(key=lambda r: (r["macs"], -r["bleu"]["bleu"]))
    plot_bleu_vs_macs(rows, frontier, budgets, out_dir / "bleu_vs_macs.png")
    panels, seen = [], set()
    for r in rows:  # one panel per distinct model of a run (a pruned artifact gets its own)
        key = (r["run"], json.dumps(r["model_config"], sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        label = r["run"] if r["artifact"] == "model.pt" else f"{r['run']}: {r['artifact']}"
        panels.append({"title": f"{label} ({r['family']})\n{_human(r['macs_analytic'])} MACs", "layers": r["layers"]})
    plot_macs_per_layer(panels, out_dir / "macs_per_layer.png")
    write_text_atomic(render_markdown(report), out_dir / "report.md")
    write_text_atomic(render_html(report), out_dir / "report.html")
    write_json_atomic(report, out_dir / "report.json")
    return report | {"files": {name: str(out_dir / name) for name in REPORT_FILES}}


def summarize(report: dict) -> str:
    """A few lines for the terminal: one per row with its verdict."""
    lines = []
    for r in report["rows"]:
        fails = [BUDGET_HEAD[k] for k in BUDGETS if r["budget"][k]["status"] == "FAIL"]
        lines.append(
            f"{r['id']}: {_human(r['macs']) if r['macs'] is not None else NOT_MEASURED} MACs, "
            f"BLEU {_fmt_bleu(r['bleu'])}, size {_fmt_opt(r['size_mb'], lambda v: f'{v:.2f} MB')}: "
            f"{r['verdict']}" + (f" ({', '.join(fails)})" if fails else "")
        )
    return "\n".join(lines)
