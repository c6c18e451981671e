import numpy as np
import pytest
import torch

from omni.config import UnitToMelConfig
from omni.vocoder.code_hifigan import CodeHifiGan, CodeHifiGanConfig, CodeHifiGanVocoder, DurationPredictorConfig
from omni.vocoder.hifigan import HifiGanConfig, HifiGanGenerator
from omni.vocoder.mel_unit import MelUnitVocoder
from omni.vocoder.streaming import StreamingVocoder, vocode_in_chunks
from omni.vocoder.unit_to_mel import UnitToMel

HOP = 100


class Fixed:
    """Each unit is HOP samples of its id; with `onset`, a sequence's first unit starts with a click,
    as a vocoder without left context would render it."""

    sample_rate = 16000
    num_units = 100

    def __init__(self, onset: bool = False):
        self.onset = onset

    def synthesize(self, units):
        audio = np.repeat(np.asarray(units, dtype=np.float32), HOP)
        if self.onset:
            audio[:10] = 50.0
        return audio, np.arange(1, len(units) + 1) * HOP


def test_streamed_audio_equals_whole_when_units_render_alone():
    units = list(range(1, 24))
    whole = Fixed().synthesize(units)[0]
    for join in ("bare", "crossfade"):
        np.testing.assert_allclose(vocode_in_chunks(Fixed(), units, 5, join), whole, atol=1e-5)


def test_crossfade_removes_the_seams_bare_joins_leave():
    units = list(range(1, 24))
    whole = Fixed(onset=True).synthesize(units)[0]
    bare = vocode_in_chunks(Fixed(onset=True), units, 5, "bare")
    crossfaded = vocode_in_chunks(Fixed(onset=True), units, 5, "crossfade")
    assert len(bare) == len(crossfaded) == len(whole)
    assert (bare == 50.0).sum() == 50  # a click at each of the 5 chunk starts
    np.testing.assert_allclose(crossfaded, whole, atol=1e-5)  # context absorbs the clicks, only the first remains


def test_stream_holds_back_only_the_overlap():
    stream = StreamingVocoder(Fixed(), "crossfade", context_units=4, overlap_ms=5.0)  # 80 samples
    first = stream.push([1, 2, 3])
    assert len(first) == 3 * HOP - 80
    second = stream.push([4, 5])
    assert len(second) == 2 * HOP  # the held-back 80 samples, blended, plus the new ones minus 80 again
    assert len(stream.flush()) == 80 and len(stream.flush()) == 0
    assert len(stream.push([])) == 0
    with pytest.raises(ValueError, match="join must be"):
        StreamingVocoder(Fixed(), "overlap")


def test_mel_unit_vocoder_reports_where_units_end():
    torch.manual_seed(0)
    config = UnitToMelConfig(num_units=12, hidden_size=16, encoder_layers=1, decoder_layers=1)
    hifigan = HifiGanGenerator(HifiGanConfig(upsample_initial_channel=16))
    vocoder = MelUnitVocoder(UnitToMel(config), hifigan)
    audio, ends = vocoder.synthesize([1, 5, 7, 2])
    assert audio.dtype == np.float32 and len(ends) == 4 and ends[-1] == len(audio)
    assert (np.diff(ends) >= 0).all() and len(audio) % 256 == 0
    streamed = vocode_in_chunks(vocoder, [1, 5, 7, 2, 3, 3, 9], 3, "crossfade")
    assert abs(len(streamed) - len(vocoder.synthesize([1, 5, 7, 2, 3, 3, 9])[0])) < 3 * 256


def test_code_hifigan_streams_at_16khz():
    torch.manual_seed(0)
    generator = HifiGanConfig([5, 4, 4, 2, 2], [11, 8, 8, 4, 4], upsample_initial_channel=64, in_channels=8)
    config = CodeHifiGanConfig(20, 8, generator, DurationPredictorConfig(8, 8))
    vocoder = CodeHifiGanVocoder(CodeHifiGan(config))
    audio, ends = vocoder.synthesize([3, 4, 5])
    assert vocoder.sample_rate == 16000 and vocoder.hop == 320
    durations = vocoder.model.durations(torch.tensor([3, 4, 5]))
    assert ends.tolist() == (durations.cumsum(0) * 320).tolist() and ends[-1] == len(audio)
    assert len(vocode_in_chunks(vocoder, [3, 4, 5, 6, 7], 2, "bare")) > 0
