"""Training-time augmentation of spoken questions: each change does what it says, draws are seeded by
(seed, epoch, index), and a dataset with it on gives the same audio for the same epoch after any reopening."""

import json

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from omni.augment import AugmentConfig, add_noise, add_room, augment, change_speed, telephone
from omni.config import ConfigError
from omni.data import SpeechInstructionDataset

RATE = 16000


def tone_mix(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 1000 * t) + 0.2 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)


def band_power(audio: np.ndarray, low: float, high: float) -> float:
    freqs, power = welch(audio, RATE, nperseg=1024)
    return float(power[(freqs >= low) & (freqs < high)].sum())


def test_speed_changes_the_length_by_its_factor():
    audio = tone_mix()
    assert len(change_speed(audio, 1.1)) == pytest.approx(len(audio) / 1.1, abs=2)
    assert len(change_speed(audio, 0.9)) == pytest.approx(len(audio) / 0.9, abs=2)


def test_noise_is_mixed_at_the_asked_snr():
    audio = tone_mix()
    for snr in (5.0, 20.0):
        noisy = add_noise(audio, snr, np.random.default_rng(0))
        noise = noisy - audio
        measured = 10 * np.log10(np.mean(audio.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
        assert measured == pytest.approx(snr, abs=0.01)


def test_telephone_keeps_the_voice_band_and_drops_what_is_above_it():
    audio = tone_mix()
    phoned = telephone(audio)
    assert len(phoned) == len(audio)
    assert band_power(phoned, 5000, 7000) < 1e-4 * band_power(audio, 5000, 7000)
    assert band_power(phoned, 900, 1100) > 0.5 * band_power(audio, 900, 1100)


def test_a_room_leaves_a_decaying_tail_after_the_sound():
    click = np.zeros(RATE, dtype=np.float32)
    click[100] = 1.0
    wet = add_room(click, 0.5, np.random.default_rng(0))
    tail = np.abs(wet[200 + RATE // 10 : 200 + RATE // 5]).mean()
    later = np.abs(wet[200 + RATE // 2 : 200 + RATE * 6 // 10]).mean()
    assert tail > 0 and later < tail / 10  # it rings, then dies away
    assert np.abs(wet).max() == pytest.approx(1.0)


def test_draws_follow_the_generator_and_the_config_is_checked():
    audio, config = tone_mix(), AugmentConfig(enabled=True, speed_p=1.0, noise_p=1.0, reverb_p=1.0, telephone_p=1.0)
    first = augment(audio, config, np.random.default_rng([0, 0, 3]))
    assert np.array_equal(first, augment(audio, config, np.random.default_rng([0, 0, 3])))
    assert not np.array_equal(first[:1000], augment(audio, config, np.random.default_rng([0, 1, 3]))[:1000])
    assert np.abs(first).max() <= 1.0 and first.dtype == np.float32
    with pytest.raises(ConfigError, match="snr_db"):
        AugmentConfig(snr_db=[30, 5])
    with pytest.raises(ConfigError, match="noise_p"):
        AugmentConfig(noise_p=1.5)


def test_the_dataset_augments_each_epoch_anew_and_the_same_after_reopening(tmp_path):
    rows = []
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", tone_mix(1.0 + i / 10), RATE)
        rows.append({"id": f"q{i}", "audio": f"{i}.wav", "response": "yes"})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = AugmentConfig(enabled=True, noise_p=1.0)

    def epoch_audio(epoch: int) -> list[np.ndarray]:
        data = SpeechInstructionDataset(tmp_path / "train.jsonl", augment=config)
        data.set_epoch(epoch)
        return [data[i].audio for i in range(3)]

    plain = SpeechInstructionDataset(tmp_path / "train.jsonl")
    first, again, second = epoch_audio(0), epoch_audio(0), epoch_audio(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))  # a resume sees the same audio
    assert not any(np.array_equal(a, b) for a, b in zip(first, second, strict=True))  # a new epoch, new audio
    assert not np.array_equal(first[0][:100], first[1][:100])  # each record its own draws
    assert not any(np.array_equal(plain[i].audio, first[i]) for i in range(3))
    off = SpeechInstructionDataset(tmp_path / "train.jsonl", augment=AugmentConfig(enabled=False))
    assert all(np.array_equal(plain[i].audio, off[i].audio) for i in range(3))
