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

    def synthesize(self, units, from_unit=0, lead=0):
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


class Whole:
    """A vocoder that vocodes every unit it is given, wanted or not: what skipping the unwanted frames must equal."""

    def __init__(self, vocoder):
        self.vocoder, self.sample_rate, self.num_units = vocoder, vocoder.sample_rate, vocoder.num_units

    def synthesize(self, units, from_unit=0, lead=0):
        return self.vocoder.synthesize(units)


@pytest.mark.parametrize(
    "config",
    [HifiGanConfig(upsample_initial_channel=32), HifiGanConfig([5, 4, 4, 2, 2], [11, 8, 8, 4, 4], 64, in_channels=8)],
    ids=["v1", "code"],
)
def test_generator_reads_only_the_frames_the_wanted_waveform_depends_on(config):
    torch.manual_seed(0)
    generator, hop = HifiGanGenerator(config).eval(), config.hop_length
    x = torch.randn(1, config.in_channels, 3 * config.receptive_frames)
    start = 2 * config.receptive_frames
    with torch.no_grad():
        whole, cut = generator(x)[0, 0], generator(x, from_frame=start)[0, 0]
    assert config.receptive_frames == (16 if config.hop_length == 256 else 24)  # V1 (hop 256), fairseq's (320)
    assert cut.shape == whole.shape and not cut[: config.receptive_frames * hop].any()  # left undone
    torch.testing.assert_close(cut[start * hop :], whole[start * hop :], atol=1e-5, rtol=1e-4)
    x.requires_grad_(True)  # which frames the wanted samples depend on: the bound is within 3 frames of the reach
    generator(x)[0, 0, start * hop :].sum().backward()
    read = (x.grad.abs().sum(1)[0] > 0).nonzero().flatten()
    assert start - config.receptive_frames < int(read[0]) <= start - config.receptive_frames + 3


@pytest.mark.parametrize("kind", ["mel_unit", "code_hifigan"])
def test_stream_sounds_the_same_when_the_context_is_not_vocoded(kind):
    torch.manual_seed(0)
    if kind == "mel_unit":
        config = UnitToMelConfig(num_units=12, hidden_size=16, encoder_layers=1, decoder_layers=1)
        vocoder = MelUnitVocoder(UnitToMel(config), HifiGanGenerator(HifiGanConfig(upsample_initial_channel=32)))
    else:
        generator = HifiGanConfig([5, 4, 4, 2, 2], [11, 8, 8, 4, 4], upsample_initial_channel=64, in_channels=8)
        vocoder = CodeHifiGanVocoder(CodeHifiGan(CodeHifiGanConfig(20, 8, generator, DurationPredictorConfig(8, 8))))
    units = torch.randint(0, 12, (90,)).tolist()
    frames = {}  # frames the generator read, with and without skipping

    def count(name):
        return lambda module, args: frames.update({name: frames.get(name, 0) + args[0].shape[-1]})

    hook = vocoder.generator.conv_pre.register_forward_pre_hook(count("skipping"))
    streamed = vocode_in_chunks(vocoder, units, 10)
    hook.remove()
    vocoder.generator.conv_pre.register_forward_pre_hook(count("whole"))
    np.testing.assert_allclose(streamed, vocode_in_chunks(Whole(vocoder), units, 10), atol=1e-5)
    # the mel vocoder's 20 units of context span more frames than its generator's reach; the code one's, each a frame
    # long here, about as many: it saves little
    assert frames["skipping"] < (0.75 if kind == "mel_unit" else 1) * frames["whole"]
