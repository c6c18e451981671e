import os
import pickle
import signal
import threading
from multiprocessing import Pipe

import numpy as np
import pytest
import torch

from omni.config import UnitToMelConfig
from omni.vocoder.hifigan import HifiGanConfig, HifiGanGenerator
from omni.vocoder.mel_unit import MelUnitVocoder
from omni.vocoder.process import VocoderProcess, Vocoding, serve
from omni.vocoder.unit_to_mel import UnitToMel


@pytest.fixture(scope="module")
def vocoder() -> MelUnitVocoder:
    torch.manual_seed(0)
    unit_to_mel = UnitToMel(UnitToMelConfig(num_units=20, hidden_size=16, encoder_layers=1, decoder_layers=1)).eval()
    return MelUnitVocoder(unit_to_mel, HifiGanGenerator(HifiGanConfig(upsample_initial_channel=16)).eval())


def pieces(vocoding: Vocoding, pushes: list[tuple[int, list[int], bool]]) -> dict[int, list[np.ndarray]]:
    """Each stream's audio, pushing `pushes` (stream, units, last) in turn and taking all that comes back."""
    for stream, units, last in pushes:
        vocoding.push(stream, units, last=last)
    heard: dict[int, list[np.ndarray]] = {}
    ended: set[int] = set()
    while len(ended) < len({s for s, _, last in pushes if last}):
        for stream, audio, last in vocoding.take(wait=10):
            heard.setdefault(stream, []).append(audio)
            ended |= {stream} if last else set()
    return heard


PUSHES = [(1, [3, 4, 5, 6], False), (2, [7, 7, 8], False), (1, [9, 2, 2, 1], False), (2, [4], True), (1, [5], True)]


def test_a_vocoder_process_makes_the_audio_made_here(vocoder):
    """Two streams pushed in turn: each stream's pieces come back in order, the same audio as vocoded in this
    process (the crossfade's held tail flushed with the last), and the child stops when closed."""
    here = pieces(Vocoding(vocoder), PUSHES)
    process = VocoderProcess(vocoder)
    there = pieces(process, PUSHES)
    assert sorted(there) == [1, 2] and [len(p) for p in there.values()] == [3, 2]
    for stream in (1, 2):
        np.testing.assert_allclose(np.concatenate(there[stream]), np.concatenate(here[stream]), atol=1e-6)
        assert [len(p) for p in there[stream]] == [len(p) for p in here[stream]]
    assert process.alive() and not process.streams
    process.close()
    assert not process.alive()


def test_first_pieces_are_vocoded_before_those_waiting_ahead_of_them(vocoder):
    """The child takes every message waiting, then a stream's first piece (an answer's first audio) before the
    later pieces of other streams; a dropped stream's pieces still waiting are never made."""
    ours, theirs = Pipe()
    ours.send_bytes(pickle.dumps(Vocoding(vocoder)))
    for message in (
        ("push", 1, [3, 4], False, True),
        ("push", 1, [5, 6], False, False),
        ("push", 3, [1, 2], False, True),
        ("drop", 3),
        ("push", 2, [7, 8], False, True),
    ):
        ours.send(message)
    child = threading.Thread(target=serve, args=(theirs, 1))
    child.start()
    made = [ours.recv()[0] for _ in range(3)]
    ours.send(None)
    child.join(timeout=10)
    assert made == [1, 2, 1] and not child.is_alive()


def test_a_dead_vocoder_process_is_reported(vocoder):
    process = VocoderProcess(vocoder)
    process.push(1, [3, 4, 5])
    assert process.take(wait=10)
    os.kill(process._process.pid, signal.SIGKILL)
    process._process.wait()
    with pytest.raises(RuntimeError, match="the vocoder process stopped \\(exit status -9\\)"):
        process.push(1, [6, 7])
        process.take(wait=1)
    assert not process.alive()
