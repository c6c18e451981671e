"""The speech-quality predictor loads offline and ranks clean speech above the same speech degraded."""

import subprocess

import numpy as np
import pytest
import soundfile

from omni.audio import SAMPLE_RATE, to_mono_16k
from omni.eval.quality import MIN_SECONDS, Quality, main, mean_quality

SENTENCES = [
    "The capital of France is Paris, a city on the river Seine.",
    "Drink a glass of water in the morning and take a short walk after lunch.",
    "Two plus three is five, and five times four is twenty.",
]


def degraded(clean: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    if how == "noise at 0 dB":
        noise = rng.standard_normal(len(clean)).astype(np.float32)
        return clean + noise * np.sqrt(np.mean(clean**2) / np.mean(noise**2))
    if how == "clipped":
        return np.clip(clean * 20, -0.05, 0.05) * 10
    if how == "telephone, 3-bit":  # band-limited to 300-3,400 Hz and quantised to 8 levels
        spectrum = np.fft.rfft(clean)
        freqs = np.fft.rfftfreq(len(clean), 1 / SAMPLE_RATE)
        spectrum[(freqs < 300) | (freqs > 3400)] = 0
        narrow = np.fft.irfft(spectrum, len(clean))
        return np.round(narrow / np.abs(narrow).max() * 4) / 4 * 0.5
    raise ValueError(how)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[np.ndarray]:
    folder = tmp_path_factory.mktemp("quality")
    out = []
    for i, text in enumerate(SENTENCES):
        path = folder / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
        audio, rate = soundfile.read(path, dtype="float32")
        out.append(0.5 * to_mono_16k(audio, rate) / np.abs(audio).max())
    return out


@pytest.fixture(scope="module")
def quality() -> Quality:
    return Quality()


@pytest.fixture(scope="module")
def clean_scores(quality, clips) -> list[dict[str, float]]:
    return [quality(clean) for clean in clips]


@pytest.mark.parametrize("how", ["noise at 0 dB", "clipped", "telephone, 3-bit"])
def test_clean_speech_scores_above_the_same_speech_degraded(quality, clips, clean_scores, how):
    rng = np.random.default_rng(0)
    for clean, good in zip(clips, clean_scores, strict=True):
        bad = quality(degraded(clean, how, rng).astype(np.float32))
        assert set(good) == {"mos", "overall", "signal", "background"}
        assert 1.0 <= good["mos"] <= 5.0
        assert good["mos"] > bad["mos"] and good["overall"] > bad["overall"], (how, good, bad)


def test_too_short_or_broken_clips_get_no_score_and_are_counted(quality, clips, clean_scores):
    assert quality(clips[0][: int(MIN_SECONDS * SAMPLE_RATE) - 1]) is None
    assert quality(np.full(SAMPLE_RATE, np.nan, np.float32)) is None
    scored = clean_scores[0]
    means = mean_quality([scored, None, scored])
    assert means["unscored"] == 1 and means["mos_mean"] == pytest.approx(scored["mos"])
    assert mean_quality([None]) == {"mos_mean": None, "overall_mean": None, "signal_mean": None} | {
        "background_mean": None,
        "unscored": 1,
    }


def test_the_command_scores_each_file(clips, tmp_path, capsys):
    path = tmp_path / "a.wav"
    soundfile.write(path, clips[1], SAMPLE_RATE)
    main([str(path)])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}: mos ") and "background" in line
