import pytest
from transformers import AutoTokenizer

from omni.config import PromptConfig
from omni.prompt import IGNORE_INDEX, SPEECH_TOKEN_ID, PromptBuilder, PromptError

LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
    " + m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


@pytest.fixture
def tokenizer(tiny_dir):
    return AutoTokenizer.from_pretrained(tiny_dir / "llm")


def test_speech_slots_and_labels_cover_only_the_answer(tokenizer):
    builder = PromptBuilder(tokenizer, PromptConfig())
    ids, labels = builder.encode(7, "hello world")
    assert ids.count(SPEECH_TOKEN_ID) == 7
    first = ids.index(SPEECH_TOKEN_ID)
    assert ids[first : first + 7] == [SPEECH_TOKEN_ID] * 7  # one contiguous run
    answer = [t for t in labels if t != IGNORE_INDEX]
    assert labels[: len(ids) - len(answer)] == [IGNORE_INDEX] * (len(ids) - len(answer))
    assert tokenizer.decode(answer) == "hello world<|im_end|>"  # the ChatML newline after <|im_end|> is not trained
    assert answer[-1] == tokenizer.eos_token_id
    prompt, prompt_labels = builder.encode(7)
    assert prompt == ids[: len(prompt)] and set(prompt_labels) == {IGNORE_INDEX}
    assert tokenizer.decode(prompt[-6:]).endswith("<|im_start|>assistant\n")


def test_llama3_style_template_ends_at_eot(tokenizer):
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
    )
    tokenizer.chat_template = LLAMA3_TEMPLATE
    builder = PromptBuilder(tokenizer, PromptConfig(end_of_turn="<|eot_id|>"))
    ids, labels = builder.encode(3, "yes")
    answer = [t for t in labels if t != IGNORE_INDEX]
    assert tokenizer.decode(answer) == "yes<|eot_id|>"
    assert (
        tokenizer.decode(ids[:1]) == "<|begin_of_text|>"
        and ids.count(tokenizer.convert_tokens_to_ids("<|begin_of_text|>")) == 1
    )


def test_placeholder_must_appear_once(tokenizer):
    with pytest.raises(PromptError, match="exactly once"):
        PromptBuilder(tokenizer, PromptConfig(user="no speech here"))


def test_missing_end_of_turn_is_an_error(tokenizer):
    builder = PromptBuilder(tokenizer, PromptConfig(end_of_turn="<|endoftext|>"))
    with pytest.raises(PromptError, match="end-of-turn"):
        builder.encode(2, "hello")


def test_no_system_turn(tokenizer):
    builder = PromptBuilder(tokenizer, PromptConfig(system=None))
    ids, _ = builder.encode(1)
    assert "system" not in tokenizer.decode([t for t in ids if t >= 0])
