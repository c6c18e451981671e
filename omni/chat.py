"""Batched greedy answers of a text chat LLM.

The demo data's answers are written this way, and the text-parity evaluation answers the text the
same way, so the two must share one path: the LLM's own chat template, left padding, greedy decoding.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def chat_messages(instruction: str, system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": instruction}]


@torch.no_grad()
def chat_answers(
    llm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    instructions: list[str],
    system: str | None,
    max_new_tokens: int,
    eos_token_id: list[int] | None = None,
) -> list[str]:
    """One batch of instructions -> the decoded answers (eos_token_id None: the model's generation config)."""
    prompts = [
        tokenizer.apply_chat_template(chat_messages(i, system), tokenize=False, add_generation_prompt=True)
        for i in instructions
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = {} if eos_token_id is None else {"eos_token_id": eos_token_id}
    out = llm.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, **kwargs)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
