import numpy as np
import pytest
import soundfile

from omni.audio import WINDOW_FRAMES, AudioError, load_audio, mel_windows, to_mono_16k, window_frames
from tests.conftest import noise


def test_stereo_is_mixed_down_and_resampled(tmp_path):
    left, right = noise(1.0, 1), noise(1.0, 2)
    stereo = np.stack([left, right], axis=1)
    path = tmp_path / "s.wav"
    soundfile.write(path, stereo, 16000)
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-4)  # 16-bit wav rounding
    resampled = to_mono_16k(np.zeros(8000, np.float32), 8000)
    assert resampled.shape == (16000,)


@pytest.mark.parametrize(("audio", "message"), [(np.zeros(0), "empty"), (np.array([0.0, np.nan]), "NaN")])
def test_bad_samples_are_rejected(audio, message):
    with pytest.raises(AudioError, match=message):
        to_mono_16k(audio, 16000, where="clip.wav")


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "bad.wav"
    path.write_bytes(b"not audio")
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(path)


def test_windows_variable_and_padded():
    assert window_frames(16000 * 3, pad_to_30s=False) == [300]
    assert window_frames(16000 * 3, pad_to_30s=True) == [WINDOW_FRAMES]
    assert window_frames(16000 * 40, pad_to_30s=False) == [3000, 1000]
    assert window_frames(16000 * 40, pad_to_30s=True) == [3000, 3000]
    with pytest.raises(AudioError, match=r"40\.0 s.*long_audio=window"):
        window_frames(16000 * 40, pad_to_30s=False, long_audio="error")


def test_clip_frames_agree_between_modes():
    audio = noise(3.3)
    (short,) = mel_windows(audio, 80, pad_to_30s=False)
    (padded,) = mel_windows(audio, 80, pad_to_30s=True)
    assert short.shape == (80, 330) and padded.shape == (80, 3000)
    assert np.array_equal(short.numpy(), padded[:, :330].numpy())


def truncated_wav(path, seconds: float = 1.0, kept_bytes: int = 256):
    """A 16-bit wav whose header promises `seconds` of samples but whose file was cut after `kept_bytes` of them."""
    soundfile.write(path, noise(seconds), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: 44 + kept_bytes])
    return path


def test_a_truncated_file_is_refused_with_its_real_length(tmp_path):
    path = truncated_wav(tmp_path / "cut.wav")
    assert soundfile.info(str(path)).frames == 128  # libsndfile reports only what the file holds
    with pytest.raises(
        AudioError, match=r"cut\.wav: truncated: its header promises 32,000 bytes .* holds 256 .*0\.008 s"
    ):
        load_audio(path)
    whole = tmp_path / "whole.wav"
    soundfile.write(whole, noise(1.0), 16000, subtype="PCM_16")
    assert len(load_audio(whole)) == 16000


def test_audio_constants_are_whispers():
    import whisper.audio

    from omni import audio

    expected = (whisper.audio.SAMPLE_RATE, whisper.audio.HOP_LENGTH, whisper.audio.N_FRAMES, whisper.audio.N_SAMPLES)
    assert expected == (audio.SAMPLE_RATE, audio.HOP_LENGTH, audio.WINDOW_FRAMES, audio.WINDOW_SAMPLES)
