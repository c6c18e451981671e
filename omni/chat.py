"""Batched greedy answers of a text chat LLM.

The demo data's answers are written this way, and the text-parity evaluation answers the text the
same way, so the two must share one path: the LLM's own chat template, left padding, greedy decoding.
The data builder's transformers backend and its local chat server take the same path with whole
conversations (`chat_completions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Completion:
    """One generated answer and what an OpenAI-style `usage` / `finish_reason` needs."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    stopped: bool
    """ended on a stop token (false: cut at max_new_tokens)"""


def chat_messages(instruction: str, system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": instruction}]


@torch.no_grad()
def chat_completions(
    llm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int,
    eos_token_id: list[int] | None = None,
    temperature: float = 0.0,
    seed: int | None = None,
) -> list[Completion]:
    """One batch of conversations (OpenAI-style role/content messages) -> their next assistant turns.

    temperature 0 is greedy; above 0 samples, from `seed` when given (sampled answers depend on the batch).
    eos_token_id None: the model's generation config.
    """
    prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    batch = batch.to(llm.device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = {} if eos_token_id is None else {"eos_token_id": eos_token_id}
    if temperature > 0:
        if seed is not None:
            torch.manual_seed(seed)
        kwargs |= {"do_sample": True, "temperature": temperature}
    else:
        kwargs |= {"do_sample": False}
    out = llm.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=pad, **kwargs)
    new = out[:, batch["input_ids"].shape[1] :].tolist()
    stops = eos_token_id if eos_token_id is not None else llm.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [] if stops is None else [stops])
    completions = []
    for tokens, prompt_tokens in zip(new, batch["attention_mask"].sum(1).tolist(), strict=True):
        end = next((k + 1 for k, token in enumerate(tokens) if token in stops), None)
        tokens = tokens if end is None else tokens[:end]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        completions.append(Completion(text, prompt_tokens, len(tokens), end is not None))
    return completions


def chat_answers(
    llm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    instructions: list[str],
    system: str | None,
    max_new_tokens: int,
    eos_token_id: list[int] | None = None,
) -> list[str]:
    """One batch of instructions -> the decoded answers (eos_token_id None: the model's generation config)."""
    conversations = [chat_messages(i, system) for i in instructions]
    return [c.text for c in chat_completions(llm, tokenizer, conversations, max_new_tokens, eos_token_id)]
