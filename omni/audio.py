"""Audio in: read with soundfile, mix to mono, resample to 16 kHz, cut into Whisper mel windows.

Whisper sees 30 s windows of 3000 mel frames. The reference pads every clip to one full window;
by default we keep only the clip's own frames, so a 3 s question costs 300 frames, not 3000.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile
import soxr

if TYPE_CHECKING:
    import torch

# Whisper's (whisper.audio), said here so that reading and checking audio imports neither torch nor whisper:
# a command refuses a bad file before its models' heavy imports (a test checks they agree).
SAMPLE_RATE = 16000
HOP_LENGTH = 160  # samples per mel frame
WINDOW_FRAMES = 3000  # mel frames = 30 s
WINDOW_SAMPLES = SAMPLE_RATE * 30


MIN_QUESTION_SECONDS = 0.25  # shorter is no question (and gives the adaptor no frame)
MAX_QUESTION_SECONDS = 30.0  # a spoken question longer than this is refused (the server's --max-seconds default)


class AudioError(ValueError):
    """Audio that cannot be used; `kind` names the fault (the server's error kinds: omni/serve/protocol.py)."""

    def __init__(self, message: str, kind: str = "not_audio"):
        super().__init__(message)
        self.kind = kind


def question_audio(
    samples: np.ndarray, rate: int, max_seconds: float = MAX_QUESTION_SECONDS, where: str = "question"
) -> np.ndarray:
    """A decoded spoken question -> float32 mono at 16 kHz, within the limits every entry point keeps (the server,
    omni generate), with the same messages: not empty, finite, at least MIN_QUESTION_SECONDS, at most `max_seconds`."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size == 0:
        raise AudioError(f"{where}: the question has no samples", "empty_audio")
    if not np.isfinite(samples).all():
        raise AudioError(f"{where}: the question holds NaN or infinite samples", "invalid_audio")
    audio = to_mono_16k(samples, rate, where)
    seconds = len(audio) / SAMPLE_RATE
    if seconds < MIN_QUESTION_SECONDS:
        raise AudioError(f"{where}: question of {seconds:.2f} s, under {MIN_QUESTION_SECONDS} s", "too_short")
    if seconds > max_seconds:
        raise AudioError(f"{where}: question of {seconds:.1f} s, over the limit of {max_seconds:g} s", "too_long")
    return audio


def load_question(path: str | Path, max_seconds: float = MAX_QUESTION_SECONDS) -> np.ndarray:
    """A spoken question from a file, checked as the server checks one it is sent (an empty file has no samples)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        return question_audio(np.zeros(0, np.float32), SAMPLE_RATE, max_seconds, str(path))
    return question_audio(*read_audio(path), max_seconds, str(path))


def truncation(info: str) -> str | None:
    """Why a file is truncated, from libsndfile's notes on it (`SoundFile.extra_info`), or None. libsndfile reads
    what a cut-off file holds and reports only that length, noting the header's promise: "data : 32000 (should
    be 256)" means a data chunk said to hold 32,000 bytes holds 256."""
    match = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", info, re.MULTILINE)
    if match is None or int(match[2]) >= int(match[1]):
        return None
    return f"truncated: its header promises {int(match[1]):,} bytes of samples, the file holds {int(match[2]):,}"


def to_mono_16k(audio: np.ndarray, sample_rate: int, where: str = "audio") -> np.ndarray:
    """float32 mono at 16 kHz; rejects empty or non-finite input."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise AudioError(f"{where}: expected mono or (samples, channels) audio, got shape {audio.shape}")
    if audio.size == 0:
        raise AudioError(f"{where}: audio is empty", "empty_audio")
    if not np.isfinite(audio).all():
        raise AudioError(f"{where}: audio holds NaN or infinite samples", "invalid_audio")
    if sample_rate != SAMPLE_RATE:
        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE).astype(np.float32)
    return audio


def load_audio(path: str | Path, where: str | None = None) -> np.ndarray:
    """float32 mono at 16 kHz from a file; AudioError names `where` (default: the path) and what is wrong."""
    return to_mono_16k(*read_audio(path, where), where or str(path))


def read_audio(path: str | Path, where: str | None = None) -> tuple[np.ndarray, int]:
    """A file's float32 samples and their rate, as they are; AudioError names `where` (default: the path) and
    what is wrong: missing, unreadable, truncated."""
    where = where or str(path)
    about = "" if where == str(path) else f" {path}"
    if not Path(path).exists():
        raise AudioError(f"{where}: audio file not found{about}")
    if Path(path).is_dir():
        raise AudioError(f"{where}: a directory, not an audio file{about}")
    try:
        with soundfile.SoundFile(str(path)) as file:
            audio, sample_rate, notes = file.read(dtype="float32", always_2d=False), file.samplerate, file.extra_info
    except Exception as err:  # soundfile raises several types for unreadable input
        reason = getattr(err, "error_string", None) or str(err)  # libsndfile's reason without the path again
        raise AudioError(f"{where}: unreadable audio file{about} ({reason})") from err
    if cut := truncation(notes):
        raise AudioError(f"{where}: {cut} ({len(audio) / sample_rate:.3f} s of audio){about}")
    return audio, sample_rate


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
    import torch
    import whisper.audio

    # Silence after the clip: a full window in 30 s mode, else just enough for the last frames' STFT.
    padding = WINDOW_SAMPLES if pad_to_30s else whisper.audio.N_FFT
    mel = whisper.audio.log_mel_spectrogram(
        torch.from_numpy(np.asarray(audio, dtype=np.float32)), n_mels, padding=padding
    )
    sizes = window_frames(len(audio), pad_to_30s, long_audio, where)
    return [mel[:, i * WINDOW_FRAMES : i * WINDOW_FRAMES + size] for i, size in enumerate(sizes)]
