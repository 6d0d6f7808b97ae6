"""Metrics that need only text or a config: BLEU/chrF scoring and the analytic MAC count."""
