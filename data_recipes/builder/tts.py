"""Text to speech for the builder: espeak-ng, Piper, or any engine behind a command or an HTTP endpoint.

Every backend writes 16 kHz mono 16-bit wav (what omni reads and the units step expects), atomically, and
returns its duration. Any failure is a `TTSError` with a short reason: the build skips that record and keeps
the reason for its report, so one bad text never stops a build of thousands.

Piper (piper-tts 1.8, GPL-3.0) runs as a separate program in its own venv (`make piper`), never imported;
the command and http backends plug in CosyVoice or any other engine without code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np
import soundfile

from omni.atomic import atomic_path, clear_partials
from omni.audio import SAMPLE_RATE, AudioError, to_mono_16k
from omni.config import ConfigError, check, check_positive

Backend = Literal["espeak", "piper", "command", "http"]

# espeak-ng voice variants that give cheap speaker variety, and speaking rates in words per minute.
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
PLACEHOLDERS = ("text", "voice", "rate", "pitch", "out")  # what a command template may name


@dataclass
class TTSConfig:
    """Which engine speaks, and the voices and rates instructions are spread over."""

    backend: Backend = "espeak"
    """espeak | piper | command | http"""
    voices: list[str] = field(default_factory=lambda: list(VOICES))
    """espeak voice names | piper .onnx model paths | any string passed as {voice}"""
    rates: list[float] = field(default_factory=lambda: list(RATES))
    """espeak words per minute | piper length scale (1.0 = the voice's own pace) | passed as {rate}"""
    pitches: list[int] = field(default_factory=lambda: [50])
    """espeak pitch, 0-99 (50 is its own) | passed as {pitch} | ignored by piper and http"""
    seed: int = 0
    """mixed into each record's voice choice; 0 keeps the demo's choice exactly"""
    command: str | None = None
    """command backend: e.g. "mytts --voice {voice} --rate {rate} --out {out}"; text on stdin or as {text}"""
    url: str | None = None
    """http backend: POST JSON {"text", "voice", "rate"}, audio bytes (wav/flac) in the response body"""
    piper: str = "piper"
    """piper backend: the piper executable, a separate GPL program (make piper: .cache/piper/bin/piper)"""
    timeout_s: float = 60.0
    """seconds one synthesis may take before it is abandoned"""

    def __post_init__(self) -> None:
        check(self.backend in get_args(Backend), "backend", f"must be one of {get_args(Backend)}, got {self.backend!r}")
        check(bool(self.voices), "voices", "must name at least one voice")
        check(bool(self.rates), "rates", "must hold at least one rate")
        check(all(rate > 0 for rate in self.rates), "rates", f"must all be above 0, got {self.rates}")
        check(bool(self.pitches), "pitches", "must hold at least one pitch")
        check(all(0 <= p <= 99 for p in self.pitches), "pitches", f"must all be in [0, 99], got {self.pitches}")
        check_positive(self, "timeout_s")
        if self.backend == "command":
            check(bool(self.command), "command", "the command backend needs a template, e.g. 'mytts --out {out}'")
            try:
                self.command.format(**dict.fromkeys(PLACEHOLDERS, ""))
            except (KeyError, IndexError, ValueError) as err:
                known = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
                raise ConfigError(f"command: bad placeholder ({err!r}); known: {known}; {{{{ is a brace") from err
            check("{out}" in self.command, "command", "must name {out}, the wav path the command writes")
        if self.backend == "http":
            check(str(self.url).startswith(("http://", "https://")), "url", f"needs an http(s) URL, got {self.url}")
        if self.backend == "piper":
            check(
                max(self.rates) <= 5, "rates", f"piper's are length scales (1.0 = the voice's pace), got {self.rates}"
            )
            check(
                all(voice.endswith(".onnx") for voice in self.voices),
                "voices",
                f"piper's are .onnx model paths (make piper installs en_US-joe-medium.onnx), got {self.voices}",
            )


class TTSError(Exception):
    """One text that could not be spoken; `reason` is short, for the build's report."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TTSBackend(Protocol):
    def synthesize(self, text: str, voice: str, rate: float, out: Path, pitch: int = 50) -> float:
        """Speak `text` into `out` as 16 kHz mono 16-bit PCM wav, written atomically (temp name + os.replace,
        so a kill never leaves a half file at `out`); returns seconds; raises TTSError."""
        ...


def pick_voice(config: TTSConfig, record_id: str) -> tuple[str, float, int]:
    """A fixed voice, rate and pitch per record, spread by a hash of its id (and seed): a rerun speaks each
    record the same way. Seed 0 gives the voice and rate the demo set was first built with."""
    key = record_id if config.seed == 0 else f"{config.seed}:{record_id}"
    digest = int(hashlib.sha1(key.encode()).hexdigest(), 16)
    voices, rates, pitches = config.voices, config.rates, config.pitches
    rate = rates[(digest // len(voices)) % len(rates)]
    return voices[digest % len(voices)], rate, pitches[(digest // len(voices) // len(rates)) % len(pitches)]


def pick_engine(engines: int, record_id: str) -> int:
    """Which of `engines` engines speaks a record, by a hash of its id (0 when there is one)."""
    return int(hashlib.sha1(f"engine:{record_id}".encode()).hexdigest(), 16) % engines


def engine_name(config: TTSConfig) -> str:
    """What the report calls an engine: the backend, or a command's program."""
    return (
        Path(shlex.split(config.command)[0]).name if config.backend == "command" and config.command else config.backend
    )


def make_tts(config: TTSConfig) -> TTSBackend:
    """The configured backend; a missing espeak-ng or piper fails here, once, not on every record."""
    if config.backend == "espeak":
        return EspeakTTS(config.timeout_s)
    if config.backend == "piper":
        return PiperTTS(config.piper, config.timeout_s)
    if config.backend == "command":
        return CommandTTS(config.command, config.timeout_s)
    return HttpTTS(config.url, config.timeout_s)


def write_wav(audio: np.ndarray, sample_rate: int, out: Path) -> float:
    """Write `audio` to `out` as 16 kHz mono 16-bit wav under a temporary name, then rename it: a kill
    leaves either no file or a whole one, so a rerun can trust what exists. Returns seconds; AudioError
    for empty, non-finite or silent audio."""
    audio = to_mono_16k(audio, sample_rate, where=str(out))
    if not np.any(audio):
        raise AudioError(f"{out}: audio is silent")
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_partials(out.parent, out.name)  # a killed run's (one writer per record)
    with atomic_path(out, unique=True) as partial:  # hidden, not *.wav: globs never see it
        soundfile.write(partial, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return len(audio) / SAMPLE_RATE


def _checked(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise TTSError("empty text")
    return text


def _save(source: Path | io.BytesIO, out: Path) -> float:
    """Decode what an engine produced (any rate, any channels) and write it to `out`."""
    if isinstance(source, Path) and (not source.is_file() or source.stat().st_size == 0):
        raise TTSError("no audio")
    try:
        audio, sample_rate = soundfile.read(str(source) if isinstance(source, Path) else source, dtype="float32")
    except Exception as err:  # soundfile raises several types for unreadable input
        raise TTSError(f"unreadable audio: {getattr(err, 'error_string', None) or err}") from err
    try:
        return write_wav(audio, sample_rate, out)
    except AudioError as err:
        raise TTSError("no audio") from err


def _run(argv: list[str], text: str, timeout_s: float) -> None:
    """Run an engine with `text` on stdin. It gets its own process group so that a timeout or Ctrl-C ends
    whatever it started too; a non-zero exit becomes a TTSError with the last line it wrote to stderr."""
    name = Path(argv[0]).name
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except (OSError, ValueError) as err:  # not found, not executable, a NUL in an argument
        raise TTSError(f"cannot run {name}: {getattr(err, 'strerror', None) or err}") from err
    try:
        _, stderr = process.communicate(text.encode(errors="replace"), timeout=timeout_s)
    except BaseException as err:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        if isinstance(err, subprocess.TimeoutExpired):
            raise TTSError("timeout") from None
        raise
    if process.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines()
        raise TTSError(f"{name} exit {process.returncode}: {lines[-1][:200] if lines else '(no stderr)'}")


def _executable(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise TTSError(f"{name} not found: {hint}")
    return found


class _ProgramTTS:
    """A backend that runs a program which writes a wav file; subclasses say how it is called."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s

    def argv(self, text: str, voice: str, rate: float, wav: Path, pitch: int) -> list[str]:
        raise NotImplementedError

    def synthesize(self, text: str, voice: str, rate: float, out: Path, pitch: int = 50) -> float:
        text = _checked(text)
        with tempfile.TemporaryDirectory(prefix="omni-tts-") as tmp:
            wav = Path(tmp) / "speech.wav"  # the engine writes here; only a whole, converted file reaches `out`
            _run(self.argv(text, voice, rate, wav, pitch), text, self.timeout_s)
            return _save(wav, out)


class EspeakTTS(_ProgramTTS):
    """espeak-ng, called as the demo set was first built; `--` keeps a text starting with "-" a text."""

    def __init__(self, timeout_s: float = 60.0):
        super().__init__(timeout_s)
        self.binary = _executable("espeak-ng", "apt-get install espeak-ng")

    def argv(self, text: str, voice: str, rate: float, wav: Path, pitch: int) -> list[str]:
        pitched = [] if pitch == 50 else ["-p", str(pitch)]  # 50 is espeak-ng's own: the demo set's first call
        return [self.binary, "-v", voice, "-s", str(round(rate)), *pitched, "-w", str(wav), "--", text]


class PiperTTS(_ProgramTTS):
    """piper-tts 1.8's CLI: each line of stdin is spoken; `rate` is its length scale (above 1 is slower)."""

    def __init__(self, piper: str = "piper", timeout_s: float = 60.0):
        super().__init__(timeout_s)
        self.binary = _executable(piper, "make piper installs it as .cache/piper/bin/piper")

    def argv(self, text: str, voice: str, rate: float, wav: Path, pitch: int) -> list[str]:
        return [self.binary, "--model", voice, "--length_scale", f"{rate:g}", "--output_file", str(wav)]


class CommandTTS(_ProgramTTS):
    """Any engine run by a command template. Values are shell-quoted into it before it is split, so a
    {text} stays one argument, also inside a double-quoted `sh -c "..."`."""

    def __init__(self, template: str, timeout_s: float = 60.0):
        super().__init__(timeout_s)
        self.template = template

    def argv(self, text: str, voice: str, rate: float, wav: Path, pitch: int) -> list[str]:
        values = {"text": text, "voice": voice, "rate": f"{rate:g}", "pitch": str(pitch), "out": str(wav)}
        return shlex.split(self.template.format(**{key: shlex.quote(value) for key, value in values.items()}))


class HttpTTS:
    """An engine behind an HTTP endpoint: POST JSON {"text", "voice", "rate"}, audio bytes come back."""

    def __init__(self, url: str, timeout_s: float = 60.0):
        import httpx  # only this backend needs it

        self.url = url
        self.client = httpx.Client(timeout=timeout_s)  # keeps connections open across records; thread-safe
        self.httpx = httpx

    def synthesize(self, text: str, voice: str, rate: float, out: Path, pitch: int = 50) -> float:
        text = _checked(text)
        try:
            response = self.client.post(self.url, json={"text": text, "voice": voice, "rate": rate})
        except self.httpx.TimeoutException:
            raise TTSError("timeout") from None
        except self.httpx.HTTPError as err:
            raise TTSError(f"HTTP request failed: {type(err).__name__}") from err
        if not response.is_success:
            raise TTSError(f"HTTP {response.status_code}")
        if not response.content:
            raise TTSError("no audio")
        return _save(io.BytesIO(response.content), out)
