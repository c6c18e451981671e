"""The log-mel spectrogram HiFi-GAN V1 was trained on (jik876/hifi-gan's meldataset), in torch alone.

A vocoder only sounds right on the features it was trained with: librosa's Slaney mel filterbank (htk=False,
norm="slaney"), a magnitude (not power) STFT and a natural log clamped at 1e-5. librosa and torchaudio are not
dependencies of omni, so the filterbank is rebuilt here and checked against the librosa filters Whisper ships.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4).
_HZ_PER_MEL = 200.0 / 3.0
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _HZ_PER_MEL
_MELS_PER_LOG = 27.0 / math.log(6.4)


def hz_to_mel(hz: Tensor) -> Tensor:
    linear = hz / _HZ_PER_MEL
    log = _LOG_START_MEL + torch.log(hz.clamp(min=_LOG_START_HZ) / _LOG_START_HZ) * _MELS_PER_LOG
    return torch.where(hz >= _LOG_START_HZ, log, linear)


def mel_to_hz(mel: Tensor) -> Tensor:
    linear = mel * _HZ_PER_MEL
    log = _LOG_START_HZ * torch.exp((mel - _LOG_START_MEL) / _MELS_PER_LOG)
    return torch.where(mel >= _LOG_START_MEL, log, linear)


def slaney_mel_filters(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> Tensor:
    """Triangular filters (n_mels, n_fft // 2 + 1), as librosa.filters.mel with its defaults (Slaney scale and norm)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges_mel = torch.linspace(*hz_to_mel(torch.tensor([fmin, fmax], dtype=torch.float64)).tolist(), n_mels + 2)
    edges = mel_to_hz(edges_mel.double())  # n_mels + 2 edges: filter i rises on [i, i+1] and falls on [i+1, i+2]
    widths = edges.diff()
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    filters = torch.minimum(rising, falling).clamp(min=0)
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney norm: each filter has unit area in Hz
    return filters.float()


@dataclass(frozen=True)
class MelConfig:
    """Analysis settings; the defaults are HiFi-GAN V1's (LJSpeech and universal checkpoints, 22.05 kHz)."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop: int = 256
    win: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0


def log_mel(audio: Tensor, config: MelConfig = MelConfig()) -> Tensor:
    """Log-magnitude mel spectrogram (..., n_mels, samples // hop) of audio (..., samples) at config.sample_rate.

    Padded as jik876's meldataset pads ((n_fft - hop) / 2 reflected on each side, no centring), so frame i
    covers the samples HiFi-GAN generates for it: frames * hop = samples.
    """
    pad = (config.n_fft - config.hop) // 2
    if audio.shape[-1] <= pad:
        raise ValueError(f"audio of {audio.shape[-1]} samples is too short for reflect padding of {pad}")
    flat = torch.nn.functional.pad(audio.reshape(-1, 1, audio.shape[-1]).float(), (pad, pad), mode="reflect")[:, 0]
    window = torch.hann_window(config.win, device=audio.device)
    spec = torch.stft(flat, config.n_fft, config.hop, config.win, window, center=False, return_complex=True).abs()
    filters = slaney_mel_filters(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)
    mel = filters.to(spec.device) @ spec
    return torch.log(mel.clamp(min=1e-5)).reshape(*audio.shape[:-1], config.n_mels, -1)
