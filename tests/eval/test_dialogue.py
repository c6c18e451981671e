import json

import pytest
import soundfile

from omni.eval import dialogue
from tests.conftest import noise


def dialogue_set(tmp_path, with_history: bool = True):
    for name, seconds, seed in (("q1", 1.0, 1), ("q2", 0.8, 2)):
        soundfile.write(tmp_path / f"{name}.wav", noise(seconds, seed), 16000)
    history = [{"role": "user", "text": "what is the largest country", "audio": "q1.wav"}]
    history.append({"role": "assistant", "text": "Russia."})
    rows = [
        {"id": "a", "audio": "q1.wav", "instruction": "what is the largest country", "response": "Russia."},
        {"id": "a-t1", "audio": "q2.wav", "instruction": "and its capital?", "response": "Moscow is its capital."}
        | ({"history": history} if with_history else {}),
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "d.jsonl"


def test_second_turns_are_answered_with_and_without_their_history(stage1_dir, tmp_path):
    out = tmp_path / "o"
    args = ["--model", str(stage1_dir), "--data", str(dialogue_set(tmp_path)), "--max-new-tokens", "4"]
    report = dialogue.main([*args, "--out", str(out)])
    assert report["items"] == 1 and report["history_as"] == "speech"  # only the later turn is evaluated
    for name in ("with_history", "without_history"):
        assert 0 <= report[name]["exact_match"] <= 1 and 0 <= report[name]["rouge_l"] <= 1
    rows = [json.loads(line) for line in (out / "dialogue_answers.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a-t1"] and rows[0]["history"][1] == {"role": "assistant", "text": "Russia."}
    assert {"with_history", "without_history", "reference"} <= set(rows[0])
    assert "| with the earlier turns |" in (out / "dialogue.md").read_text()


def test_a_set_without_dialogues_is_refused(stage1_dir, tmp_path):
    with pytest.raises(ValueError, match="no record has a history"):
        args = ["--model", str(stage1_dir), "--data", str(dialogue_set(tmp_path, False))]
        dialogue.main([*args, "--out", str(tmp_path)])


def test_scores_match_words_not_punctuation():
    assert dialogue.score(["Moscow is its capital!", "no"], ["moscow is its capital.", "yes"]) == {
        "exact_match": 0.5,
        "rouge_l": 0.5,
    }
