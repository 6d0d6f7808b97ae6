"""Compression: structured and fine-grained pruning, quantization, distillation."""
