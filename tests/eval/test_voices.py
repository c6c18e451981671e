"""The held-out-voice evaluation: the same questions in other voices and real recordings, the gap, and the
refusal of a "held-out" voice the training set has."""

import json

import numpy as np
import pytest
import soundfile as sf

from data_recipes.builder.importers import import_sphinx
from omni import assets
from omni.eval.voices import TRAINED, main


def respoken(toy_dir, tmp_path, voice: str):
    """The toy's held-out questions "in another voice": the same ids and texts, the audio changed."""
    rows = [json.loads(line) for line in (toy_dir / "eval.jsonl").read_text().splitlines()]
    for row in rows:
        audio, rate = sf.read(toy_dir / row["audio"])
        out = tmp_path / voice / f"{row['id']}.wav"
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, (audio * 0.5 + 0.01 * np.random.default_rng(0).standard_normal(len(audio))), rate)
        row |= {"audio": str(out), "voice": voice}
    manifest = tmp_path / voice / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))  # another order: matched by id
    return manifest


def test_voices_table_gap_and_people(stage1_dir, toy_dir, tmp_path):
    other = respoken(toy_dir, tmp_path, "slt")
    human = import_sphinx(tmp_path / "human")
    assert human["records"] == 10 and not human["skipped"]
    args = ["--model", str(stage1_dir), "--trained", str(toy_dir / "eval.jsonl"), "--limit", "3"]
    args += ["--max-new-tokens", "4", "--whisper", str(assets.ensure("whisper_tiny_en"))]  # a real ear
    args += ["--heldout", f"slt={other}", "--human", str(tmp_path / "human" / "records.jsonl")]
    results = main([*args, "--train-data", str(toy_dir / "train.jsonl"), "--out", str(tmp_path / "ev")])
    people = "people (pocketsphinx recordings)"
    assert list(results) == [TRAINED, "slt", people]
    assert results[TRAINED]["items"] == results["slt"]["items"] == 3 and results[people]["items"] == 3
    assert results[TRAINED]["gap_vs_trained_voices"] == 0.0
    trained, slt = results[TRAINED]["rouge_l_vs_reference"], results["slt"]["rouge_l_vs_reference"]
    assert results["slt"]["gap_vs_trained_voices"] == pytest.approx(trained - slt, abs=1e-4)
    assert results[people]["rouge_l_vs_reference"] is None and results[people]["rouge_l_vs_text"] is not None
    rows = [json.loads(line) for line in (tmp_path / "ev" / "examples.jsonl").read_text().splitlines()]
    same = [r["id"] for r in rows if r["set"] == TRAINED]
    assert same == [r["id"] for r in rows if r["set"] == "slt"]  # the same questions, in the same order
    table = (tmp_path / "ev" / "voices.md").read_text().splitlines()
    assert table[0].startswith("| questions spoken by | items | rouge_l_vs_reference |") and len(table) == 5


def test_a_heldout_voice_the_training_set_has_is_refused(stage1_dir, toy_dir, tmp_path):
    other = respoken(toy_dir, tmp_path, "en-us")
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"id": "t", "audio": "x.wav", "response": "r", "voice": "en-us"}) + "\n")
    args = ["--model", str(stage1_dir), "--trained", str(toy_dir / "eval.jsonl"), "--out", str(tmp_path / "ev")]
    with pytest.raises(ValueError, match=r"--heldout same: voice\(s\) \['en-us'\] occur in .*train.jsonl"):
        main([*args, "--heldout", f"same={other}", "--train-data", str(train)])
    with pytest.raises(FileNotFoundError, match="make eval-voices builds it"):
        main([*args, "--heldout", f"gone={tmp_path / 'none.jsonl'}"])
