"""The kinds of step a compression recipe can list, in one table: `STEP_KINDS` maps a kind (the step's
key in the recipe's YAML) to its options (the dataclass the YAML maps onto), the function that applies
it and a one-line description. `compress.recipe` builds and checks steps from this table and
`compress.pipeline` runs them through it, so a kind added here is known to both.

A step's function takes the pipeline's shared context (`StepContext`), the model so far and the step's
options, and returns the model after the step (the same object or a new one) and what the step did,
for compress.json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor

from compress import magnitude, quant_report, structured
from compress.finetune import FinetuneConfig
from compress.magnitude import SensitivityConfig
from compress.quant_report import QuantReportConfig
from compress.structured import StructuredConfig
from lite.batching import Example
from lite.config import to_dict
from lite.files import write_json_atomic, write_text_atomic
from lite.models.seq2seq import EncoderDecoder
from lite.run import RunPaths
from lite.tokenizer import Tokenizer


def _no_finetune() -> FinetuneConfig:
    return FinetuneConfig(steps=0)


@dataclass
class StructuredStep(StructuredConfig):
    finetune: FinetuneConfig = field(default_factory=_no_finetune)  # after the last pruning step
    finetune_between: FinetuneConfig = field(default_factory=_no_finetune)  # after each earlier step


@dataclass
class MagnitudeStep(SensitivityConfig):
    finetune: FinetuneConfig = field(default_factory=_no_finetune)  # with the masks fixed


@dataclass
class QuantReportStep(QuantReportConfig):
    pass


@dataclass
class FinetuneStep(FinetuneConfig):
    pass


class StepContext(Protocol):
    """What the steps share (compress.pipeline provides it): the run's data, the fine-grained masks so
    far (None: none yet), the output folder, and fine-tuning with the recipe's teacher."""

    out: RunPaths
    tokenizer: Tokenizer
    train_ex: list[Example]
    valid_ex: list[Example]
    masks: dict[str, Tensor] | None
    progress: bool
    log: Callable[[str], None]

    def finetune(self, model: EncoderDecoder, fcfg: FinetuneConfig, desc: str) -> dict | None: ...


StepResult = tuple[EncoderDecoder, dict]


def run_structured(ctx: StepContext, model: EncoderDecoder, step: StructuredStep) -> StepResult:
    tunes: list[dict | None] = []

    def between(m: EncoderDecoder, i: int) -> None:
        fcfg = step.finetune if i == step.iterative_steps else step.finetune_between
        tunes.append(ctx.finetune(m, fcfg, f"fine-tune after structured step {i}"))

    model, records = structured.prune_structured(model, step, ctx.train_ex, finetune=between, log=ctx.log)
    for record, tune in zip(records, tunes):
        record["finetune"] = tune
    return model, {"steps": records, "config": to_dict(model.cfg)}


def run_magnitude(ctx: StepContext, model: EncoderDecoder, step: MagnitudeStep) -> StepResult:
    sweep_path = ctx.out.root / "sensitivity.json"
    sweep = magnitude.sensitivity_sweep(model, ctx.valid_ex, ctx.tokenizer, step, progress=ctx.progress)
    write_json_atomic(sweep, sweep_path)
    chosen = magnitude.choose_sparsities(sweep, step.max_drop)
    masks = magnitude.magnitude_masks(model, chosen)
    if ctx.masks:  # weights pruned by an earlier step stay pruned
        masks = {name: mask & ctx.masks[name] if name in ctx.masks else mask for name, mask in masks.items()}
    ctx.masks = masks
    magnitude.apply_masks(model, masks)
    tune = ctx.finetune(model, step.finetune, "fine-tune with masks fixed")
    report = magnitude.sparsity_report(model, masks)
    ctx.log(f"fine-grained: {report['sparsity']:.1%} of the prunable weights are zero")
    return model, {"sparsities": chosen, "sparsity": report, "finetune": tune}


def run_quant_report(ctx: StepContext, model: EncoderDecoder, step: QuantReportStep) -> StepResult:
    report = quant_report.quantization_report(model, ctx.valid_ex, step, progress=ctx.progress)
    write_json_atomic(report, ctx.out.root / "quant_report.json")
    write_text_atomic(quant_report.format_report(report) + "\n", ctx.out.root / "quant_report.txt")
    ctx.log(quant_report.format_report(report, top=5))
    return model, {"keep_float": report.get("keep_float", [])}


def run_finetune(ctx: StepContext, model: EncoderDecoder, step: FinetuneStep) -> StepResult:
    return model, {"finetune": ctx.finetune(model, step, "fine-tune")}


Check = tuple[bool, str, str]  # (holds, field under the step, what the field must be)


def check_structured(step: StructuredStep) -> list[Check]:
    ratios = [(0 <= getattr(step, r) < 1, r, "a fraction in [0, 1)") for r in ("heads", "ffn", "conv")]
    return ratios + [(step.importance in structured.IMPORTANCES, "importance", "magnitude or taylor")]


def _no_checks(step: Any) -> list[Check]:
    return []


@dataclass(frozen=True)
class StepKind:
    """One kind of recipe step. `checks` are what the recipe loader verifies beyond the options'
    types (and their own __post_init__), so a bad value stops the recipe before any step runs."""

    options: type
    run: Callable[[StepContext, EncoderDecoder, Any], StepResult]
    description: str
    checks: Callable[[Any], list[Check]] = _no_checks


STEP_KINDS: dict[str, StepKind] = {
    "structured": StepKind(
        StructuredStep,
        run_structured,
        "remove attention heads, FFN units and convolution channels (a smaller dense model)",
        check_structured,
    ),
    "magnitude": StepKind(
        MagnitudeStep,
        run_magnitude,
        "per-layer sensitivity sweep, then fine-grained magnitude masks within its loss budget",
    ),
    "quant_report": StepKind(
        QuantReportStep, run_quant_report, "per-layer int8 quantization error (a report; the model is unchanged)"
    ),
    "finetune": StepKind(FinetuneStep, run_finetune, "fine-tune (with the recipe's teacher if kd_alpha > 0)"),
}
