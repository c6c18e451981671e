"""Weights of omni's own modules (speech decoder, unit-to-mel): safetensors out, checked safetensors in."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_weights(state: dict[str, torch.Tensor], path: str | Path) -> None:
    save_file({k: v.contiguous() for k, v in state.items()}, path)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict; NaN or infinite weights (a diverged run) are refused, naming the tensors."""
    state = load_file(path)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path}: NaN or infinite values in {bad[:3]}")
    return state
