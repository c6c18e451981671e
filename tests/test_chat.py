"""omni.chat: the chat template with or without a system prompt, batched greedy answers, their bounds, and
whole conversations with their token counts."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from omni.chat import chat_answers, chat_completions, chat_messages
from tests.conftest import scaled_tiny_llm

SYSTEM = "You are a helpful assistant."
INSTRUCTIONS = ["hello", "What is the answer to one two three four five six seven?", "yes no maybe"]


@pytest.fixture(scope="module")
def llm_and_tokenizer(tiny_dir):
    """The scaled tiny Llama (see `scaled_tiny_llm`) and its tokenizer."""
    return scaled_tiny_llm(tiny_dir), AutoTokenizer.from_pretrained(tiny_dir / "llm")


def greedy_alone(llm, tokenizer, instruction: str, system: str | None, max_new_tokens: int) -> list[int]:
    """The reference: one prompt, no padding, the model's own greedy loop without any stop token."""
    prompt = tokenizer.apply_chat_template(
        chat_messages(instruction, system), tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        for _ in range(max_new_tokens):
            ids = torch.cat([ids, llm(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, -max_new_tokens:].tolist()


def generated_lengths(monkeypatch, llm) -> list[int]:
    """Records how many tokens each llm.generate call added (per batch)."""
    lengths, generate = [], llm.generate

    def spy(**kwargs):
        out = generate(**kwargs)
        lengths.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(llm, "generate", spy)
    return lengths


def test_system_message_present_or_absent(llm_and_tokenizer):
    _, tokenizer = llm_and_tokenizer
    assert chat_messages("hi", SYSTEM) == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]
    assert chat_messages("hi", None) == chat_messages("hi", "") == [{"role": "user", "content": "hi"}]
    with_system = tokenizer.apply_chat_template(chat_messages("hi", SYSTEM), tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(chat_messages("hi", None), tokenize=False, add_generation_prompt=True)
    assert with_system == f"<|im_start|>system\n{SYSTEM}<|im_end|>\n" + without
    assert without == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("system", [SYSTEM, None])
def test_answers_follow_the_template_greedily(llm_and_tokenizer, system):
    llm, tokenizer = llm_and_tokenizer
    tokens = greedy_alone(llm, tokenizer, INSTRUCTIONS[0], system, 6)
    eos = llm.generation_config.eos_token_id
    assert eos not in tokens, "the tiny model's greedy answer should run to the token limit"
    expected = tokenizer.decode(tokens, skip_special_tokens=True)
    assert chat_answers(llm, tokenizer, INSTRUCTIONS[:1], system, 6) == [expected]


def test_system_prompt_changes_the_answers(llm_and_tokenizer):
    llm, tokenizer = llm_and_tokenizer
    with_system = chat_answers(llm, tokenizer, INSTRUCTIONS, SYSTEM, 6)
    without = chat_answers(llm, tokenizer, INSTRUCTIONS, None, 6)
    assert all(a != b for a, b in zip(with_system, without, strict=True))
    assert len(set(with_system)) == len(INSTRUCTIONS)  # and the instruction matters too


def test_batch_answers_equal_each_alone(llm_and_tokenizer):
    llm, tokenizer = llm_and_tokenizer
    lengths = {len(tokenizer(i).input_ids) for i in INSTRUCTIONS}
    assert len(lengths) == len(INSTRUCTIONS), "the batch must need padding"
    together = chat_answers(llm, tokenizer, INSTRUCTIONS, SYSTEM, 8)
    alone = [chat_answers(llm, tokenizer, [i], SYSTEM, 8)[0] for i in INSTRUCTIONS]
    assert together == alone
    assert all(together)


def test_max_new_tokens_bounds_the_answer(llm_and_tokenizer, monkeypatch):
    llm, tokenizer = llm_and_tokenizer
    lengths = generated_lengths(monkeypatch, llm)
    for limit in (1, 3, 7):
        (answer,) = chat_answers(llm, tokenizer, INSTRUCTIONS[1:2], None, limit)
        expected = greedy_alone(llm, tokenizer, INSTRUCTIONS[1], None, limit)
        assert answer == tokenizer.decode(expected, skip_special_tokens=True)
    assert lengths == [1, 3, 7]
    chat_answers(llm, tokenizer, INSTRUCTIONS, None, 4)
    assert lengths[-1] <= 4


def test_eos_token_id_is_honoured(llm_and_tokenizer, monkeypatch):
    llm, tokenizer = llm_and_tokenizer
    tokens = greedy_alone(llm, tokenizer, INSTRUCTIONS[2], SYSTEM, 8)
    stop = next(k for k in range(1, len(tokens)) if tokens[k] not in tokens[:k])  # first repeat-free later token
    lengths = generated_lengths(monkeypatch, llm)

    (answer,) = chat_answers(llm, tokenizer, INSTRUCTIONS[2:3], SYSTEM, 8, eos_token_id=[tokens[stop]])
    assert lengths[-1] == stop + 1  # generation ends on the stop token
    assert answer == tokenizer.decode(tokens[: stop + 1], skip_special_tokens=True)

    # None: the model's generation config decides.
    monkeypatch.setattr(llm.generation_config, "eos_token_id", [tokens[stop]])
    assert chat_answers(llm, tokenizer, INSTRUCTIONS[2:3], SYSTEM, 8) == [answer]
    assert lengths[-1] == stop + 1
    # An explicit list overrides it.
    (longer,) = chat_answers(llm, tokenizer, INSTRUCTIONS[2:3], SYSTEM, 8, eos_token_id=[tokenizer.eos_token_id])
    assert lengths[-1] == 8
    assert longer == tokenizer.decode(tokens, skip_special_tokens=True)


def test_completions_of_conversations(llm_and_tokenizer):
    llm, tokenizer = llm_and_tokenizer
    conversations = [chat_messages(i, SYSTEM) for i in INSTRUCTIONS]
    completions = chat_completions(llm, tokenizer, conversations, 6)
    assert [c.text for c in completions] == chat_answers(llm, tokenizer, INSTRUCTIONS, SYSTEM, 6)
    for conversation, completion in zip(conversations, completions, strict=True):
        prompt = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        assert completion.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False).input_ids)
        assert completion.stopped or completion.completion_tokens == 6
    tokens = greedy_alone(llm, tokenizer, INSTRUCTIONS[2], SYSTEM, 8)
    (stopped,) = chat_completions(llm, tokenizer, conversations[2:3], 8, eos_token_id=[tokens[3]])
    assert stopped.stopped and stopped.completion_tokens == tokens.index(tokens[3]) + 1
