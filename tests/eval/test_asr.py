"""The ear: Whisper's greedy decoding, falling back as Whisper does only where a transcript loops (seeded), and the
caller's random generators left as they were."""

from pathlib import Path

import soundfile
import torch
import whisper
from whisper.utils import compression_ratio

from omni import assets
from omni.eval.asr import LOOPING_RATIO, Ear, words

# the demo's spoken answer "A volcano is a volcano that erupts in the air.", which greedy Whisper base hears as
# "Okay, no, no, no, ..." (written by `python -m omni.eval.latency` on 2026-12-06)
LOOPING = Path(__file__).with_name("fixtures") / "looping_answer.wav"


def test_the_ear_does_not_loop_where_greedy_decoding_does():
    model = whisper.load_model(str(assets.ensure("whisper_base")), device="cpu")
    audio, rate = soundfile.read(LOOPING, dtype="float32")
    assert rate == whisper.audio.SAMPLE_RATE
    greedy = model.transcribe(audio, language="en", temperature=0.0, fp16=False, sample_len=48)["text"]  # 48 will do
    assert compression_ratio(greedy) > LOOPING_RATIO  # the fixture still makes greedy decoding loop

    state = torch.random.get_rng_state()
    heard = Ear(model)(audio)
    assert compression_ratio(heard) <= LOOPING_RATIO
    assert 0 < len(words(heard)) < 20  # greedy decoding goes on for 224 tokens
    assert torch.equal(torch.random.get_rng_state(), state)
    assert Ear(model)(audio[:0]) == ""
