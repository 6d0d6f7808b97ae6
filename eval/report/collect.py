"""Reading one run folder into report rows: the model.pt row, then one row per artifacts.json entry.

Nothing is recomputed except the analytic MAC and parameter counts of a model config. A missing run folder
or config.yaml and a malformed file in the folder are RunFolderErrors naming the file; a bad model config
(config.yaml, a checkpoint's or an artifact's) is a ConfigError naming where it was read.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eval.report.budget import budget_checks, verdict
from lite.artifacts import ArtifactRow, artifacts_path, parse_rows
from lite.config import ModelConfig, RunConfig, load_config, model_config_from_dict, to_dict
from lite.errors import ConfigError, RunFolderError
from lite.files import read_json
from lite.run import RunPaths

# what of train.json a run record keeps
TRAIN_KEYS = (
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


@dataclass(frozen=True)
class Model:
    """A model config a row is counted from, and where it came from (shown as the source of MACs and params)."""

    cfg: ModelConfig
    source: str


@dataclass(frozen=True)
class Size:
    """Bytes on disk of a row's file, and where the figure came from; None when not measured."""

    size: int | None
    source: str | None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _model_config_of(checkpoint_path: Path) -> dict:
    from lite.checkpoint import load

    record = load(checkpoint_path)  # RunFolderError when missing or unreadable
    if not isinstance(record, dict) or not isinstance(record.get("model_config"), dict):
        raise RunFolderError(f'{checkpoint_path}: no "model_config" in the checkpoint')
    return record["model_config"]


def _parse_model_config(data: dict, where: str) -> ModelConfig:
    try:
        return model_config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


_SUMMARY_CACHE: dict[str, dict] = {}


def _summary(mcfg: ModelConfig) -> dict:
    """lite.metrics.macs.model_summary, cached per config (building the model to count params takes a moment)."""
    from lite.metrics.macs import model_summary

    key = json.dumps(to_dict(mcfg), sort_keys=True)
    if key not in _SUMMARY_CACHE:
        _SUMMARY_CACHE[key] = model_summary(mcfg)
    return _SUMMARY_CACHE[key]


def _file_size(path: Path, fmt: str) -> int | None:
    """Bytes on disk of an artifact's file or model folder; None when it is not there."""
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
        raise RunFolderError(f'{where}: expected a mapping of "split/decoding" to BLEU')
    for key, value in raw.items():
        split, _, decoding = key.partition("/")
        if value is None:
            continue
        if _is_number(value):
            value = {"bleu": value}
        if not isinstance(value, dict) or not (_is_number(value.get("bleu")) or value.get("bleu") is None):
            raise RunFolderError(f'{where}[{key!r}]: expected a BLEU number or a record with a numeric "bleu"')
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


def rel(path: Path, base: Path) -> str:
    """`path` relative to `base`; as given when there is no relative path (another drive on Windows)."""
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)


def _decoding_name(cfg: RunConfig) -> str:
    from eval.evaluate import decoding_name

    return decoding_name(cfg.decode.beam, cfg.decode.lenpen)


def _row(
    run: str,
    cfg: RunConfig,
    *,
    artifact: str,
    path: Path | None,
    root: Path,
    fmt: str,
    precision: str,
    model: Model,
    size: Size,
    macs_given: int | None,
    macs_source: str | None,
    bleu: dict[str, dict],
    latency: dict,
    instructions: dict,
    notes: str | None,
) -> dict:
    """One report row: the artifact's figures, the analytic counts of its model, and the budget checks."""
    summary = _summary(model.cfg)
    analytic_src = f"lite.metrics.macs.count_macs({model.source})"
    macs = macs_given if macs_given is not None else summary["macs"]
    headline = _headline_bleu(bleu, _decoding_name(cfg))
    row = {
        "id": f"{run}/{artifact}",
        "run": run,
        "family": model.cfg.arch,
        "artifact": artifact,
        "path": None if path is None else rel(path, root),
        "format": fmt,
        "precision": precision,
        "macs": macs,
        "macs_analytic": summary["macs"],
        "macs_encoder": summary["encoder"],
        "macs_decoder": summary["decoder"],
        "params": summary["params"],
        "params_no_embed": summary["params_no_embed"],
        "vocab_size": summary["vocab_size"],
        "size_bytes": size.size,
        "size_mb": None if size.size is None else size.size / 1e6,
        "bleu": headline,
        "bleu_all": bleu,
        "latency_ms": dict(latency),
        "instructions": dict(instructions),
        "notes": notes,
        "layers": summary["layers"],
        "model_config": to_dict(model.cfg),
        "sources": {
            "macs": macs_source if macs_given is not None else analytic_src,
            "params": f"lite.metrics.macs.model_summary({model.source})",
            "size": size.source,
            "bleu": None if headline is None else headline["source"],
            "latency_ms": None,
            "instructions": None,
        },
        "pareto": False,
    }
    row["budget"] = budget_checks(row, cfg.budget)
    row["verdict"] = verdict(row["budget"])
    return row


@dataclass
class _Run:
    """What every row of one run folder shares; `notes` collects the report notes as they come up."""

    name: str
    root: Path
    paths: RunPaths
    cfg: RunConfig
    notes: list[str]


def _open_run(root: Path) -> _Run:
    paths = RunPaths(root)
    if not root.is_dir():
        raise RunFolderError(f"{root}: not a run folder (no such directory)")
    if not paths.config.is_file():
        raise RunFolderError(f"{paths.config}: no config.yaml in the run folder (not a run folder?)")
    cfg = load_config(paths.config)  # ConfigError naming file and field
    return _Run(root.resolve().name, root, paths, cfg, [])


def _read_results(run: _Run) -> dict[str, dict]:
    """BLEU records of results.json; none (and a note) when the run was not evaluated."""
    raw = read_json(run.paths.results, {})
    if not isinstance(raw, dict):
        raise RunFolderError(f'{run.paths.results}: expected a JSON object of "split/decoding" records')
    results = _bleu_records(raw, str(run.paths.results), run.cfg.data.corpus, "results.json")
    if not run.paths.results.is_file():
        run.notes.append(f"{run.name}: no results.json (BLEU not measured; run `lite evaluate`)")
    return results


def _read_train(run: _Run) -> dict | None:
    train = read_json(run.paths.train_summary)
    if train is not None and not isinstance(train, dict):
        raise RunFolderError(f"{run.paths.train_summary}: expected a JSON object")
    return train


def _run_model(run: _Run) -> tuple[Model, Size]:
    """The model config of the run: model.pt's own, else config.yaml's model section (size not measured)."""
    paths, cfg = run.paths, run.cfg
    if paths.model.is_file():
        mcfg = _parse_model_config(_model_config_of(paths.model), f"{paths.model} model_config")
        return Model(mcfg, "model.pt model_config"), Size(paths.model.stat().st_size, "size on disk of model.pt")
    mcfg = cfg.model if cfg.model.vocab_size else replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size)
    source = "config.yaml model" + ("" if cfg.model.vocab_size else ", vocab_size from tokenizer.vocab_size")
    run.notes.append(f"{run.name}: no model.pt (not trained yet?): MACs/params from config.yaml, size not measured")
    return Model(mcfg, source), Size(None, None)


def _read_artifacts(run: _Run) -> list[ArtifactRow]:
    """The rows of artifacts.json (lite.artifacts checks them); none when the file does not exist."""
    path = artifacts_path(run.root)
    return parse_rows(read_json(path, []), path)


def _entry_bleu(run: _Run, entry: ArtifactRow, source: str) -> dict[str, dict]:
    where = f"{artifacts_path(run.root)}: artifact {entry.name!r} bleu"
    return _bleu_records(entry.bleu or {}, where, run.cfg.data.corpus, source)


def _model_row(run: _Run, model: Model, size: Size, results: dict[str, dict], entry: ArtifactRow | None) -> dict:
    """The row of model.pt; an artifacts.json entry whose path is model.pt adds its measurements (e.g. host
    latency) and its BLEU records, which results.json's (with signatures) override."""
    bleu, latency, instructions, notes = dict(results), {}, {}, None
    if entry is not None:
        bleu = _entry_bleu(run, entry, f"artifacts.json {entry.name!r} bleu") | results
        latency, instructions = entry.latency_ms or {}, entry.instructions or {}
        notes = entry.notes
    row = _row(
        run.name,
        run.cfg,
        artifact="model.pt",
        path=run.paths.model,
        root=run.root,
        fmt="pytorch",
        precision="fp32",
        model=model,
        size=size,
        macs_given=None,
        macs_source=None,
        bleu=bleu,
        latency=latency,
        instructions=instructions,
        notes=notes,
    )
    if entry is not None:
        row["sources"]["latency_ms"] = row["sources"]["instructions"] = f"artifacts.json {entry.name!r}"
    return row


def _artifact_model(run: _Run, entry: ArtifactRow, label: str, run_model: Model) -> Model:
    """The entry's own "model_config", else its "source_model" checkpoint's, else the run's model."""
    if entry.model_config is not None:
        where = f"{artifacts_path(run.root)}: artifact {entry.name!r} model_config"
        return Model(_parse_model_config(entry.model_config, where), f"{label} model_config")
    if entry.source_model:
        src = run.root / entry.source_model
        return Model(
            _parse_model_config(_model_config_of(src), f"{src} model_config"), f"{rel(src, run.root)} model_config"
        )
    return run_model


def _artifact_size(run: _Run, entry: ArtifactRow, label: str) -> Size:
    """The file on disk; "size_bytes" (and a note) when it is not in the run folder."""
    size = _file_size(run.root / entry.path, entry.format)
    if size is None:
        given = entry.size_bytes
        run.notes.append(f"{run.name}/{entry.name}: {entry.path} not found in the run folder")
        return Size(given, None if given is None else f"{label} size_bytes (file not found)")
    if entry.size_bytes is not None and entry.size_bytes != size:
        run.notes.append(
            f"{run.name}/{entry.name}: size_bytes {entry.size_bytes:,} in artifacts.json "
            f"but {size:,} bytes on disk (the report uses the file on disk)"
        )
    return Size(size, f"size on disk of {entry.path}")


def _artifact_row(run: _Run, entry: ArtifactRow, run_model: Model) -> dict:
    label = f"artifacts.json {entry.name!r}"
    model = _artifact_model(run, entry, label, run_model)
    size = _artifact_size(run, entry, label)
    row = _row(
        run.name,
        run.cfg,
        artifact=entry.name,
        path=run.root / entry.path,
        root=run.root,
        fmt=entry.format,
        precision=entry.precision,
        model=model,
        size=size,
        macs_given=entry.macs,
        macs_source=f"{label} macs" + (f" ({entry.macs_method})" if entry.macs_method else ""),
        bleu=_entry_bleu(run, entry, f"{label} bleu"),
        latency=entry.latency_ms or {},
        instructions=entry.instructions or {},
        notes=entry.notes,
    )
    row["sources"]["latency_ms"] = row["sources"]["instructions"] = label
    if entry.macs is not None and entry.macs != row["macs_analytic"]:
        run.notes.append(
            f"{run.name}/{entry.name}: graph MACs {entry.macs:,} differ from the analytic {row['macs_analytic']:,}"
        )
    return row


def _read_profile(run: _Run) -> list[dict]:
    """RUN/profile.json's rows (benchmarks/profile.py): per folder, where a decoder step goes on the
    host and each emulated core; [] when the run was not profiled."""
    raw = read_json(run.paths.profile)
    if raw is None:
        return []
    rows = raw.get("results") if isinstance(raw, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "artifact" in r and "host" in r for r in rows):
        raise RunFolderError(f'{run.paths.profile}: expected {{"results": [{{"artifact", "host", "cores"}}...]}}')
    return rows


def _run_record(run: _Run, train: dict | None, rows: list[dict]) -> dict:
    paths, cfg = run.paths, run.cfg
    return {
        "run": run.name,
        "path": str(run.root),
        "config_name": cfg.name,
        "family": cfg.model.arch,
        "corpus": cfg.data.corpus,
        "decoding": _decoding_name(cfg),
        "budget": to_dict(cfg.budget),
        "train": None if train is None else {k: train.get(k) for k in TRAIN_KEYS if k in train},
        "files": {
            "config": "config.yaml",
            "model": "model.pt" if paths.model.is_file() else None,
            "results": "results.json" if paths.results.is_file() else None,
            "train": "train.json" if train is not None else None,
            "artifacts": "artifacts.json" if artifacts_path(run.root).is_file() else None,
        },
        "profile": _read_profile(run),
        "rows": rows,
        "notes": run.notes,
    }


def collect_run(run: Path) -> dict:
    """Everything the report needs from one run folder, read from its saved files (nothing recomputed
    except the analytic MAC/parameter counts): the run record with its "rows" (model.pt first) and "notes".
    Raises RunFolderError or ConfigError naming the file on a bad input."""
    folder = _open_run(Path(run))
    results = _read_results(folder)
    train = _read_train(folder)
    model, size = _run_model(folder)
    artifacts = _read_artifacts(folder)
    model_pt = folder.paths.model.resolve()
    model_entry = next((a for a in artifacts if (folder.root / a.path).resolve() == model_pt), None)
    rows = [_model_row(folder, model, size, results, model_entry)]
    rows += [_artifact_row(folder, entry, model) for entry in artifacts if entry is not model_entry]
    if train is not None and "params" in train and train["params"] != rows[0]["params"]:
        folder.notes.append(
            f"{folder.name}: train.json params {train['params']:,} differ from the analytic {rows[0]['params']:,}"
        )
    return _run_record(folder, train, rows)
