"""Compression recipes: YAML mapped onto dataclasses (unknown keys rejected, like run configs).

name: default                 # output folder RUN/compressed/<name>/ (default: the file's stem)
teacher: self                 # word-level KD teacher: self (the uncompressed model), a run folder, or null
sequence_kd: {max_sentences: 0}   # > 0: fine-tune on the teacher's translations of N training sources
steps:                        # applied in order (the kinds: compress/steps.py); each fine-tunes afterwards
                              # if its finetune.steps > 0
  - structured: {heads: 0.25, ffn: 0.5, conv: 0.25, importance: taylor, finetune: {steps: 300}}
  - magnitude: {max_drop: 0.02, finetune: {steps: 300}}      # sensitivity sweep + fine-grained masks
  - quant_report: {valid_sentences: 200}                     # per-layer int8 error (a report only)
export: {formats: [tflite], precisions: [int8], pack: xz}    # overrides the run's export section
qat: {when_bleu_drop_over: 0.3, finetune: {steps: 300}}      # fake-quant fine-tuning if an int8 artifact
                                                             # misses its parity gate or loses more BLEU
                                                             # than that, then re-export and gate again
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.distill import SequenceKDConfig
from compress.finetune import FinetuneConfig
from compress.qat import QATConfig
from compress.steps import STEP_KINDS
from export.packing import PACKINGS
from lite.config import FORMATS, PRECISIONS, ConfigError, from_dict, read_yaml, to_dict


@dataclass
class QATStep(QATConfig):
    when_bleu_drop_over: float = 0.3  # artifact BLEU below the compressed PyTorch model's by more than this
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


@dataclass
class ExportOverrides:
    formats: list[str] = field(default_factory=lambda: ["tflite"])
    precisions: list[str] = field(default_factory=lambda: ["int8"])
    pack: str = "xz"


@dataclass
class Recipe:
    name: str = "default"
    teacher: str | None = "self"
    sequence_kd: SequenceKDConfig = field(default_factory=lambda: SequenceKDConfig(max_sentences=0))
    steps: list[Any] = field(default_factory=list)  # (kind, step options) pairs after loading
    export: ExportOverrides = field(default_factory=ExportOverrides)
    qat: QATStep | None = None

    def spec(self, upto: int | None = None) -> str:
        """A canonical text of what determines the model after step `upto` (resume keys on it)."""
        steps = self.steps if upto is None else self.steps[: upto + 1]
        return json.dumps(
            {
                "teacher": self.teacher,
                "sequence_kd": to_dict(self.sequence_kd),
                "steps": [[kind, to_dict(step)] for kind, step in steps],
            },
            sort_keys=True,
        )


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe YAML; ConfigError naming the file and the field on any problem."""
    path = Path(path)
    raw = read_yaml(path, "recipe")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with name, steps, export, ...")
    where = str(path)
    raw = {"name": path.stem} | raw
    steps_raw = raw.pop("steps", []) or []
    qat_raw = raw.pop("qat", None)
    recipe = from_dict(Recipe, raw, where)
    if not isinstance(steps_raw, list):
        raise ConfigError(f"{where}.steps: expected a list of steps")
    for i, item in enumerate(steps_raw):
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in STEP_KINDS:
            raise ConfigError(
                f"{where}.steps[{i}]: expected one of {', '.join(STEP_KINDS)} as the only key, got {item!r}"
            )
        kind, options = next(iter(item.items()))
        recipe.steps.append((kind, _build(STEP_KINDS[kind].options, options or {}, f"{where}.steps[{i}].{kind}")))
    if qat_raw is not None:
        recipe.qat = _build(QATStep, qat_raw, f"{where}.qat")
    _validate(recipe, where)
    return recipe


def _build(cls: type, options: dict, where: str) -> Any:
    """`cls` from `options`. The checks in a dataclass's own __post_init__ name only the field, so their
    message gets `where` in front; from_dict's own messages start with it already."""
    try:
        return from_dict(cls, options, where)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError) and str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: {exc}") from None


def _validate(recipe: Recipe, where: str) -> None:
    ex = recipe.export
    checks = [
        (bool(recipe.name) and "/" not in recipe.name, "name", "a folder name"),
        (set(ex.formats) <= set(FORMATS) and ex.formats, "export.formats", f"a list from {FORMATS}"),
        (set(ex.precisions) <= set(PRECISIONS) and ex.precisions, "export.precisions", f"a list from {PRECISIONS}"),
        (ex.pack in PACKINGS, "export.pack", f"one of {PACKINGS}"),
    ]
    for i, (kind, step) in enumerate(recipe.steps):
        checks += [(ok, f"steps[{i}].{kind}.{fld}", expected) for ok, fld, expected in STEP_KINDS[kind].checks(step)]
    for ok, fld, expected in checks:
        if not ok:
            raise ConfigError(f"{where}: {fld} must be {expected}")
