"""`lite compress RUN --recipe R`: apply a recipe's steps to a trained run and ship the result.

    RUN/compressed/<recipe name>/      a run folder of its own, so export/evaluate/report work on it
      config.yaml                      the run's config, model section = the compressed widths,
                                       export section = the recipe's
      tokenizer/spm.model              copied from RUN
      shortlist.npz                    copied from RUN when it has one (the vocabulary is the same)
      steps/NN-<kind>.pt               model (+ fine-grained masks) after each step: a rerun resumes
                                       after the last step whose recipe prefix is unchanged
      compress.json                    what each step did (widths, sparsities, fine-tuning losses, time),
                                       and under "qat" whether QAT ran, why, and the gates around it
      sensitivity.json                 per-layer sensitivity sweep (magnitude steps)
      quant_report.json                per-layer quantization error (quant_report steps)
      model.pt, results.json           the compressed PyTorch model and its test BLEU
      export/, artifacts.json          the exported artifacts, measured (BLEU through the runtime)

Quantization happens where the artifact is made (`lite export`, ai-edge-quantizer / onnxruntime);
if an int8 artifact misses its parity gate (export.parity) or loses more than qat.when_bleu_drop_over
test BLEU against the compressed PyTorch model, the model is fine-tuned with fake-quant
(compress/qat.py), exported and gated again; only a second missed gate stops the run. compress.json's
"qat" entry records the trigger, both gates' figures and the fine-tuning.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from compress import distill, magnitude, qat
from compress.finetune import FinetuneConfig, finetune, load_examples
from compress.recipe import QATStep, Recipe
from compress.steps import STEP_KINDS
from eval.evaluate import evaluate, evaluate_artifact
from export.stage import export_run
from lite import checkpoint
from lite.artifacts import read_rows
from lite.config import RunConfig, to_dict
from lite.errors import ConfigError, GateError, RunFolderError
from lite.files import atomic_path, read_json, write_json_atomic
from lite.models.seq2seq import EncoderDecoder, count_parameters
from lite.run import RunPaths
from lite.tokenizer import Tokenizer


def output_paths(run: RunPaths, recipe: Recipe) -> RunPaths:
    return RunPaths(run.root / "compressed" / recipe.name)


def _write_config(cfg: RunConfig, out: RunPaths) -> None:
    with atomic_path(out.config) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


class _Context:
    """What the steps share (compress.steps.StepContext): data, teacher, the fine-grained masks so far, the log."""

    def __init__(
        self, cfg: RunConfig, run: RunPaths, out: RunPaths, recipe: Recipe, progress: bool, log: Callable[[str], None]
    ):
        self.cfg, self.run, self.out, self.recipe, self.progress, self.log = cfg, run, out, recipe, progress, log
        self.tokenizer = Tokenizer(run.tokenizer)
        self.train_ex = load_examples(cfg, self.tokenizer, "train")
        self.valid_ex = load_examples(cfg, self.tokenizer, "valid")
        self.masks: dict[str, torch.Tensor] | None = None
        self.teacher: EncoderDecoder | None = None
        if recipe.teacher == "self":
            self.teacher = checkpoint.load_model(run.model)
        elif recipe.teacher:
            self.teacher = distill.load_teacher(Path(recipe.teacher), run.tokenizer)
        if recipe.sequence_kd.max_sentences:
            self.train_ex = self._sequence_kd()

    def _sequence_kd(self) -> list:
        if self.teacher is None:
            raise ConfigError("recipe.sequence_kd: needs a teacher (set teacher: self or a run folder)")
        path = self.out.root / "sequence_kd.jsonl"
        if path.is_file():
            return distill.read_examples(path)
        self.log(f"sequence-level KD: the teacher translates {self.recipe.sequence_kd.max_sentences} training sources")
        examples = distill.teacher_examples(
            self.teacher, self.train_ex, self.recipe.sequence_kd, progress=self.progress
        )
        distill.write_examples(path, examples)
        return examples

    def finetune(self, model: EncoderDecoder, fcfg: FinetuneConfig, desc: str) -> dict | None:
        if fcfg.steps <= 0:
            return None
        after = (lambda m: magnitude.apply_masks(m, self.masks)) if self.masks else None
        teacher = self.teacher if fcfg.kd_alpha > 0 else None
        return finetune(
            model,
            self.train_ex,
            self.valid_ex,
            fcfg,
            teacher=teacher,
            after_step=after,
            progress=self.progress,
            desc=desc,
        )


def _step_file(out: RunPaths, index: int, kind: str) -> Path:
    return out.root / "steps" / f"{index:02d}-{kind}.pt"


def _record_file(out: RunPaths) -> Path:
    return out.root / "compress.json"


def _params(model: EncoderDecoder) -> dict:
    return {"params": count_parameters(model), "params_no_embed": count_parameters(model, False)}


def compress_run(
    cfg: RunConfig,
    run: RunPaths,
    recipe: Recipe,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run every step of `recipe` on RUN's model, export and measure; returns the compress.json record."""
    out = _prepare_output(run, recipe, force)
    torch.set_num_threads(cfg.train.threads)
    ctx = _Context(cfg, run, out, recipe, progress, log)
    record: dict[str, Any] = read_json(_record_file(out), {}) if not force else {}
    model = _run_steps(ctx, record)
    checkpoint.save_atomic(checkpoint.model_record(model), out.model)
    out_cfg = _compressed_config(cfg, recipe, model)
    _write_config(out_cfg, out)
    record["model"] = _params(model) | {
        "config": to_dict(model.cfg),
        "bleu_greedy": evaluate(out_cfg, out, beam=1, progress=progress)["bleu"],
    }
    log(f"compressed PyTorch model: test BLEU {record['model']['bleu_greedy']:.2f} (greedy)")
    record["artifacts"] = _export_and_measure(ctx, out_cfg, out, model, record, progress, log)
    write_json_atomic(record, _record_file(out))
    return record


def _prepare_output(run: RunPaths, recipe: Recipe, force: bool) -> RunPaths:
    """RUN/compressed/<recipe name>/ holding RUN's tokenizer (and shortlist); emptied first with `force`."""
    if not run.model.is_file():
        raise RunFolderError(f"{run.model}: no trained model (run `lite train {run.root}` first)")
    out = output_paths(run, recipe)
    if force and out.root.exists():
        shutil.rmtree(out.root)
    out.root.mkdir(parents=True, exist_ok=True)
    (out.root / "tokenizer").mkdir(exist_ok=True)
    for src in run.tokenizer.parent.iterdir():
        shutil.copyfile(src, out.root / "tokenizer" / src.name)
    if run.shortlist.is_file():
        shutil.copyfile(run.shortlist, out.shortlist)
    return out


def _run_steps(ctx: _Context, record: dict) -> EncoderDecoder:
    """The model after the recipe's last step. Steps up to the resume point are loaded, not rerun; each
    step run is saved (with the masks and its recipe prefix) and added to record["steps"] at once, and
    record["source"] describes the model the steps start from."""
    out, recipe = ctx.out, ctx.recipe
    resume = _resume_point(out, recipe)
    model = checkpoint.load_model(ctx.run.model)
    record["source"] = {"model": str(ctx.run.model)} | _params(model)
    steps_done = record.get("steps", [])[: resume + 1]
    if resume >= 0:
        model = _resume(ctx, resume)
    for i, (kind, step) in enumerate(recipe.steps):
        if i <= resume:
            continue
        ctx.log(f"step {i + 1}/{len(recipe.steps)}: {kind}")
        model, info = _run_step(ctx, kind, step, model)
        steps_done.append(info)
        checkpoint.save_atomic(
            checkpoint.model_record(model) | {"masks": ctx.masks, "spec": recipe.spec(i)}, _step_file(out, i, kind)
        )
        record["steps"] = steps_done
        write_json_atomic(record, _record_file(out))
    return model


def _resume_point(out: RunPaths, recipe: Recipe) -> int:
    """Index of the last step whose saved result was made by the same recipe prefix (-1: none)."""
    last = -1
    for i, (kind, _) in enumerate(recipe.steps):
        path = _step_file(out, i, kind)
        if not path.is_file() or checkpoint.load(path).get("spec") != recipe.spec(i):
            break
        last = i
    return last


def _resume(ctx: _Context, index: int) -> EncoderDecoder:
    """The model saved after step `index`; its fine-grained masks become the context's."""
    kind = ctx.recipe.steps[index][0]
    saved = checkpoint.load(_step_file(ctx.out, index, kind))
    model = checkpoint.load_model(_step_file(ctx.out, index, kind))
    ctx.masks = saved.get("masks")
    ctx.log(f"resuming after step {index + 1} ({kind}): earlier results are unchanged")
    return model


def _run_step(ctx: _Context, kind: str, step: Any, model: EncoderDecoder) -> tuple[EncoderDecoder, dict]:
    """Apply one step through its kind's entry in STEP_KINDS; (the model after it, its compress.json entry)."""
    started = time.monotonic()
    model, info = STEP_KINDS[kind].run(ctx, model, step)
    model.eval()
    info |= {"kind": kind, "seconds": round(time.monotonic() - started, 1)} | _params(model)
    return model, info


def _compressed_config(cfg: RunConfig, recipe: Recipe, model: EncoderDecoder) -> RunConfig:
    """RUN's config with the compressed model's widths and the recipe's export section."""
    return dataclasses.replace(
        cfg,
        name=f"{cfg.name}-{recipe.name}",
        model=model.cfg,
        export=dataclasses.replace(
            cfg.export,
            formats=list(recipe.export.formats),
            precisions=list(recipe.export.precisions),
            pack=recipe.export.pack,
        ),
    )


def _gate_entry(figures: dict, missed: list[str]) -> dict:
    """What compress.json keeps of one artifact's parity gate."""
    keep = (
        "sentences",
        "max_logit_diff",
        "top1",
        "identical",
        "bleu_pytorch",
        "bleu_artifact",
        "bleu_drop",
        "bleu_fp32",
        "bleu_drop_vs_fp32",
        "fp32_reference",
        "thresholds",
    )
    return {"passed": not missed, "failed": missed} | {k: figures[k] for k in keep if k in figures}


def _export_and_measure(
    ctx: _Context,
    cfg: RunConfig,
    out: RunPaths,
    model: EncoderDecoder,
    record: dict,
    progress: bool,
    log: Callable[[str], None],
) -> list[dict]:
    """Export and score each artifact on the test set. If an int8 artifact misses its parity gate or
    loses more than qat.when_bleu_drop_over test BLEU, fine-tune with fake quantization (the recipe's
    qat section), export and gate again; a second missed gate is a GateError. record["qat"] says
    what triggered QAT, the gate figures before and after, and the fine-tuning."""
    qat_cfg = ctx.recipe.qat
    record.pop("qat", None)  # from an earlier run of this recipe; this run says whether QAT ran
    try:
        rows, gates = _export_all(cfg, out, progress, log, force=False)
    except GateError as exc:
        if "int8" not in exc.precision:  # QAT cannot mend a float artifact
            raise
        if qat_cfg is None:
            message = f"{exc}; the recipe has no qat section to fine-tune with and try again"
            raise GateError(message, exc.artifact, exc.precision, exc.figures, exc.missed) from None
        log(f"{exc}: quantization-aware fine-tuning, then export again")
        first = {exc.artifact.name: _gate_entry(exc.figures, exc.missed)}
        trigger: dict[str, Any] = {"trigger": "parity gate"}
    else:
        reference = record["model"]["bleu_greedy"]
        losing = _losing_bleu(rows, reference, qat_cfg)
        if not losing:
            return rows
        log(
            f"{', '.join(r['name'] for r in losing)} lose more than {qat_cfg.when_bleu_drop_over} BLEU: "
            "quantization-aware fine-tuning"
        )
        first = gates
        trigger = {
            "trigger": "test BLEU loss",
            "triggered_by": {r["name"]: round(reference - r["bleu"], 2) for r in losing},
        }
    _qat_finetune(ctx, cfg, out, model, record, trigger | {"ran": True, "first_gate": first}, progress)
    return _export_after_qat(cfg, out, record, progress, log)


def _losing_bleu(rows: list[dict], reference: float, qat_cfg: QATStep | None) -> list[dict]:
    """The int8 rows whose test BLEU is more than qat.when_bleu_drop_over below `reference` (none
    without a qat section)."""
    limit = qat_cfg.when_bleu_drop_over if qat_cfg else float("inf")
    return [r for r in rows if "int8" in r["precision"] and reference - r["bleu"] > limit]


def _qat_finetune(
    ctx: _Context, cfg: RunConfig, out: RunPaths, model: EncoderDecoder, record: dict, entry: dict, progress: bool
) -> None:
    """Fine-tune a copy of `model` with fake quantization and save it as OUT/model.pt; record["qat"]
    becomes `entry` with the fine-tuning and the QAT model's greedy test BLEU."""
    qat_cfg = ctx.recipe.qat
    model = copy.deepcopy(model)
    qat.prepare_qat(model, qat_cfg)
    tune = ctx.finetune(model, qat_cfg.finetune, "QAT fine-tune")
    qat.convert_qat(model)
    checkpoint.save_atomic(checkpoint.model_record(model), out.model)
    record["qat"] = entry | {
        "finetune": tune,
        "bleu_greedy": evaluate(cfg, out, beam=1, progress=progress, force=True)["bleu"],
    }
    write_json_atomic(record, _record_file(out))


def _export_after_qat(
    cfg: RunConfig, out: RunPaths, record: dict, progress: bool, log: Callable[[str], None]
) -> list[dict]:
    """Export the QAT model again (replacing what the first export published); a missed gate here stops
    the run, with both gates' figures in record["qat"]."""
    try:
        rows, gates = _export_all(cfg, out, progress, log, force=True)
    except GateError as exc:
        record["qat"]["second_gate"] = {exc.artifact.name: _gate_entry(exc.figures, exc.missed)}
        write_json_atomic(record, _record_file(out))
        first = record["qat"]["first_gate"]
        before = "; ".join(f"{name}: {'; '.join(g['failed']) or 'passed'}" for name, g in first.items())
        message = (
            f"{exc.artifact}: parity gate failed again after QAT on {exc.figures['sentences']} test "
            f"sentences: {'; '.join(exc.missed)} (thresholds: export.parity."
            f"{exc.precision.replace('-', '_')}; before QAT: {before})"
        )
        raise GateError(message, exc.artifact, exc.precision, exc.figures, exc.missed) from None
    record["qat"]["second_gate"] = gates
    return rows


def _export_all(cfg: RunConfig, out: RunPaths, progress: bool, log, force: bool) -> tuple[list[dict], dict]:
    """(artifact rows with test BLEU, {artifact name: its gate entry})."""
    manifests = export_run(cfg, out, force=force, progress=progress, log=log)
    names = [f"{m.format}-{m.precision}" for m in manifests]
    gates = {name: _gate_entry(m.parity, []) for name, m in zip(names, manifests)}
    bleu = {name: evaluate_artifact(cfg, out, name, beam=1, progress=progress)["bleu"] for name in names}
    rows = [
        {
            "name": r.name,
            "format": r.format,
            "precision": r.precision,
            "bleu": bleu[r.name],
            "size_bytes": r.size_bytes,
            "notes": "" if r.notes is None else r.notes,
        }
        for r in read_rows(out.root)
        if r.name in bleu
    ]
    for r in rows:
        log(
            f"{r['name']}: test BLEU {r['bleu']:.2f} (greedy, through the runtime), "
            f"graphs {r['size_bytes'] / 1e6:.2f} MB"
        )
    return rows, gates
