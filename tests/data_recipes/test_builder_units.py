import json
import re

import numpy as np
import pytest
import soundfile

from data_recipes.builder.units import build_units
from omni.data import SpeechInstructionDataset
from omni.units import Codebook
from tests.conftest import noise


@pytest.fixture
def demo_dir(tmp_path):
    """A demo-shaped folder: train/heldout manifests whose answers have speech (noise stands in)."""
    data = tmp_path / "demo"
    (data / "wavs").mkdir(parents=True)
    (data / "response_wavs").mkdir()
    for split, count in (("train", 6), ("heldout", 2)):
        lines = []
        for i in range(count):
            name = f"{split}-{i}"
            soundfile.write(data / "wavs" / f"{name}.wav", noise(1.0, i), 16000)
            soundfile.write(data / "response_wavs" / f"{name}.wav", noise(0.5 + 0.2 * i, 100 + i), 16000)
            record = {"id": name, "audio": f"wavs/{name}.wav", "response": "An answer."}
            lines.append(json.dumps(record | {"response_audio": f"response_wavs/{name}.wav"}))
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return data


def test_units_for_the_demo_answers(demo_dir, tiny_dir, tmp_path):
    out = demo_dir / "units"
    encoder = str(tiny_dir / "whisper_tiny.pt")
    report = build_units(demo_dir, encoder, layer=1, size=4, out=out, batch_size=3, compare=(2, 8))
    codebook = Codebook.load(out / "codebook.safetensors")
    assert (codebook.size, codebook.dim) == (4, 64) and codebook.scale is not None  # standardised by default
    train = SpeechInstructionDataset(out / "train.jsonl", num_units=4)  # relocated paths resolve; ids in range
    assert len(train) == 6
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    for i, record in enumerate(records):
        units = train[i].units
        assert units and all(a != b for a, b in zip(units, units[1:], strict=False))
        assert len(record["unit_durations"]) == len(units) and sum(record["unit_durations"]) == 25 + 10 * i
    split = report["splits"]["train"]
    assert split["frames"] == sum(25 + 10 * i for i in range(6))  # 50 frames per second of answer
    assert split["units"] == sum(len(train[i].units) for i in range(6)) and split["frames_per_unit"] >= 1
    assert set(report["compare_k_heldout"]) == {"2", "8"}
    assert (
        report["compare_k_heldout"]["8"]["mean_squared_error"] < report["compare_k_heldout"]["2"]["mean_squared_error"]
    )
    # same settings: nothing is redone
    stamp = (out / "train.jsonl").stat().st_mtime_ns
    again = build_units(demo_dir, encoder, layer=1, size=4, out=out, batch_size=3, compare=(2, 8))
    assert again == report and (out / "train.jsonl").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(Codebook.load(out / "codebook.safetensors").centroids, codebook.centroids)
    # a record more (a build extended): the units are made again, for every record
    lines = (demo_dir / "train.jsonl").read_text().splitlines()
    (demo_dir / "train.jsonl").write_text("\n".join([*lines, lines[0].replace('"train-0"', '"train-extra"')]) + "\n")
    grown = build_units(demo_dir, encoder, layer=1, size=4, out=out, batch_size=3)
    assert grown["splits"]["train"]["records"] == 7 and len((out / "train.jsonl").read_text().splitlines()) == 7


def test_pooled_units_last_twice_as_long(demo_dir, tiny_dir):
    out = demo_dir / "units_pooled"
    report = build_units(demo_dir, str(tiny_dir / "whisper_tiny.pt"), layer=1, size=4, out=out, pool=2)
    assert report["frames_per_second"] == 25 and report["settings"]["pool"] == 2
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    # answers of 0.5 + 0.2 i seconds: 25 + 10 i Whisper frames, averaged in pairs (the last may be alone)
    assert [sum(r["unit_durations"]) for r in records] == [(25 + 10 * i + 1) // 2 for i in range(6)]
    assert report["splits"]["train"]["frames"] == sum((25 + 10 * i + 1) // 2 for i in range(6))


def test_answers_without_speech_are_named(demo_dir, tiny_dir):
    lines = (demo_dir / "heldout.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    del record["response_audio"]
    (demo_dir / "heldout.jsonl").write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"heldout.jsonl: records \['heldout-0'\] have no response_audio"):
        build_units(demo_dir, str(tiny_dir / "whisper_tiny.pt"), layer=1, size=4, out=demo_dir / "units")


def test_answers_only_set_with_no_heldout_records(demo_dir, tiny_dir):
    """Extra stage-2 answers: every record for training, questions as text (no `audio`), with a given codebook."""
    encoder = str(tiny_dir / "whisper_tiny.pt")
    build_units(demo_dir, encoder, layer=1, size=4, out=demo_dir / "units")
    records = [json.loads(line) for line in (demo_dir / "train.jsonl").read_text().splitlines()]
    asked_as_text = [{k: v for k, v in r.items() if k != "audio"} | {"instruction": "A question?"} for r in records]
    (demo_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in asked_as_text))
    (demo_dir / "heldout.jsonl").write_text("")
    out = demo_dir / "more_units"
    report = build_units(
        demo_dir, encoder, layer=1, size=4, out=out, codebook_path=str(demo_dir / "units/codebook.safetensors")
    )
    assert report["splits"]["heldout"] == {
        "records": 0,
        "frames": 0,
        "units": 0,
        "units_per_second": 0.0,
        "frames_per_unit": 0.0,
        "codebook_used": 0,
        "mean_squared_error": 0.0,
    }
    assert (out / "heldout.jsonl").read_text() == ""
    train = SpeechInstructionDataset(out / "train.jsonl", num_units=4, questions="speech_or_text")
    assert len(train) == 6 and all(train[i].units for i in range(6))
    assert "audio" not in json.loads((out / "train.jsonl").read_text().splitlines()[0])


def test_a_dialogues_earlier_question_is_found_from_the_units_folder(demo_dir, tiny_dir):
    lines = (demo_dir / "heldout.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    second = json.loads(lines[1]) | {
        "history": [
            {"role": "user", "text": "A first question?", "audio": first["audio"]},
            {"role": "assistant", "text": first["response"]},
        ]
    }
    (demo_dir / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (first, second)))
    out = demo_dir / "units"
    build_units(demo_dir, str(tiny_dir / "whisper_tiny.pt"), layer=1, size=4, out=out)
    relocated = json.loads((out / "heldout.jsonl").read_text().splitlines()[1])["history"]
    assert relocated[0]["audio"] == "../wavs/heldout-0.wav" and "audio" not in relocated[1]
    assert len(SpeechInstructionDataset(out / "heldout.jsonl", num_units=4)) == 2  # every file found


def test_the_builders_units_step_passes_its_settings(demo_dir, tiny_dir):
    """`units:` of a build config reaches build_units by name: pool, K and the codebook as configured."""
    from data_recipes.builder.config import BuildConfig, UnitsConfig
    from data_recipes.builder.units import build_units_step

    encoder = str(tiny_dir / "whisper_tiny.pt")
    units = UnitsConfig(enabled=True, model=encoder, layer=1, pool=2, k=3, batch_size=4)
    report = build_units_step(BuildConfig(out=str(demo_dir), units=units))
    assert report["settings"]["pool"] == 2 and report["settings"]["k"] == 3 and report["frames_per_second"] == 25
    assert Codebook.load(demo_dir / "units" / "codebook.safetensors").size == 3
    given = UnitsConfig(enabled=True, model=encoder, layer=1, codebook=str(demo_dir / "units" / "codebook.safetensors"))
    again = build_units_step(BuildConfig(out=str(demo_dir), units=given))
    assert again["settings"]["codebook_sha1"] and again["frames_per_second"] == 50


def test_a_tts_set_is_text_spoken_and_made_into_units_with_a_given_codebook(demo_dir, tiny_dir, tmp_path):
    """No LLM, no question: each text row is the answer, spoken in the answer voice, its units from the demo's
    codebook, quantised as they are encoded."""
    from data_recipes.builder.__main__ import main as build
    from omni.audio import load_audio
    from omni.config import EncoderConfig
    from omni.encoder import SpeechEncoder
    from omni.units import WhisperFeatures, runs

    encoder = str(tiny_dir / "whisper_tiny.pt")
    build_units(demo_dir, encoder, layer=1, size=4, out=demo_dir / "units")
    texts = ["A cat is a small animal.", "To run means to move fast.", "The sky is blue today."]
    source = tmp_path / "text.jsonl"
    source.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "tts"
    overrides = [f"out={out}", f"source.path={source}", f"units.model={encoder}", "units.layer=1"]
    build(["build", "--config", "data_recipes/configs/tts_demo.yaml", *overrides,
           f"units.codebook={demo_dir / 'units' / 'codebook.safetensors'}"])  # fmt: skip
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [r["response"] for r in records] == texts and not any("audio" in r for r in records)
    data = SpeechInstructionDataset(out / "units" / "train.jsonl", num_units=4, questions="none")
    assert len(data) == 3 and all(data[i].units and data[i].audio is None for i in range(3))
    report = json.loads((out / "units" / "report.json").read_text())
    assert report["kmeans_frames"] == 0 and report["splits"]["train"]["records"] == 3
    assert re.search(r"^\| units \| 3 \| 0 \| \d+\.\d \|", (out / "report.md").read_text(), re.MULTILINE)
    assert json.loads((out / "report.json").read_text())["units"]["splits"]["train"]["records"] == 3
    codebook = Codebook.load(demo_dir / "units" / "codebook.safetensors")
    features = WhisperFeatures(SpeechEncoder.from_config(EncoderConfig(name_or_path=encoder)), 1)
    first = json.loads((out / "units" / "train.jsonl").read_text().splitlines()[0])
    alone = features([load_audio(out / records[0]["response_audio"])])[0]
    assert runs(codebook.assign(alone).tolist()) == (first["units"], first["unit_durations"])
