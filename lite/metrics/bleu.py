"""Corpus BLEU and chrF with sacrebleu, on detokenized text, with the signatures that make them comparable."""

from __future__ import annotations

import sacrebleu


def score(hypotheses: list[str], references: list[str]) -> dict:
    """BLEU and chrF of detokenized hypotheses against one reference each."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": round(b.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "brevity_penalty": round(b.bp, 4),
        "length_ratio": round(b.sys_len / max(b.ref_len, 1), 4),
        "chrf": round(c.score, 2),
        "chrf_signature": str(chrf.get_signature()),
        "sentences": len(hypotheses),
    }
