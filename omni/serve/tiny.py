"""Tiny random models for the server: `omni serve --tiny` and the server's tests and load test.

The answers are gibberish, but every part (Whisper encoder, adaptor, Llama, CTC speech decoder, unit-to-mel,
HiFi-GAN) is the real architecture, saved as the recipes save it, so the server loads them as it loads
trained models and answers in milliseconds per token on a CPU.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import torch

from omni.config import AdaptorConfig, EncoderConfig, LLMConfig, ModelConfig, SpeechDecoderConfig, UnitToMelConfig
from omni.model import OmniModel
from omni.speech_decoder import SpeechDecoder
from omni.tiny import tiny_llm, tiny_whisper
from omni.vocoder.hifigan import HifiGanConfig, HifiGanGenerator
from omni.vocoder.unit_to_mel import UnitToMel

NUM_UNITS = 12
WORD = re.compile(r" ?[A-Za-z]+[.,]?")


def make_talkative(model: OmniModel, scale: float = 8.0) -> None:
    """A random LLM's greedy answer repeats one token; with its weights scaled up it wanders through its
    vocabulary instead, and with the rows of tokens that are not words (bytes, the end of turn) shrunk
    it writes pseudo-words: answers of many text deltas and audio chunks, as long as max_new_tokens."""
    tokenizer, llm = model.tokenizer, model.base_llm
    embeddings = llm.get_input_embeddings().weight  # tied to the output head
    words = torch.tensor([bool(WORD.fullmatch(tokenizer.decode([i]))) for i in range(embeddings.shape[0])])
    with torch.no_grad():
        for weight in llm.parameters():
            if weight.ndim == 2:
                weight *= scale
        embeddings[~words] *= 0.05


def write_tiny_models(directory: Path, seed: int = 0) -> dict[str, Path]:
    """Saves a tiny stage-1 model, speech decoder and unit vocoder under `directory`; their paths by flag name."""
    directory = Path(directory)
    paths = {name: directory / name for name in ("model", "decoder", "vocoder")}
    if all(p.is_dir() for p in paths.values()):
        return paths
    torch.manual_seed(seed)
    config = ModelConfig(
        encoder=EncoderConfig(name_or_path=str(tiny_whisper(directory / "whisper_tiny.pt"))),
        adaptor=AdaptorConfig(stride=5, hidden_size=32),
        llm=LLMConfig(name_or_path=str(tiny_llm(directory / "llm")), train="full"),
    )
    model = OmniModel.from_config(config)
    make_talkative(model)
    model.save_pretrained(paths["model"])
    sizes = {"hidden_size": 32, "num_layers": 1, "num_heads": 4, "intermediate_size": 64}
    decoder = SpeechDecoder(SpeechDecoderConfig(num_units=NUM_UNITS, upsample=4, **sizes), model.hidden_size)
    with torch.no_grad():
        decoder.output_proj.bias[-1] = -2.0  # fewer blanks: random weights then emit units at most frames
    decoder.save_pretrained(paths["decoder"])
    hifigan = HifiGanConfig(upsample_initial_channel=16)
    torch.save({"generator": HifiGanGenerator(hifigan).state_dict()}, directory / "hifigan.pt")
    (directory / "config.json").write_text(json.dumps(asdict(hifigan) | {"num_mels": 80}))
    unit_to_mel = UnitToMel(UnitToMelConfig(num_units=NUM_UNITS, hidden_size=16, encoder_layers=1, decoder_layers=1))
    unit_to_mel.save_pretrained(paths["vocoder"], hifigan=(directory / "hifigan.pt").resolve())
    return paths
