"""Checkpoints as plain data (model config dict + state_dicts + counters), loadable with weights_only=True."""

from __future__ import annotations

from pathlib import Path

import torch

from lite.config import model_config_from_dict, to_dict
from lite.errors import RunFolderError
from lite.files import atomic_path
from lite.models.seq2seq import EncoderDecoder


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temp file then rename: an interrupted write never leaves a truncated checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: Path, keys: tuple[str, ...] = ()) -> dict:
    """The checkpoint at `path` (on the CPU); a missing or damaged file, or one without `keys`, is a
    RunFolderError naming it."""
    if not path.is_file():
        raise RunFolderError(f"{path}: checkpoint not found")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise RunFolderError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    missing = [k for k in keys if k not in record] if isinstance(record, dict) else list(keys)
    if missing:
        raise RunFolderError(f"{path}: not a checkpoint of this pipeline (no {', '.join(missing)})")
    return record


def model_record(model: EncoderDecoder) -> dict:
    return {"model_config": to_dict(model.cfg), "model": model.state_dict()}


def load_model(path: Path) -> EncoderDecoder:
    """Rebuild the model from the config stored beside its weights (shapes live in the config)."""
    ckpt = load(path, ("model_config", "model"))
    model = EncoderDecoder(model_config_from_dict(ckpt["model_config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:  # weights of another shape than the stored config says
        raise RunFolderError(
            f"{path}: weights do not match the model config stored with them ({str(exc).splitlines()[0]})"
        ) from None
    return model.eval()


def average_states(paths: list[Path]) -> dict:
    """Element-wise mean of the model weights of several checkpoints (checkpoint averaging)."""
    states = [load(p, ("model",))["model"] for p in paths]
    avg = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            avg[key] = sum(s[key] for s in states) / len(states)
        else:
            avg[key] = value
    return avg
