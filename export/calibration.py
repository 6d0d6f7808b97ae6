"""Real graph inputs for static int8 calibration: sources and the decoder-step inputs (caches included)
that occur while the model reads the reference translation of real training sentences.

Calibrating the decoder step on random caches would set activation ranges nothing real produces;
these are the values the shipped graphs will see.
"""

from __future__ import annotations

import numpy as np
import torch

from export.graph_io import POS, SRC, TOKEN, update_caches
from export.graphs import DecoderStepGraph, EncoderGraph, graph_io
from lite.models.seq2seq import EncoderDecoder


def pad_source(ids: list[int], src_len: int, pad_id: int) -> np.ndarray:
    """[1, src_len] int32, truncated or right-padded."""
    out = np.full((1, src_len), pad_id, dtype=np.int32)
    ids = ids[:src_len]
    out[0, : len(ids)] = ids
    return out


@torch.no_grad()
def calibration_inputs(
    model: EncoderDecoder,
    pairs: list[tuple[list[int], list[int]]],
    src_len: int,
    target_slots: int,
    max_decoder_samples: int = 256,
    seed: int = 0,
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """(encoder samples, decoder-step samples) as dicts of numpy arrays named like the graph inputs.

    pairs: (source ids ending in eos, target ids ending in eos). Decoding is teacher-forced on the
    target; decoder steps are subsampled evenly (fixed seed) to at most `max_decoder_samples`, since
    each sample carries full caches.
    """
    cfg = model.cfg
    encoder, step = EncoderGraph(model), DecoderStepGraph(model)
    empty = {name: torch.zeros(shape) for name, shape in graph_io(model).caches(1, target_slots).items()}
    total_steps = sum(min(len(t), target_slots) for _, t in pairs)
    keep_prob = min(1.0, max_decoder_samples / max(total_steps, 1))
    rng = np.random.default_rng(seed)
    enc_samples: list[dict[str, np.ndarray]] = []
    dec_samples: list[dict[str, np.ndarray]] = []
    for src_ids, tgt_ids in pairs:
        src = pad_source(src_ids, src_len, cfg.pad_id)
        enc_samples.append({SRC: src})
        memory = encoder({SRC: torch.from_numpy(src)})
        state = dict(empty)
        prev = [cfg.bos_id] + tgt_ids[: target_slots - 1]
        for pos, token in enumerate(prev):
            inputs = {
                TOKEN: torch.tensor([[token]], dtype=torch.int32),
                POS: torch.tensor([pos], dtype=torch.int32),
                **memory,
                **state,
            }
            if rng.random() < keep_prob and len(dec_samples) < max_decoder_samples:
                dec_samples.append({k: v.numpy().copy() for k, v in inputs.items()})
            update_caches(state, step(inputs), pos)
    return enc_samples, dec_samples
