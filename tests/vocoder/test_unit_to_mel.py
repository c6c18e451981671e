import json
import math

import numpy as np
import pytest
import soundfile
import torch

from omni.config import UnitToMelConfig
from omni.data import DataError
from omni.vocoder.data import UnitSpeechDataset, collate_unit_speech
from omni.vocoder.hifigan import MEL_CONFIG
from omni.vocoder.unit_to_mel import UnitToMel, unit_to_mel_loss
from tests.conftest import noise

SMALL = UnitToMelConfig(num_units=12, hidden_size=32, encoder_layers=1, decoder_layers=1, dropout=0.0)


def model() -> UnitToMel:
    torch.manual_seed(0)
    return UnitToMel(SMALL).eval()


def test_each_mel_frame_takes_the_unit_sounding_then():
    m = model()
    x = torch.arange(3, dtype=torch.float)[None, :, None]  # unit states 0, 1, 2
    durations = torch.tensor([[2, 1, 3]])  # unit frames (20 ms): 0-40 ms, 40-60 ms, 60-120 ms
    frames = m.mel_frames(durations)
    assert frames.tolist() == [10]  # 120 ms at 86.13 frames/s
    picked = m.expand(x, durations, frames, torch.tensor([3]))[0, :, 0].tolist()
    times = [(f + 0.5) / SMALL.mel_rate for f in range(10)]
    assert picked == [0.0 if t < 0.04 else 1.0 if t < 0.06 else 2.0 for t in times]
    # a shorter row of a batch: frames past its end keep its own last unit, not padding
    longer = m.expand(
        torch.cat([x, torch.zeros(1, 2, 1)], 1), torch.tensor([[2, 1, 1, 0, 0]]), frames, torch.tensor([3])
    )
    assert longer[0, -1, 0].item() == 2.0


def test_shapes_loss_and_bad_input():
    m = model()
    units = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    lengths = torch.tensor([4, 2])
    durations = torch.tensor([[2, 2, 1, 3], [1, 4, 0, 0]])
    frames = m.mel_frames(durations)
    mels, log_durations = m(units, lengths, durations, frames)
    assert mels.shape == (2, int(frames.max()), 80) and log_durations.shape == (2, 4)
    batch = {
        "mels": torch.zeros(2, int(frames.max()), 80),
        "frames": frames,
        "lengths": lengths,
        "durations": durations,
    }
    loss = unit_to_mel_loss(mels, log_durations, batch)
    assert torch.isfinite(loss) and loss > 0
    with pytest.raises(ValueError, match=r"unit ids \[12\] are outside \[0, 12\)"):
        m.generate(torch.tensor([1, 12]))
    with pytest.raises(ValueError, match="empty unit sequence"):
        m.generate(torch.tensor([], dtype=torch.long))


def test_generate_uses_given_or_predicted_durations(tmp_path):
    m = model()
    mel, used = m.generate(torch.tensor([1, 2, 3]), torch.tensor([5, 5, 5]))
    assert used.tolist() == [5, 5, 5] and mel.shape == (26, 80)  # 15 frames of 20 ms = 300 ms
    mel, used = m.generate(torch.tensor([1, 2, 3]))
    assert (used >= 1).all() and mel.shape[0] == int(m.mel_frames(used[None]))
    with torch.no_grad():  # a predicted 1.4 frames stays 1.4 (rounding each unit made speech 5% too fast)
        m.duration[-1].weight.zero_()
        m.duration[-1].bias.fill_(math.log(2.4))
    mel_short, used_short = m.generate(torch.tensor([1, 2, 3]))
    torch.testing.assert_close(used_short, torch.full((3,), 1.4))
    assert mel_short.shape[0] == 7  # 4.2 unit frames = 84 ms at 86.13 frames/s
    m.save_pretrained(tmp_path / "u2m")
    loaded = UnitToMel.from_pretrained(tmp_path / "u2m")
    torch.testing.assert_close(loaded.generate(torch.tensor([1, 2, 3]))[0], mel_short)
    state = m.state_dict()
    state["out.1.bias"][0] = float("inf")
    m.save_pretrained(tmp_path / "bad", state_dict=state)
    with pytest.raises(ValueError, match="NaN or infinite values in \\['out.1.bias'\\]"):
        UnitToMel.from_pretrained(tmp_path / "bad")


def test_contrast_scales_generated_deviations_from_the_training_mean(tmp_path):
    m = model()
    m.mel_mean.copy_(torch.linspace(-8.0, -4.0, 80))
    durations = torch.tensor([3, 2, 4])
    plain, _ = m.generate(torch.tensor([1, 2, 3]), durations)
    m.config.contrast = 1.5
    sharp, _ = m.generate(torch.tensor([1, 2, 3]), durations)
    torch.testing.assert_close(sharp, m.mel_mean + 1.5 * (plain - m.mel_mean))
    # the mean is part of the saved model, and teacher-forced training output is left alone
    m.save_pretrained(tmp_path / "u2m")
    torch.testing.assert_close(
        UnitToMel.from_pretrained(tmp_path / "u2m").generate(torch.tensor([1, 2, 3]), durations)[0], sharp
    )
    lengths, frames = torch.tensor([3]), m.mel_frames(durations[None])
    teacher_forced, _ = m(torch.tensor([[1, 2, 3]]), lengths, durations[None], frames)
    torch.testing.assert_close(teacher_forced[0], plain)
    # a model saved before mel_mean existed loads to generate as trained, and refuses a contrast
    state = {k: v for k, v in m.state_dict().items() if k != "mel_mean"}
    m.config.contrast = 1.0
    m.save_pretrained(tmp_path / "old", state_dict=state)
    torch.testing.assert_close(
        UnitToMel.from_pretrained(tmp_path / "old").generate(torch.tensor([1, 2, 3]), durations)[0], plain
    )
    m.config.contrast = 1.3
    m.save_pretrained(tmp_path / "old", state_dict=state)
    with pytest.raises(ValueError, match="unit_to_mel.yaml: contrast 1.3 needs the model's mel_mean"):
        UnitToMel.from_pretrained(tmp_path / "old")
    m.config.contrast = 1.0
    m.save_pretrained(tmp_path / "old", state_dict=state)
    with pytest.raises(ValueError, match="unit_to_mel.yaml: contrast 1.2 needs the model's mel_mean"):
        UnitToMel.from_pretrained(tmp_path / "old", contrast=1.2)  # an override is checked the same way


def manifest(tmp_path, rows):
    (tmp_path / "a").mkdir(exist_ok=True)
    lines = []
    for i, row in enumerate(rows):
        soundfile.write(tmp_path / "a" / f"{i}.wav", noise(0.5 + 0.1 * i, i), 16000)
        lines.append(json.dumps({"id": f"r{i}", "response_audio": f"a/{i}.wav"} | row))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "m.jsonl"


def test_dataset_targets_and_errors(tmp_path):
    path = manifest(tmp_path, [{"units": [1, 2], "unit_durations": [10, 15]}, {"units": [3], "unit_durations": [30]}])
    data = UnitSpeechDataset(path, 12, MEL_CONFIG)
    item = data[1]
    assert item["mel"].shape == (int(0.6 * 22050) // 256, 80)
    batch = collate_unit_speech([data[0], data[1]])
    assert batch["units"].tolist() == [[1, 2], [3, 0]] and batch["lengths"].tolist() == [2, 1]
    assert batch["mels"].shape == (2, item["mel"].shape[0], 80)
    assert np.isclose(float(batch["mels"][0, -1, 0]), -11.5129, atol=1e-3)  # padding is silence
    every_frame = torch.cat([data.target(0), data.target(1)])
    torch.testing.assert_close(data.mean_mel(), every_frame.mean(0))
    data.check_unit_rate(50.0, 22050 / 256)  # 25 and 30 frames at 50 per second: 0.5 and 0.6 s, as spoken
    with pytest.raises(DataError, match=r"'unit_durations': 2 of 2 answers .* unit_rate 25 .*r0: 1.00 s of unit fr"):
        data.check_unit_rate(25.0, 22050 / 256)  # units of 50-per-second frames read as pooled ones
    bad = manifest(tmp_path, [{"units": [1, 2], "unit_durations": [3]}])
    with pytest.raises(DataError, match=r"m.jsonl, line 1, field 'unit_durations'"):
        UnitSpeechDataset(bad, 12, MEL_CONFIG)
    bad = manifest(tmp_path, [{"units": [1, 40], "unit_durations": [3, 3]}])
    with pytest.raises(DataError, match=r"line 1, field 'units'.*40"):
        UnitSpeechDataset(bad, 12, MEL_CONFIG)
    bad = manifest(tmp_path, [{"units": [1, 4]}])
    with pytest.raises(DataError, match="'unit_durations': missing"):
        UnitSpeechDataset(bad, 12, MEL_CONFIG)


def test_dataset_reports_every_bad_record_or_skips_them(tmp_path):
    good = {"units": [1, 2], "unit_durations": [10, 15]}
    path = manifest(tmp_path, [good, {"units": [1, 40], "unit_durations": [3, 3]}, good, {"units": [1]}])
    with pytest.raises(DataError, match=r"2 of 4 records are bad[^\n]*\n.*line 2, field 'units'.*\n.*line 4, field"):
        UnitSpeechDataset(path, 12, MEL_CONFIG)
    data = UnitSpeechDataset(path, 12, MEL_CONFIG, on_bad_record="skip")
    assert len(data) == 2 and [s["field"] for s in data.skipped] == ["units", "unit_durations"]
    assert data.skipped[0]["where"].endswith("m.jsonl, line 2")


def test_several_manifests_read_as_one_set(tmp_path):
    first = manifest(tmp_path, [{"units": [1, 2], "unit_durations": [10, 15]}])
    (tmp_path / "extra").mkdir()
    second = manifest(
        tmp_path / "extra", [{"units": [3], "unit_durations": [30]}, {"units": [4], "unit_durations": [35]}]
    )
    data = UnitSpeechDataset([first, second], 12, MEL_CONFIG)
    assert len(data) == 3 and data.rows[1]["response_audio"] == tmp_path / "extra" / "a" / "0.wav"
    assert data[0]["mel"].shape[0] == int(0.5 * 22050) // 256 and data[2]["mel"].shape[0] == int(0.6 * 22050) // 256
    bad = manifest(tmp_path / "extra", [{"units": [1, 2], "unit_durations": [3]}])
    with pytest.raises(DataError, match=r"extra/m.jsonl, line 1, field 'unit_durations'"):
        UnitSpeechDataset([first, bad], 12, MEL_CONFIG)
