import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile

from data_recipes.builder import importers
from data_recipes.builder.importers import import_instructs2s, import_voiceassistant
from omni.data import SpeechInstructionDataset


def tone(seconds: float, sample_rate: int = 22050, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def wav_bytes(seconds: float, sample_rate: int = 22050, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, tone(seconds, sample_rate, channels), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def turn(who: str, text: str, speech: str | None, unit) -> dict:
    return {"from": who, "text": text, "speech": speech, "unit": unit}


@pytest.fixture
def instructs2s(tmp_path) -> tuple[Path, Path]:
    """InstructS2S-200K's layout: a pretty-printed JSON array and its wavs under an audio root."""
    root = tmp_path / "InstructS2S-200K"
    (root / "wavs").mkdir(parents=True)
    for name, seconds in [("d1_q", 1.0), ("d1_a", 2.0), ("d2_q", 1.5), ("d2_a", 1.0), ("d5_q", 0.8)]:
        soundfile.write(str(root / "wavs" / f"{name}.wav"), tone(seconds), 22050)
    cosy = [6560, 12, 4097, 1001]  # CosyVoice2 tokens: never K=1000 units
    dialogues = [
        {
            "id": "d1",
            "conversation": [
                turn("human", "What is the capital of France?", "wavs/d1_q.wav", cosy),
                turn("gpt", "Paris is the capital of France.", "wavs/d1_a.wav", cosy),
            ],
        },
        {
            "id": "d2",
            "conversation": [
                turn("human", "Name a fruit.", "wavs/d2_q.wav", None),
                turn("gpt", "An apple.", "wavs/d2_a.wav", "<|s_6560|><|s_12|>"),
                turn("human", "Another one?", "wavs/d2_q.wav", None),
                turn("gpt", "A pear.", "wavs/d2_a.wav", cosy),
                turn("human", "And a third?", "wavs/gone.wav", None),
                turn("gpt", "A plum.", "wavs/d2_a.wav", cosy),
            ],
        },
        {
            "id": "d3",
            "conversation": [
                turn("human", "Is this wav here?", "wavs/missing.wav", cosy),
                turn("gpt", "No.", "wavs/d1_a.wav", cosy),
            ],
        },
        {"id": "d4", "conversation": [turn("human", "Hello?", "wavs/d1_q.wav", cosy)]},
        {
            "id": "d5",
            "conversation": [
                turn("human", "", "wavs/d5_q.wav", cosy),
                turn("gpt", "  Sure, here it is.  ", "wavs/d5_a_missing.wav", cosy),
            ],
        },
    ]
    json_path = root / "instruct_en_200k_data_cosy2.json"
    json_path.write_text(json.dumps(dialogues, indent=2))
    return json_path, root


def test_instructs2s_whole_dialogues(instructs2s, tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "JSON_CHUNK", 37)  # items cut across many reads
    json_path, root = instructs2s
    out = tmp_path / "imported"
    report = import_instructs2s(json_path, root, out)
    got = records(out)
    assert [r["id"] for r in got] == ["d1", "d2", "d2-t1", "d5"]
    d1, d2, d2_second, d5 = got
    assert d1["instruction"] == "What is the capital of France?" and d1["response"] == "Paris is the capital of France."
    assert Path(d1["audio"]) == root / "wavs" / "d1_q.wav" and Path(d1["response_audio"]) == root / "wavs" / "d1_a.wav"
    assert d1["duration"] == 1.0 and "history" not in d1 and "history" not in d2
    assert d2["response"] == "An apple." and d2_second["response"] == "A pear."
    assert d2_second["instruction"] == "Another one?"
    assert d2_second["history"] == [  # the earlier exchange: the question's words and speech, the answer's words
        {"role": "user", "text": "Name a fruit.", "audio": d2["audio"]},
        {"role": "assistant", "text": "An apple."},
    ]
    assert "instruction" not in d5 and d5["response"] == "Sure, here it is." and "response_audio" not in d5
    assert not any("units" in r or "unit" in r for r in got)
    assert all(Path(r["audio"]).is_absolute() and Path(r["audio"]).is_file() for r in got)

    data = SpeechInstructionDataset(out / "records.jsonl")  # the contract takes the dialogues as they are
    assert len(data) == 4 and data[0].units is None and len(data[0].audio) == 16000
    assert [t.role for t in data[2].history] == ["user", "assistant"] and data[2].history[1].text == "An apple."
    assert data.column("response_audio")[:2] == [d1["response_audio"], d2["response_audio"]]

    assert (report["read"], report["records"], report["duration_s"]) == (5, 4, 4.8)
    assert report["exchanges_per_dialogue"] == {1: 2, 2: 1}
    assert report["skipped_reasons"] == {
        "missing question wav": 1,
        "no gpt turn": 1,
        "missing question wav (later turns of the dialogue dropped)": 1,
    }
    assert report["skipped"] == [
        {
            "id": "d2-t2",
            "reason": "missing question wav (later turns of the dialogue dropped)",
        },
        {"id": "d3", "reason": "missing question wav", "detail": str(root / "wavs" / "missing.wav")},
        {"id": "d4", "reason": "no gpt turn"},
    ]
    assert [e["id"] for e in report["without_response_audio"]] == ["d5"]
    assert any("CosyVoice2" in note and "re-extract" in note for note in report["notes"])
    assert json.loads((out / "import_report.json").read_text()) == json.loads(json.dumps(report))
    assert sorted(p.name for p in out.iterdir()) == ["import_report.json", "records.jsonl"]

    assert import_instructs2s(json_path, root, tmp_path / "two", limit=2)["records"] == 2


def test_json_array_reader_matches_json_load(tmp_path, monkeypatch):
    items = [1, 22, 333, {"a": [4444, "x,]"]}, "five", 666666, [], {"id": 7}, -8.5e3, None, True]
    path = tmp_path / "a.json"
    for text in (json.dumps(items), json.dumps(items, indent=2), "[]", " [ 1 ] "):
        path.write_text(text)
        for chunk in (1, 2, 5, 1 << 20):
            monkeypatch.setattr(importers, "JSON_CHUNK", chunk)
            assert list(importers._json_array(path)) == json.loads(text)
    for text, message in [
        ('{"id": 1}', "expected a JSON array"),
        ('[{"id": 1}, {"id":', "invalid JSON"),
        ('[{"id": 1}', "ends inside the array"),
        ("", "empty"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            list(importers._json_array(path))


def voiceassistant_shard(path: Path, rows: list[dict]) -> Path:
    """VoiceAssistant-400K's parquet layout, question_audio a {bytes, path} struct."""
    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [
            ("split_name", pa.string()),
            ("index", pa.int64()),
            ("round", pa.int64()),
            ("question", pa.string()),
            ("question_audio", audio),
            ("answer", pa.string()),
            ("answer_snac", pa.string()),
        ]
    )
    columns = {name: [row[name] for row in rows] for name in schema.names}
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


def va_row(split: str, index: int, round_: int, question: str, audio: bytes | None, answer: str) -> dict:
    snac = "# 1001 4095 4096 # 12 7 300"
    question_audio = {"bytes": audio, "path": f"{split}_{index}.wav"}
    return dict(split_name=split, index=index, round=round_, question=question, question_audio=question_audio,
                answer=answer, answer_snac=snac)  # fmt: skip


def test_voiceassistant_rows(tmp_path):
    first = voiceassistant_shard(
        tmp_path / "train-00000-of-00325.parquet",
        [
            va_row("identity", 0, 0, "Who are you?", wav_bytes(1.0, 22050, 2), "I am an assistant."),
            va_row("identity", 1, 0, "Can you hear me?", b"RIFF....WAVEfmt garbage", "Yes."),
            va_row("ultrachat", 5, 0, "Tell me about tea.", wav_bytes(2.0, 24000), "Tea is a drink."),
            va_row("ultrachat", 5, 1, "And coffee?", wav_bytes(1.0), "Coffee is a drink too."),
        ],
    )
    second = voiceassistant_shard(
        tmp_path / "train-00001-of-00325.parquet",
        [
            va_row("qa", 2, 0, "Why?", wav_bytes(0.5), "   "),
            va_row("qa", 3, 0, "", wav_bytes(0.5, 16000), "Because."),
        ],
    )
    out = tmp_path / "imported"
    report = import_voiceassistant([first, second], out)
    got = records(out)
    assert [r["id"] for r in got] == ["identity-0", "ultrachat-5", "qa-3"]
    assert got[0] == {
        "id": "identity-0",
        "audio": "wavs/identity-0.wav",
        "response": "I am an assistant.",
        "duration": 1.0,
        "instruction": "Who are you?",
    }
    assert "instruction" not in got[2]
    assert not any(key in r for r in got for key in ("units", "response_audio", "answer_snac"))
    for record in got:
        info = soundfile.info(str(out / record["audio"]))
        assert (info.samplerate, info.channels) == (16000, 1) and abs(info.duration - record["duration"]) < 1e-3
    data = SpeechInstructionDataset(out / "records.jsonl")
    assert len(data) == 3 and len(data[1].audio) == 32000

    assert (report["read"], report["records"]) == (6, 3)
    assert report["skipped_reasons"] == {"bad audio bytes": 1, "later round": 1, "empty answer text": 1}
    assert [(e["id"], e["reason"]) for e in report["skipped"]] == [
        ("identity-1", "bad audio bytes"),
        ("ultrachat-5", "later round"),
        ("qa-2", "empty answer text"),
    ]
    assert report["rounds"] == {"0": 5, "1": 1}
    assert any("answer_snac" in note for note in report["notes"])
    assert sorted(p.name for p in (out / "wavs").iterdir()) == ["identity-0.wav", "qa-3.wav", "ultrachat-5.wav"]

    # a rerun reuses the wavs already written
    stamp = (out / "wavs" / "identity-0.wav").stat().st_mtime_ns
    assert import_voiceassistant([first, second], out)["records"] == 3
    assert (out / "wavs" / "identity-0.wav").stat().st_mtime_ns == stamp and records(out) == got
    assert import_voiceassistant([first, second], tmp_path / "one", limit=1)["records"] == 1


def test_voiceassistant_wrong_layout_is_an_error(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"question": ["hi"], "answer": ["hello"]}), path)
    with pytest.raises(ValueError, match="no column question_audio"):
        import_voiceassistant([path], tmp_path / "out")


def test_cli(instructs2s, tmp_path, capsys):
    json_path, root = instructs2s
    importers.main(["instructs2s", "--json", str(json_path), "--audio-root", str(root), "--out", str(tmp_path / "a")])
    assert "4 records" in capsys.readouterr().out
    shard = voiceassistant_shard(tmp_path / "s.parquet", [va_row("x", 1, 0, "Hi?", wav_bytes(0.5), "Hello.")])
    importers.main(["voiceassistant", "--parquet", str(shard), "--out", str(tmp_path / "b"), "--limit", "5"])
    assert "1 records" in capsys.readouterr().out and records(tmp_path / "b")[0]["id"] == "x-1"
