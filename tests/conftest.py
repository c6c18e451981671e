"""Shared fixtures: tiny random Whisper and Llama checkpoints, the toy tone set, model configs."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from data_recipes.toy import main as write_toy
from omni.config import AdaptorConfig, EncoderConfig, LLMConfig, LoraConfig, ModelConfig
from omni.tiny import tiny_llm, tiny_whisper

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    tiny_whisper(root / "whisper_tiny.pt")
    tiny_llm(root / "llm")
    return root


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    write_toy([str(root), "--train", "16", "--eval", "4"])
    return root


@pytest.fixture
def model_config(tiny_dir) -> ModelConfig:
    return ModelConfig(
        encoder=EncoderConfig(name_or_path=str(tiny_dir / "whisper_tiny.pt")),
        adaptor=AdaptorConfig(stride=5, hidden_size=32),
        llm=LLMConfig(name_or_path=str(tiny_dir / "llm"), train="full", lora=LoraConfig(r=4, alpha=8, dropout=0.0)),
    )


def with_llm(config: ModelConfig, **changes) -> ModelConfig:
    return replace(config, llm=replace(config.llm, **changes))


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(np.float32)
