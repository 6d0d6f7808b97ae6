"""The runtime's batch-1 fast path (export/runtime.py _Session, _Signature): caches kept in the interpreter,
inputs set once per sentence. It must decode exactly like the general dict path it replaces in greedy()."""

from __future__ import annotations

import numpy as np
import pytest

from export.runtime import Translator


@pytest.fixture(scope="module")
def sentences(exported) -> list[str]:
    from lite.data.corpus import load_pairs
    from lite.run import open_run

    _, cfg = open_run(exported, None)
    return [s for s, _ in load_pairs(cfg.data, "test")[0][:12]]


@pytest.mark.parametrize("name", ["tflite-fp32", "tflite-int8", "onnx-fp32"])
def test_fast_path_decodes_exactly_like_the_dict_path(exported, sentences, name):
    translator = Translator(exported / "export" / name, num_threads=1)
    for text in sentences:
        ids = translator.source_ids(text)
        budget = translator.max_len(len(ids))
        fast = translator.greedy(ids)
        state = translator.initial_state(translator.encode(ids), 1, budget)
        assert fast == translator.greedy_from(state, translator.bos, 0, budget), text
    # the logits rows themselves, step by step (a second translator: one graph serves one path at a time):
    # bit for bit the same graph on the same inputs
    other = Translator(exported / "export" / name, num_threads=1)
    ids = translator.source_ids(sentences[0])
    step = translator.decoding(translator.encode(ids), 8)
    state = other.initial_state(other.encode(ids), 1, 8)
    token = translator.bos
    for pos in range(8):
        row = step(token, pos).copy()
        np.testing.assert_array_equal(row, other.step(state, np.array([token]), pos)[0])
        token = int(row.argmax())


def test_a_superseded_session_refuses_to_step(exported, sentences):
    translator = Translator(exported / "export" / "tflite-fp32", num_threads=1)
    ids = translator.source_ids(sentences[0])
    first = translator.decoding(translator.encode(ids), 4)
    first(translator.bos, 0)
    second = translator.decoding(translator.encode(ids), 4)  # another sentence takes the graph's tensors
    with pytest.raises(RuntimeError, match="superseded"):
        first(5, 1)
    second(translator.bos, 0)
    translator.step(translator.initial_state(translator.encode(ids), 1, 4), np.array([translator.bos]), 0)
    with pytest.raises(RuntimeError, match="superseded"):  # so does a call of the general path
        second(5, 1)


def test_update_caches_writes_one_slot_into_a_copy():
    """A step's one-slot output lands at pos in a new array (the previous one may still be a graph input,
    which the runtime treats as immutable); a whole-cache output (folders exported before) replaces it;
    convolution windows are replaced."""
    from export.graph_io import update_caches

    cache = np.zeros((2, 5, 3), np.float32)
    window = np.zeros((1, 2, 4), np.float32)
    state = {"self_k_0": cache, "conv_0": window, "src_keep": np.ones((1, 4), np.float32)}
    new_window = np.full((1, 2, 4), 7.0, np.float32)
    update_caches(state, {"logits": np.zeros((1, 9)), "self_k_0": np.full((2, 1, 3), 5.0), "conv_0": new_window}, 3)
    assert state["self_k_0"] is not cache and not cache.any()  # the old array untouched
    assert (state["self_k_0"][:, 3] == 5).all() and not np.delete(state["self_k_0"], 3, axis=1).any()
    assert state["conv_0"] is new_window and "logits" not in state
    whole = np.full((2, 5, 3), 9.0, np.float32)
    update_caches(state, {"self_k_0": whole}, 4)
    assert state["self_k_0"] is whole
