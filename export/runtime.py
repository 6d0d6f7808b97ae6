"""The on-device translator: numpy + an interpreter + sentencepiece, no torch.

    python -m export.runtime --model DIR [TEXT | -] [--file F] [--beam K]     (also: lite translate --model DIR)

Reads a model folder written by `lite export` (manifest.json, the graphs, spm.model), refuses names
that leave the folder and files the manifest does not list, verifies every checksum (export/manifest.py),
then per sentence: tokenize, run the encoder once, run decoder steps with the caches
(greedy or beam search, the same rules as lite/decode.py), detokenize. The graphs' tensor names and
cache layout are export/graph_io.py's.

Backends: TFLite graphs through ai_edge_litert (fallback: tflite_runtime), ONNX graphs through
onnxruntime. Graph files packed with xz (`*.xz`, export.pack: xz; export/packing.py) are decompressed
in memory at load and given to the interpreter as bytes: smaller on disk, the same size in memory.
Sources longer than the graphs' max_src_len are truncated to it (eos kept) with a warning on stderr:
a static graph cannot take more, and dropping the line would break one-line-per-input.

Vocabulary shortlist (lite/shortlist.py; a folder exported from a run with one lists shortlist.npz):
with it on (`--shortlist`, or the folder's decode default) each sentence may only produce its
candidates, the softmax taken over them, the same rule as lite/decode.py. A TFLite folder with a
shortlist has decoder steps that stop before the output projection (decode_<B>_hidden); the runtime
reads the projection's weight from the graph file once (manifest "projection"), dequantizes the
sentence's candidate rows once per sentence, and projects each step's hidden state onto them in numpy
(K x embed_dim MACs instead of vocab x embed_dim). ONNX folders run the full step and keep the
candidates' logits: the same result, without the saving.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

import numpy as np

from export.graph_io import (
    HIDDEN,
    LOGITS,
    POS,
    SRC,
    TOKEN,
    at_batch,
    decode_signature,
    encode_signature,
    from_onnx_output,
    has_slots,
    tflite_input,
    update_caches,
)
from export.manifest import Manifest, onnx_external_data, read_manifest, require_listed
from export.packing import is_packed, read_graph
from lite.errors import LiteError, ModelFolderError, UsageError
from lite.shortlist import Shortlist, load_shortlist

BATCH_LINES = 32  # lines read (and flushed) together when streaming


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class _Signature:
    """One signature of a TFLite file, called through the interpreter's wrapper directly.

    SignatureRunner.__call__ resizes every input and re-plans the tensor arena on every call, and copies
    every input in; a decoder step has ~20 inputs, most of them the same from step to step. Our graphs'
    shapes are static, so tensors are allocated once here, and an input given the very array object it
    got on the previous call (the encoder's keys/values and source mask, fixed for a sentence) is not
    copied again: inputs are treated as immutable (the runtime never writes into an array it passed).
    Uses the runner's private fields, pinned with ai-edge-litert in pyproject.toml; falls back to the
    runner itself where they are missing (another version, tflite-runtime)."""

    def __init__(self, interpreter: Any, key: str):
        self.runner = interpreter.get_signature_runner(key)
        try:
            self.wrapper = interpreter._interpreter
            self.subgraph = self.runner._subgraph_index
            self.inputs = dict(self.runner._inputs)
            self.outputs = list(self.runner._outputs)
        except AttributeError:
            self.wrapper = None
        self.allocated = False  # on first use, as the runner does (the delegate announces itself then)
        self.last: dict[str, np.ndarray] = {}
        self.generation = 0  # bumped by every call and session: a session's views are its own until then

    def allocate(self) -> None:
        if not self.allocated:
            self.wrapper.AllocateTensors(self.subgraph)
            self.allocated = True

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        self.generation += 1
        if self.wrapper is None:
            return self.runner(**inputs)
        self.allocate()
        for name, value in inputs.items():
            if self.last.get(name) is not value:
                self.wrapper.SetTensor(self.inputs[name], value, self.subgraph)
                self.last[name] = value
        self.wrapper.Invoke(self.subgraph)
        return {name: self.wrapper.GetTensor(index, self.subgraph) for name, index in self.outputs}


class _Session:
    """One sentence's greedy decoding at batch 1 with the caches kept in the interpreter between steps.

    Per step the Python side writes the token and position into the input tensors, invokes, and moves
    each cache update from its output tensor into its input tensor (TFLite has no in-place cache here):
    no dicts, no per-input calls, no copies out. The encoder's outputs are set once per sentence. A step
    returns one slot of each self-attention cache (export/graphs.py), copied into slot pos of the input;
    a folder exported before that returns whole caches, of which only slot pos changed, and the same
    slot is copied from it. The parity gate checks that this path decodes exactly like the general
    one (export/parity.py) on every folder it publishes.

    step() returns a view of the output row, valid until the next step. A session is only valid until its
    signature is used otherwise (another session or a dict call): step() then raises rather than read
    another sentence's caches."""

    def __init__(self, sig: _Signature, memory: dict[str, np.ndarray], caches: list[str], output: str):
        self.sig, w, sub = sig, sig.wrapper, sig.subgraph
        sig.allocate()
        sig.generation += 1
        self.generation = sig.generation
        for name, value in memory.items():
            key = tflite_input(name)
            if sig.last.get(key) is not value:
                w.SetTensor(sig.inputs[key], value, sub)
                sig.last[key] = value
        outputs = dict(sig.outputs)

        def view(index: int) -> np.ndarray:
            return w.tensor(w, index, sub)

        self.pairs, self.slotted = [], []
        for name in caches:
            key = tflite_input(name)
            sig.last.pop(key, None)  # written here directly: the dict path must set it again
            cache_in = view(sig.inputs[key])
            cache_in.fill(0)
            cache_out = view(outputs[name])
            if not has_slots(name):
                self.pairs.append((cache_in, cache_out))
            else:  # the slot a step writes: its only one, or (older folders) slot pos of the whole cache
                self.slotted.append((cache_in, cache_out, cache_out.shape[1] == cache_in.shape[1]))
        for key in (tflite_input(TOKEN), tflite_input(POS)):
            sig.last.pop(key, None)
        self.token, self.pos = view(sig.inputs[tflite_input(TOKEN)]), view(sig.inputs[tflite_input(POS)])
        self.out = view(outputs[output])
        self.invoke, self.subgraph = w.Invoke, sub

    def step(self, token: int, pos: int) -> np.ndarray:
        if self.sig.generation != self.generation:
            raise RuntimeError("this decoding session was superseded by another use of its graph")
        self.token.fill(token)
        self.pos.fill(pos)
        self.invoke(self.subgraph)
        for cache_in, cache_out in self.pairs:
            np.copyto(cache_in, cache_out)
        for cache_in, cache_out, whole in self.slotted:
            cache_in[:, pos] = cache_out[:, pos if whole else 0]
        return self.out[0]


class TFLiteBackend:
    """One .tflite file (or .tflite.xz) with signatures encode_<S> (source buckets) and decode_<B> (batch sizes)."""

    dynamic_cache = False

    def __init__(self, path: Path, manifest: Manifest, num_threads: int | None, kernels: str = "default"):
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
        except ImportError:  # the older standalone runtime, where ai-edge-litert has no wheel
            try:
                from tflite_runtime.interpreter import Interpreter, OpResolverType
            except ImportError:
                raise ModelFolderError(
                    f"{path}: needs ai-edge-litert (pip install ai-edge-litert) or tflite-runtime to run TFLite graphs"
                ) from None
        # a packed graph is decompressed into memory; the interpreter keeps a reference to the bytes
        source = {"model_content": read_graph(path)} if is_packed(path) else {"model_path": str(path)}
        # "reference": TFLite's portable C++ kernels, no XNNPACK: slow, but integer ops give the same
        # bits on every CPU, which is how a target's int8 outputs are checked against the host's
        resolver = {"default": OpResolverType.AUTO, "reference": OpResolverType.BUILTIN_REF}[kernels]
        try:
            self.interpreter = Interpreter(**source, num_threads=num_threads, experimental_op_resolver_type=resolver)
        except (ValueError, RuntimeError) as exc:
            raise ModelFolderError(f"{path}: the interpreter cannot load it ({str(exc).splitlines()[0]})") from None
        signatures = self.interpreter.get_signature_list()
        self.src_lens = sorted(manifest.src_lens)
        self.batches = sorted(manifest.batches)
        self.hidden = manifest.projection is not None
        wanted = [encode_signature(s) for s in self.src_lens] + [
            decode_signature(b, h) for b in self.batches for h in ((False, True) if self.hidden else (False,))
        ]
        absent = [w for w in wanted if w not in signatures]
        if absent:
            raise ModelFolderError(f"{path}: signature(s) {', '.join(absent)} missing (has {', '.join(signatures)})")
        self.runners = {name: _Signature(self.interpreter, name) for name in wanted}
        self.max_src_len = self.src_lens[-1]
        self.table: np.ndarray | None = None  # the output projection's weight [V, D], int8 or float
        self.row_scales: np.ndarray | None = None  # per-row scales of an int8 table
        if self.hidden:
            self._read_projection(path, manifest)

    def _read_projection(self, path: Path, manifest: Manifest) -> None:
        where = manifest.projection
        try:
            details = self.interpreter.get_tensor_details(subgraph_index=where["subgraph"])
            detail = next(d for d in details if d["index"] == where["tensor"])
            table = self.interpreter.get_tensor(where["tensor"], subgraph_index=where["subgraph"])
        except (KeyError, StopIteration, ValueError, RuntimeError) as exc:
            raise ModelFolderError(f"{path}: manifest projection {where} names no tensor of the file ({exc})") from None
        shape = (manifest.vocab_size, manifest.model_config.get("embed_dim"))
        if table.shape != shape:
            raise ModelFolderError(f"{path}: manifest projection {where} has shape {table.shape}, expected {shape}")
        if table.dtype == np.int8:
            scales = np.asarray(detail["quantization_parameters"]["scales"], dtype=np.float32)
            if scales.shape != (shape[0],):
                raise ModelFolderError(f"{path}: the int8 projection has {scales.size} scales, expected one per row")
            self.row_scales = scales
        self.table = table

    def candidate_rows(self, cands: np.ndarray) -> np.ndarray:
        """The output projection's rows of candidate ids `cands`, float32 [K, D] (dequantized)."""
        rows = self.table[cands].astype(np.float32)
        return rows if self.row_scales is None else rows * self.row_scales[cands, None]

    def encode(self, src: np.ndarray) -> dict[str, np.ndarray]:
        """src [1, n] int32 -> encoder outputs padded to max_src_len (padding is masked by src_keep)."""
        n = src.shape[1]
        bucket = next(s for s in self.src_lens if s >= n)
        padded = np.zeros((1, bucket), dtype=np.int32)
        padded[:, :n] = src
        out = self.runners[encode_signature(bucket)](**{tflite_input(SRC): padded})
        grow = self.max_src_len - bucket
        if grow:
            out = {k: np.pad(v, [(0, 0), (0, grow)] + [(0, 0)] * (v.ndim - 2)) for k, v in out.items()}
        return out

    def step(self, inputs: dict[str, np.ndarray], batch: int, hidden: bool = False) -> dict[str, np.ndarray]:
        """One decoder step; with `hidden`, the step that returns the hidden state instead of logits."""
        runner = self.runners.get(decode_signature(batch, hidden))
        if runner is None:
            raise UsageError(
                f"this model folder has decoder batch sizes {self.batches}; beam {batch} needs "
                f"{decode_signature(batch)} (export with decode.beam: {batch})"
            )
        return runner(**{tflite_input(k): v for k, v in inputs.items()})

    def session(self, memory: dict[str, np.ndarray], caches: list[str], hidden: bool) -> _Session | None:
        """A batch-1 greedy session (None where the interpreter's internals are not reachable)."""
        sig = self.runners[decode_signature(1, hidden)]
        if sig.wrapper is None:
            return None
        return _Session(sig, memory, caches, HIDDEN if hidden else LOGITS)


class OnnxBackend:
    """encoder.onnx + decoder.onnx (or their .xz) with dynamic batch, source length and cache length."""

    dynamic_cache = True

    def __init__(self, folder: Path, manifest: Manifest, num_threads: int | None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelFolderError(
                f"{folder}: needs onnxruntime (pip install onnxruntime) to run ONNX graphs"
            ) from None
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.sessions = {}
        for part in ("encoder", "decoder"):
            path = folder / manifest.graphs[part]
            data = read_graph(path)
            try:
                external = onnx_external_data(data)
            except ValueError as exc:
                raise ModelFolderError(f"{path}: not a valid ONNX model ({exc})") from None
            for location in external:  # onnxruntime would read these beside the graph: the same rules apply
                if is_packed(path):  # loaded from bytes, a graph has no folder to resolve them in
                    raise ModelFolderError(
                        f"{path}: names external weights {location!r}; expected a "
                        "self-contained graph (external weights need a plain .onnx)"
                    )
                # onnxruntime resolves a location against the graph's own directory
                name = str(PurePosixPath(manifest.graphs[part]).parent / location)
                require_listed(folder, manifest, name, f"external weights of {path.name}")
            source = data if is_packed(path) else str(path)  # onnxruntime takes a path or the bytes
            try:
                self.sessions[part] = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
                raise ModelFolderError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None
        self.outputs = {part: [o.name for o in s.get_outputs()] for part, s in self.sessions.items()}
        self.max_src_len = manifest.max_src_len

    def _run(self, part: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # ONNX is single-assignment: updated caches have their own output names (export/graph_io.py)
        return {
            from_onnx_output(name): value
            for name, value in zip(self.outputs[part], self.sessions[part].run(None, inputs))
        }

    def encode(self, src: np.ndarray) -> dict[str, np.ndarray]:
        return self._run("encoder", {SRC: src})

    hidden = False  # the ONNX decoder computes every logit

    def step(self, inputs: dict[str, np.ndarray], batch: int, hidden: bool = False) -> dict[str, np.ndarray]:
        return self._run("decoder", inputs)

    def session(self, memory: dict[str, np.ndarray], caches: list[str], hidden: bool) -> None:
        return None  # onnxruntime's caches grow with the sentence: the dict path


class Translator:
    """Greedy and beam search over the exported encoder and decoder-step graphs."""

    def __init__(
        self,
        folder: str | Path,
        num_threads: int | None = None,
        verify: bool = True,
        kernels: str = "default",
        shortlist: bool | None = None,
    ):
        """`shortlist`: decode with the folder's vocabulary shortlist (None: the folder's decode default)."""
        self.folder = Path(folder)
        self.manifest = m = read_manifest(self.folder, verify=verify)
        try:
            import sentencepiece as spm
        except ImportError:
            raise ModelFolderError("the runtime needs sentencepiece (pip install sentencepiece)") from None
        spm_path = self.folder / m.tokenizer  # read_manifest checked it is inside the folder and listed
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(spm_path))
        except (OSError, RuntimeError) as exc:
            raise ModelFolderError(f"{spm_path}: not a sentencepiece model ({str(exc).splitlines()[0]})") from None
        # before the graphs load: a folder that cannot do what was asked fails without the interpreter's noise
        self.shortlist: Shortlist | None = None
        self._rows: tuple[np.ndarray | None, np.ndarray | None] = (None, None)  # (cands, their projection rows)
        if m.decode.shortlist if shortlist is None else shortlist:
            if m.shortlist is None:
                raise ModelFolderError(f"{self.folder}: this model folder has no shortlist (export a run that has one)")
            self.shortlist = load_shortlist(self.folder / m.shortlist, m.vocab_size)  # checked by read_manifest
        if m.format == "tflite":
            self.backend: Any = TFLiteBackend(self.folder / m.graphs["tflite"], m, num_threads, kernels)
        elif kernels != "default":
            raise ModelFolderError(f"{self.folder}: kernels={kernels!r} is a TFLite option; this folder is {m.format}")
        elif m.format == "onnx":
            self.backend = OnnxBackend(self.folder, m, num_threads)
        else:
            raise ModelFolderError(f"{self.folder / 'manifest.json'}: unknown format {m.format!r}")
        self.pad, self.bos, self.eos = m.ids.pad, m.ids.bos, m.ids.eos
        self.cache = {name: tuple(shape) for name, shape in m.cache.items()}  # shapes at batch 1
        self.decode_cfg = m.decode
        self.truncated = 0  # sources cut to max_src_len so far

    # -- graphs ---------------------------------------------------------------------------------
    def source_ids(self, text: str) -> list[int]:
        """Token ids + eos, truncated to the graphs' max_src_len."""
        ids = self.sp.encode(text)
        limit = self.backend.max_src_len - 1
        if len(ids) > limit:
            self.truncated += 1
            ids = ids[:limit]
        return ids + [self.eos]

    def max_len(self, src_len: int) -> int:
        """Most output tokens (eos excluded): a * source length + b, within the cache and positions."""
        d = self.decode_cfg
        return max(
            1,
            min(
                int(d.max_len_a * src_len + d.max_len_b),
                self.manifest.max_positions - 2,
                self.manifest.target_slots - 1,
            ),
        )

    def encode(self, ids: list[int]) -> dict[str, np.ndarray]:
        return self.backend.encode(np.asarray([ids], dtype=np.int32))

    def initial_state(self, memory: dict[str, np.ndarray], batch: int, steps: int) -> dict[str, np.ndarray]:
        """Decoder inputs besides token/pos for `batch` hypotheses and `steps` positions: the memory
        repeated per hypothesis, zero caches (ONNX caches are sized to the sentence: less to attend over)."""
        state = {}
        for name, value in memory.items():  # src_keep [1, S]; cross [Hc, S, Dh] per hypothesis
            state[name] = np.tile(value, (batch,) + (1,) * (value.ndim - 1)) if batch > 1 else value
        for name, shape in self.cache.items():
            shape = at_batch(shape, batch)
            if self.backend.dynamic_cache and has_slots(name):
                shape = (shape[0], steps) + shape[2:]
            state[name] = np.zeros(shape, dtype=np.float32)
        return state

    def candidates(self, ids: list[int]) -> np.ndarray | None:
        """The target ids a sentence with source `ids` may produce (None: the whole vocabulary)."""
        return None if self.shortlist is None else self.shortlist.candidates(ids)

    def step(
        self, state: dict[str, np.ndarray], tokens: np.ndarray, pos: int, cands: np.ndarray | None = None
    ) -> np.ndarray:
        """Feed tokens [B] at position pos; updates the caches in `state`, returns logits [B, V], or
        [B, len(cands)] for candidate ids `cands`."""
        batch = tokens.shape[0]
        inputs = state | {TOKEN: tokens.astype(np.int32).reshape(batch, 1), POS: np.array([pos], dtype=np.int32)}
        hidden = cands is not None and self.backend.hidden
        out = self.backend.step(inputs, batch, hidden)
        update_caches(state, {name: out[name] for name in self.cache}, pos)
        if cands is None:
            return out[LOGITS]
        if not hidden:
            return out[LOGITS][:, cands]
        if self._rows[0] is not cands:  # the candidates' rows, once per sentence
            self._rows = (cands, self.backend.candidate_rows(cands))
        return out[HIDDEN] @ self._rows[1].T

    def log_probs(self, logits: np.ndarray, cands: np.ndarray | None = None) -> np.ndarray:
        """Log-softmax over the vocabulary, or over candidate ids `cands` (logits [B, len(cands)])."""
        lprobs = _log_softmax(logits)
        ids = np.arange(lprobs.shape[1]) if cands is None else cands
        lprobs[:, (ids == self.pad) | (ids == self.bos)] = -np.inf  # never generated (as lite/decode.py)
        return lprobs

    def decoding(
        self, memory: dict[str, np.ndarray], steps: int, cands: np.ndarray | None = None
    ) -> Callable[[int, int], np.ndarray]:
        """One sentence at batch 1: a function (token, pos) -> the next step's logits row [V] (or [len(cands)]
        over candidate ids `cands`), valid until the next call. TFLite keeps the caches in the interpreter
        (_Session); elsewhere it is initial_state + step."""
        hidden = cands is not None and self.backend.hidden
        session = self.backend.session(memory, list(self.cache), hidden)
        if session is None:
            state = self.initial_state(memory, 1, steps)
            return lambda token, pos: self.step(state, np.array([token]), pos, cands)[0]
        if not hidden:
            return session.step if cands is None else lambda token, pos: session.step(token, pos)[cands]
        rows = self.backend.candidate_rows(cands)  # dequantized once per sentence
        return lambda token, pos: rows @ session.step(token, pos)

    def pick(self, row: np.ndarray, cands: np.ndarray | None = None) -> int:
        """The greedy token of a logits row: its argmax, pad and bos excluded (as log_probs excludes them;
        the softmax does not change the argmax, so it is skipped)."""
        best = int(row.argmax())
        token = best if cands is None else int(cands[best])
        if token in (self.pad, self.bos):
            best = int(self.log_probs(row[None], cands)[0].argmax())
            token = best if cands is None else int(cands[best])
        return token

    # -- search ---------------------------------------------------------------------------------
    def greedy(self, ids: list[int]) -> list[int]:
        max_len = self.max_len(len(ids))
        cands = self.candidates(ids)
        step = self.decoding(self.encode(ids), max_len, cands)
        token, out = self.bos, []
        for pos in range(max_len):
            token = self.pick(step(token, pos), cands)
            if token == self.eos:
                break
            out.append(token)
        return out

    def greedy_from(
        self, state: dict[str, np.ndarray], token: int, pos: int, budget: int, cands: np.ndarray | None = None
    ) -> list[int]:
        """Greedy tokens (eos excluded, at most `budget`) after feeding `token` at `pos` to `state`,
        among candidate ids `cands` (None: the whole vocabulary)."""
        out: list[int] = []
        while len(out) < budget:
            best = int(self.log_probs(self.step(state, np.array([token]), pos, cands), cands)[0].argmax())
            token = best if cands is None else int(cands[best])
            if token == self.eos:
                break
            out.append(token)
            pos += 1
        return out

    def beam_search(self, ids: list[int], beam: int, lenpen: float) -> list[int]:
        """One sentence; the rules of lite/decode.py beam_search (score / (length + 1) ** lenpen)."""
        max_len = self.max_len(len(ids))
        cands = self.candidates(ids)
        state = self.initial_state(self.encode(ids), beam, max_len + 1)
        heads = {name: shape[0] for name, shape in self.cache.items()}  # rows per hypothesis (graph_io layout)
        scores = np.full(beam, -np.inf)
        scores[0] = 0.0
        hyps: list[list[int]] = [[] for _ in range(beam)]
        prev = np.full(beam, self.bos)
        finished: list[tuple[float, list[int]]] = []
        for pos in range(max_len + 1):  # max_len tokens, then eos
            lprobs = self.log_probs(self.step(state, prev, pos, cands), cands)
            vocab = lprobs.shape[1]
            eos = self.eos if cands is None else int(np.searchsorted(cands, self.eos))  # eos is a candidate
            if pos == max_len:  # force the end
                forced = np.full_like(lprobs, -np.inf)
                forced[:, eos] = np.maximum(lprobs[:, eos], -1e9)
                lprobs = forced
            cand = (scores[:, None] + lprobs).reshape(-1)
            n = min(2 * beam, cand.size)
            top = np.argpartition(-cand, n - 1)[:n]
            top = top[np.argsort(-cand[top], kind="stable")]
            rows, toks = top // vocab, top % vocab
            if cands is not None:
                toks = cands[toks]  # candidate index -> token id
            keep = []
            for j, (r, t, i) in enumerate(zip(rows, toks, top)):
                if t == self.eos:  # finished when among the top `beam` candidates
                    if j < beam and np.isfinite(cand[i]) and len(finished) < beam:
                        finished.append((float(cand[i]) / (len(hyps[r]) + 1) ** lenpen, hyps[r]))
                elif len(keep) < beam:
                    keep.append((r, t, i))
            if len(finished) >= beam:
                break
            order = np.array([r for r, _, _ in keep])
            scores = np.array([cand[i] for _, _, i in keep])
            hyps = [hyps[r] + [int(t)] for r, t, _ in keep]
            prev = np.array([t for _, t, _ in keep])
            for name, rows_per in heads.items():  # keep the caches of the surviving hypotheses
                value = state[name]
                state[name] = value.reshape(beam, rows_per, *value.shape[1:])[order].reshape(value.shape)
        return max(finished, key=lambda h: h[0])[1] if finished else []

    def translate(self, lines: Iterable[str], beam: int | None = None, lenpen: float | None = None) -> Iterator[str]:
        """One output line per input line; empty lines stay empty."""
        beam = beam or self.decode_cfg.beam
        lenpen = self.decode_cfg.lenpen if lenpen is None else lenpen
        for line in lines:
            if not line.strip():
                yield ""
                continue
            ids = self.source_ids(line)
            out = self.greedy(ids) if beam == 1 else self.beam_search(ids, beam, lenpen)
            yield self.sp.decode(out)


def read_lines(stream: TextIO | Any, name: str) -> Iterator[str]:
    """Lines of a binary stream without their newline; invalid UTF-8 is a one-line error naming the line."""
    for number, raw in enumerate(stream, 1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{name}: line {number} is not valid UTF-8 ({exc.reason})") from None


def _batches(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run(
    model: str,
    text: str | None = None,
    file: str | None = None,
    beam: int | None = None,
    lenpen: float | None = None,
    threads: int | None = None,
    out: TextIO = sys.stdout,
    shortlist: bool | None = None,
) -> int:
    """`--model DIR [TEXT | -] [--file F]`: translate and print one line per input line."""
    translator = Translator(model, num_threads=threads, shortlist=shortlist)
    if text not in (None, "-") and not file:
        sources: Iterator[str] = iter(text.split("\n"))
        name = "argument"
    else:
        name = file or "stdin"
        if file and not Path(file).is_file():
            raise UsageError(f"{file}: input file not found")
        stream = open(file, "rb") if file else sys.stdin.buffer
        sources = read_lines(stream, name)
    for batch in _batches(sources, BATCH_LINES):  # reading and writing by batch keeps a pipe flowing
        for line in translator.translate(batch, beam, lenpen):
            print(line, file=out)
        out.flush()
    if translator.truncated:
        print(
            f"warning: {translator.truncated} input line(s) longer than {translator.backend.max_src_len - 1} "
            f"tokens were truncated to fit the exported graphs",
            file=sys.stderr,
        )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beam", type=int, help="beam size (default: the model folder's decode.beam; 1 = greedy)")
    parser.add_argument("--lenpen", type=float, help="length penalty exponent (default: the folder's decode.lenpen)")
    parser.add_argument("--threads", type=int, help="interpreter threads (default: the interpreter's choice)")
    parser.add_argument("--file", help="read lines from this file")
    parser.add_argument(
        "--shortlist",
        action=argparse.BooleanOptionalAction,
        help="only the vocabulary shortlist's candidates per sentence (default: the folder's decode.shortlist)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.runtime", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model folder written by `lite export`")
    parser.add_argument("text", nargs="?", help="a sentence, or '-' to read lines from stdin (default)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args.model, args.text, args.file, args.beam, args.lenpen, args.threads, shortlist=args.shortlist)
    except LiteError as exc:
        print(f"translate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
