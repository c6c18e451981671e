import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from data_recipes.builder import tts
from data_recipes.builder.tts import TTSConfig, TTSError, make_tts, pick_voice
from omni.audio import to_mono_16k
from omni.config import ConfigError

HERE = Path(__file__).parent
FAKE_TTS = HERE / "fake_tts.py"


def assert_16k_mono(path: Path, seconds: float) -> np.ndarray:
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
    assert seconds > 0 and abs(info.duration - seconds) < 1e-3
    return soundfile.read(str(path), dtype="float32")[0]


def only(folder: Path, *names: str) -> None:
    """Nothing but these files: no temporary or partial file left behind."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


# what the demo's own recipe (data_recipes/demo/speech.py, before the builder) chose for these ids
DEMO_PICKS = {
    "capital-0-000": ("en-gb+f3", 185),
    "math-2-013": ("en-gb", 155),
    "item-7": ("en-us+m7", 170),
    "q0001": ("en-us+m7", 140),
    "weather-1-004": ("en-gb+m2", 170),
}


def test_pick_voice_matches_the_demo_and_the_seed_reshuffles():
    config = TTSConfig()
    assert {i: pick_voice(config, i)[:2] for i in DEMO_PICKS} == DEMO_PICKS
    assert {pick_voice(config, i)[2] for i in DEMO_PICKS} == {50}  # one pitch, espeak-ng's own
    ids = [f"item-{i}" for i in range(200)]
    assert len({pick_voice(config, i) for i in ids}) > 30  # spread over voices and rates
    seeded = TTSConfig(seed=7)
    picks = [pick_voice(seeded, i) for i in ids]
    assert picks == [pick_voice(seeded, i) for i in ids]  # fixed per record
    assert sum(a != b for a, b in zip(picks, [pick_voice(config, i) for i in ids], strict=True)) > 100


def test_config_is_checked():
    for bad, key in [
        (dict(voices=[]), "voices"),
        (dict(rates=[0]), "rates"),
        (dict(backend="festival"), "backend"),
        (dict(backend="command"), "command"),
        (dict(backend="command", command="mytts --voice {voice}"), "command"),  # no {out}
        (dict(backend="command", command="mytts {speaker} {out}"), "command"),
        (dict(backend="http"), "url"),
        (dict(backend="piper", voices=["joe.onnx"]), "rates"),  # words per minute are not length scales
        (dict(backend="piper", rates=[1.0]), "voices"),  # espeak names are not piper models
        (dict(timeout_s=0.0), "timeout_s"),
    ]:
        with pytest.raises(ConfigError, match=f"^{key}:"):
            TTSConfig(**bad)


def test_espeak_speaks_16k_mono_atomically_as_the_demo_does(tmp_path):
    backend = make_tts(TTSConfig())
    out = tmp_path / "out" / "a.wav"
    seconds = backend.synthesize("What is the capital of France?", "en-us+f3", 155, out)
    audio = assert_16k_mono(out, seconds)
    assert 1.0 < seconds < 4.0
    only(out.parent, "a.wav")
    # the demo's way: espeak-ng's own wav, mixed to 16 kHz mono, written as 16-bit PCM
    subprocess.run(
        ["espeak-ng", "-v", "en-us+f3", "-s", "155", "-w", str(tmp_path / "raw.wav"), "What is the capital of France?"],
        check=True,
    )
    raw, rate = soundfile.read(str(tmp_path / "raw.wav"), dtype="float32")
    soundfile.write(tmp_path / "demo.wav", to_mono_16k(raw, rate), 16000, subtype="PCM_16")
    np.testing.assert_array_equal(audio, soundfile.read(str(tmp_path / "demo.wav"), dtype="float32")[0])
    # a text starting with "-" is spoken, not read as an option
    assert backend.synthesize("-5 degrees outside", "en-us", 170, tmp_path / "minus.wav") > 0.5


def test_espeak_failures_are_tts_errors_and_leave_nothing(tmp_path):
    backend = make_tts(TTSConfig())
    out = tmp_path / "x.wav"
    for text, voice, reason in [
        ("  \n", "en-us", "empty text"),
        (None, "en-us", "empty text"),
        ("...", "en-us", "no audio"),  # espeak-ng writes silence
        ("hello", "xx-nonsense", "espeak-ng exit 1: Error: The specified espeak-ng voice does not exist."),
    ]:
        with pytest.raises(TTSError) as caught:
            backend.synthesize(text, voice, 140, out)
        assert caught.value.reason == reason
    only(tmp_path)


def test_espeak_missing_binary_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TTSError, match="apt-get install espeak-ng"):
        make_tts(TTSConfig())


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path, monkeypatch):
    out = tmp_path / "a.wav"
    out.write_bytes(b"the previous whole file")

    def write_half(path, *args, **kwargs):
        Path(path).write_bytes(b"RIFF half")
        raise KeyboardInterrupt  # a kill in the middle of writing

    monkeypatch.setattr(tts.soundfile, "write", write_half)
    with pytest.raises(KeyboardInterrupt):
        make_tts(TTSConfig()).synthesize("hello", "en-us", 140, out)
    assert out.read_bytes() == b"the previous whole file"
    only(tmp_path, "a.wav")


@pytest.fixture
def fake_log(tmp_path, monkeypatch) -> Path:
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_TTS_LOG", str(log))
    return log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def fake_engine(folder: Path, name: str) -> Path:
    """An executable `name` that runs fake_tts.py (any flags it is given)."""
    engine = folder / "bin" / name
    engine.parent.mkdir(exist_ok=True)
    engine.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_TTS}" "$@"\n')
    engine.chmod(0o755)
    return engine


def test_command_backend(tmp_path, fake_log):
    mytts = fake_engine(tmp_path, "mytts")
    config = TTSConfig(backend="command", command=f"{mytts} --voice {{voice}} --rate {{rate}} --out {{out}}")
    out = tmp_path / "wavs" / "a.wav"
    seconds = make_tts(config).synthesize("one two three four five", "anna", 1.5, out)
    assert_16k_mono(out, seconds)  # 22.05 kHz resampled
    assert abs(seconds - 0.2 * 5 * 1.5) < 0.01
    only(out.parent, "a.wav")
    call = calls(fake_log)[-1]
    assert call["stdin"] == "one two three four five" and call["argv"][:4] == ["--voice", "anna", "--rate", "1.5"]
    # {text} arrives as one argument whatever it holds
    text = '-it\'s "quoted" $HOME; rm -rf /'
    config = TTSConfig(backend="command", command=f"{mytts} --text {{text}} --out {{out}}")
    make_tts(config).synthesize(text, "v", 1, tmp_path / "wavs" / "b.wav")
    assert calls(fake_log)[-1]["argv"][:2] == ["--text", text]


def test_command_failures(tmp_path, fake_log):
    mytts = fake_engine(tmp_path, "mytts")
    backend = make_tts(TTSConfig(backend="command", command=f"{mytts} --out {{out}}", timeout_s=1.0))
    out = tmp_path / "wavs" / "a.wav"
    for text, reason in [
        ("fail", "mytts exit 3: boom: the voice is broken"),
        ("nofile", "no audio"),
        ("silent", "no audio"),
        ("hang", "timeout"),
    ]:
        with pytest.raises(TTSError) as caught:
            backend.synthesize(text, "v", 1, out)
        assert caught.value.reason == reason
    assert not out.parent.exists()
    with pytest.raises(ProcessLookupError):  # the hung engine was killed, not left running
        os.kill(calls(fake_log)[-1]["pid"], 0)
    missing = TTSConfig(backend="command", command="/nonexistent/tts --out {out}")
    with pytest.raises(TTSError, match="^cannot run tts: No such file"):
        make_tts(missing).synthesize("hello", "v", 1, out)


def test_piper_backend_with_a_fake_piper(tmp_path, fake_log):
    piper = fake_engine(tmp_path, "piper")
    config = TTSConfig(backend="piper", piper=str(piper), voices=["/voices/en_US-joe-medium.onnx"], rates=[1.2])
    voice, rate, _ = pick_voice(config, "q1")
    out = tmp_path / "wavs" / "a.wav"
    seconds = make_tts(config).synthesize("Hello there, friend.", voice, rate, out)
    assert_16k_mono(out, seconds)
    assert abs(seconds - 0.2 * 3 * 1.2) < 0.01
    call = calls(fake_log)[-1]
    assert call["stdin"] == "Hello there, friend."
    assert call["argv"][:4] == ["--model", "/voices/en_US-joe-medium.onnx", "--length_scale", "1.2"]
    assert call["argv"][4] == "--output_file" and call["argv"][5] != str(out)  # written elsewhere, then moved
    only(out.parent, "a.wav")
    with pytest.raises(TTSError, match="make piper"):
        make_tts(TTSConfig(backend="piper", piper=str(tmp_path / "nopiper"), voices=["a.onnx"], rates=[1.0]))


@pytest.fixture(scope="module")
def tts_server():
    server = subprocess.Popen([sys.executable, str(HERE / "fake_tts_server.py")], stdout=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{server.stdout.readline().strip()}"
    finally:
        server.terminate()
        server.wait(10)


def test_http_backend_resamples_to_16k_mono(tmp_path, tts_server):
    config = TTSConfig(backend="http", url=f"{tts_server}/tts", voices=["alba"], rates=[0.9])
    out = tmp_path / "a.wav"
    seconds = make_tts(config).synthesize("a spoken answer", "alba", 0.9, out)
    audio = assert_16k_mono(out, seconds)  # the server sent 22.05 kHz stereo
    assert abs(seconds - 0.75) < 0.01 and np.abs(audio).max() > 0.1
    assert httpx.get(f"{tts_server}/requests").json()[-1] == {"text": "a spoken answer", "voice": "alba", "rate": 0.9}
    only(tmp_path, "a.wav")


def test_http_failures(tmp_path, tts_server):
    backend = make_tts(TTSConfig(backend="http", url=tts_server, timeout_s=0.5))
    out = tmp_path / "a.wav"
    for text, reason in [("fail", "HTTP 500"), ("hang", "timeout"), (" ", "empty text")]:
        with pytest.raises(TTSError) as caught:
            backend.synthesize(text, "v", 1, out)
        assert caught.value.reason == reason
    with pytest.raises(TTSError, match="^unreadable audio"):
        backend.synthesize("junk", "v", 1, out)
    refused = make_tts(TTSConfig(backend="http", url="http://127.0.0.1:9"))
    with pytest.raises(TTSError, match="HTTP request failed: ConnectError"):
        refused.synthesize("hello", "v", 1, out)
    only(tmp_path)


def test_a_wav_write_clears_what_a_killed_write_of_the_same_file_left(tmp_path):
    from data_recipes.builder.tts import write_wav

    (tmp_path / ".a.wav.deadbeef.partial").write_bytes(b"half a wav")  # a SIGKILL mid-write leaves this
    (tmp_path / ".b.wav.deadbeef.partial").write_bytes(b"another record's, being written")
    seconds = write_wav(np.full(1600, 0.1, np.float32), 16000, tmp_path / "a.wav")
    assert seconds == 0.1 and sorted(p.name for p in tmp_path.iterdir()) == [".b.wav.deadbeef.partial", "a.wav"]
