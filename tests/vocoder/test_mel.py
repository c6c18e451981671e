"""HiFi-GAN's log-mel features: librosa's Slaney filterbank rebuilt in torch, and the STFT around it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper

from omni.vocoder.mel import MelConfig, hz_to_mel, log_mel, mel_to_hz, slaney_mel_filters

WHISPER_FILTERS = Path(whisper.__file__).parent / "assets" / "mel_filters.npz"  # librosa.filters.mel(16000, 400, n)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_filterbank_matches_librosa_filters_shipped_by_whisper(n_mels):
    reference = np.load(WHISPER_FILTERS)[f"mel_{n_mels}"]
    ours = slaney_mel_filters(16000, 400, n_mels)
    assert ours.shape == reference.shape == (n_mels, 201) and ours.dtype == torch.float32
    assert np.abs(ours.numpy() - reference).max() < 1e-6  # the filters peak at ~0.03-0.04


def test_mel_scale_is_slaneys():
    hz = torch.tensor([0.0, 500.0, 1000.0, 6400.0, 8000.0], dtype=torch.float64)
    assert hz_to_mel(hz)[:4].tolist() == pytest.approx([0.0, 7.5, 15.0, 15.0 + 27.0])  # 27 mels per factor 6.4
    assert mel_to_hz(hz_to_mel(hz)).tolist() == pytest.approx(hz.tolist())


def test_hifigan_filters_stop_at_fmax():
    filters = slaney_mel_filters(22050, 1024, 80, fmax=8000.0)
    fft_hz = np.linspace(0, 11025, 513)
    assert filters.shape == (80, 513)
    assert filters[:, fft_hz >= 8000].abs().max() == 0 and (filters.sum(1) > 0).all()


def test_log_mel_shapes():
    assert log_mel(torch.zeros(22050), MelConfig()).shape == (80, 86)  # 22050 // 256 frames, as jik876 pads
    assert log_mel(torch.randn(2, 3, 22050)).shape == (2, 3, 80, 86)


def test_log_mel_values_match_a_plain_numpy_frame():
    config = MelConfig()
    t = np.arange(22050) / config.sample_rate
    rng = np.random.default_rng(0)
    audio = (0.5 * np.sin(2 * math.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    frame = 20  # jik876 pads (n_fft - hop) / 2: frame i starts that far before i * hop
    start = frame * config.hop - (config.n_fft - config.hop) // 2
    window = 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(config.n_fft) / config.n_fft)  # periodic Hann
    magnitude = np.abs(np.fft.rfft(audio[start : start + config.n_fft].astype(np.float64) * window))
    filters = slaney_mel_filters(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax).double()
    expected = np.log(np.maximum(filters.numpy() @ magnitude, 1e-5))
    ours = log_mel(torch.from_numpy(audio), config)[:, frame].double().numpy()
    assert np.abs(ours - expected).max() < 1e-3
    peak_hz = mel_to_hz(torch.linspace(*hz_to_mel(torch.tensor([0.0, 8000.0])).tolist(), 82))[1:-1]
    assert abs(peak_hz[ours.argmax()].item() - 440) < 60  # the loudest band is the tone's


def test_silence_is_clamped_and_short_audio_rejected():
    assert torch.equal(log_mel(torch.zeros(4000)), torch.full((80, 15), math.log(1e-5)))
    with pytest.raises(ValueError, match="too short"):
        log_mel(torch.zeros(384))
