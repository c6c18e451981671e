"""Audio in: read with soundfile, mix to mono, resample to 16 kHz, cut into Whisper mel windows.

Whisper sees 30 s windows of 3000 mel frames. The reference pads every clip to one full window;
by default we keep only the clip's own frames, so a 3 s question costs 300 frames, not 3000.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch
import whisper.audio

SAMPLE_RATE = whisper.audio.SAMPLE_RATE  # 16000
HOP_LENGTH = whisper.audio.HOP_LENGTH  # 160 samples per mel frame
WINDOW_FRAMES = whisper.audio.N_FRAMES  # 3000 mel frames = 30 s
WINDOW_SAMPLES = whisper.audio.N_SAMPLES


class AudioError(ValueError):
    pass


def to_mono_16k(audio: np.ndarray, sample_rate: int, where: str = "audio") -> np.ndarray:
    """float32 mono at 16 kHz; rejects empty or non-finite input."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise AudioError(f"{where}: expected mono or (samples, channels) audio, got shape {audio.shape}")
    if audio.size == 0:
        raise AudioError(f"{where}: audio is empty")
    if not np.isfinite(audio).all():
        raise AudioError(f"{where}: audio holds NaN or infinite samples")
    if sample_rate != SAMPLE_RATE:
        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE).astype(np.float32)
    return audio


def load_audio(path: str | Path, where: str | None = None) -> np.ndarray:
    """float32 mono at 16 kHz from a file; AudioError names `where` (default: the path) and what is wrong."""
    where = where or str(path)
    about = "" if where == str(path) else f" {path}"
    if not Path(path).exists():
        raise AudioError(f"{where}: audio file not found{about}")
    if Path(path).is_dir():
        raise AudioError(f"{where}: a directory, not an audio file{about}")
    try:
        audio, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    except Exception as err:  # soundfile raises several types for unreadable input
        reason = getattr(err, "error_string", None) or str(err)  # libsndfile's reason without the path again
        raise AudioError(f"{where}: unreadable audio file{about} ({reason})") from err
    return to_mono_16k(audio, sample_rate, where)


def num_mel_frames(num_samples: int) -> int:
    return num_samples // HOP_LENGTH


def window_frames(num_samples: int, pad_to_30s: bool, long_audio: str = "window", where: str = "audio") -> list[int]:
    """Mel frames of each 30 s window a clip is encoded in."""
    frames = max(num_mel_frames(num_samples), 1)
    if frames > WINDOW_FRAMES and long_audio == "error":
        raise AudioError(
            f"{where}: clip is {num_samples / SAMPLE_RATE:.1f} s, longer than Whisper's 30 s window; "
            "set model.encoder.long_audio=window to encode it in 30 s windows"
        )
    count = math.ceil(frames / WINDOW_FRAMES)
    if pad_to_30s:
        return [WINDOW_FRAMES] * count
    return [min(WINDOW_FRAMES, frames - i * WINDOW_FRAMES) for i in range(count)]


def mel_windows(
    audio: np.ndarray, n_mels: int, pad_to_30s: bool, long_audio: str = "window", where: str = "audio"
) -> list[torch.Tensor]:
    """Log-mel windows of one clip, each (n_mels, frames <= 3000).

    The mel is computed over the clip followed by silence, as Whisper does, so the clip's own frames
    are the same in both modes; the 30 s mode keeps a full window of silence frames too.
    """
    # Silence after the clip: a full window in 30 s mode, else just enough for the last frames' STFT.
    padding = WINDOW_SAMPLES if pad_to_30s else whisper.audio.N_FFT
    mel = whisper.audio.log_mel_spectrogram(
        torch.from_numpy(np.asarray(audio, dtype=np.float32)), n_mels, padding=padding
    )
    sizes = window_frames(len(audio), pad_to_30s, long_audio, where)
    return [mel[:, i * WINDOW_FRAMES : i * WINDOW_FRAMES + size] for i, size in enumerate(sizes)]
