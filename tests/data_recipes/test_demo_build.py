import json
from pathlib import Path

import datasets
import soundfile

from data_recipes.builder import pipeline
from data_recipes.builder.config import RESPEAK_SYSTEM, BuildConfig
from data_recipes.builder.speakable import speakable
from data_recipes.demo.instructions import (
    DIALOGUE_SHARE,
    FOLLOW_UPS,
    HELD_OUT_DIALOGUE_SHARE,
    build_instructions,
    write_source,
)
from data_recipes.demo.instructions import main as instructions_main
from omni.config import load_config
from omni.data import SpeechInstructionDataset

ROOT = Path(__file__).resolve().parents[2]


def test_heldout_never_shares_a_phrasing_and_value_with_training():
    items = build_instructions()
    assert len(items) > 2000 and len({i.text for i in items}) == len(items)
    train = {i.text for i in items if not i.held_out}
    heldout = [i for i in items if i.held_out]
    assert heldout and not train & {i.text for i in heldout}
    # a held-out item's phrasing (template index) or value (value index) never appears with it in training
    train_keys = {tuple(i.id.rsplit("-", 2)) for i in items if not i.held_out}
    for item in heldout:
        family, template, value = item.id.rsplit("-", 2)
        assert not any(k[0] == family and k[2] == value for k in train_keys) or not any(
            k[0] == family and k[1] == template for k in train_keys
        )


def test_a_share_of_the_instructions_start_a_dialogue_with_a_follow_up_of_their_family(tmp_path):
    items = build_instructions()
    dialogues = [i for i in items if i.follow_up]
    training = [i for i in items if not i.held_out]
    assert abs(sum(bool(i.follow_up) for i in training) / len(training) - DIALOGUE_SHARE) < 0.03
    held_out_with_follow_ups = [i for i in items if i.held_out and i.family in FOLLOW_UPS]
    share = sum(bool(i.follow_up) for i in held_out_with_follow_ups) / len(held_out_with_follow_ups)
    assert abs(share - HELD_OUT_DIALOGUE_SHARE) < 0.05
    assert all(i.follow_up in FOLLOW_UPS[i.family] for i in dialogues) and any(i.held_out for i in dialogues)
    write_source(tmp_path / "s.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert {r["id"]: r["follow_ups"] for r in rows if "follow_ups" in r} == {
        i.id: [i.follow_up] for i in items if i.follow_up and i.id in {r["id"] for r in rows}
    }


def test_speakable_filter():
    assert speakable("Paris is the capital of France. It is big. It has a river.", 40, max_sentences=2) == (
        "Paris is the capital of France. It is big.",
        None,
    )
    assert speakable("`pears = 2`", 40)[1] == "code"
    assert speakable("  ", 40)[1] == "empty"
    assert speakable("one two three", 2)[1] == "longer than 2 words"


class FakeChat:
    """Stands in for the demo LLM: answers by the instruction's first word, and `listed` with code."""

    batch_size = 4
    calls = 0

    def __init__(self, listed: str):
        self.listed = listed

    def chat(self, conversations):
        FakeChat.calls += 1
        answers = []
        for turns in conversations:
            if turns[0]["content"] == RESPEAK_SYSTEM:  # asked to rewrite the code for speech: code again
                answers.append("`still = code`")
                continue
            assert turns[0] == {"role": "system", "content": DEMO_SYSTEM}
            question = turns[-1]["content"]
            answers.append("`a = list`" if question == self.listed else f"This is my answer to {question.split()[0]}.")
        return answers


DEMO_SYSTEM = "You are a helpful assistant. Answer in one or two short sentences of plain spoken English."


def test_the_demo_config_builds_a_handful(tmp_path, monkeypatch):
    source = tmp_path / "instructions.jsonl"
    assert write_source(source, max_train=5, max_heldout=2) == 7
    listed = json.loads(source.read_text().splitlines()[0])["instruction"]
    monkeypatch.setattr(pipeline, "make_backend", lambda config: FakeChat(listed))
    config = load_config(
        ROOT / "data_recipes" / "configs" / "demo.yaml", BuildConfig, [f"out={tmp_path}", f"source.path={source}"]
    )
    pipeline.ShardBuild(config).run()
    report = pipeline.merge(config)
    assert report["records"] == {"train": 6, "heldout": 3}  # two training and one held-out question start one
    assert report["later_turns"] == {"train": 2, "heldout": 1}
    assert report["steps"]["answer"]["skipped"] == {"code, after a rewrite for speech": 1}
    data = SpeechInstructionDataset(tmp_path / "train.jsonl")
    records = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    for record in records:
        info = soundfile.info(str(tmp_path / record["audio"]))
        assert info.samplerate == 16000 and info.channels == 1
        assert 0.5 < info.duration < 10 and abs(info.duration - record["duration"]) < 0.01
        assert (record["voice"].startswith("en-") or record["engine"] == "flite") and record["family"]
        answer = soundfile.info(str(tmp_path / record["response_audio"]))
        assert answer.samplerate == 16000 and abs(answer.duration - record["response_duration"]) < 0.01
    assert len({r["voice"] for r in records}) > 1  # questions: several voices
    for later in (r for r in records if "history" in r):
        assert later["instruction"] in FOLLOW_UPS[later["family"]] and later["id"].endswith("-t1")
        first = next(r for r in records if r["id"] == later["dialogue"])
        assert later["history"][0] == {"role": "user", "text": first["instruction"], "audio": first["audio"]}
    answer_voices = {
        json.loads(line)["voice"]
        for line in (tmp_path / "work" / "shard-00000-of-00001" / "answer_speech.jsonl").read_text().splitlines()
    }
    assert answer_voices == {"en-us"}  # answers: one voice for all
    assert len(data) == len(records) and data[0].instruction
    assert len(datasets.load_from_disk(str(tmp_path / "hf" / "heldout"))) == 3
    # a rerun asks and synthesizes nothing new
    mtimes = {p: p.stat().st_mtime for d in ("wavs", "response_wavs") for p in (tmp_path / d).iterdir()}
    calls = FakeChat.calls
    pipeline.ShardBuild(config).run()
    assert FakeChat.calls == calls and {p: p.stat().st_mtime for p in mtimes} == mtimes


def test_a_source_of_sampled_answers_holds_every_training_instruction_n_times(tmp_path):
    out = tmp_path / "answers" / "instructions.jsonl"
    instructions_main(["--samples", "2", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    training = [i for i in build_instructions() if not i.held_out]
    assert len(rows) == 2 * len(training) and not any(r["held_out"] or "follow_ups" in r for r in rows)
    assert len({r["id"] for r in rows}) == len(rows) and rows[0]["id"] == f"{training[0].id}-s0"
    assert {r["instruction"] for r in rows} == {i.text for i in training}  # no held-out question is answered
