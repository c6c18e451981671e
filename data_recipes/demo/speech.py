"""Instructions spoken by espeak-ng across voices and speaking rates, saved as 16 kHz mono wavs.

espeak-ng is cheap (hundreds of seconds of audio per CPU second) and its voice variants give the
speaker variety a demo needs. Every file is written to a temporary name and renamed, so a rerun
after a crash trusts whatever exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import soundfile

from omni.audio import SAMPLE_RATE, to_mono_16k

VOICES = [
    "en-us",
    "en-us+f2",
    "en-us+f3",
    "en-us+f4",
    "en-us+m1",
    "en-us+m3",
    "en-us+m4",
    "en-us+m7",
    "en-gb",
    "en-gb+f3",
    "en-gb+m2",
]
RATES = [140, 155, 170, 185]
RESPONSE_VOICE = ("en-us", 165)  # every answer in one consistent voice: the speech decoder learns one speaker


def espeak_binary() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise FileNotFoundError("espeak-ng is not installed: apt-get install espeak-ng (make data-demo does it)")
    return binary


def voice_for(item_id: str) -> tuple[str, int]:
    """A fixed voice and rate per item, spread evenly by a hash of its id."""
    digest = int(hashlib.sha1(item_id.encode()).hexdigest(), 16)
    return VOICES[digest % len(VOICES)], RATES[(digest // len(VOICES)) % len(RATES)]


def synthesize(text: str, voice: str, rate: int, out: Path) -> float:
    """Speak `text` into `out` (16 kHz mono, 16-bit); returns its duration in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(
            [espeak_binary(), "-v", voice, "-s", str(rate), "-w", str(raw), text], check=True, capture_output=True
        )
        audio, rate_in = soundfile.read(raw, dtype="float32")
    audio = to_mono_16k(audio, rate_in, where=str(out))
    partial = out.with_suffix(".partial.wav")
    soundfile.write(partial, audio, SAMPLE_RATE, subtype="PCM_16")
    os.replace(partial, out)
    return len(audio) / SAMPLE_RATE
