"""Benchmark layouts as sources: VoiceBench, OpenAudioBench and AlpacaEval (InstructS2S-Eval's way), each from small
files built to its released layout, into records `omni eval --bench` answers."""

import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile

from data_recipes.builder import importers
from data_recipes.builder.importers import import_alpacaeval, import_openaudiobench, import_voicebench
from omni.data import SpeechInstructionDataset
from tests.data_recipes.test_builder_importers import records, tone, wav_bytes


def voicebench_file(path, rows: list[tuple[bytes | None, str, str | None]], reference: bool = True):
    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [("audio", audio), ("prompt", pa.string())] + ([("reference", pa.string())] if reference else [])
    columns = {
        "audio": [{"bytes": b, "path": f"{i}.wav"} for i, (b, _, _) in enumerate(rows)],
        "prompt": [p for _, p, _ in rows],
    } | ({"reference": [r for _, _, r in rows]} if reference else {})
    pq.write_table(pa.table(columns, schema=pa.schema(fields)), path)
    return path


def test_voicebench_subset_with_references(tmp_path):
    path = voicebench_file(
        tmp_path / "usa-00000-of-00001.parquet",
        [(wav_bytes(0.6, 24000), "What is the capital of France?", "Paris"), (None, "No audio?", "x"),
         (b"not audio", "Broken?", "y"), (wav_bytes(0.4, 16000, channels=2), "Name a colour.", None)],
    )  # fmt: skip
    report = import_voicebench([path], tmp_path / "out")
    got = records(tmp_path / "out")
    assert [r["id"] for r in got] == ["usa-00000-of-00001-0", "usa-00000-of-00001-3"]
    assert got[0]["instruction"] == "What is the capital of France?" and got[0]["response"] == "Paris"
    assert got[1]["response"] is None and got[0]["duration"] == pytest.approx(0.6, abs=0.01)
    assert report["skipped_reasons"] == {"no question audio": 1, "bad audio": 1}
    audio, rate = soundfile.read(tmp_path / "out" / got[0]["audio"])
    assert rate == 16000 and audio.ndim == 1
    data = SpeechInstructionDataset(tmp_path / "out" / "records.jsonl", require_response=False)
    assert len(data) == 2 and data[0].instruction == "What is the capital of France?"
    with pytest.raises(ValueError, match="no column prompt"):
        pq.write_table(pa.table({"audio": [None]}), tmp_path / "other.parquet")
        import_voicebench([tmp_path / "other.parquet"], tmp_path / "o2")


def openaudiobench_subset(root, name: str, question: str, answer: str, rows: list[tuple[str, str, str]]):
    folder = root / "eval_datas" / name
    (folder / "audios").mkdir(parents=True)
    with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([question, answer, "audio_filename"])
        writer.writerows(rows)
    return folder


def test_openaudiobench_subsets_by_their_columns(tmp_path):
    folder = openaudiobench_subset(
        tmp_path, "llama_questions", "Questions", "Answer",
        [("Who wrote Hamlet?", "Shakespeare", "q0.mp3"), ("Missing?", "-", "gone.mp3"), ("Where?", "Here", "q2.wav")],
    )  # fmt: skip
    soundfile.write(folder / "audios" / "q0.mp3", tone(1.0, 22050), 22050, format="MP3")
    soundfile.write(folder / "audios" / "q2.wav", tone(0.5, 16000), 16000)
    report = import_openaudiobench(folder, tmp_path / "out")
    got = records(tmp_path / "out")
    assert [(r["id"], r["instruction"], r["response"]) for r in got] == [
        ("llama_questions-0", "Who wrote Hamlet?", "Shakespeare"),
        ("llama_questions-2", "Where?", "Here"),
    ]
    assert got[0]["duration"] == pytest.approx(1.0, abs=0.1)  # the mp3, decoded
    assert report["skipped_reasons"] == {"missing audio file": 1}
    assert "question column 'Questions', answer column 'Answer'" in report["notes"][0]
    reasoning = openaudiobench_subset(tmp_path, "reasoning_qa", "Prompt", "参考答案", [("Why?", "因为", "a.wav")])
    soundfile.write(reasoning / "audios" / "a.wav", tone(0.5, 16000), 16000)
    import_openaudiobench(reasoning, tmp_path / "r")
    assert records(tmp_path / "r")[0]["response"] == "因为"
    bad = openaudiobench_subset(tmp_path, "other", "text", "label", [("a", "b", "c.wav")])
    with pytest.raises(ValueError, match="expected audio_filename and one of instruction"):
        import_openaudiobench(bad, tmp_path / "o3")
    with pytest.raises(FileNotFoundError, match="eval_datas/<subset>/<subset>.csv"):
        import_openaudiobench(tmp_path / "nothing", tmp_path / "o4")


def test_alpacaeval_prompts_spoken(tmp_path, capsys):
    items = [
        {"instruction": "What are the names of some famous actors?", "dataset": "helpful_base", "output": "a"},
        {"instruction": "Write a poem about the sea.", "dataset": "vicuna", "output": "b"},
        {"instruction": "Sort this list: [3, 1, 2]", "dataset": "vicuna", "output": "c"},  # unspeakable
        {"instruction": "Translate 'hello' into French.", "dataset": "koala", "output": "d"},  # not in the subsets
        {"instruction": "Print `x` in Python: def f(): return x", "dataset": "helpful_base", "output": "e"},
    ]
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(items))
    importers.main(["alpacaeval", "--json", str(path), "--out", str(tmp_path / "out")])
    assert "2 records" in capsys.readouterr().out
    got = records(tmp_path / "out")
    assert [(r["id"], r["dataset"], r["response"]) for r in got] == [
        ("helpful_base-0", "helpful_base", None),
        ("vicuna-1", "vicuna", None),
    ]
    report = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert report["read"] == 4 and len(report["skipped"]) == 2 and "code" in report["skipped_reasons"]
    audio, rate = soundfile.read(tmp_path / "out" / got[1]["audio"])
    assert rate == 16000 and np.abs(audio).max() > 0.01 and got[1]["duration"] > 0.5
    data = SpeechInstructionDataset(tmp_path / "out" / "records.jsonl", require_response=False)
    assert data[1].instruction == "Write a poem about the sea."
    path.write_text(json.dumps({"instruction": "x"}))
    with pytest.raises(ValueError, match="JSON array of objects with `instruction`"):
        import_alpacaeval(path, tmp_path / "o2")


def test_voicebench_cli(tmp_path, capsys):
    path = voicebench_file(tmp_path / "a.parquet", [(wav_bytes(0.5), "Hi?", None)], reference=False)
    importers.main(["voicebench", "--parquet", str(path), "--out", str(tmp_path / "o"), "--limit", "1"])
    assert "1 records" in capsys.readouterr().out
