import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from omni.data import DataError, Example, SpeechInstructionDataset
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
        ({"audio": "empty.wav", "response": "hi"}, "audio", "empty.wav is empty"),
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


def bad_records(wav):
    """25 bad records of seven kinds, each with the field and reason the report must give."""
    kinds = [
        ({"response": "hi"}, "audio", "missing (questions without audio serve stage 2 only)"),
        ({"audio": "nope.wav", "response": "hi"}, "audio", "file not found"),
        ({"audio": wav}, "response", "missing"),
        ({"audio": wav, "response": " "}, "response", "expected non-empty text"),
        ({"audio": wav, "response": "hi", "units": [1, -2]}, "units", "expected a list of non-negative integers"),
        ({"audio": wav, "response": "hi", "instruction": 3}, "instruction", "expected text"),
        ("{oops", None, "invalid JSON"),
    ]
    return [kinds[i % len(kinds)] for i in range(25)]


def mixed_manifest(tmp_path, wav):
    """Bad records on odd lines 1..49, good ones (ids g0..g4, and one without an id) after them."""
    bad = bad_records(wav)
    records = []
    for i, (record, _, _) in enumerate(bad):
        records += [record if isinstance(record, str) else record | {"id": f"b{i}"}, {"audio": wav, "response": "ok"}]
    records = records[:-1] + [{"audio": wav, "response": f"good {i}", "id": f"g{i}"} for i in range(5)]
    return manifest(tmp_path, records), bad


def test_every_bad_record_is_reported_at_once(tmp_path, wav):
    path, bad = mixed_manifest(tmp_path, wav)
    with pytest.raises(DataError) as caught:
        SpeechInstructionDataset(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: 25 of 54 records are bad (data.on_bad_record=skip trains on the rest)"
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "... and 5 more bad records"
    for i, (line, (record, field, reason)) in enumerate(zip(lines[1:21], bad, strict=False)):
        name = f" (id 'b{i}')" if isinstance(record, dict) else ""
        place = f", field {field!r}" if field else ""
        assert line.startswith(f"{path}, line {2 * i + 1}{name}{place}: {reason}"), line


def test_skip_drops_bad_records_and_says_why(tmp_path, wav):
    path, bad = mixed_manifest(tmp_path, wav)
    data = SpeechInstructionDataset(path, on_bad_record="skip")
    assert len(data) == 29
    assert [(s["field"], s["reason"].split(":")[0]) for s in data.skipped] == [(f, r) for _, f, r in bad]
    assert data.skipped[1] == {
        "where": f"{path}, line 3 (id 'b1')",
        "field": "audio",
        "reason": f"file not found: {tmp_path / 'nope.wav'}",
    }
    assert json.loads(json.dumps(data.skipped)) == data.skipped
    assert data.column("id") == [None] * 24 + [f"g{i}" for i in range(5)]
    assert data[0].id == "2" and data[23].id == "48" and data[24].id == "g0"  # ids stay the line numbers
    good = [json.loads(line) for line in path.read_text().splitlines() if '"ok"' in line or '"good' in line]
    assert data.signature() == SpeechInstructionDataset(manifest(tmp_path, good, "good.jsonl")).signature()


def test_skip_in_a_datasets_directory(tmp_path, wav):
    import datasets

    rows = [
        {"audio": wav, "response": "a", "id": "r0"},
        {"audio": "nope.wav", "response": "b", "id": "r1"},
        {"audio": wav, "response": "", "id": "r2"},
        {"audio": wav, "response": "d", "id": "r3"},
    ]
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "ds")
    with pytest.raises(DataError, match=r"2 of 4 records are bad[^\n]*\n.*ds, row 1 \(id 'r1'\), field 'audio'"):
        SpeechInstructionDataset(tmp_path / "ds")
    data = SpeechInstructionDataset(tmp_path / "ds", on_bad_record="skip")
    assert len(data) == 2 and data.column("id") == ["r0", "r3"] and data[1].response == "d"
    assert [(s["where"], s["field"]) for s in data.skipped] == [
        (f"{tmp_path / 'ds'}, row 1 (id 'r1')", "audio"),
        (f"{tmp_path / 'ds'}, row 2 (id 'r2')", "response"),
    ]
    assert data.signature() == data.rows._fingerprint != datasets.load_from_disk(str(tmp_path / "ds"))._fingerprint


def test_skip_with_no_good_record_fails(tmp_path):
    path = manifest(tmp_path, [{"audio": "nope.wav", "response": "a"}, "{oops"])
    with pytest.raises(DataError, match=r"all 2 records are bad"):
        SpeechInstructionDataset(path, on_bad_record="skip")


def test_a_clip_too_short_for_one_embedding_is_refused(tmp_path, tiny_dir):
    from transformers import AutoTokenizer

    from omni.config import EncoderConfig, PromptConfig
    from omni.data import SpeechCollator, shortest_clip
    from omni.prompt import SPEECH_TOKEN_ID, PromptBuilder

    assert shortest_clip(5) == 1440  # 9 mel frames -> 5 encoder frames -> 1 embedding at stride 5
    soundfile.write(tmp_path / "short.wav", noise(0.05), 16000)
    soundfile.write(tmp_path / "edge.wav", noise(1.0)[:1440], 16000)
    soundfile.write(tmp_path / "under.wav", noise(1.0)[:1439], 16000)
    soundfile.write(tmp_path / "edge44k.wav", noise(1.0)[:3969], 44100)  # resampled to 1440 samples
    names = ["short", "edge", "under", "edge44k"]
    path = manifest(tmp_path, [{"audio": f"{n}.wav", "response": "a", "id": n} for n in names])
    assert len(SpeechInstructionDataset(path)) == 4  # no stride given: no length check
    with pytest.raises(DataError) as caught:
        SpeechInstructionDataset(path, adaptor_stride=5)
    assert str(caught.value).splitlines()[1:] == [
        f"{path}, line 1 (id 'short'), field 'audio': clip of 0.05 s gives no speech embedding "
        "(at least 0.09 s at adaptor stride 5)",
        f"{path}, line 3 (id 'under'), field 'audio': clip of 0.09 s gives no speech embedding "
        "(at least 0.09 s at adaptor stride 5)",
    ]
    data = SpeechInstructionDataset(path, adaptor_stride=5, on_bad_record="skip")
    assert data.column("id") == ["edge", "edge44k"]
    prompt = PromptBuilder(AutoTokenizer.from_pretrained(tiny_dir / "llm"), PromptConfig())
    collate = SpeechCollator(prompt, EncoderConfig(), n_mels=80, adaptor_stride=5)
    batch = collate([data[0], data[1]])
    assert (batch["input_ids"] == SPEECH_TOKEN_ID).sum(dim=1).tolist() == [1, 1]
    with pytest.raises(DataError, match=r"example 'tiny': clip of 0.05 s gives no speech embedding"):
        collate([Example("tiny", noise(0.05), "a", None, None)])


def nan_manifest(tmp_path, bad_lines=(0,)):
    audio = noise(0.5)
    audio[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", audio, 16000, subtype="FLOAT")
    soundfile.write(tmp_path / "ok.wav", noise(0.5), 16000)
    return manifest(
        tmp_path,
        [{"audio": "nan.wav" if i in bad_lines else "ok.wav", "response": "a", "id": f"r{i}"} for i in range(3)],
    )


def test_audio_bad_when_read_is_skipped_and_logged(tmp_path):
    data = SpeechInstructionDataset(nan_manifest(tmp_path, bad_lines=(2,)), on_bad_record="skip")
    data.skip_log = tmp_path / "run" / "skipped.jsonl"
    data.skip_log.parent.mkdir()
    assert [data[i].id for i in range(3)] == ["r0", "r1", "r0"]  # the last record wraps to the first
    assert data[2].id == "r0" and len(data) == 3  # same length: every process yields the same batches
    logged = [json.loads(line) for line in data.skip_log.read_text().splitlines()]
    assert logged == [
        {
            "where": f"{tmp_path / 'm.jsonl'}, line 3 (id 'r2')",
            "field": "audio",
            "reason": "audio holds NaN or infinite samples",
            "at": "load",
        }
    ]
    assert data.skipped_at_load == {2: logged[0]} and data.skipped == []


def test_audio_bad_when_read_fails_in_error_mode_or_when_nothing_loads(tmp_path):
    data = SpeechInstructionDataset(nan_manifest(tmp_path))
    with pytest.raises(DataError, match=r"m\.jsonl, line 1 \(id 'r0'\), field 'audio': audio holds NaN"):
        data[0]
    assert data[1].id == "r1" and data.skipped_at_load == {}
    data = SpeechInstructionDataset(nan_manifest(tmp_path, bad_lines=(0, 1, 2)), on_bad_record="skip")
    with pytest.raises(DataError, match=r"no record could be loaded \(3 skipped when read\)"):
        data[1]
    with pytest.raises(IndexError):
        data[3]


def test_several_manifests_read_as_one_set(tmp_path):
    """Extra answers in their own folder beside the spoken set: each record's files are found from its manifest."""
    for folder in ("spoken", "extra"):
        (tmp_path / folder / "wavs").mkdir(parents=True)
        soundfile.write(tmp_path / folder / "wavs" / "q.wav", noise(0.5, len(folder)), 16000)
    history = [{"role": "user", "text": "First?", "audio": "wavs/q.wav"}, {"role": "assistant", "text": "One."}]
    spoken = manifest(tmp_path / "spoken", [{"id": "s", "audio": "wavs/q.wav", "response": "Yes."}])
    extra = manifest(
        tmp_path / "extra",
        [
            {"id": "x0", "instruction": "Asked as text?", "response": "Yes, as text."},
            {
                "id": "x1",
                "audio": "wavs/q.wav",
                "response": "Then this.",
                "response_audio": "wavs/q.wav",
                "history": history,
            },
        ],
    )
    data = SpeechInstructionDataset([spoken, str(extra)], questions="speech_or_text")
    assert [data[i].id for i in range(3)] == ["s", "x0", "x1"]
    np.testing.assert_allclose(data[0].audio, noise(0.5, len("spoken")), atol=1e-4)
    assert data[1].audio is None and data[1].instruction == "Asked as text?"
    np.testing.assert_allclose(data[2].audio, noise(0.5, len("extra")), atol=1e-4)  # the extra folder's wav
    assert Path(data[2].history[0].audio).resolve() == (tmp_path / "extra" / "wavs" / "q.wav").resolve()
    assert data.rows[2]["audio"] == "../extra/wavs/q.wav"  # relative: the signature is the same wherever it lives
    assert data.audio_path(data.rows[2]["response_audio"]).resolve() == (tmp_path / "extra/wavs/q.wav").resolve()
    assert data.signature() != SpeechInstructionDataset(spoken).signature()
    bad = manifest(
        tmp_path / "extra",
        [{"id": "ok", "instruction": "Q?", "response": "A."}, {"id": "b", "instruction": "Q?"}],
        "bad.jsonl",
    )
    with pytest.raises(DataError, match=r"extra/bad\.jsonl, line 2 \(id 'b'\), field 'response'"):
        SpeechInstructionDataset([spoken, bad], questions="speech_or_text")
    with pytest.raises(DataError, match=r"nope\.jsonl: no such dataset .*a list takes \.jsonl manifests only"):
        SpeechInstructionDataset([spoken, tmp_path / "nope.jsonl"])
    with pytest.raises(DataError, match="empty list"):
        SpeechInstructionDataset([])


def test_a_truncated_clip_is_refused_when_opened_or_skipped_and_listed(tmp_path, wav):
    from tests.test_audio import truncated_wav

    truncated_wav(tmp_path / "cut.wav", seconds=2.0, kept_bytes=32000)  # 1 s of a promised 2 s
    records = [{"id": "ok", "audio": wav, "response": "a"}, {"id": "cut", "audio": "cut.wav", "response": "b"}]
    with pytest.raises(DataError, match=r"line 2 \(id 'cut'\), field 'audio': audio file .*cut\.wav is truncated"):
        SpeechInstructionDataset(manifest(tmp_path, records))
    data = SpeechInstructionDataset(manifest(tmp_path, records), on_bad_record="skip")
    assert len(data) == 1 and data.skipped[0]["field"] == "audio" and "1.000 s of audio" in data.skipped[0]["reason"]
