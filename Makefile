# One-command entry points. Every target depends on setup, so a fresh clone needs nothing else.
#   make compress                      the whole pipeline on CONFIG into RUN (train, BLEU, export,
#                                      compress by RECIPE, report)
#   make test                          the test suite (what CI runs)
#   make bench                         benchmarks -> benchmarks/results/*.json
CONFIG ?= configs/default.yaml
RUN    ?= runs/$(basename $(notdir $(CONFIG)))
RECIPE ?= configs/compress/default.yaml
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup compress tokenizer shortlist train evaluate export report test test-all lint bench bench-headline bench-latency bench-compression bench-attention bench-listops bench-arm bench-profile bench-ddp help

help:
	@echo "make compress [CONFIG=configs/default.yaml] [RUN=runs/<config name>] [RECIPE=configs/compress/default.yaml]"
	@echo "                  data -> tokenizer -> train -> BLEU -> shortlist -> export -> compress (prune, distil, int8) -> report"
	@echo "make report RUN='runs/default runs/default-transformer'   budget report from saved measurements"
	@echo "make test        the test suite (fast; what .ci/run runs)"
	@echo "make test-all    also the slow end-to-end tests"
	@echo "make lint        ruff check + ruff format --check (part of make test)"
	@echo "make export      TFLite/ONNX folders of RUN/model.pt, each gated on parity with PyTorch"
	@echo "make bench       benchmarks, JSON under benchmarks/results/"
	@echo "make bench-headline   default LSRA and Transformer through every make compress stage, timed (~1.5 h; reuses runs)"
	@echo "make bench-latency   latency + throughput vs CTranslate2, runtime overhead (needs runs/default and runs/default-transformer exported)"
	@echo "make bench-compression   the paper's size chain, Transformer -> LSRA -> int8 -> pruned (needs both runs)"
	@echo "make bench-attention   dense vs local+global attention scaling, n = 256..8192 (PyTorch and TFLite)"
	@echo "make bench-listops     ListOps: dense, local+global, DAM, learned degree, SAR in the LSRA classifier (~25 min)"
	@echo "make bench-arm         qemu cortex-a53/a72/a76/neoverse-n1 x TFLite precisions: instructions/sentence, BLEU on target (~45 min)"
	@echo "make bench-profile     where a decoder step goes, per kernel family: host (perf) and emulated cores (~5 min)"
	@echo "make bench-ddp         training tokens/s with 1 and 2 processes (torchrun, DDP over gloo)"

setup: $(STAMP)

# Installs the pinned set; the stamp makes a second call instant unless pyproject.toml changed.
$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

# The tokenizer stage builds a built-in corpus on first use (cached in data/).
tokenizer: setup
	$(BIN)/lite tokenizer $(RUN) --config $(CONFIG)

# The vocabulary shortlist (IBM model 1 on the training split, seconds): exported folders carry it.
shortlist: tokenizer
	$(BIN)/lite shortlist $(RUN)

train: tokenizer
	$(BIN)/lite train $(RUN) --config $(CONFIG) $(if $(wildcard $(RUN)/checkpoints/last.pt),--resume,)

evaluate: train
	$(BIN)/lite evaluate $(RUN) --beam 1
	$(BIN)/lite evaluate $(RUN)

# TFLite/ONNX model folders for devices, each behind the parity gate (formats/precisions: export
# section), then each scored on the whole test split through the on-device runtime (greedy).
export: evaluate shortlist
	$(BIN)/lite export $(RUN)
	$(BIN)/lite evaluate $(RUN) --artifact all --beam 1

# The recipe's steps on RUN/model.pt into RUN/compressed/<recipe name>/ (resumes after finished steps),
# its artifacts exported and measured, then one report over the uncompressed and compressed runs.
compress: export
	$(BIN)/lite compress $(RUN) --recipe $(RECIPE)
	$(BIN)/lite report $(RUN) $(RUN)/compressed/$(basename $(notdir $(RECIPE)))

# Regenerate the budget report from saved measurements only (RUN may list several folders).
report: setup
	$(BIN)/lite report $(RUN)

test: setup lint
	$(BIN)/python -m pytest -x -q -m "not slow" --durations=15

# ruff, pinned in pyproject.toml (dev): lint rules and line length 120 are in [tool.ruff] there.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-all: setup lint
	$(BIN)/python -m pytest -x -q

bench: setup
	$(BIN)/python benchmarks/train_throughput.py

# The README's headline: both default models through the make compress stages, timed (reuses finished
# runs whose config is unchanged) -> benchmarks/results/headline.json; then README's tables from the JSON.
bench-headline: setup
	$(BIN)/python benchmarks/headline.py
	$(BIN)/python scripts/readme_tables.py

# HAT latency protocol on the exported folders of the default LSRA and Transformer runs, CTranslate2
# beside them (converted from runs/default-transformer first), then the runtime's own work per step.
bench-latency: setup
	$(BIN)/lite ctranslate2 runs/default-transformer
	$(BIN)/python benchmarks/latency.py --record
	$(BIN)/python benchmarks/runtime_overhead.py

# Lite Transformer's compression chain on our data, from the runs' measured artifacts.
bench-compression: setup
	$(BIN)/python benchmarks/compression.py

# Dense vs local+global attention, n = 256..8192, PyTorch and TFLite, 1 thread (JSON + PNG).
bench-attention: setup
	$(BIN)/python benchmarks/attention_scaling.py

# ListOps (LRA rules): dense vs sparse/learned attention in the LSRA classifier, same CPU minutes each.
bench-listops: setup
	$(BIN)/python benchmarks/listops.py

# Every emulated ARM core x every TFLite precision of runs/default (needs it exported): instructions per
# sentence, BLEU on target vs host, bit-identity (JSON + markdown table; resumable; ~45 min).
bench-arm: setup
	$(BIN)/python benchmarks/arm.py

# Per kernel family, each TFLite folder of runs/default: host time (Linux perf) and instructions on
# every emulated core (needs it exported; keep the machine otherwise idle for the host part).
bench-profile: setup
	$(BIN)/python benchmarks/profile.py --folders tflite-fp32,tflite-dynamic-int8,tflite-int8

# Training tokens/s with 1 and 2 processes (DDP over gloo), the same effective batch (needs runs/default's tokenizer).
bench-ddp: setup
	$(BIN)/python benchmarks/ddp_throughput.py
