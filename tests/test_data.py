import json

import numpy as np
import pytest
import soundfile

from omni.data import DataError, SpeechInstructionDataset
from tests.conftest import noise


def manifest(tmp_path, records, name="m.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) if isinstance(r, dict) else r for r in records) + "\n")
    return path


@pytest.fixture
def wav(tmp_path):
    soundfile.write(tmp_path / "ok.wav", noise(0.5), 16000)
    return "ok.wav"


def test_toy_manifest_loads(toy_dir):
    data = SpeechInstructionDataset(toy_dir / "train.jsonl")
    assert len(data) == 16
    ex = data[0]
    assert ex.audio.dtype == np.float32 and ex.audio.ndim == 1 and 16000 <= len(ex.audio) <= 64000
    assert ex.response.startswith("The tone is") and ex.id == "train-00000"


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({"response": "hi"}, "audio", "missing"),
        ({"audio": "nope.wav", "response": "hi"}, "audio", "file not found"),
        ({"audio": "junk.wav", "response": "hi"}, "audio", "unreadable audio file"),
        ({"audio": "empty.wav", "response": "hi"}, "audio", "audio file is empty"),
        ({"audio": "ok.wav"}, "response", "missing"),
        ({"audio": "ok.wav", "response": "  "}, "response", "non-empty"),
        ({"audio": "ok.wav", "response": "hi", "units": [1, -2]}, "units", "non-negative"),
        ({"audio": 3, "response": "hi"}, "audio", "expected a path"),
    ],
)
def test_bad_record_names_file_record_and_field(tmp_path, wav, record, field, message):
    (tmp_path / "junk.wav").write_bytes(b"junk")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    path = manifest(tmp_path, [{"audio": wav, "response": "fine"}, record | {"id": "bad"}])
    with pytest.raises(DataError, match=rf"m\.jsonl, line 2 \(id 'bad'\), field '{field}': .*{message}"):
        SpeechInstructionDataset(path)


def test_invalid_json_line(tmp_path, wav):
    path = manifest(tmp_path, [{"audio": wav, "response": "a"}, "{oops"])
    with pytest.raises(DataError, match=r"m\.jsonl, line 2: invalid JSON"):
        SpeechInstructionDataset(path)


def test_nan_audio_is_rejected_when_read(tmp_path):
    audio = noise(0.5)
    audio[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", audio, 16000, subtype="FLOAT")
    data = SpeechInstructionDataset(manifest(tmp_path, [{"audio": "nan.wav", "response": "a", "id": "n"}]))
    with pytest.raises(DataError, match=r"line 1 \(id 'n'\), field 'audio'.*NaN"):
        data[0]


def test_stereo_44k_is_mixed_and_resampled(tmp_path):
    stereo = np.stack([noise(1.0, 1), noise(1.0, 2)], axis=1)
    soundfile.write(tmp_path / "st.wav", np.repeat(stereo, 3, axis=0)[:44100], 44100)
    data = SpeechInstructionDataset(manifest(tmp_path, [{"audio": "st.wav", "response": "a"}]))
    assert data[0].audio.shape == (16000,)


def test_datasets_directory_with_arrays_and_paths(tmp_path, wav):
    import datasets

    rows = {
        "audio": [
            {"array": noise(1.0).tolist(), "sampling_rate": 8000, "path": None},
            {"array": None, "sampling_rate": None, "path": str(tmp_path / wav)},
        ],
        "response": ["a", "b"],
    }
    datasets.Dataset.from_dict(rows).save_to_disk(tmp_path / "ds")
    data = SpeechInstructionDataset(tmp_path / "ds")
    assert data[0].audio.shape == (32000,) and data[1].audio.shape == (8000,)
    assert data[0].id == "0"


def test_missing_dataset(tmp_path):
    with pytest.raises(DataError, match="no such dataset"):
        SpeechInstructionDataset(tmp_path / "none.jsonl")
