import json

import soundfile

from data_recipes.demo import build as demo_build
from data_recipes.demo.instructions import build_instructions
from data_recipes.demo.responses import speakable
from omni.data import SpeechInstructionDataset


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


def test_speakable_filter():
    assert speakable("Paris is the capital of France. It is big. It has a river.") == (
        "Paris is the capital of France. It is big.",
        None,
    )
    assert speakable("1. apples\n2. pears")[1] == "symbols or list markup"
    assert speakable("  ")[1] == "empty answer"


class FakeResponder:
    """Stands in for the LLM: answers by instruction family, one answer unspeakable."""

    calls = 0

    def __init__(self, model_dir):
        pass

    def answer_all(self, instructions, batch_size):
        FakeResponder.calls += 1
        for i, text in enumerate(instructions):
            yield i, "* a list" if i == 0 else f"This is my answer to {text.split()[0].lower()}."


def test_build_a_handful(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_build, "Responder", FakeResponder)
    report = demo_build.build(tmp_path, "unused", max_train=5, max_heldout=2, batch_size=4, workers=2)
    assert report["items"] == 7 and sum(report["kept"].values()) == 6
    assert report["skipped_reasons"] == {"symbols or list markup": 1}
    data = SpeechInstructionDataset(tmp_path / "train.jsonl")
    records = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    for record in records:
        info = soundfile.info(str(tmp_path / record["audio"]))
        assert info.samplerate == 16000 and info.channels == 1
        assert 0.5 < info.duration < 10 and abs(info.duration - record["duration"]) < 0.01
        assert record["voice"].startswith("en-")
        answer = soundfile.info(str(tmp_path / record["response_audio"]))
        assert answer.samplerate == 16000 and abs(answer.duration - record["response_duration"]) < 0.01
    assert report["response_voice"] == {"voice": "en-us", "rate": 165}  # answers: one voice for all
    assert len({r["voice"] for r in records}) > 1  # questions: several
    assert len(data) == len(records) and data[0].instruction
    import datasets

    assert len(datasets.load_from_disk(str(tmp_path / "hf" / "heldout"))) == report["kept"]["heldout"]
    # a rerun generates and synthesizes nothing new
    mtimes = {p: p.stat().st_mtime for d in ("wavs", "response_wavs") for p in (tmp_path / d).iterdir()}
    calls = FakeResponder.calls
    demo_build.build(tmp_path, "unused", max_train=5, max_heldout=2, batch_size=4, workers=2)
    assert FakeResponder.calls == calls and {p: p.stat().st_mtime for p in mtimes} == mtimes
