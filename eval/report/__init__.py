"""The MAC/BLEU budget report: one row per model and artifact of one or more run folders.

Reads ONLY files the other stages saved; it never trains, decodes or re-scores anything:

    RUN/config.yaml        the run config (lite.config.load_config): model family, corpus, budget
    RUN/model.pt           the trained PyTorch model; its "model_config" gives the analytic MACs and
                           parameters (lite.metrics.macs.model_summary) and its size on disk is the fp32 size.
                           Without model.pt, config.yaml's model section is used (vocab_size from
                           tokenizer.vocab_size) and the size is "not measured".
    RUN/results.json       BLEU per "split/decoding" with the sacrebleu signature (eval/evaluate.py)
    RUN/train.json         training summary (lite/train.py); shown per run, params cross-checked
    RUN/artifacts.json     optional: the compressed / exported artifacts, one lite.artifacts.ArtifactRow each

The PyTorch fp32 model (model.pt) is always one row; every row of artifacts.json is another.

Rules the report applies:
- size: the file on disk when it exists (plus "<path>.data" for onnx; for a model folder, the graphs its
  manifest lists); otherwise "size_bytes".
- MACs: "macs" when given (a graph count), else the analytic count of the artifact's model config
  ("model_config", else "source_model", else the run's model.pt, since quantization and export do
  not change the mult-adds). Params always come from the analytic model of that config.
- An entry whose path is RUN/model.pt is merged into the model.pt row (e.g. its host latency).
- BLEU: the row's headline BLEU is the test split with the run config's decoding (decode.beam /
  decode.lenpen), else test/greedy, else the first other test decoding. A plain number carries no
  signature; the report shows "signature not recorded".
- Latency and instructions: a column per target of "latency_ms" and "instructions"; "targets" is kept
  for reading only.
- Budgets (RUN/config.yaml "budget"): max_macs, max_size_mb (MB = 1e6 bytes), max_latency_ms (every
  measured target must meet it; the margin is the worst target), min_bleu (headline test BLEU).
  Each is PASS, FAIL, "unknown" (quantity not measured, never a pass) or "no budget". The margin is
  value - limit (negative is under a maximum; positive is over a minimum).

Modules, in the order the data flows: collect (a run folder into rows), budget (the checks), build (the
runs together, the Pareto frontier), plots, sections (what the documents show, listed once), render
(markdown, HTML, terminal), write (the files).
"""

from __future__ import annotations

from eval.report.budget import BUDGETS
from eval.report.build import build_report, pareto_frontier
from eval.report.collect import collect_run
from eval.report.plots import plot_bleu_vs_macs, plot_macs_per_layer
from eval.report.render import render_html, render_markdown, summarize
from eval.report.text import NOT_MEASURED
from eval.report.write import REPORT_FILES, write_report

__all__ = [
    "BUDGETS",
    "NOT_MEASURED",
    "REPORT_FILES",
    "build_report",
    "collect_run",
    "pareto_frontier",
    "plot_bleu_vs_macs",
    "plot_macs_per_layer",
    "render_html",
    "render_markdown",
    "summarize",
    "write_report",
]
