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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from lite import checkpoint, distributed
from lite.batching import Batch, Example, collate, encode_pairs, make_batches
from lite.config import ModelConfig, RunConfig, TrainConfig, to_dict
from lite.data.corpus import load_pairs
from lite.errors import ConfigError, DataError, RunFolderError
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
            raise ConfigError(
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


@dataclass
class TrainState:
    """The counters a checkpoint stores beside the weights and the optimizer state (as a plain dict,
    fields in this order): a resume continues from them exactly."""

    step: int = 0  # optimizer steps completed
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of this epoch consumed by completed steps
    elapsed: float = 0.0  # training seconds, summed over resumes
    best_valid: float = math.inf
    bad_validations: int = 0  # validations in a row without a new best
    target_tokens: int = 0
    step_checkpoints: list[str] = field(default_factory=list)  # step_*.pt kept, oldest first
    stop_reason: str | None = None  # why the run finished, in the checkpoint written at its end

    @classmethod
    def from_checkpoint(cls, record: dict, path: Path) -> TrainState:
        """The state saved in checkpoint `path` (keys it lacks keep their defaults)."""
        known = [f.name for f in fields(cls)]
        if not isinstance(record, dict) or not record.keys() <= set(known):
            raise RunFolderError(f"{path}: 'state' is not a training state (expected keys among {', '.join(known)})")
        return cls(**record)


def _still_stopped(state: TrainState, tc: TrainConfig) -> str | None:
    """The stop reason a resumed checkpoint recorded, unless the config now allows more (a raised
    max_steps or max_minutes continues the run)."""
    reason = state.stop_reason
    if reason == "max_steps" and state.step < tc.max_steps:
        return None
    if reason == "max_minutes" and (tc.max_minutes is None or state.elapsed < tc.max_minutes * 60):
        return None
    return reason


LOG_EVERY = 20  # steps per train line of metrics.jsonl (and step 1)


@dataclass
class _Data:
    """The encoded training and validation examples, what loading them dropped, and the model config
    completed from the tokenizer."""

    model: ModelConfig
    train: list[Example]
    valid: list[Example]
    train_info: dict
    valid_info: dict


@dataclass
class _Window:
    """The steps since the last train line of the log: their tokens, per-token losses and start time."""

    tokens: int = 0
    losses: list[float] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)


@dataclass
class _Training:
    """One training process: what stays fixed during the loop and the state the loop advances."""

    cfg: RunConfig
    paths: RunPaths
    world: distributed.World
    data: _Data
    model: EncoderDecoder
    net: EncoderDecoder | DDP  # the model as the forward pass sees it (DDP-wrapped with several processes)
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    state: TrainState
    log: _Log
    bar: tqdm
    on_event: EventHook
    started: float  # time.monotonic() at which `state.elapsed` was 0
    window: _Window = field(default_factory=_Window)


def _train(
    cfg: RunConfig,
    paths: RunPaths,
    world: distributed.World,
    resume: bool,
    progress: bool,
    on_event: EventHook,
    stop: _StopRequest,
) -> dict:
    """The training loop of one process: steps until a stop reason, epoch after epoch, then (rank 0)
    the final model and the summary."""
    tc = cfg.train
    t = _prepare(cfg, paths, world, resume, progress, on_event)
    state = t.state
    stop_reason = _still_stopped(state, tc)  # a run resumed after its last step trains no more
    batches: list[list[int]] = []
    try:
        while stop_reason is None:
            if state.epoch >= tc.max_epochs:
                stop_reason = "max_epochs"
                break
            batches = make_batches(t.data.train, tc.max_tokens, seed=tc.seed, epoch=state.epoch)
            while state.batch_in_epoch < len(batches):
                start = state.batch_in_epoch
                group = [(batches[i], i) for i in range(start, min(start + tc.update_freq, len(batches)))]
                step = state.step + 1
                ntokens, step_loss = _update(t, group, step)
                # the step is recorded only now: an interruption before this line replays the whole step
                _record_step(t, step, len(group), ntokens, step_loss)
                if step % LOG_EVERY == 0 or step == 1:
                    _log_train(t)
                t.bar.update(1)
                out_of_patience = _validation_due(t) and _validate(t)
                stop_reason = _stop_reason(t, out_of_patience, stop.requested)
                _checkpoint(t, stop_reason)
                if stop_reason == "interrupted":  # the state saved is a step boundary: resume is exact
                    raise KeyboardInterrupt
                if stop_reason is not None:
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
    finally:  # on KeyboardInterrupt the last checkpoint (or the state saved above) is what resumes
        t.bar.close()
        t.log.close()
    if not world.main:
        return {"rank": world.rank, "steps": state.step, "stop_reason": stop_reason}
    return _finish(t, stop_reason, batches)


def _prepare(
    cfg: RunConfig, paths: RunPaths, world: distributed.World, resume: bool, progress: bool, on_event: EventHook
) -> _Training:
    """Load the data, build the model and optimizer (seeded), restore them from last.pt when resuming,
    and open the log and the progress bar."""
    tc = cfg.train
    data = _load_data(cfg, paths)
    torch.manual_seed(tc.seed)  # the initial weights
    model = EncoderDecoder(data.model).to(world.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tc.lr, betas=tuple(tc.betas), eps=1e-8, weight_decay=tc.weight_decay)
    state = _restore(paths, world, model, optimizer, resume)
    # DDP broadcasts rank 0's weights at wrap time and all-reduces gradients in backward
    net = (
        DDP(model, device_ids=[world.device.index] if world.device.type == "cuda" else None)
        if world.distributed
        else model
    )
    if world.main:
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
    log = _Log(paths.metrics if world.main else None)
    if state.step == 0:
        log.write(
            event="start",
            params=count_parameters(model),
            params_no_embed=count_parameters(model, False),
            train=data.train_info,
            valid=data.valid_info,
            config=to_dict(cfg),
        )
    net.train()
    started = time.monotonic() - state.elapsed
    # with a wall-clock limit the step total is not the end: show steps and time left instead of a false ETA
    bar = tqdm(
        total=None if tc.max_minutes else tc.max_steps,
        initial=state.step,
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
    )
    return _Training(cfg, paths, world, data, model, net, params, optimizer, state, log, bar, on_event, started)


def _load_data(cfg: RunConfig, paths: RunPaths) -> _Data:
    """The corpus' train and valid splits encoded with the run's tokenizer, too-long pairs dropped."""
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
        raise DataError(f"data.corpus {cfg.data.corpus!r}: no training pairs left after filtering")
    return _Data(mcfg, train_ex, valid_ex, train_info, valid_info)


def _restore(
    paths: RunPaths, world: distributed.World, model: EncoderDecoder, optimizer: torch.optim.Optimizer, resume: bool
) -> TrainState:
    """A fresh state, or with `resume` the weights, optimizer and state of last.pt (the metrics of later
    steps dropped: they are replayed). Without `resume` an existing last.pt is refused."""
    if not paths.last.is_file():
        return TrainState()
    if not resume:
        raise RunFolderError(f"{paths.last}: a checkpoint exists; pass --resume to continue or use a new run folder")
    ckpt = checkpoint.load(paths.last, ("model", "optimizer", "state"))
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    state = TrainState.from_checkpoint(ckpt["state"], paths.last)
    if world.main:
        _truncate_metrics(paths.metrics, state.step)
        for stale in paths.checkpoints.glob(".*.tmp-*"):  # a write killed half-way
            stale.unlink()
    return state


def _update(t: _Training, group: list[tuple[list[int], int]], step: int) -> tuple[int, float]:
    """Optimizer step `step` over `group` (the step's batches with their positions in the epoch): this
    process's share of the batches accumulated, gradients clipped. Returns the target tokens of the
    whole step and this process's summed training loss."""
    tc, world = t.cfg.train, t.world
    for g in t.optimizer.param_groups:
        g["lr"] = learning_rate(step, tc)
    t.optimizer.zero_grad(set_to_none=True)
    # every rank knows the step's token count (target lengths), so each normalises alike;
    # DDP averages gradients over ranks, hence the factor world.size
    ntokens = sum(len(t.data.train[i][1]) for idx, _ in group for i in idx)
    mine = distributed.shard(group, world)
    step_loss = 0.0
    for k, ((idx, position), weight) in enumerate(mine):
        torch.manual_seed(_batch_seed(tc.seed, t.state.epoch, position))
        batch = collate(t.data.train, idx, t.data.model.pad_id, t.data.model.bos_id).to(world.device)
        sync = k == len(mine) - 1 or not world.distributed  # all-reduce once, after the last
        with t.net.no_sync() if not sync else contextlib.nullcontext():
            loss, _ = batch_loss(t.net, batch, tc.label_smoothing, tc.sar_weight)
            (loss * (weight * world.size / ntokens)).backward()
        step_loss += float(loss.detach()) * weight
        t.on_event("micro_batch", step)
    if tc.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(t.params, tc.clip_norm)
    t.optimizer.step()
    t.on_event("optimizer_step", step)
    return ntokens, step_loss


def _record_step(t: _Training, step: int, batches: int, ntokens: int, step_loss: float) -> None:
    """Count step `step` (of `batches` batches) as complete, in the state and in the log window."""
    state = t.state
    state.batch_in_epoch += batches
    state.step = step
    state.target_tokens += ntokens
    state.elapsed = time.monotonic() - t.started
    t.window.tokens += ntokens
    t.window.losses.append(step_loss / ntokens)


def _log_train(t: _Training) -> None:
    """A train line in the log and the progress bar: the mean per-token loss and the token rate of the
    steps since the last one (the window), then a new window."""
    state, tc, world, window = t.state, t.cfg.train, t.world, t.window
    losses = window.losses
    if world.distributed:  # the window's loss over every rank's batches, not rank 0's share
        total = torch.tensor(losses, dtype=torch.float64, device=world.device)
        torch.distributed.all_reduce(total)
        losses = total.tolist()
    rate = window.tokens / max(time.monotonic() - window.start, 1e-9)
    avg = sum(losses) / len(losses)
    lr = t.optimizer.param_groups[0]["lr"]
    extra = {}
    if tc.max_minutes is not None:  # the step total says little when the clock decides
        extra["time_left"] = f"{max(tc.max_minutes * 60 - state.elapsed, 0) / 60:.1f}min"
    t.bar.set_postfix(loss=f"{avg:.3f}", tok_s=f"{rate:.0f}", lr=f"{lr:.2e}", epoch=state.epoch, **extra)
    t.log.write(
        event="train", step=state.step, epoch=state.epoch, loss=avg, lr=lr, tokens_per_s=rate, elapsed=state.elapsed
    )
    t.window = _Window()


def _validation_due(t: _Training) -> bool:
    """Rank 0 validates every validate_every steps (when there is a valid split)."""
    return t.world.main and bool(t.data.valid) and t.state.step % t.cfg.train.validate_every == 0


def _validate(t: _Training) -> bool:
    """Log the validation loss and keep the best weights in best.pt. True when `train.patience`
    validations in a row brought no new best (early stopping)."""
    state, tc = t.state, t.cfg.train
    v = validation_loss(t.model, t.data.valid, tc.max_tokens)
    t.on_event("validation", state.step)
    t.log.write(event="valid", step=state.step, loss=v, ppl=math.exp(min(v, 50)), elapsed=state.elapsed)
    t.bar.write(f"step {state.step}: valid loss {v:.3f}, perplexity {math.exp(min(v, 50)):.2f}")
    if v < state.best_valid:
        state.best_valid, state.bad_validations = v, 0
        checkpoint.save_atomic(checkpoint.model_record(t.model) | {"step": state.step, "valid_loss": v}, t.paths.best)
        return False
    state.bad_validations += 1
    return bool(tc.patience) and state.bad_validations >= tc.patience


def _stop_reason(t: _Training, out_of_patience: bool, stop_requested: bool) -> str | None:
    """Why training stops after this step (None: it goes on), by precedence. Rank 0 decides (its
    validation, its clock, its Ctrl-C) and tells the others: every rank stops at the same step."""
    state, tc = t.state, t.cfg.train
    if out_of_patience:
        reason = "early_stopping"
    elif state.step >= tc.max_steps:
        reason = "max_steps"
    elif tc.max_minutes is not None and state.elapsed >= tc.max_minutes * 60:
        reason = "max_minutes"
    elif stop_requested:
        reason = "interrupted"
    else:
        reason = None
    return STOP_CODES[distributed.broadcast_int(STOP_CODES.index(reason), t.world)]


def _checkpoint(t: _Training, stop_reason: str | None) -> None:
    """A step checkpoint every checkpoint_every steps and at the end; last.pt alone when interrupted."""
    finished = stop_reason not in (None, "interrupted")
    if t.state.step % t.cfg.train.checkpoint_every == 0 or finished:
        t.state.stop_reason = stop_reason if finished else None  # a resume after the end trains no more
        _save(t, step_file=True)
    elif stop_reason == "interrupted":
        _save(t, step_file=False)


def _save(t: _Training, step_file: bool) -> None:
    """last.pt (and with `step_file` step_XXXXXX.pt, dropping the step files no longer kept): weights,
    optimizer and state. Rank 0 alone writes: every replica holds the same weights."""
    if not t.world.main:
        return
    state, tc, folder = t.state, t.cfg.train, t.paths.checkpoints
    record = {**checkpoint.model_record(t.model), "optimizer": t.optimizer.state_dict(), "state": asdict(state)}
    if step_file:
        name = folder / f"step_{state.step:06d}.pt"
        checkpoint.save_atomic(record, name)
        state.step_checkpoints = (state.step_checkpoints + [name.name])[-max(tc.keep_checkpoints, tc.average_last) :]
        for old in folder.glob("step_*.pt"):
            if old.name not in state.step_checkpoints:
                old.unlink()
        record["state"] = asdict(state)
        t.on_event("checkpoint", state.step)
    checkpoint.save_atomic(record, t.paths.last)


def _finish(t: _Training, stop_reason: str | None, batches: list[list[int]]) -> dict:
    """Rank 0 after the loop: model.pt (the best of the final candidates, learned patterns binarised),
    then the summary, written to train.json and as the log's end line."""
    paths, tc = t.paths, t.cfg.train
    model = t.model.cpu()
    chosen, final_valid, final_state = choose_final(paths, model, tc, t.state, t.data.valid)
    model.load_state_dict(final_state)
    model = binarise(model.eval())  # learned attention patterns -> the fixed patterns they stand for
    checkpoint.save_atomic(checkpoint.model_record(model), paths.model)
    if not batches:  # the loop built none (the run was already finished): the epoch's own
        batches = make_batches(t.data.train, tc.max_tokens, seed=tc.seed, epoch=t.state.epoch)
    summary = _summary(t, model, stop_reason, len(batches), chosen, final_valid)
    with open(paths.metrics, "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": "end", **summary}) + "\n")
    write_json_atomic(summary, paths.train_summary)
    return summary


def _summary(
    t: _Training, model: EncoderDecoder, stop_reason: str | None, epoch_batches: int, chosen: str, final_valid
) -> dict:
    """train.json: how and why training ended, its cost, the model shipped and what it was trained on."""
    state, tc, world = t.state, t.cfg.train, t.world
    summary = {
        "stop_reason": stop_reason,
        "steps": state.step,
        "epochs": state.epoch + state.batch_in_epoch / max(epoch_batches, 1),
        "wall_seconds": state.elapsed,
        "target_tokens": state.target_tokens,
        "target_tokens_per_s": state.target_tokens / max(state.elapsed, 1e-9),
        "best_valid_loss": None if math.isinf(state.best_valid) else state.best_valid,
        "final_model": chosen,
        "final_valid_loss": final_valid,
        "final_valid_ppl": None if final_valid is None else math.exp(min(final_valid, 50)),
        "params": count_parameters(model),
        "params_no_embed": count_parameters(model, False),
        "train_pairs": t.data.train_info,
        "valid_pairs": t.data.valid_info,
        "threads": tc.threads,
        "processes": world.size,
        "device": world.device.type,
    }
    for stack, causal in (("encoder", False), ("decoder", True)):
        if getattr(model.cfg, f"{stack}_patterns"):  # share of the pairs each sparse head keeps
            summary[f"{stack}_kept_share"] = kept_share(model.cfg, stack, model.cfg.max_positions, causal)
    summary["reproducible"] = stop_reason != "max_minutes"  # a clock-stopped run depends on machine speed
    summary["provenance"] = provenance(t.cfg, seed=tc.seed, threads=tc.threads)
    return summary


def choose_final(
    paths: RunPaths, model: EncoderDecoder, tc: TrainConfig, state: TrainState, valid_ex: list[Example]
) -> tuple[str, float | None, dict]:
    """The weights shipped as model.pt: of the last weights, the best-validation checkpoint and the
    average of the last `average_last` step checkpoints, the one with the lowest validation loss.
    Returns (which, its validation loss, state_dict)."""
    candidates = {f"last (step {state.step})": {k: v.clone() for k, v in model.state_dict().items()}}
    if paths.best.is_file():
        best = checkpoint.load(paths.best, ("model", "step"))
        candidates[f"best (step {best['step']})"] = best["model"]
    if tc.average_last > 1 and len(state.step_checkpoints) > 1:
        names = state.step_checkpoints[-tc.average_last :]
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
