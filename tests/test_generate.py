import inspect
import os
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch

from omni.config import DecoderInputConfig, SpeechDecoderConfig
from omni.decoder_input import TextEmbeddings
from omni.model import OmniModel
from omni.prompt import SPEECH_TOKEN_ID
from omni.speech_decoder import SpeechDecoder
from omni.speech_generator import LiveBatch, Question, SpeechGenerator
from tests.conftest import noise
from tests.tones import Tones


@pytest.fixture(scope="module")
def parts(tiny_dir):
    from omni.config import AdaptorConfig, EncoderConfig, LLMConfig, ModelConfig

    torch.manual_seed(0)
    config = ModelConfig(
        encoder=EncoderConfig(name_or_path=str(tiny_dir / "whisper_tiny.pt")),
        adaptor=AdaptorConfig(stride=5, hidden_size=32),
        llm=LLMConfig(name_or_path=str(tiny_dir / "llm"), train="full"),
    )
    model = OmniModel.from_config(config).eval()
    sizes = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}
    decoder_config = SpeechDecoderConfig(num_units=6, upsample=4, **sizes)
    decoder = SpeechDecoder(decoder_config, model.hidden_size).eval()
    with torch.no_grad():
        decoder.output_proj.bias[-1] = -2.0  # fewer blanks: random weights then emit units at most frames
    return model, decoder


def run(parts, **kwargs):
    model, decoder = parts
    generator = SpeechGenerator(model, decoder, Tones(), join="bare", incremental=kwargs.pop("incremental", True))
    torch.manual_seed(0)  # sampled tokens: a random LLM's greedy answer repeats one token
    return list(generator(noise(1.5, 3), max_new_tokens=12, do_sample=True, **kwargs))


def test_events_follow_the_omega_rule(parts):
    events = run(parts, chunk_size=3)
    kinds = [e.kind for e in events]
    assert kinds[0] == "prefill" and kinds[-1] == "done"
    times = [e.time for e in events]
    assert times == sorted(times)
    done = events[-1]
    assert "".join(e.text for e in events if e.kind == "text") == done.text
    assert sum((e.units for e in events if e.kind == "units"), []) == done.units and len(done.units) >= 8
    pending = 0
    audio_events = [i for i, e in enumerate(events) if e.kind == "audio"]
    for i, event in enumerate(events):
        if event.kind == "units":
            pending += len(event.units)
        if event.kind == "audio" and i != audio_events[-1]:
            assert pending >= 3  # a chunk goes out only once at least Omega new units exist
            assert len(event.audio) == 50 * pending
            pending = 0
    np.testing.assert_array_equal(done.audio, np.concatenate([events[i].audio for i in audio_events]))
    np.testing.assert_array_equal(done.audio, Tones().synthesize(done.units)[0])


def test_incremental_decoder_gives_the_reference_units(parts):
    ours = run(parts, chunk_size=5)[-1]
    reference = run(parts, chunk_size=5, incremental=False)[-1]
    assert ours.units == reference.units and ours.text == reference.text


def test_offline_vocodes_once_at_the_end(parts):
    events = run(parts, chunk_size=None)
    audio = [e for e in events if e.kind == "audio"]
    assert len(audio) == 1 and len(audio[0].audio) == 50 * len(events[-1].units)


def test_a_batch_gives_each_request_its_own_answer(parts):
    model, decoder = parts
    generator = SpeechGenerator(model, decoder, Tones(), join="bare")
    clips = [noise(1.5, 3), noise(0.7, 4)]  # different lengths: the second is left-padded
    alone = [list(generator(clip, chunk_size=3, max_new_tokens=8))[-1] for clip in clips]
    events = list(generator.batch(clips, chunk_size=3, max_new_tokens=8))
    done = {e.request: e for e in events if e.kind == "done"}
    assert sorted(done) == [0, 1]
    for i in range(2):
        assert done[i].text == alone[i].text and done[i].units == alone[i].units
        np.testing.assert_array_equal(done[i].audio, alone[i].audio)


def test_the_prompts_prefix_is_prefilled_once_and_changes_no_answer(parts):
    """The system prompt's keys and values are computed once and reused: the same next-token logits for
    questions of different lengths in one batch, the same answers, and a shorter prefill for the rest."""
    model, decoder = parts
    cached, plain = (SpeechGenerator(model, decoder, Tones(), prefix_cache=on) for on in (True, False))
    clips = [noise(1.5, 3), noise(0.7, 4)]
    batches = [LiveBatch(g) for g in (cached, plain)]
    for live in batches:
        live.join([Question(clip, 3, request=i) for i, clip in enumerate(clips)])
    torch.testing.assert_close(batches[0].logits, batches[1].logits, rtol=1e-4, atol=1e-4)
    prefix = model.prompt.encode(1)[0]
    assert cached._prefix[0].tolist() == prefix[: prefix.index(SPEECH_TOKEN_ID)] and plain._prefix is None
    assert cached._prefix[1].get_seq_length() == len(cached._prefix[0]) > 5
    answers = [list(g.batch(clips, chunk_size=3, max_new_tokens=8)) for g in (cached, plain)]
    for i in range(2):
        ours, reference = ([e for e in events if e.kind == "done" and e.request == i][0] for events in answers)
        assert ours.text == reference.text and ours.units == reference.units


def test_lookahead_holds_back_each_chunks_last_units_and_loses_none(parts):
    model, decoder = parts
    answers = {}
    for lookahead in (0, 2):
        generator = SpeechGenerator(model, decoder, Tones(), join="crossfade", lookahead_units=lookahead)
        torch.manual_seed(0)
        answers[lookahead] = list(generator(noise(1.5, 3), chunk_size=10, max_new_tokens=12, do_sample=True))
    plain, held = ([e for e in answers[k] if e.kind == "audio"] for k in (0, 2))
    assert answers[2][-1].units == answers[0][-1].units  # the same answer; only its vocoding waits
    assert len(plain[0].audio) - len(held[0].audio) == 2 * 50  # the first chunk's last 2 units wait for the next
    assert len(answers[2][-1].audio) == len(answers[0][-1].audio) == 50 * len(answers[0][-1].units)  # none lost


def test_a_short_first_chunk_sends_the_first_audio_sooner_and_then_keeps_omega(parts):
    model, decoder = parts
    answers = {}
    for first in (None, 2):
        generator = SpeechGenerator(model, decoder, Tones(), join="bare", first_chunk=first)
        torch.manual_seed(0)
        answers[first] = list(generator(noise(1.5, 3), chunk_size=6, max_new_tokens=12, do_sample=True))
    whole, short = answers[None], answers[2]
    assert short[-1].units == whole[-1].units and short[-1].text == whole[-1].text  # the same answer
    np.testing.assert_array_equal(short[-1].audio, whole[-1].audio)  # bare joins: the same samples
    audio = [e for e in short if e.kind == "audio"]
    assert len(audio[0].audio) == 2 * 50  # the first 2 units alone, then those already there with them

    def units_before_first_audio(events):
        return len(sum((e.units for e in events[: [e.kind for e in events].index("audio")] if e.kind == "units"), []))

    assert 2 <= units_before_first_audio(short) < units_before_first_audio(whole)  # fewer tokens waited for
    assert units_before_first_audio(whole) >= 6
    assert all(len(e.audio) >= 6 * 50 for e in audio[2:-1])  # then Omega again


def test_mismatched_parts_are_refused(parts):
    model, decoder = parts
    small = Tones()
    small.num_units = 4
    with pytest.raises(ValueError, match="predicts 6 units but the vocoder speaks only 4"):
        SpeechGenerator(model, decoder, small)


def fused_decoder(model, plain: SpeechDecoder, fusion: str) -> SpeechDecoder:
    """`plain`'s decoder reading the model's token embeddings through `fusion`, seeded, its blank made rarer."""
    torch.manual_seed(1)
    config = replace(plain.config, input=DecoderInputConfig(fusion, frame_offsets=True))
    decoder = SpeechDecoder(config, model.hidden_size, TextEmbeddings.from_model(model)).eval()
    with torch.no_grad():
        decoder.output_proj.bias[-1] = -2.0
    return decoder


@pytest.mark.parametrize("fusion", ["add", "gate"])
def test_a_decoder_reading_token_embeddings_streams_them_incrementally(parts, fusion):
    model, plain = parts
    decoder = fused_decoder(model, plain, fusion)
    ours = run((model, decoder), chunk_size=5)[-1]
    reference = run((model, decoder), chunk_size=5, incremental=False)[-1]
    assert ours.units == reference.units and len(ours.units) >= 8
    table = decoder.input.text.table  # with other token embeddings the same decoder says something else
    decoder.input.text = TextEmbeddings(torch.randn(table.shape, generator=torch.Generator().manual_seed(2)))
    assert run((model, decoder), chunk_size=5)[-1].units != ours.units


@pytest.mark.parametrize("fusion", ["none", "gate"])
def test_questions_that_join_and_leave_a_running_batch_get_the_answers_they_get_alone(parts, fusion):
    """Continuous batching: a question joins at any token step, another leaves mid-answer; each answer's text,
    units and audio are those it gets alone."""
    model, plain = parts
    decoder = fused_decoder(model, plain, fusion)
    generator = SpeechGenerator(model, decoder, Tones(), join="bare")
    clips = {name: noise(seconds, seed) for name, seconds, seed in (("a", 1.5, 3), ("b", 0.7, 4), ("c", 1.1, 5))}
    omegas = {"a": 3, "b": 5, "c": None}  # each its own Omega, in one batch
    alone = {n: list(generator(clip, chunk_size=omegas[n], max_new_tokens=10))[-1] for n, clip in clips.items()}
    live = LiveBatch(generator)
    events = live.join([Question(clips["a"], omegas["a"], max_new_tokens=10, request="a")])
    for _ in range(3):
        events += live.step()
    events += live.join([Question(clips[n], omegas[n], max_new_tokens=10, request=n) for n in ("b", "c")])
    assert len(live) == 3
    events += live.step()
    live.leave("c")  # cancelled: the others go on as they were
    while live:
        events += live.step()
    done = {e.request: e for e in events if e.kind == "done"}
    assert sorted(done) == ["a", "b"] and not any(e.request == "c" and e.kind == "done" for e in events)
    for name in ("a", "b"):
        assert done[name].text == alone[name].text and done[name].units == alone[name].units
        np.testing.assert_array_equal(done[name].audio, alone[name].audio)
    assert live.cache is None or live.cache.get_seq_length() == 0 or live.mask.shape[0] == 0


def test_a_live_batch_vocoding_in_a_process_of_its_own_gives_the_answers_made_here(parts):
    """`vocoder_process=True`: questions joining and leaving get the text, units and audio they get with the
    vocoding done here; when the child dies, the next live batch starts another."""
    model, plain = parts
    decoder = fused_decoder(model, plain, "none")
    answers = {}
    for beside in (False, True):
        generator = SpeechGenerator(model, decoder, Tones(), vocoder_process=beside)
        live = generator.live()
        events = live.join([Question(noise(1.5, 3), 3, max_new_tokens=10, request="a")])
        events += live.step()
        events += live.join(
            [Question(noise(s, seed), 2, max_new_tokens=10, request=n) for n, s, seed in (("b", 0.7, 4), ("c", 1.1, 5))]
        )
        events += live.step()
        live.leave("c")
        left = len(events)
        while live:
            events += live.step()
        assert not any(e.request == "c" for e in events[left:])
        answers[beside] = {e.request: e for e in events if e.kind == "done"}
    assert sorted(answers[True]) == ["a", "b"]
    for name in ("a", "b"):
        here, there = answers[False][name], answers[True][name]
        assert (there.text, there.units) == (here.text, here.units) and len(there.units) > 3
        np.testing.assert_array_equal(there.audio, here.audio)
    dead = generator._process
    os.kill(dead._process.pid, signal.SIGKILL)
    dead._process.wait()
    again = list(generator(noise(0.7, 4), chunk_size=2, max_new_tokens=10))[-1]
    assert generator._process is not dead and generator._process.alive()
    assert again.units == answers[False]["b"].units


def test_an_answer_still_silent_is_vocoded_first_in_a_step(parts, monkeypatch):
    """Continuous batching: in a token step the answer waiting for its first audio is advanced (and vocoded) before
    those already heard, whose audio is playing; the step is read lazily, row by row, so each row's events go out
    before the next row is vocoded."""
    model, plain = parts
    generator = SpeechGenerator(model, fused_decoder(model, plain, "none"), Tones(), join="bare")
    live = LiveBatch(generator)
    events = live.join([Question(noise(1.5, 3), 1, max_new_tokens=40, request="a")])
    while not any(e.kind == "audio" for e in events):
        events += live.step()
    live.join([Question(noise(0.7, 4), 1, max_new_tokens=12, request="b")])
    order, advance = [], live._advance
    monkeypatch.setattr(live, "_advance", lambda r, *rest: order.append(r.request) or advance(r, *rest))
    step = live.step()
    assert inspect.isgenerator(step) and not order
    list(step)
    assert order == ["b", "a"]  # b joined after a, yet speaks first
