"""`lite export RUN`: RUN/model.pt -> one self-describing model folder per format x precision.

    RUN/export/tflite-int8/{model.tflite, spm.model, manifest.json}
    RUN/export/onnx-fp32/{encoder.onnx, decoder.onnx, spm.model, manifest.json}
    (export.pack: xz stores the graphs as model.tflite.xz / encoder.onnx.xz / decoder.onnx.xz)

Each folder is built in a temp folder beside it: convert, check that only builtin ops appear, count
the graph MACs against the analytic count, pack the graphs (export.pack: xz), run the parity gate
through the shipped runtime on the folder as it ships, and only then rename it into place and add its
row to RUN/artifacts.json. A failed gate exits non-zero and leaves nothing that looks like a valid
artifact. A folder already made from the same model.pt and export settings is reused (--force rebuilds).

A precision whose thresholds set max_bleu_drop_vs_fp32 is also compared with the fp32 artifact of the
same format: fp32 is exported first when it is requested too; otherwise an fp32 folder is built (and
gated) for the comparison and removed.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from export.calibration import calibration_inputs
from export.graph_io import BATCH, CACHE_LEN, LOGITS, SRC_LEN, decode_signature, encode_signature
from export.graphs import graph_io, own_key_macs
from export.manifest import DecodeDefaults, GraphMacs, Manifest, TokenIds, read_manifest, write_manifest
from export.packing import pack_file
from export.parity import failures, parity
from export.runtime import Translator
from lite.artifacts import ArtifactRow, put_row
from lite.checkpoint import load_model
from lite.config import RunConfig, to_dict
from lite.data.corpus import load_pairs
from lite.errors import GateError, GraphMacMismatchError, RunFolderError, UnsupportedModelError
from lite.files import sha256_file
from lite.metrics.macs import count_macs
from lite.models.seq2seq import EncoderDecoder
from lite.provenance import provenance
from lite.run import RunPaths
from lite.shortlist import load_shortlist
from lite.sparse.patterns import is_learned
from lite.tokenizer import Tokenizer


def _calibration(model: EncoderDecoder, cfg: RunConfig, tokenizer: Tokenizer) -> tuple[list, list]:
    """Real training pairs (a fixed random sample) as graph inputs at the longest source length."""
    pairs, _ = load_pairs(cfg.data, "train")
    pairs = random.Random(0).sample(pairs, min(cfg.export.calibration_sentences, len(pairs)))
    ex, eos = cfg.export, model.cfg.eos_id
    ids = [
        (s[: ex.max_src_len - 1] + [eos], t[: ex.max_target_len - 2] + [eos])
        for s, t in zip(tokenizer.encode_batch([p[0] for p in pairs]), tokenizer.encode_batch([p[1] for p in pairs]))
    ]
    return calibration_inputs(model, ids, ex.max_src_len, ex.max_target_len)


def _graph_macs(
    folder: Path, fmt: str, model: EncoderDecoder, cfg: RunConfig, hidden: bool
) -> tuple[GraphMacs, dict[str, int] | None]:
    """MACs read from the exported files, next to the analytic count at the same shapes.

    ONNX (dynamic axes): encoder + 30 decoder steps at 30 source tokens and 30 cache slots, i.e. the
    paper convention. TFLite (static): encode_<max_src_len> + max_target_len decoder steps over all
    cache slots, compared with the analytic count at those lengths. With `hidden`, decode_1_hidden must
    count as decode_1 without its projection; returns where the projection's weight is with it (the
    runtime projects the hidden state onto a shortlist's rows of it, K x embed_dim MACs per step)."""
    projection = None
    if fmt == "onnx":
        from export.macs_onnx import onnx_macs

        s = t = 30
        enc = onnx_macs(folder / "encoder.onnx", dims={SRC_LEN: s}, logits=[])
        dec = onnx_macs(folder / "decoder.onnx", dims={BATCH: 1, SRC_LEN: s, CACHE_LEN: t}, logits=[LOGITS])
    else:
        from export.macs_tflite import tflite_macs

        s, t = cfg.export.max_src_len, cfg.export.max_target_len
        enc = tflite_macs(folder / "model.tflite", encode_signature(s))
        dec = tflite_macs(folder / "model.tflite", decode_signature(1))
        if hidden:
            short = tflite_macs(folder / "model.tflite", decode_signature(1, hidden=True))
            if short["macs_total"] != dec["macs_excluding_output_projection"] or short["output_projection"]:
                raise GraphMacMismatchError(
                    f"{folder}: {decode_signature(1, hidden=True)} counts {short['macs_total']:,} MACs, expected "
                    f"{dec['macs_excluding_output_projection']:,} (the full step's without the projection)"
                )
            projection = {"subgraph": dec["subgraph"], "tensor": dec["output_projection"]["weight"]}
    graph = enc["macs_excluding_output_projection"] + t * dec["macs_excluding_output_projection"]
    analytic = count_macs(model.cfg, s, t)["macs"] + own_key_macs(model, t)
    if graph != analytic:
        raise GraphMacMismatchError(
            f"{folder}: graph MACs {graph:,} differ from the analytic {analytic:,} "
            f"({s} source tokens, {t} steps): the exported graph computes something else"
        )
    return GraphMacs(
        graph=graph,
        analytic=analytic,
        src_len=s,
        steps=t,
        output_projection_per_step=dec["macs_total"] - dec["macs_excluding_output_projection"],
    ), projection


def _settings(cfg: RunConfig, fmt: str, precision: str, model_sha: str, shortlist_sha: str | None = None) -> dict:
    """What an export depends on: a folder made with the same settings is reused."""
    ex = to_dict(cfg.export)
    ex.pop("formats"), ex.pop("precisions")
    if ex["pack"] == "none":  # unpacked folders carry no "pack" setting, so their settings match
        ex.pop("pack")
    if ex["hidden_steps"]:  # likewise for the default
        ex.pop("hidden_steps")
    for limits in ex["parity"].values():  # likewise for gates without an fp32 comparison
        if limits.get("max_bleu_drop_vs_fp32") is None:
            limits.pop("max_bleu_drop_vs_fp32", None)
    decode = to_dict(cfg.decode)
    if not decode["shortlist"]:  # folders made before the shortlist existed carry neither
        decode.pop("shortlist")
    shortlist = {"shortlist_sha256": shortlist_sha} if shortlist_sha else {}
    return {
        "format": fmt,
        "precision": precision,
        "source_sha256": model_sha,
        "export": ex,
        "decode": decode,
        "data": to_dict(cfg.data),
        **shortlist,
    }


def _shortlist_sha(paths: RunPaths) -> str | None:
    """sha256 of the run's vocabulary shortlist (copied into every folder), None without one."""
    return sha256_file(paths.shortlist) if paths.shortlist.is_file() else None


def _hidden_steps(cfg: RunConfig, fmt: str, precision: str, shortlist: str | None) -> bool:
    """Whether the folder gets decode_<B>_hidden steps: TFLite with a shortlist, export.hidden_steps on,
    and not fp16 (its weights are dequantized inside the graph: no constant for the runtime to read)."""
    return fmt == "tflite" and shortlist is not None and cfg.export.hidden_steps and precision != "fp16"


def _build(
    model: EncoderDecoder, cfg: RunConfig, paths: RunPaths, fmt: str, precision: str, folder: Path, calibration
) -> Manifest:
    """Convert into the empty `folder`, check its ops and MACs, pack, write the manifest; returns the
    manifest (no parity figures yet)."""
    ex = cfg.export
    started = time.monotonic()
    shutil.copyfile(paths.tokenizer, folder / "spm.model")
    shortlist = None
    if paths.shortlist.is_file():
        load_shortlist(paths.shortlist, model.cfg.vocab_size)  # a broken or foreign one stops here
        shortlist = paths.shortlist.name
        shutil.copyfile(paths.shortlist, folder / shortlist)
    calib = calibration() if precision == "int8" else None
    if fmt == "tflite":
        from export.to_tflite import check_builtin_ops, convert_tflite

        batches = sorted({1, cfg.decode.beam})
        src_lens = sorted(set(ex.src_buckets) | {ex.max_src_len})
        info = convert_tflite(
            model,
            folder / "model.tflite",
            precision=precision,
            src_lens=src_lens,
            target_slots=ex.max_target_len,
            batches=batches,
            calibration=calib,
            hidden=_hidden_steps(cfg, fmt, precision, shortlist),
        )
        ops = check_builtin_ops(folder / "model.tflite")
        graphs = {"tflite": "model.tflite"}
        shape_info = {"src_lens": src_lens, "batches": batches}
    else:
        from export.to_onnx import check_onnx_ops, convert_onnx

        info = convert_onnx(
            model,
            folder,
            precision=precision,
            max_src_len=ex.max_src_len,
            target_slots=ex.max_target_len,
            calibration=calib,
        )
        ops = {}
        for part in ("encoder", "decoder"):
            for op, n in check_onnx_ops(folder / f"{part}.onnx").items():
                ops[op] = ops.get(op, 0) + n
        graphs = {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
        shape_info = {}
    convert_seconds = time.monotonic() - started
    graph_macs, projection = _graph_macs(folder, fmt, model, cfg, _hidden_steps(cfg, fmt, precision, shortlist))
    if projection:
        shape_info["projection"] = projection
    packed: dict = {}
    if ex.pack == "xz":  # before the gate: the gate (and later BLEU) runs on what ships
        packing = time.monotonic()
        packed = {"pack": "xz", "graph_bytes_unpacked": {k: (folder / g).stat().st_size for k, g in graphs.items()}}
        graphs = {k: pack_file(folder / g).name for k, g in graphs.items()}
        packed["pack_seconds"] = round(time.monotonic() - packing, 1)
    mcfg = model.cfg
    cache = {k: list(v) for k, v in graph_io(model).caches(1, ex.max_target_len).items()}
    manifest = Manifest(
        format=fmt,
        precision=precision,
        graphs=graphs,
        tokenizer="spm.model",
        shortlist=shortlist,
        model_config=to_dict(mcfg),
        src_lang=cfg.data.src_lang,
        tgt_lang=cfg.data.tgt_lang,
        ids=TokenIds(pad=mcfg.pad_id, bos=mcfg.bos_id, eos=mcfg.eos_id),
        vocab_size=mcfg.vocab_size,
        max_src_len=ex.max_src_len,
        target_slots=ex.max_target_len,
        max_positions=mcfg.max_positions,
        **shape_info,
        cache=cache,
        decode=DecodeDefaults(
            beam=cfg.decode.beam,
            lenpen=cfg.decode.lenpen,
            max_len_a=cfg.decode.max_len_a,
            max_len_b=cfg.decode.max_len_b,
            shortlist=cfg.decode.shortlist and shortlist is not None,
        ),
        macs=count_macs(mcfg)["macs"],
        graph_macs=graph_macs,
        ops=ops,
        converter=info,
        convert_seconds=round(convert_seconds, 1),
        **packed,
        settings=_settings(cfg, fmt, precision, sha256_file(paths.model), _shortlist_sha(paths)),
    )
    return write_manifest(folder, manifest)


def _thresholds_name(precision: str) -> str:
    return precision.replace("-", "_")


def _gate(
    model: EncoderDecoder,
    cfg: RunConfig,
    folder: Path,
    artifact: Path,
    fmt: str,
    precision: str,
    pairs: list,
    fp32_reference: Callable[[str, list], dict] | None,
    progress: bool,
) -> dict:
    """The parity figures (with the thresholds) of the artifact built in `folder`, to be published as
    `artifact`; GateError naming the artifact and every missed criterion. A TFLite folder with a
    shortlist (and so hidden decoder steps) passes the gate twice: as every folder, and decoding with
    its shortlist (figures under "shortlist", the same thresholds but the fp32 comparison)."""
    figures = parity(model, Translator(folder), pairs, progress=progress)
    limits = getattr(cfg.export.parity, _thresholds_name(precision))
    if read_manifest(folder, verify=False).projection:
        figures["shortlist"] = parity(model, Translator(folder, shortlist=True), pairs, progress=progress)
    if limits.max_bleu_drop_vs_fp32 is not None and fp32_reference is not None:
        ref = fp32_reference(fmt, pairs)
        figures |= {
            "bleu_fp32": ref["bleu"],
            "bleu_drop_vs_fp32": round(ref["bleu"] - figures["bleu_artifact"], 2),
            "fp32_reference": ref,
        }
    figures["thresholds"] = to_dict(limits)
    missed = failures(figures, limits)
    if "shortlist" in figures:
        own = dataclasses.replace(limits, max_bleu_drop_vs_fp32=None)
        missed += [f"with the shortlist: {m}" for m in failures(figures["shortlist"], own)]
    if missed:
        raise GateError(
            f"{artifact}: parity gate failed on {figures['sentences']} test sentences: "
            + "; ".join(missed)
            + f" (thresholds: export.parity.{_thresholds_name(precision)})",
            artifact=artifact,
            precision=precision,
            figures=figures,
            missed=missed,
        )
    return figures


def export_one(
    model: EncoderDecoder,
    cfg: RunConfig,
    paths: RunPaths,
    fmt: str,
    precision: str,
    calibration,
    progress: bool,
    log,
    fp32_reference: Callable[[str, list], dict] | None = None,
) -> Manifest:
    """Build, gate and publish RUN/export/<fmt>-<precision>; returns its manifest. `fp32_reference(fmt,
    pairs)` gives the fp32 artifact's greedy BLEU on the gate's sentences (thresholds that compare with it)."""
    ex = cfg.export
    final = paths.root / "export" / f"{fmt}-{precision}"
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    try:
        built = _build(model, cfg, paths, fmt, precision, tmp, calibration)
        test_pairs, _ = load_pairs(cfg.data, "test")
        figures = _gate(
            model, cfg, tmp, final, fmt, precision, test_pairs[: ex.parity_sentences], fp32_reference, progress
        )
        manifest = write_manifest(tmp, dataclasses.replace(built, parity=figures))
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    vs_fp32 = (
        f", {figures['bleu_drop_vs_fp32']:.2f} below {figures['fp32_reference']['artifact']}"
        if "bleu_drop_vs_fp32" in figures
        else ""
    )
    log(
        f"{final}: {manifest.graph_bytes():,} bytes{_packed_note(manifest)}, "
        f"top-1 {figures['top1']:.4f}, max logit diff {figures['max_logit_diff']:.2g}, "
        f"BLEU {figures['bleu_artifact']:.2f} "
        f"vs PyTorch {figures['bleu_pytorch']:.2f}{vs_fp32} on {figures['sentences']} sentences "
        f"({time.monotonic() - started:.0f} s)"
    )
    return manifest


def _packed_note(manifest: Manifest) -> str:
    """For messages about a packed folder: which packing and the graphs' unpacked bytes (empty if plain)."""
    if manifest.graph_bytes_unpacked is None:
        return ""
    return f" ({manifest.pack}-packed; {sum(manifest.graph_bytes_unpacked.values()):,} unpacked)"


def _artifact_row(paths: RunPaths, folder: Path, manifest: Manifest, cfg: RunConfig) -> ArtifactRow:
    p = manifest.parity
    size = manifest.graph_bytes()
    packed = f"graphs {size:,} bytes{_packed_note(manifest)}; " if manifest.pack is not None else ""
    macs = manifest.graph_macs
    return ArtifactRow(
        name=folder.name,
        path=str(folder.relative_to(paths.root)),
        format=manifest.format,
        precision=manifest.precision,
        size_bytes=size,
        macs=manifest.macs,
        macs_method=f"analytic; {manifest.format} graph count agrees ({macs.graph:,} at {macs.src_len}+{macs.steps})",
        source_model="model.pt",
        notes=packed + f"parity on {p['sentences']} test sentences: top-1 {p['top1']:.4f}, max logit diff "
        f"{p['max_logit_diff']:.2g}, greedy BLEU {p['bleu_artifact']:.2f} vs PyTorch {p['bleu_pytorch']:.2f}"
        + (f" and {p['fp32_reference']['artifact']} {p['bleu_fp32']:.2f}" if "bleu_fp32" in p else ""),
        provenance=provenance(cfg, seed=cfg.train.seed, threads=cfg.train.threads),
    )


def _check_sparse_support(model_cfg, formats: list[str], where: Path) -> None:
    """Refuse, before any work, the sparse models the exported graphs would not reproduce."""
    rows = (model_cfg.encoder_patterns or []) + (model_cfg.decoder_patterns or [])
    if any(is_learned(p) for row in rows for p in row):
        raise UnsupportedModelError(
            f"{where}: the model still has learned attention patterns (dam/degree); training "
            "binarises them into model.pt - export that, or call lite.sparse.learned.binarise"
        )
    if model_cfg.encoder_patterns and "onnx" in formats:
        # the block layout is compiled per source length; the ONNX encoder has a dynamic one
        raise UnsupportedModelError(
            f"{where}: model.encoder_patterns export to TFLite (fixed source lengths) only; "
            "set export.formats: [tflite]"
        )


def _current_manifest(
    folder: Path, cfg: RunConfig, fmt: str, precision: str, model_sha: str, shortlist_sha: str | None
) -> Manifest | None:
    """The manifest of `folder` if it was made from this model.pt (and shortlist) with these export
    settings, else None."""
    if not folder.is_dir():
        return None
    try:
        manifest = read_manifest(folder)
    except ValueError:
        return None
    return manifest if manifest.settings == _settings(cfg, fmt, precision, model_sha, shortlist_sha) else None


def _fp32_reference(
    model: EncoderDecoder, cfg: RunConfig, paths: RunPaths, fmt: str, pairs: list, model_sha: str, progress: bool, log
) -> dict:
    """The fp32 artifact of format `fmt` decoded on the gate's `pairs`: {artifact, bleu, sentences, source}.

    The published RUN/export/<fmt>-fp32 when it is current (same model.pt and settings); otherwise an
    fp32 folder is built beside it for this comparison only, held to the fp32 gate itself (a broken
    reference would make any drop look small), and removed afterwards."""
    name = f"{fmt}-fp32"
    final = paths.root / "export" / name
    manifest = _current_manifest(final, cfg, fmt, "fp32", model_sha, _shortlist_sha(paths))
    if manifest and manifest.parity and manifest.parity["sentences"] == len(pairs):  # same settings: same sentences
        return {
            "artifact": name,
            "bleu": manifest.parity["bleu_artifact"],
            "sentences": len(pairs),
            "source": "published",
        }
    folder = final.with_name(f".{name}.reference")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.monotonic()
    try:
        _build(model, cfg, paths, fmt, "fp32", folder, calibration=None)
        figures = _gate(model, cfg, folder, folder, fmt, "fp32", pairs, None, progress)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    log(
        f"{final} (reference for the gates, not published): BLEU {figures['bleu_artifact']:.2f} on "
        f"{len(pairs)} sentences ({time.monotonic() - started:.0f} s)"
    )
    return {
        "artifact": name,
        "bleu": figures["bleu_artifact"],
        "sentences": len(pairs),
        "source": "built for the gate, not published",
    }


def export_run(
    cfg: RunConfig,
    paths: RunPaths,
    formats: list[str] | None = None,
    precisions: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
    log=print,
) -> list[Manifest]:
    """Export every format x precision (default: the config's export section); returns the manifests.
    Stops at the first failure with ExportError (GateError for a missed parity gate), keeping the
    artifacts already published."""
    if not paths.model.is_file():
        raise RunFolderError(f"{paths.model}: no trained model (run `lite train {paths.root}` first)")
    formats = formats or cfg.export.formats
    precisions = precisions or cfg.export.precisions
    model = load_model(paths.model)
    _check_sparse_support(model.cfg, formats, paths.root / "config.yaml")
    model_sha = sha256_file(paths.model)
    tokenizer = Tokenizer(paths.tokenizer)
    torch.set_num_threads(cfg.train.threads)
    calibration_cache: list = []

    def calibration():
        if not calibration_cache:
            calibration_cache.append(_calibration(model, cfg, tokenizer))
        return calibration_cache[0]

    references: dict[str, dict] = {}

    def fp32_reference(fmt: str, pairs: list) -> dict:
        if fmt not in references:
            references[fmt] = _fp32_reference(model, cfg, paths, fmt, pairs, model_sha, progress, log)
        return references[fmt]

    shortlist_sha = _shortlist_sha(paths)
    # fp32 first: the gates that compare with it then find it published instead of building one
    precisions = sorted(precisions, key=lambda p: p != "fp32")
    manifests = []
    for fmt in formats:
        for precision in precisions:
            folder = paths.root / "export" / f"{fmt}-{precision}"
            manifest = None if force else _current_manifest(folder, cfg, fmt, precision, model_sha, shortlist_sha)
            if manifest:
                log(f"{folder}: up to date (same model.pt and export settings; --force rebuilds)")
            reused = manifest is not None
            if not reused:
                manifest = export_one(model, cfg, paths, fmt, precision, calibration, progress, log, fp32_reference)
            manifests.append(manifest)
            # a reused folder keeps the measurements of this very folder (BLEU, latency, instructions)
            keep = ("bleu", "latency_ms", "instructions", "targets", "provenance") if reused else ()
            put_row(paths.root, _artifact_row(paths, folder, manifest, cfg), keep)
    return manifests
