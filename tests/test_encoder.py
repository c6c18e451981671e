import pytest
import torch
from whisper.model import AudioEncoder

from omni.audio import mel_windows
from omni.config import EncoderConfig
from omni.data import speech_embedding_count
from omni.encoder import SpeechEncoder, load_whisper_encoder
from tests.conftest import noise


@pytest.fixture
def encoder(tiny_dir) -> SpeechEncoder:
    return SpeechEncoder.from_config(EncoderConfig(name_or_path=str(tiny_dir / "whisper_tiny.pt")))


def batch(windows):
    frames = torch.tensor([w.shape[-1] for w in windows])
    mels = torch.zeros(len(windows), windows[0].shape[0], int(frames.max()))
    for i, w in enumerate(windows):
        mels[i, :, : w.shape[-1]] = w
    return mels, frames


def test_frozen_and_stays_in_eval_mode(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.whisper.training
    mels, frames = batch(mel_windows(noise(1.0), encoder.n_mels, False))
    features, _ = encoder(mels.requires_grad_(True), frames)
    assert not features.requires_grad  # no graph: the encoder can never receive gradients


def test_full_window_matches_openai_whisper(encoder):
    (window,) = mel_windows(noise(2.0), encoder.n_mels, pad_to_30s=True)
    reference = AudioEncoder.forward(encoder.whisper, window[None])
    ours, lengths = encoder(window[None], torch.tensor([3000]))
    assert lengths.tolist() == [1500]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_clip_encodes_the_same_alone_or_in_a_padded_batch(encoder):
    short = mel_windows(noise(1.2, 1), encoder.n_mels, False)[0]
    long = mel_windows(noise(3.1, 2), encoder.n_mels, False)[0]
    alone, alone_len = encoder(*batch([short]))
    together, lengths = encoder(*batch([short, long]))
    assert lengths.tolist() == [60, 155]
    torch.testing.assert_close(together[0, :60], alone[0, : alone_len[0]], atol=1e-5, rtol=1e-5)


def test_long_clip_is_encoded_in_windows_not_cut(encoder):
    windows = mel_windows(noise(40.0), encoder.n_mels, False)
    clips, lengths = encoder.encode_clips(*batch(windows), windows_per_clip=[len(windows)])
    assert [w.shape[-1] for w in windows] == [3000, 1000]
    assert lengths.tolist() == [2000] and clips[0].shape == (2000, encoder.width)
    assert speech_embedding_count([3000, 1000], 5) == 400


def test_unknown_name_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="large-v9"):
        load_whisper_encoder("large-v9")
