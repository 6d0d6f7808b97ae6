"""Fine-tuning after compression and knowledge distillation, on the smoke run's model and real pairs:
fine-tuning wins back a damaged model's loss (also through parametrized weights), word-level KD is
zero against an identical teacher and helps against a good one, the teacher's translations are exactly
its greedy / beam output, and a teacher with another tokenizer is refused."""

from __future__ import annotations

import copy
import math
import shutil
from dataclasses import replace

import pytest
import torch
from torch.nn.utils import parametrize

from compress.distill import SequenceKDConfig, load_teacher, read_examples, teacher_examples, write_examples
from compress.finetune import FinetuneConfig, distillation_loss, finetune, load_examples
from lite.checkpoint import load_model
from lite.config import DecodeConfig
from lite.decode import beam_search, greedy
from lite.errors import ConfigError, DataError
from lite.models.seq2seq import EncoderDecoder
from lite.run import open_run
from lite.tokenizer import Tokenizer
from lite.train import validation_loss

# small and fast: a few steps of small batches, 100 valid sentences for the before/after loss
FAST = FinetuneConfig(steps=20, lr=1e-3, warmup_steps=5, max_tokens=1000, threads=1, valid_sentences=100)


@pytest.fixture(scope="module")
def smoke(smoke_run):
    """(run paths, config, 1500 training examples, 100 valid examples) of the smoke run."""
    paths, cfg = open_run(smoke_run, None)
    tokenizer = Tokenizer(paths.tokenizer)
    return (
        paths,
        cfg,
        load_examples(cfg, tokenizer, "train", max_pairs=1500),
        load_examples(cfg, tokenizer, "valid", max_pairs=100),
    )


def damaged(model: EncoderDecoder, seed: int = 0) -> EncoderDecoder:
    """The model with noise on every weight (a stand-in for what pruning or quantization costs)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def grad_norm(model: EncoderDecoder) -> float:
    """Norm of the gradient of the last step (still on the parameters when after_step runs)."""
    return float(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm())


def kl(p_logits: list[float], q_logits: list[float]) -> float:
    """KL(softmax(p) || softmax(q)) by hand."""
    zp, zq = sum(map(math.exp, p_logits)), sum(map(math.exp, q_logits))
    return sum(math.exp(a) / zp * ((a - math.log(zp)) - (b - math.log(zq))) for a, b in zip(p_logits, q_logits))


def test_distillation_loss_is_t2_kl_summed_over_non_pad_tokens():
    student = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]])
    teacher = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]]])
    target = torch.tensor([[5, 0]])  # the second position is padding (pad id 0)
    assert float(distillation_loss(student, student.clone(), target, 0, 1.0)) == pytest.approx(0.0, abs=1e-7)
    one = kl([2.0, 1.0, 0.0], [0.0, 1.0, 2.0])
    assert one > 0
    assert float(distillation_loss(student, teacher, target, 0, 1.0)) == pytest.approx(one, rel=1e-5)
    # temperature 2: the softened distributions, times T^2
    soft = 4 * kl([1.0, 0.5, 0.0], [0.0, 0.5, 1.0])
    assert float(distillation_loss(student, teacher, target, 0, 2.0)) == pytest.approx(soft, rel=1e-5)
    both = one + kl([0.0, 0.0, 5.0], [1.0, 1.0, 1.0])
    assert float(distillation_loss(student, teacher, torch.tensor([[5, 7]]), 0, 1.0)) == pytest.approx(both, rel=1e-5)


def test_finetune_wins_back_a_damaged_models_loss(smoke):
    paths, _, train_ex, valid_ex = smoke
    model = damaged(load_model(paths.model))
    expected_before = validation_loss(model, valid_ex, FAST.max_tokens)
    seen = []
    result = finetune(model, train_ex, valid_ex, FAST, after_step=seen.append, progress=False)
    assert len(seen) == result["steps"] == 20 and all(m is model for m in seen)
    assert result["stop_reason"] == "steps" and not model.training
    assert result["valid_loss_before"] == pytest.approx(expected_before, rel=1e-6)
    assert result["valid_loss_after"] < result["valid_loss_before"] - 0.1
    assert result["valid_loss_after"] == pytest.approx(validation_loss(model, valid_ex, FAST.max_tokens), rel=1e-6)
    assert result["target_tokens"] > 20 * 300 and result["target_tokens_per_s"] > 0
    assert result["kd_alpha"] == 0.0

    stopped = finetune(model, train_ex, valid_ex, replace(FAST, max_minutes=0.0, valid_sentences=10), progress=False)
    assert stopped["stop_reason"] == "max_minutes" and stopped["steps"] == 1


class KeepMask(torch.nn.Module):
    """A parametrization like the pruning and fake-quant ones: the weight seen by the model is original * mask."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def test_finetune_trains_the_originals_of_parametrized_weights(smoke):
    paths, _, train_ex, valid_ex = smoke
    model = load_model(paths.model)
    layer = model.decoder[0].ffn.fc1
    mask = (torch.rand_like(layer.weight) > 0.5).float()
    parametrize.register_parametrization(layer, "weight", KeepMask(mask))
    original = layer.parametrizations.weight.original.detach().clone()
    finetune(model, train_ex, valid_ex, replace(FAST, steps=3, valid_sentences=10), progress=False)
    assert not torch.equal(layer.parametrizations.weight.original, original)
    assert bool(layer.weight[mask == 0].eq(0).all())


def test_kd_against_an_identical_teacher_is_zero_and_against_a_good_one_helps(smoke):
    paths, _, train_ex, valid_ex = smoke
    trained = load_model(paths.model)
    # without dropout the student in training mode computes exactly what the teacher (eval) does
    student = EncoderDecoder(replace(trained.cfg, dropout=0.0))
    student.load_state_dict(trained.state_dict())
    teacher = copy.deepcopy(student)
    grad_norms: dict[float, float] = {}
    for alpha in (1.0, 0.0):
        result = finetune(
            student,
            train_ex,
            valid_ex,
            replace(FAST, steps=1, kd_alpha=alpha, valid_sentences=10),
            teacher=teacher,
            progress=False,
            after_step=lambda m: grad_norms.setdefault(alpha, grad_norm(m)),
        )
        assert result["kd_alpha"] == alpha
    # step 0: the KD term and its gradient are ~0 (rounding only); cross entropy has a real gradient.
    # (Adam scales even a rounding-sized gradient up to a full step, so the weights are no test of this.)
    assert grad_norms[1.0] < 1e-5 and grad_norms[0.0] > 0.1

    # pure distillation from the trained model pulls a damaged copy back towards it
    distilled = finetune(
        damaged(load_model(paths.model)),
        train_ex,
        valid_ex,
        replace(FAST, kd_alpha=1.0, kd_temperature=2.0),
        teacher=trained,
        progress=False,
    )
    assert distilled["valid_loss_after"] < distilled["valid_loss_before"] - 0.05

    other = EncoderDecoder(replace(trained.cfg, vocab_size=trained.cfg.vocab_size + 8))
    with pytest.raises(ConfigError, match=f"{trained.cfg.vocab_size + 8}.*{trained.cfg.vocab_size}"):
        finetune(student, train_ex, valid_ex, replace(FAST, kd_alpha=0.5), teacher=other, progress=False)
    with pytest.raises(ConfigError, match="no teacher"):
        finetune(student, train_ex, valid_ex, replace(FAST, kd_alpha=0.5), progress=False)


def test_teacher_examples_are_its_own_translations(smoke):
    paths, _, train_ex, _ = smoke
    teacher = load_teacher(paths.root, paths.tokenizer)
    eos = teacher.cfg.eos_id
    for cfg, search in (
        (SequenceKDConfig(max_sentences=30, batch_size=8), greedy),
        (SequenceKDConfig(max_sentences=10, beam=2, lenpen=1.2, batch_size=4), beam_search),
    ):
        examples = teacher_examples(teacher, train_ex, cfg, progress=False)
        decode = DecodeConfig(beam=cfg.beam, lenpen=cfg.lenpen)
        expected = [
            (src, hyp + [eos])
            for src, _ in train_ex[: cfg.max_sentences]
            for hyp in search(teacher, torch.tensor([src]), decode)
            if hyp
        ]
        assert examples == expected and len(examples) == cfg.max_sentences

    # a teacher that only ever says eos has nothing to teach: every example is dropped
    hook = teacher.output.register_forward_hook(lambda _m, _i, out: out + 100.0 * torch.eye(out.shape[-1])[eos])
    assert teacher_examples(teacher, train_ex, SequenceKDConfig(max_sentences=5), progress=False) == []
    hook.remove()


def test_examples_round_trip_and_malformed_files(tmp_path):
    examples = [([5, 6, 2], [7, 2]), ([9, 2], [10, 11, 12, 2])]
    path = tmp_path / "kd" / "train.jsonl"
    write_examples(path, examples)
    assert read_examples(path) == examples
    assert [p.name for p in path.parent.iterdir()] == ["train.jsonl"]  # no temp file left behind

    path.write_text("[[5, 2], [7, 2]]\n[[5, 2], [7, 2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.jsonl: line 2: not valid JSON"):
        read_examples(path)
    path.write_text("[[5, 2], [7, 2]]\n[[5, 2], []]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.jsonl: line 2: expected \[source ids, target ids\]"):
        read_examples(path)
    with pytest.raises(DataError, match="missing.jsonl: examples file not found"):
        read_examples(tmp_path / "missing.jsonl")


def test_load_teacher_requires_the_students_tokenizer(smoke, small_tokenizer, tmp_path):
    paths = smoke[0]
    with pytest.raises(ConfigError, match="vocabulary differs from the student's .*a teacher must share the tokenizer"):
        load_teacher(paths.root, small_tokenizer)
    copied = tmp_path / "spm.model"  # the same vocabulary anywhere else is fine
    shutil.copy(paths.tokenizer, copied)
    teacher = load_teacher(paths.root, copied)
    assert not teacher.training and teacher.cfg.vocab_size == Tokenizer(copied).vocab_size
