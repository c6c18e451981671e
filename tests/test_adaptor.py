import torch

from omni.adaptor import SpeechAdaptor


def test_reference_size_is_21_5m_parameters():
    adaptor = SpeechAdaptor(1280, 4096, stride=5, hidden_size=2048)
    assert sum(p.numel() for p in adaptor.parameters()) == 21_501_952


def test_drops_remainder_and_concatenates_k_frames():
    adaptor = SpeechAdaptor(3, 2, stride=5, hidden_size=4)
    clips = [torch.randn(12, 3), torch.randn(7, 3)]
    out, lengths = adaptor(clips)
    assert lengths.tolist() == [2, 1] and out.shape == (2, 2, 2)
    expected = adaptor.proj(clips[0][5:10].reshape(1, 15))  # second group of the first clip: frames 5..9 concatenated
    torch.testing.assert_close(out[0, 1], expected[0])
    torch.testing.assert_close(out[1, 0], adaptor.proj(clips[1][:5].reshape(1, 15))[0])


def test_clip_shorter_than_stride_gives_no_embedding():
    adaptor = SpeechAdaptor(3, 2, stride=5, hidden_size=4)
    out, lengths = adaptor([torch.randn(3, 3)])
    assert lengths.tolist() == [0] and out.shape == (1, 1, 2)
