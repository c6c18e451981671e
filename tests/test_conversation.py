import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile
import torch
from transformers import AutoTokenizer

from omni.config import PromptConfig
from omni.conversation import Conversation
from omni.data import DataError, Example, SpeechCollator, SpeechInstructionDataset
from omni.generate import main as generate_main
from omni.model import OmniModel
from omni.prompt import IGNORE_INDEX, SPEECH_TOKEN_ID, PromptBuilder, PromptError, Turn
from omni.speech_generator import SpeechGenerator, load_parts
from tests.conftest import noise

HISTORY = (Turn("user", "what is the largest country", noise(1.2, 5)), Turn("assistant", "Russia is."))


@pytest.fixture
def tokenizer(tiny_dir):
    return AutoTokenizer.from_pretrained(tiny_dir / "llm")


def answers(tokenizer, ids, labels) -> list[str]:
    """The labelled spans, decoded."""
    spans, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            spans, current = [*spans, current], []
    return [tokenizer.decode(s) for s in [*spans, *([current] if current else [])]]


def test_earlier_turns_render_through_the_chat_template_before_the_question(tokenizer):
    builder = PromptBuilder(tokenizer, PromptConfig(history="text"))
    ids, labels = builder.encode(4, "Moscow.", HISTORY)
    text = tokenizer.decode([t for t in ids if t != SPEECH_TOKEN_ID])
    assert text.index("what is the largest country") < text.index("Russia is.") < text.index("Moscow.")
    assert ids.count(SPEECH_TOKEN_ID) == 4  # the earlier question as words: only the current one is speech
    assert answers(tokenizer, ids, labels) == ["Moscow.<|im_end|>"]  # the current answer only, by default
    every = PromptBuilder(tokenizer, PromptConfig(history="text", train_on="every_answer"))
    ids, labels = every.encode(4, "Moscow.", HISTORY)
    assert answers(tokenizer, ids, labels) == ["Russia is.<|im_end|>", "Moscow.<|im_end|>"]
    single, _ = builder.encode(4, "Moscow.")  # no history: the same current turn, fewer positions
    after_speech = len(single) - single[::-1].index(SPEECH_TOKEN_ID)
    assert ids[-(len(single) - after_speech) :] == single[after_speech:] and len(ids) > len(single)


def test_earlier_questions_as_speech_take_slots_of_their_own(tokenizer):
    builder = PromptBuilder(tokenizer, PromptConfig(history="speech"))
    assert builder.speech_turns(HISTORY) == [HISTORY[0]]
    ids, labels = builder.encode([6, 4], "Moscow.", HISTORY)
    runs = "".join("s" if t == SPEECH_TOKEN_ID else "." for t in ids).split(".")
    assert [len(r) for r in runs if r] == [6, 4]  # the earlier question's slots, then the current one's
    with pytest.raises(PromptError, match="2 speech slots .* but 1 speech inputs"):
        builder.encode(4, "Moscow.", HISTORY)
    with pytest.raises(PromptError, match="no audio"):
        builder.encode([6, 4], "x", (Turn("user", "words only"), Turn("assistant", "ok")))


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ((Turn("assistant", "hi"), Turn("user", "x")), "turn 0, field 'role': expected 'user'"),
        ((Turn("user", "x"),), "the last earlier turn must be an answer"),
        ((Turn("user", "x"), Turn("assistant", None)), "turn 1, field 'text': missing"),
        ((Turn("user", "  "), Turn("assistant", "ok")), "turn 0, field 'text': expected non-empty text"),
    ],
)
def test_bad_histories_say_which_turn_and_field(tokenizer, history, message):
    with pytest.raises(PromptError, match=message):
        PromptBuilder(tokenizer, PromptConfig(history="text")).encode(3, "a", history)


def write_dialogue_set(root, history) -> object:
    soundfile.write(root / "q.wav", noise(1.0, 1), 16000)
    soundfile.write(root / "h.wav", noise(0.8, 2), 16000)
    good = {"id": "two", "audio": "q.wav", "response": "Moscow.", "history": history}
    lines = [json.dumps({"id": "one", "audio": "q.wav", "response": "hi"}), json.dumps(good)]
    (root / "d.jsonl").write_text("\n".join(lines) + "\n")
    return root / "d.jsonl"


def test_records_with_history_load_with_their_turns_and_sign_it(tmp_path):
    history = [{"role": "user", "text": "biggest country?", "audio": "h.wav"}, {"role": "assistant", "text": "Russia"}]
    data = SpeechInstructionDataset(write_dialogue_set(tmp_path, history))
    assert data[0].history == () and [t.role for t in data[1].history] == ["user", "assistant"]
    assert data[1].history[0].audio == str(tmp_path / "h.wav") and data[1].history[1].text == "Russia"
    before = data.signature(with_units=False)
    history[1]["text"] = "Canada"  # another history: another cache key for the LLM's states
    assert SpeechInstructionDataset(write_dialogue_set(tmp_path, history)).signature(with_units=False) != before


@pytest.mark.parametrize(
    ("history", "field", "reason"),
    [
        ("no", "history", "expected a list of turns"),
        ([{"role": "user", "text": "a", "audio": "no.wav"}, {"role": "assistant"}], "history[0].audio", "not found"),
        ([{"role": "user", "text": "a"}, {"role": "robot", "text": "b"}], "history[1].role", "expected 'assistant'"),
        ([{"role": "user", "text": "a"}, "b"], "history[1]", "expected an object"),
    ],
)
def test_a_bad_history_names_the_file_the_record_the_turn_and_the_field(tmp_path, history, field, reason):
    with pytest.raises(DataError) as err:
        SpeechInstructionDataset(write_dialogue_set(tmp_path, history))
    message = str(err.value)
    assert f"d.jsonl, line 2 (id 'two'), field '{field}'" in message and reason in message


@pytest.fixture
def model(model_config) -> OmniModel:
    torch.manual_seed(0)
    config = replace(model_config, prompt=replace(model_config.prompt, history="speech"))
    return OmniModel.from_config(config)


def test_a_batch_mixing_conversations_and_single_questions_trains_and_reads_the_current_answer(model):
    single = Example("a", noise(1.5, 1), "hello world", None, None)
    dialogue = Example("b", noise(1.0, 2), "one two", None, None, history=HISTORY)
    batch = SpeechCollator.for_model(model)([single, dialogue])
    assert batch["clips_per_row"].tolist() == [1, 2] and len(batch["windows_per_clip"]) == 3
    loss = model(batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert model.adaptor.parameters().__next__().grad is not None
    stage2 = SpeechCollator.for_model(model, label_history=False)([single, dialogue])
    _, lengths = model.response_hidden_states(stage2)
    answer = len(model.prompt.response_ids("one two"))
    assert lengths.tolist() == [len(model.prompt.response_ids("hello world")), answer]


def test_the_next_answer_is_given_in_the_context_of_the_earlier_turns(trio, tmp_path):
    generator = SpeechGenerator(*load_parts(trio / "model", trio / "decoder", trio / "vocoder"))
    conversation = Conversation(turns=list(HISTORY))
    seen = []
    collate = generator.collate
    generator.collate = lambda examples: seen.append(examples[0].history) or collate(examples)
    done = [e for e in conversation.ask(generator, noise(1.3, 4), max_new_tokens=5) if e.kind == "done"][0]
    assert seen == [HISTORY]  # the question was answered with the earlier turns in its prompt
    if done.text.strip():
        assert len(conversation.turns) == 4 and conversation.turns[-1] == Turn("assistant", done.text)
    assert not conversation.add(noise(1.0, 1), "  ") and conversation.add(noise(1.0, 1), "Yes.", "is it?")
    saved = conversation.save(tmp_path / "chat.json")
    again = Conversation.load(saved)
    assert [t.text for t in again.turns] == [t.text for t in conversation.turns]
    assert np.allclose(again.turns[0].audio, HISTORY[0].audio, atol=1e-4)
    assert Conversation(max_exchanges=1, turns=again.turns).history() == tuple(again.turns[-2:])
    assert Conversation(max_exchanges=0, turns=again.turns).history() == ()


def test_omni_generate_continues_a_saved_conversation(trio, tmp_path, capsys):
    parts = ["--model", str(trio / "model"), "--decoder", str(trio / "decoder"), "--vocoder", str(trio / "vocoder")]
    soundfile.write(tmp_path / "q.wav", noise(1.0, 6), 16000)
    chat = Conversation(turns=list(HISTORY)).save(tmp_path / "chat.json")
    for turn in (1, 2):
        out = tmp_path / f"a{turn}.wav"
        options = ["--max-new-tokens", "4", "--conversation", str(chat), "-o", str(out)]
        generate_main([str(tmp_path / "q.wav"), *parts, *options])
        assert "exchanges saved to" in capsys.readouterr().out and out.is_file()
    turns = json.loads(chat.read_text())["turns"]
    assert turns[:2] == [
        {"role": "user", "text": "what is the largest country", "audio": "chat_audio/turn-000.wav"},
        {"role": "assistant", "text": "Russia is."},
    ]
    assert [t["role"] for t in turns] == ["user", "assistant"] * (len(turns) // 2)
    assert all((tmp_path / t["audio"]).is_file() for t in turns if t["role"] == "user")
    chat.write_text(json.dumps({"turns": [{"role": "assistant", "text": "hi"}]}))
    with pytest.raises(ValueError, match="turn 0, field 'role'"):
        Conversation.load(chat)
