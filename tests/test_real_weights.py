"""A stage-1 step on the real small weights of the offline demo: Whisper tiny.en and SmolLM2-135M-Instruct."""

import subprocess

import numpy as np
import pytest
import soundfile
import torch

from omni import assets
from omni.config import AdaptorConfig, EncoderConfig, LLMConfig, LoraConfig, ModelConfig
from omni.data import Example, SpeechCollator
from omni.model import OmniModel


@pytest.fixture(scope="module")
def model() -> OmniModel:
    torch.manual_seed(0)
    config = ModelConfig(
        encoder=EncoderConfig(name_or_path=str(assets.ensure("whisper_tiny_en"))),
        adaptor=AdaptorConfig(hidden_size=256),
        llm=LLMConfig(
            name_or_path=str(assets.ensure("smollm2")), train="lora", lora=LoraConfig(r=8, alpha=16, dropout=0.0)
        ),
    )
    return OmniModel.from_config(config)


def spoken(text: str, tmp_path) -> np.ndarray:
    path = tmp_path / "q.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
    audio, rate = soundfile.read(path, dtype="float32")
    from omni.audio import to_mono_16k

    return to_mono_16k(audio, rate)


def test_real_model_shapes_and_prompt(model):
    assert model.encoder.width == 384 and model.encoder.n_mels == 80
    assert model.hidden_size == 576
    assert model.tokenizer.convert_ids_to_tokens(sorted(model.prompt.end_of_turn_ids)) == ["<|im_end|>"]


def test_stage1_steps_on_real_weights_lower_the_loss(model, tmp_path):
    example = Example(
        "q", spoken("What is the capital of France?", tmp_path), "The capital of France is Paris.", None, None
    )
    batch = SpeechCollator.for_model(model)([example])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for _ in range(4):
        loss = model(batch).loss
        loss.backward()
        assert all(p.grad is None for p in model.encoder.parameters())
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
