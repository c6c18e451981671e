"""Text answers from the demo LLM itself, greedy, kept short and speakable.

Stage 1's target is then "answer the speech as you answer the text", which the text-parity
evaluation measures directly. Answers with lists, symbols or nothing to say are skipped, with the
reason kept for the build report.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from omni.chat import chat_answers

SYSTEM_PROMPT = "You are a helpful assistant. Answer in one or two short sentences of plain spoken English."
SPEAKABLE = re.compile(r"^[A-Za-z0-9 ,.'?!-]+$")
LIST_ITEM = re.compile(r"(^|\n)\s*(\d+[.)]|[-*•])\s")
MAX_WORDS = 40


def speakable(answer: str) -> tuple[str | None, str | None]:
    """The answer cut to at most two sentences, or None and why it cannot be spoken."""
    if LIST_ITEM.search(answer):
        return None, "symbols or list markup"
    answer = " ".join(answer.split())
    sentences = re.findall(r"[^.!?]+[.!?]", answer)
    if sentences:
        answer = "".join(sentences[:2]).strip()
    if not answer:
        return None, "empty answer"
    if not SPEAKABLE.match(answer):
        return None, "symbols or list markup"
    if len(answer.split()) > MAX_WORDS:
        return None, f"longer than {MAX_WORDS} words"
    return answer, None


class Responder:
    """Greedy batched chat generation with a local Hugging Face model."""

    def __init__(self, model_dir: str, max_new_tokens: int = 48, system: str = SYSTEM_PROMPT):
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.max_new_tokens = max_new_tokens
        self.system = system

    def answer(self, instructions: list[str]) -> list[str]:
        return chat_answers(self.model, self.tokenizer, instructions, self.system, self.max_new_tokens)

    def answer_all(self, instructions: list[str], batch_size: int = 32) -> Iterator[tuple[int, str]]:
        for start in range(0, len(instructions), batch_size):
            for offset, text in enumerate(self.answer(instructions[start : start + batch_size])):
                yield start + offset, text
