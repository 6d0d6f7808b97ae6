"""Compression: structured and fine-grained pruning, quantization, distillation (issue 5)."""
