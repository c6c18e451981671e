"""Training-time changes to a spoken question, so that stage 1 learns speech rather than the data's voices.

Each clip may be sped up or slowed down (tempo and pitch together, as Kaldi's speed perturbation), given a room
(a synthetic impulse response: a decaying noise tail of a random RT60), put through a telephone band (300-3400
Hz at 8 kHz), mixed with noise at a random SNR and scaled in level. The draws come from a generator seeded by
(seed, epoch, record index), so an epoch's audio is the same on every process, after any resume, and new in the
next epoch. soxr resamples and scipy filters; audiomentations was not used because it draws from the global
`random` / `np.random` state (no per-record seed) and pulls in librosa for its speed change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import soxr
from scipy.signal import butter, fftconvolve, sosfilt

from omni.audio import SAMPLE_RATE
from omni.config import check


@dataclass
class AugmentConfig:
    """What may happen to each training question's audio (stage 1); each change drawn on its own."""

    enabled: bool = False
    """true = change the training questions' audio as below (never the held-out set's)"""
    seed: int = 0
    """with the epoch and the record's index, fixes every draw"""
    speed: list[float] = field(default_factory=lambda: [0.9, 1.1])
    """speed factor drawn uniformly from [low, high] (1 = unchanged; tempo and pitch change together)"""
    speed_p: float = 0.6
    """share of clips whose speed changes"""
    reverb_p: float = 0.3
    """share of clips given a synthetic room"""
    rt60_s: list[float] = field(default_factory=lambda: [0.2, 0.7])
    """the room's reverberation time (seconds to fall by 60 dB), drawn from [low, high]"""
    telephone_p: float = 0.15
    """share of clips band-limited to a telephone's 300-3400 Hz (and 8 kHz)"""
    noise_p: float = 0.5
    """share of clips mixed with noise (white or brown, drawn)"""
    snr_db: list[float] = field(default_factory=lambda: [5.0, 30.0])
    """signal-to-noise ratio in dB, drawn from [low, high]"""
    gain_db: list[float] = field(default_factory=lambda: [-10.0, 6.0])
    """level change in dB drawn from [low, high] for every clip (0, 0 = none); the result is kept within [-1, 1]"""

    def __post_init__(self) -> None:
        for name in ("speed", "rt60_s", "snr_db", "gain_db"):
            low, high = getattr(self, name)
            check(low <= high, name, f"expected [low, high], got {getattr(self, name)}")
        for name in ("speed_p", "reverb_p", "telephone_p", "noise_p"):
            check(0 <= getattr(self, name) <= 1, name, f"must be in [0, 1], got {getattr(self, name)}")
        check(self.speed[0] > 0 and self.rt60_s[0] > 0, "speed", "speed and rt60_s must be above 0")


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Played `factor` times faster: resampled as if recorded at `factor` x the rate (Kaldi's speed perturbation)."""
    return soxr.resample(audio, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)


def add_room(audio: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Convolved with a synthetic room: the direct sound, then noise decaying by 60 dB over `rt60_s`."""
    t = np.arange(int(rt60_s * SAMPLE_RATE)) / SAMPLE_RATE
    response = rng.standard_normal(len(t)) * np.exp(-6.908 * t / rt60_s) * 0.3
    response[0] = 1.0
    wet = fftconvolve(audio, response)[: len(audio)]
    return (wet * np.abs(audio).max() / max(np.abs(wet).max(), 1e-9)).astype(np.float32)


def telephone(audio: np.ndarray) -> np.ndarray:
    """Through a telephone line: 8 kHz, 300-3400 Hz."""
    narrow = soxr.resample(audio, SAMPLE_RATE, 8000)
    band = sosfilt(butter(4, [300, 3400], btype="bandpass", fs=8000, output="sos"), narrow)
    return soxr.resample(band, 8000, SAMPLE_RATE)[: len(audio)].astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Mixed with white or brown (1/f^2, rumble-like) noise at `snr_db`."""
    noise = rng.standard_normal(len(audio))
    if rng.random() < 0.5:
        noise = np.cumsum(noise)
        noise -= np.linspace(noise[0], noise[-1], len(noise))  # no drift: brown noise around zero
    signal_power = float(np.mean(audio.astype(np.float64) ** 2))
    noise_power = max(float(np.mean(noise**2)), 1e-12)
    return (audio + noise * np.sqrt(signal_power / noise_power / 10 ** (snr_db / 10))).astype(np.float32)


def augment(audio: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One clip changed as `config` draws it with `rng`; every draw is made whatever is applied, so that one
    change's probability never shifts another's randomness."""
    draws = rng.random(4)
    speed = rng.uniform(*config.speed)
    rt60 = rng.uniform(*config.rt60_s)
    snr = rng.uniform(*config.snr_db)
    gain = rng.uniform(*config.gain_db)
    if draws[0] < config.speed_p:
        audio = change_speed(audio, speed)
    if draws[1] < config.reverb_p:
        audio = add_room(audio, rt60, rng)
    if draws[2] < config.telephone_p:
        audio = telephone(audio)
    if draws[3] < config.noise_p:
        audio = add_noise(audio, snr, rng)
    return np.clip(audio * 10 ** (gain / 20), -1.0, 1.0).astype(np.float32)
