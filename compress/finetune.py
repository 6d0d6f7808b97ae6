"""Short fine-tuning of a compressed model, optionally distilled from a teacher.

Pruning and quantization cost accuracy; a few hundred steps on the training data win most of it back.
The model is fine-tuned in place whatever was done to it: a structurally pruned model (smaller
shapes), weights behind torch.nn.utils.parametrize parametrizations (fake-quant: Adam updates the
`original` tensors), or fine-grained masks that `after_step` re-applies after every update.

With a teacher and kd_alpha > 0 the loss mixes label-smoothed cross entropy with word-level knowledge
distillation (Hinton et al. 2015; Kim & Rush 2016): the KL divergence from the teacher's softened
next-token distribution to the student's, per non-pad target token, scaled by T^2 so its gradient
keeps the same size whatever the temperature.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from lite.batching import Batch, Example, collate, encode_pairs, make_batches
from lite.config import RunConfig, TrainConfig
from lite.data.corpus import load_pairs
from lite.errors import ConfigError, DataError
from lite.models.seq2seq import EncoderDecoder
from lite.tokenizer import Tokenizer
from lite.train import batch_loss, learning_rate, validation_loss


@dataclass
class FinetuneConfig:
    steps: int = 300
    max_minutes: float | None = None  # wall-clock limit, stops at the next step
    lr: float = 5e-4
    warmup_steps: int = 30
    max_tokens: int = 2200
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    seed: int = 1
    threads: int = 2
    valid_sentences: int = 500  # valid examples used for the before/after loss (first N)
    kd_alpha: float = 0.0  # word-level knowledge distillation weight (0: off)
    kd_temperature: float = 1.0


def load_examples(cfg: RunConfig, tokenizer: Tokenizer, split: str, max_pairs: int | None = None) -> list[Example]:
    """Encoded (source, target) examples of one split of the run's corpus, the first `max_pairs` of them."""
    pairs, _ = load_pairs(cfg.data, split)
    examples, _ = encode_pairs(pairs, tokenizer, cfg.model.max_positions)
    return examples if max_pairs is None else examples[:max_pairs]


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor, pad_id: int, temperature: float
) -> Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), summed over the non-pad positions of `target`.

    Logits are [B, T, V] (or [N, V] with target [N]); the result is a scalar that backpropagates into
    the student only when the teacher's logits were computed without grad.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_token = F.kl_div(student, teacher, log_target=True, reduction="none").sum(-1)
    return per_token.masked_fill(target.eq(pad_id), 0.0).sum() * temperature**2


def _check(cfg: FinetuneConfig, model: EncoderDecoder, teacher: EncoderDecoder | None, train_ex: list[Example]) -> None:
    if not train_ex:
        raise DataError("fine-tune: no training examples")
    if cfg.steps < 0:
        raise ConfigError(f"fine-tune steps: expected >= 0, got {cfg.steps}")
    if not 0.0 <= cfg.kd_alpha <= 1.0:
        raise ConfigError(f"fine-tune kd_alpha: expected a weight in [0, 1], got {cfg.kd_alpha}")
    if cfg.kd_temperature <= 0:
        raise ConfigError(f"fine-tune kd_temperature: expected > 0, got {cfg.kd_temperature}")
    if cfg.kd_alpha > 0 and teacher is None:
        raise ConfigError(f"fine-tune kd_alpha is {cfg.kd_alpha} but no teacher was given")
    if teacher is not None and teacher.cfg.vocab_size != model.cfg.vocab_size:
        raise ConfigError(
            f"teacher vocabulary size {teacher.cfg.vocab_size} differs from the student's "
            f"{model.cfg.vocab_size} (word-level distillation needs the same vocabulary)"
        )


def _step_loss(model: EncoderDecoder, batch: Batch, cfg: FinetuneConfig, teacher: EncoderDecoder | None) -> Tensor:
    """Summed loss of one batch: label-smoothed CE, mixed with the KD term when distilling."""
    if teacher is None or cfg.kd_alpha == 0:
        return batch_loss(model, batch, cfg.label_smoothing)[0]
    # catch the student's logits from batch_loss's own forward pass instead of running the model twice
    captured: list[Tensor] = []
    hook = model.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        ce = batch_loss(model, batch, cfg.label_smoothing)[0]
    finally:
        hook.remove()
    with torch.no_grad():
        teacher_logits = teacher(batch.src, batch.prev)
    kd = distillation_loss(captured[0], teacher_logits, batch.target, model.cfg.pad_id, cfg.kd_temperature)
    return (1 - cfg.kd_alpha) * ce + cfg.kd_alpha * kd


def _cycle_batches(train_ex: list[Example], cfg: FinetuneConfig) -> Iterator[list[int]]:
    """Token batches of epoch 0, 1, 2, ...: each epoch's order is fixed by (seed, epoch), as in training."""
    epoch = 0
    while True:
        yield from make_batches(train_ex, cfg.max_tokens, seed=cfg.seed, epoch=epoch)
        epoch += 1


def _update(
    model: EncoderDecoder,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    params: list[Tensor],
    lr: float,
    cfg: FinetuneConfig,
    teacher: EncoderDecoder | None,
    after_step: Callable[[EncoderDecoder], None] | None,
) -> Tensor:
    """One optimizer step on `batch` at learning rate `lr` (the gradients of `params`, the optimizer's,
    clipped to cfg.clip_norm), then `after_step`; returns the batch's summed loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = _step_loss(model, batch, cfg, teacher)
    (loss / batch.ntokens).backward()
    if cfg.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
    optimizer.step()
    if after_step is not None:
        after_step(model)
    return loss


def finetune(
    model: EncoderDecoder,
    train_ex: list[Example],
    valid_ex: list[Example],
    cfg: FinetuneConfig,
    teacher: EncoderDecoder | None = None,
    after_step: Callable[[EncoderDecoder], None] | None = None,
    progress: bool = True,
    desc: str = "fine-tune",
) -> dict:
    """Fine-tune `model` in place for cfg.steps optimizer steps (or cfg.max_minutes); returns a summary
    with the per-token valid NLL before and after. The model is left in eval mode."""
    _check(cfg, model, teacher, train_ex)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    valid = valid_ex[: cfg.valid_sentences]
    loss_before = validation_loss(model, valid, cfg.max_tokens) if valid else None
    if teacher is not None:
        teacher.eval()
    # the schedule of the training stage (warm-up, inverse-sqrt), with the fine-tuning lr and warm-up
    schedule = TrainConfig(lr=cfg.lr, warmup_steps=cfg.warmup_steps, schedule="inverse_sqrt")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)

    model.train()
    bar = tqdm(total=cfg.steps, disable=not progress, unit="step", desc=desc, dynamic_ncols=True)
    step, target_tokens, seconds = 0, 0, 0.0
    window_tokens, window_loss, window_start = 0, [], time.monotonic()
    started = time.monotonic()
    stop_reason = "steps"
    for step, indices in enumerate(islice(_cycle_batches(train_ex, cfg), cfg.steps), start=1):
        batch = collate(train_ex, indices, model.cfg.pad_id, model.cfg.bos_id)
        loss = _update(model, batch, optimizer, params, learning_rate(step, schedule), cfg, teacher, after_step)
        target_tokens += batch.ntokens
        window_tokens += batch.ntokens
        window_loss.append(float(loss.detach()) / batch.ntokens)
        seconds = time.monotonic() - started
        if step % 10 == 0 or step == 1:
            rate = window_tokens / max(time.monotonic() - window_start, 1e-9)
            bar.set_postfix(loss=f"{sum(window_loss) / len(window_loss):.3f}", tok_s=f"{rate:.0f}")
            window_tokens, window_loss, window_start = 0, [], time.monotonic()
        bar.update(1)
        if cfg.max_minutes is not None and seconds >= cfg.max_minutes * 60 and step < cfg.steps:
            stop_reason = "max_minutes"
            break
    bar.close()

    loss_after = validation_loss(model, valid, cfg.max_tokens) if valid else None
    model.eval()
    return {
        "steps": step,
        "seconds": seconds,
        "target_tokens": target_tokens,
        "target_tokens_per_s": target_tokens / max(seconds, 1e-9),
        "valid_loss_before": loss_before,
        "valid_loss_after": loss_after,
        "kd_alpha": cfg.kd_alpha,
        "kd_temperature": cfg.kd_temperature,
        "stop_reason": stop_reason,
    }
