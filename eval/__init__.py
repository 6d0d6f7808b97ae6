"""Measurement: BLEU (and later MACs, latency, ARM targets and the budget report)."""
