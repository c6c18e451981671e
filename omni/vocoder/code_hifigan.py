"""fairseq's unit HiFi-GAN (CodeHiFiGAN), the reference's vocoder, in pure torch, and its `Vocoder`.

fairseq's `codehifigan.CodeGenerator` on `hifigan.Generator`, as LLaMA-Omni uses it (`g_00500000`, mHuBERT
km1000 units, LJSpeech voice, `CODE_SAMPLE_RATE` = 16 kHz), loaded without fairseq (`load_code_hifigan`) and
spoken through `CodeHifiGanVocoder`. Layout relied on:

- config.json: `num_embeddings` (1000), `embedding_dim` (128), `model_in_dim` (128), `upsample_rates`
  ([5, 4, 4, 2, 2]: 320 samples = 20 ms per unit frame), `upsample_kernel_sizes` ([11, 8, 8, 4, 4]),
  `upsample_initial_channel` (512), `resblock_kernel_sizes`, `resblock_dilation_sizes`, `dur_predictor_params`
  ({`encoder_embed_dim`: 128, `var_pred_hidden_dim`: 128, `var_pred_kernel_size`: 3, `var_pred_dropout`: 0.5}).
  A true `f0`, `multispkr` or `embedder_params` (pitch or speaker conditioning), or a `sampling_rate` other than
  16000, is not supported.
- checkpoint: `{"generator": state_dict}` with `dict.weight` (unit embedding), `dur_predictor.conv1.0.*`,
  `dur_predictor.ln1.*`, `dur_predictor.conv2.0.*`, `dur_predictor.ln2.*`, `dur_predictor.proj.*` (weight and
  bias each) and the generator's `conv_pre`, `ups.{i}`, `resblocks.{i * 3 + j}.convs{1,2}.{k}`, `conv_post`,
  weight-normed (`weight_g`, `weight_v`) like the mel generator's (`omni.vocoder.hifigan`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from omni.vocoder.hifigan import HifiGanConfig, HifiGanGenerator, first_frame, load_state, read_generator_state

CODE_SAMPLE_RATE = 16000  # the rate fairseq's unit vocoder speaks at (its config.json's `sampling_rate`)


@dataclass
class DurationPredictorConfig:
    """fairseq's `dur_predictor_params` (FastSpeech 2's variance predictor)."""

    encoder_embed_dim: int = 128
    var_pred_hidden_dim: int = 128
    var_pred_kernel_size: int = 3
    var_pred_dropout: float = 0.5


@dataclass
class CodeHifiGanConfig:
    num_embeddings: int = 1000
    embedding_dim: int = 128
    generator: HifiGanConfig = field(
        default_factory=lambda: HifiGanConfig([5, 4, 4, 2, 2], [11, 8, 8, 4, 4], in_channels=128)
    )
    dur_predictor: DurationPredictorConfig | None = field(default_factory=DurationPredictorConfig)

    @classmethod
    def from_dict(cls, config: dict) -> CodeHifiGanConfig:
        """From fairseq's unit vocoder config.json (see the module docstring)."""
        for key in ("f0", "multispkr", "embedder_params"):
            if config.get(key):
                raise NotImplementedError(
                    f"unit vocoder config asks for {key}={config[key]!r}: only plain units are supported"
                )
        if config.get("sampling_rate", CODE_SAMPLE_RATE) != CODE_SAMPLE_RATE:
            raise NotImplementedError(
                f"unit vocoder config asks for sampling_rate={config['sampling_rate']}: only {CODE_SAMPLE_RATE} Hz"
            )
        generator = HifiGanConfig.from_dict(config)
        if generator.in_channels != config["embedding_dim"]:
            raise ValueError(f"model_in_dim {generator.in_channels} != embedding_dim {config['embedding_dim']}")
        params = config.get("dur_predictor_params")
        return cls(
            num_embeddings=config["num_embeddings"],
            embedding_dim=config["embedding_dim"],
            generator=generator,
            dur_predictor=DurationPredictorConfig(**params) if params else None,
        )


class DurationPredictor(nn.Module):
    """Two conv + ReLU + LayerNorm layers and a projection: one log(1 + duration) per unit."""

    def __init__(self, config: DurationPredictorConfig):
        super().__init__()
        kernel, hidden = config.var_pred_kernel_size, config.var_pred_hidden_dim
        self.conv1 = nn.Sequential(
            nn.Conv1d(config.encoder_embed_dim, hidden, kernel, padding=(kernel - 1) // 2), nn.ReLU()
        )
        self.ln1 = nn.LayerNorm(hidden)
        self.conv2 = nn.Sequential(nn.Conv1d(hidden, hidden, kernel, padding=(kernel - 1) // 2), nn.ReLU())
        self.ln2 = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout(config.var_pred_dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, units, channels) -> (batch, units)."""
        x = self.dropout(self.ln1(self.conv1(x.transpose(1, 2)).transpose(1, 2)))
        x = self.dropout(self.ln2(self.conv2(x.transpose(1, 2)).transpose(1, 2)))
        return self.proj(x).squeeze(-1)


class CodeHifiGan(HifiGanGenerator):
    """Units -> waveform at `CODE_SAMPLE_RATE`: embed, stretch each unit by its predicted duration, then HiFi-GAN."""

    def __init__(self, config: CodeHifiGanConfig | None = None):
        config = config or CodeHifiGanConfig()
        super().__init__(config.generator)
        self.code_config = config
        self.dict = nn.Embedding(config.num_embeddings, config.embedding_dim)
        self.dur_predictor = DurationPredictor(config.dur_predictor) if config.dur_predictor else None

    def _check_units(self, units: Tensor) -> Tensor:
        if units.dim() == 2 and units.shape[0] == 1:
            units = units[0]
        if units.dim() != 1:
            raise ValueError(f"units must be (T,) or (1, T), got shape {tuple(units.shape)}: durations differ per item")
        if units.is_floating_point() or units.is_complex():
            raise ValueError(f"units must be integer ids, got {units.dtype}")
        if units.numel() == 0:
            raise ValueError("no units to vocode: the unit sequence is empty")
        n = self.code_config.num_embeddings
        bad = units[(units < 0) | (units >= n)].unique().tolist()
        if bad:
            raise ValueError(f"unit ids outside [0, {n}): {', '.join(map(str, bad[:5]))}" + " ..." * (len(bad) > 5))
        return units.long()

    def durations(self, units: Tensor) -> Tensor:
        """Frames per unit (T,), each at least 1: round(exp(log_dur) - 1) as fairseq; 1 each without a predictor."""
        units = self._check_units(units)
        if self.dur_predictor is None:
            return torch.ones_like(units)
        log_durations = self.dur_predictor(self.dict(units)[None])[0]
        return torch.round(torch.exp(log_durations) - 1).long().clamp(min=1)

    def forward(self, units: Tensor, durations: Tensor | None = None, from_frame: int = 0) -> Tensor:
        """Units (T,) or (1, T) -> waveform (sum(durations) * hop_length,); `durations` as `durations(units)` gives
        them, `from_frame` as `HifiGanGenerator.forward`'s."""
        units = self._check_units(units)
        durations = self.durations(units) if durations is None else durations
        frames = self.dict(units).repeat_interleave(durations, dim=0)  # (frames, embedding_dim)
        return super().forward(frames.T[None], from_frame)[0, 0]


def load_code_hifigan(checkpoint_path: str | Path, config_path: str | Path) -> CodeHifiGan:
    """fairseq's unit HiFi-GAN (e.g. LLaMA-Omni's `g_00500000` and its `config.json`)."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise FileNotFoundError(f"unit vocoder config {config_path} does not exist")
    state = read_generator_state(checkpoint_path)
    try:
        config = CodeHifiGanConfig.from_dict(json.loads(config_path.read_text()))
    except KeyError as err:
        raise ValueError(f"{config_path}: missing key {err} (see omni/vocoder/code_hifigan.py for the layout)") from err
    except ValueError as err:
        raise ValueError(f"{config_path}: {err}") from err
    model = CodeHifiGan(config)
    load_state(model, state, checkpoint_path)
    return model


class CodeHifiGanVocoder:
    """`Vocoder` over a `CodeHifiGan`: units -> audio at `CODE_SAMPLE_RATE`, each unit ending on a hop boundary."""

    def __init__(self, model: CodeHifiGan):
        self.model = model.eval()
        self.sample_rate = CODE_SAMPLE_RATE
        self.num_units = model.code_config.num_embeddings
        self.hop = model.config.hop_length

    @property
    def generator(self) -> CodeHifiGan:
        """The waveform generator (`load_vocoder` sets its dtype; durations stay fp32)."""
        return self.model

    @torch.no_grad()
    def synthesize(self, units: Sequence[int], from_unit: int = 0, lead: int = 0) -> tuple[np.ndarray, np.ndarray]:
        device = next(self.model.parameters()).device
        units = torch.as_tensor(list(units), device=device)
        durations = self.model.durations(units)
        ends = (durations.cumsum(0) * self.hop).cpu().numpy()
        audio = self.model(units, durations, first_frame(ends, from_unit, lead, self.hop))
        return audio.float().cpu().numpy(), ends
