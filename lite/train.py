"""Training loop: label-smoothed cross entropy, Adam, warm-up + inverse-sqrt or cosine schedule,
token-count batches, gradient clipping, atomic checkpoints with exact resume, early stopping,
checkpoint averaging.

Exact resume: the batch order of an epoch is rebuilt from (seed, epoch) and every batch's dropout
masks are seeded from (seed, epoch, position of the batch); a checkpoint stores the position inside
the epoch and the optimizer state, so a resumed run continues with the very same batches and dropout
masks as an uninterrupted one (at a fixed thread count). The position advances only once a step is
complete, and Ctrl-C (SIGINT) or SIGTERM only asks the loop to stop: it finishes the step (and its
validation), saves last.pt at that step boundary, then raises KeyboardInterrupt. A second Ctrl-C
stops at once without saving; after that, or after SIGKILL, --resume restarts from the last
checkpoint and replays the lost steps identically (metrics.jsonl drops the replayed lines first).

Budgets are in updates (`train.max_steps`), so the same config, seed and thread count give the same
model.pt on any machine speed. `train.max_minutes` is only a safety cap: a run it stopped is marked
`"reproducible": false` in train.json and in the report.

Several processes (lite/distributed.py: torchrun, DistributedDataParallel): one optimizer step is
still `update_freq` batches, split across the processes, with the same per-batch seeds, so N
processes train like one process accumulating update_freq batches, and --resume works with any N.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from lite import checkpoint, distributed
from lite.batching import Batch, collate, encode_pairs, make_batches
from lite.config import RunConfig, TrainConfig, to_dict
from lite.data.corpus import load_pairs
from lite.errors import RunFolderError
from lite.files import write_json_atomic, write_text_atomic
from lite.models.seq2seq import EncoderDecoder, count_parameters
from lite.provenance import provenance
from lite.run import RunPaths
from lite.sparse.learned import binarise, kept_share, sparsity_loss
from lite.sparse.sar import sar_term
from lite.tokenizer import Tokenizer


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """lr at optimizer step `step` (1-based): linear warm-up, then inverse-sqrt or cosine decay."""
    if step <= cfg.warmup_steps:
        return cfg.warmup_init_lr + (cfg.lr - cfg.warmup_init_lr) * step / max(cfg.warmup_steps, 1)
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * math.sqrt(max(cfg.warmup_steps, 1) / step)
    progress = min(1.0, (step - cfg.warmup_steps) / max(cfg.max_steps - cfg.warmup_steps, 1))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def batch_loss(
    model: EncoderDecoder | DDP, batch: Batch, smoothing: float, sar_weight: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(training loss summed over target tokens, plain NLL summed) for one batch. The training loss is
    label-smoothed cross entropy, plus the learned heads' sparsity terms (per token) and, with
    sar_weight, ERNIE-Sparse's SAR term (lite/sparse). `model` may be DDP-wrapped: the main forward
    goes through the wrapper (it triggers the gradient all-reduce), the rest uses the module."""
    net = model.module if isinstance(model, DDP) else model
    logits = model(batch.src, batch.prev).float()
    flat, target = logits.view(-1, logits.shape[-1]), batch.target.view(-1)
    pad = net.cfg.pad_id
    loss = F.cross_entropy(flat, target, ignore_index=pad, label_smoothing=smoothing, reduction="sum")
    nll = F.cross_entropy(flat, target, ignore_index=pad, reduction="sum")
    loss = loss + batch.ntokens * sparsity_loss(net)
    if sar_weight:
        loss = loss + sar_weight * sar_term(net, logits, lambda: net(batch.src, batch.prev), batch.target.ne(pad))
    return loss, nll


@torch.no_grad()
def validation_loss(model: EncoderDecoder, examples, max_tokens: int) -> float:
    """Per-token NLL (nats) on held-out examples (on the model's device)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for indices in make_batches(examples, max_tokens):
        batch = collate(examples, indices, model.cfg.pad_id, model.cfg.bos_id).to(device)
        total += float(batch_loss(model, batch, 0.0)[1])
        tokens += batch.ntokens
    model.train(was_training)
    return total / max(tokens, 1)


class _Log:
    """Append-only JSON-lines metrics log (path None: a process that does not log)."""

    def __init__(self, path: Path | None):
        self.file = path.open("a", encoding="utf-8") if path else None

    def write(self, **record) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


def _batch_seed(seed: int, epoch: int, position: int) -> int:
    """The RNG seed of one batch (dropout, Gumbel noise): the same whichever process runs it."""
    return ((seed * 1_000_003 + epoch) * 1_000_003 + position) % 2**63  # torch takes < 2^64


STOP_CODES = [None, "early_stopping", "max_minutes", "max_steps", "max_epochs", "interrupted"]

# Called at the named points of a step with the step number: "micro_batch" (after each batch's
# backward, so between the batches of an accumulated step), "optimizer_step" (weights updated, the
# step not yet recorded), "validation" (loss computed, best.pt not yet written), "checkpoint" (the
# step file written, last.pt not yet). Tests send themselves signals there to prove resume is exact.
EventHook = Callable[[str, int], None]


class _StopRequest:
    """SIGINT/SIGTERM while training: the first asks the loop to stop at the next step boundary (so
    the saved state is consistent), the second interrupts at once. Installed only in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator["_StopRequest"]:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals keep their default behaviour
            pass
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


def train(
    cfg: RunConfig,
    paths: RunPaths,
    resume: bool = False,
    progress: bool = True,
    on_event: EventHook | None = None,
    device: str = "cpu",
) -> dict:
    """Train the model of `cfg` in run folder `paths`; returns the training summary (on every rank
    of a torchrun job; only rank 0's is written). `on_event` is the test hook of EventHook.
    """
    tc = cfg.train
    torch.set_num_threads(tc.threads)
    world = distributed.init(device, tc.dist_timeout_s)
    try:
        if tc.update_freq % world.size:
            raise ValueError(
                f"train.update_freq {tc.update_freq} is not a multiple of the {world.size} processes: "
                f"the effective batch of update_freq x max_tokens must split evenly "
                f"(set train.update_freq to {world.size * max(1, round(tc.update_freq / world.size))})"
            )
        with _StopRequest().installed() as stop:
            return _train(cfg, paths, world, resume, progress and world.main, on_event or (lambda *_: None), stop)
    except RuntimeError as exc:
        if not world.distributed or isinstance(exc, distributed.DistributedError):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise distributed.DistributedError(
            f"rank {world.rank}: a collective with the other {world.size - 1} process(es) failed ({first[:200]}); "
            f"the last checkpoint is kept: rerun with --resume (any number of processes)"
        ) from None
    finally:
        distributed.finish(world)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the log lines of steps after `step` (they are replayed after a resume from that step)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if record.get("step", 0) <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    write_text_atomic("".join(kept), path)


def _still_stopped(state: dict, tc: TrainConfig) -> str | None:
    """The stop reason a resumed checkpoint recorded, unless the config now allows more (a raised
    max_steps or max_minutes continues the run)."""
    reason = state.get("stop_reason")
    if reason == "max_steps" and state["step"] < tc.max_steps:
        return None
    if reason == "max_minutes" and (tc.max_minutes is None or state["elapsed"] < tc.max_minutes * 60):
        return None
    return reason


def _train(
    cfg: RunConfig,
    paths: RunPaths,
    world: distributed.World,
    resume: bool,
    progress: bool,
    on_event: EventHook,
    stop: _StopRequest,
) -> dict:
    tc = cfg.train
    tokenizer = Tokenizer(paths.tokenizer)
    mcfg = replace(
        cfg.model,
        vocab_size=tokenizer.vocab_size,
        pad_id=tokenizer.pad_id,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
    )
    train_pairs, train_info = load_pairs(cfg.data, "train")
    valid_pairs, valid_info = load_pairs(cfg.data, "valid")
    train_ex, train_info["dropped_too_many_tokens"] = encode_pairs(train_pairs, tokenizer, mcfg.max_positions)
    valid_ex, valid_info["dropped_too_many_tokens"] = encode_pairs(valid_pairs, tokenizer, mcfg.max_positions)
    if not train_ex:
        raise ValueError(f"data.corpus {cfg.data.corpus!r}: no training pairs left after filtering")

    torch.manual_seed(tc.seed)
    model = EncoderDecoder(mcfg).to(world.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tc.lr, betas=tuple(tc.betas), eps=1e-8, weight_decay=tc.weight_decay)
    state = {
        "step": 0,
        "epoch": 0,
        "batch_in_epoch": 0,
        "elapsed": 0.0,
        "best_valid": math.inf,
        "bad_validations": 0,
        "target_tokens": 0,
        "step_checkpoints": [],
        "stop_reason": None,
    }
    if resume and paths.last.is_file():
        ckpt = checkpoint.load(paths.last)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])
        if world.main:
            _truncate_metrics(paths.metrics, state["step"])
            for stale in paths.checkpoints.glob(".*.tmp-*"):  # a write killed half-way
                stale.unlink()
    elif paths.last.is_file():
        raise RunFolderError(f"{paths.last}: a checkpoint exists; pass --resume to continue or use a new run folder")
    # DDP broadcasts rank 0's weights at wrap time and all-reduces gradients in backward
    net = (
        DDP(model, device_ids=[world.device.index] if world.device.type == "cuda" else None)
        if world.distributed
        else model
    )
    if world.main:
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
    log = _Log(paths.metrics if world.main else None)
    if state["step"] == 0:
        log.write(
            event="start",
            params=count_parameters(model),
            params_no_embed=count_parameters(model, False),
            train=train_info,
            valid=valid_info,
            config=to_dict(cfg),
        )

    def save(step_file: bool) -> None:
        if not world.main:  # every replica holds the same weights: one writer
            return
        record = {**checkpoint.model_record(model), "optimizer": optimizer.state_dict(), "state": dict(state)}
        if step_file:
            name = paths.checkpoints / f"step_{state['step']:06d}.pt"
            checkpoint.save_atomic(record, name)
            state["step_checkpoints"] = (state["step_checkpoints"] + [name.name])[
                -max(tc.keep_checkpoints, tc.average_last) :
            ]
            for old in paths.checkpoints.glob("step_*.pt"):
                if old.name not in state["step_checkpoints"]:
                    old.unlink()
            record["state"] = dict(state)
            on_event("checkpoint", state["step"])
        checkpoint.save_atomic(record, paths.last)

    net.train()
    started = time.monotonic() - state["elapsed"]
    # with a wall-clock limit the step total is not the end: show steps and time left instead of a false ETA
    bar = tqdm(
        total=None if tc.max_minutes else tc.max_steps,
        initial=state["step"],
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
    )
    window_tokens, window_start, window_loss = 0, time.monotonic(), []
    stop_reason = _still_stopped(state, tc)  # a run resumed after its last step trains no more
    batches: list[list[int]] = []
    try:
        while stop_reason is None:
            if state["epoch"] >= tc.max_epochs:
                stop_reason = "max_epochs"
                break
            batches = make_batches(train_ex, tc.max_tokens, seed=tc.seed, epoch=state["epoch"])
            while state["batch_in_epoch"] < len(batches):
                start = state["batch_in_epoch"]
                group = [(batches[i], i) for i in range(start, min(start + tc.update_freq, len(batches)))]
                step = state["step"] + 1
                lr = learning_rate(step, tc)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                # every rank knows the step's token count (target lengths), so each normalises alike;
                # DDP averages gradients over ranks, hence the factor world.size
                ntokens = sum(len(train_ex[i][1]) for idx, _ in group for i in idx)
                mine = distributed.shard(group, world)
                step_loss = 0.0
                for k, ((idx, position), weight) in enumerate(mine):
                    torch.manual_seed(_batch_seed(tc.seed, state["epoch"], position))
                    batch = collate(train_ex, idx, mcfg.pad_id, mcfg.bos_id).to(world.device)
                    sync = k == len(mine) - 1 or not world.distributed  # all-reduce once, after the last
                    with net.no_sync() if not sync else contextlib.nullcontext():
                        loss, _ = batch_loss(net, batch, tc.label_smoothing, tc.sar_weight)
                        (loss * (weight * world.size / ntokens)).backward()
                    step_loss += float(loss.detach()) * weight
                    on_event("micro_batch", step)
                if tc.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, tc.clip_norm)
                optimizer.step()
                on_event("optimizer_step", step)
                # the step is recorded only now: an interruption before this line replays the whole step
                state["batch_in_epoch"] += len(group)
                state["step"] = step
                state["target_tokens"] += ntokens
                state["elapsed"] = time.monotonic() - started
                window_tokens += ntokens
                window_loss.append(step_loss / ntokens)
                if step % 20 == 0 or step == 1:
                    if world.distributed:  # the window's loss over every rank's batches, not rank 0's share
                        total = torch.tensor(window_loss, dtype=torch.float64, device=world.device)
                        torch.distributed.all_reduce(total)
                        window_loss = total.tolist()
                    rate = window_tokens / max(time.monotonic() - window_start, 1e-9)
                    avg = sum(window_loss) / len(window_loss)
                    extra = {}
                    if tc.max_minutes is not None:  # the step total says little when the clock decides
                        extra["time_left"] = f"{max(tc.max_minutes * 60 - state['elapsed'], 0) / 60:.1f}min"
                    bar.set_postfix(
                        loss=f"{avg:.3f}", tok_s=f"{rate:.0f}", lr=f"{lr:.2e}", epoch=state["epoch"], **extra
                    )
                    log.write(
                        event="train",
                        step=step,
                        epoch=state["epoch"],
                        loss=avg,
                        lr=lr,
                        tokens_per_s=rate,
                        elapsed=state["elapsed"],
                    )
                    window_tokens, window_start, window_loss = 0, time.monotonic(), []
                bar.update(1)
                if world.main and valid_ex and step % tc.validate_every == 0:
                    v = validation_loss(model, valid_ex, tc.max_tokens)
                    on_event("validation", step)
                    log.write(event="valid", step=step, loss=v, ppl=math.exp(min(v, 50)), elapsed=state["elapsed"])
                    bar.write(f"step {step}: valid loss {v:.3f}, perplexity {math.exp(min(v, 50)):.2f}")
                    if v < state["best_valid"]:
                        state["best_valid"], state["bad_validations"] = v, 0
                        checkpoint.save_atomic(
                            checkpoint.model_record(model) | {"step": step, "valid_loss": v}, paths.best
                        )
                    else:
                        state["bad_validations"] += 1
                        if tc.patience and state["bad_validations"] >= tc.patience:
                            stop_reason = "early_stopping"
                if step >= tc.max_steps:
                    stop_reason = stop_reason or "max_steps"
                if tc.max_minutes is not None and state["elapsed"] >= tc.max_minutes * 60:
                    stop_reason = stop_reason or "max_minutes"
                if stop.requested and stop_reason is None:
                    stop_reason = "interrupted"
                # rank 0 decides (validation, its clock, its Ctrl-C): every rank stops at the same step
                stop_reason = STOP_CODES[distributed.broadcast_int(STOP_CODES.index(stop_reason), world)]
                finished = stop_reason not in (None, "interrupted")
                if step % tc.checkpoint_every == 0 or finished:
                    state["stop_reason"] = stop_reason if finished else None  # a resume after the end trains no more
                    save(step_file=True)
                elif stop_reason == "interrupted":
                    save(step_file=False)
                if stop_reason == "interrupted":  # the state saved is a step boundary: resume is exact
                    raise KeyboardInterrupt
                if finished:
                    break
            else:
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
    finally:  # on KeyboardInterrupt the last checkpoint (or the state saved above) is what resumes
        bar.close()
        log.close()
    if not world.main:
        return {"rank": world.rank, "steps": state["step"], "stop_reason": stop_reason}

    model = model.cpu()
    chosen, final_valid, final_state = choose_final(paths, model, tc, state, valid_ex)
    model.load_state_dict(final_state)
    model = binarise(model.eval())  # learned attention patterns -> the fixed patterns they stand for
    checkpoint.save_atomic(checkpoint.model_record(model), paths.model)
    summary = {
        "stop_reason": stop_reason,
        "steps": state["step"],
        "epochs": state["epoch"]
        + state["batch_in_epoch"]
        / max(len(batches) or len(make_batches(train_ex, tc.max_tokens, seed=tc.seed, epoch=state["epoch"])), 1),
        "wall_seconds": state["elapsed"],
        "target_tokens": state["target_tokens"],
        "target_tokens_per_s": state["target_tokens"] / max(state["elapsed"], 1e-9),
        "best_valid_loss": None if math.isinf(state["best_valid"]) else state["best_valid"],
        "final_model": chosen,
        "final_valid_loss": final_valid,
        "final_valid_ppl": None if final_valid is None else math.exp(min(final_valid, 50)),
        "params": count_parameters(model),
        "params_no_embed": count_parameters(model, False),
        "train_pairs": train_info,
        "valid_pairs": valid_info,
        "threads": tc.threads,
        "processes": world.size,
        "device": world.device.type,
    }
    for stack, causal in (("encoder", False), ("decoder", True)):
        if getattr(model.cfg, f"{stack}_patterns"):  # share of the pairs each sparse head keeps
            summary[f"{stack}_kept_share"] = kept_share(model.cfg, stack, model.cfg.max_positions, causal)
    summary["reproducible"] = stop_reason != "max_minutes"  # a clock-stopped run depends on machine speed
    summary["provenance"] = provenance(cfg, seed=tc.seed, threads=tc.threads)
    with open(paths.metrics, "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": "end", **summary}) + "\n")
    write_json_atomic(summary, paths.train_summary)
    return summary


def choose_final(
    paths: RunPaths, model: EncoderDecoder, tc: TrainConfig, state: dict, valid_ex
) -> tuple[str, float | None, dict]:
    """The weights shipped as model.pt: of the last weights, the best-validation checkpoint and the
    average of the last `average_last` step checkpoints, the one with the lowest validation loss.
    Returns (which, its validation loss, state_dict)."""
    candidates = {f"last (step {state['step']})": {k: v.clone() for k, v in model.state_dict().items()}}
    if paths.best.is_file():
        best = checkpoint.load(paths.best)
        candidates[f"best (step {best['step']})"] = best["model"]
    if tc.average_last > 1 and len(state["step_checkpoints"]) > 1:
        names = state["step_checkpoints"][-tc.average_last :]
        candidates[f"average of {', '.join(names)}"] = checkpoint.average_states([paths.checkpoints / n for n in names])
    if not valid_ex:
        name = next(iter(candidates))
        return name, None, candidates[name]
    scored = {}
    for name, weights in candidates.items():
        model.load_state_dict(weights)
        scored[name] = validation_loss(model, valid_ex, tc.max_tokens)
    name = min(scored, key=scored.get)
    return name, scored[name], candidates[name]
