"""The builder's chat LLM backends: a local transformers model, or any OpenAI-compatible endpoint.

Both answer a list of conversations with one answer per conversation, in order; an item that fails comes
back as an `LLMError` with a short reason for the build report instead of failing the whole step. The
endpoint client (retries, backoff, Retry-After, requests in flight learnt from the endpoint, the API key never
written anywhere) is omni's own (`omni/endpoint.py`), shared with the evaluations' judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from omni.config import check, check_positive
from omni.endpoint import Conversation, LLMError, OpenAIChat, answer_text, short

if TYPE_CHECKING:  # torch and transformers load with the local backend only, not for an endpoint
    from omni.chat import Completion


@dataclass
class LLMBackendConfig:
    """The chat LLM that rewrites and answers instructions: a local transformers model or an endpoint."""

    backend: Literal["transformers", "openai"] = "transformers"
    """transformers = a local causal LM in this process | openai = any OpenAI-compatible chat endpoint"""
    model: str = ".cache/assets/smollm2-135m-instruct"
    """transformers: local directory or hub name | openai: the model name the endpoint serves"""
    base_url: str | None = None
    """openai: the endpoint, e.g. http://127.0.0.1:8000/v1"""
    api_key_env: str = "OPENAI_API_KEY"
    """environment variable holding the API key (never the key itself); unset = no key (local servers)"""
    batch_size: int = 32
    """transformers: prompts per generate call | openai: prompts handed out per round (progress granularity)"""
    concurrency: int = 8
    """openai: most requests in flight; fewer while the endpoint answers slowly or refuses (see InFlight)"""
    timeout_s: float = 60.0
    """openai: seconds before a request is abandoned (and retried)"""
    max_retries: int = 4
    """openai: retries after a connection error, timeout, 5xx or 429 (other 4xx are not retried)"""
    max_new_tokens: int = 128
    """longest answer in tokens"""
    temperature: float = 0.0
    """0 = greedy; above 0 samples"""
    seed: int = 0
    """sampling seed (temperature above 0)"""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """transformers: weights dtype (float32 keeps greedy answers independent of batching)"""

    def __post_init__(self) -> None:
        check_positive(self, "batch_size", "concurrency", "max_new_tokens")
        check(self.timeout_s > 0, "timeout_s", f"must be above 0, got {self.timeout_s}")
        check(self.max_retries >= 0, "max_retries", f"must be at least 0, got {self.max_retries}")
        check(self.temperature >= 0, "temperature", f"must be at least 0, got {self.temperature}")
        check(self.backend != "openai" or bool(self.base_url), "base_url", "required when backend is openai")
        check(bool(self.api_key_env), "api_key_env", "must name an environment variable")


class ChatBackend(Protocol):
    batch_size: int

    def chat(self, conversations: list[Conversation]) -> list[str | LLMError]:
        """One answer per conversation (OpenAI message dicts: role/content), in order. A failed item comes
        back as an LLMError with its reason; it never raises for one bad item."""
        ...


def make_backend(config: LLMBackendConfig) -> ChatBackend:
    return TransformersChat(config) if config.backend == "transformers" else OpenAIChat(config)


class TransformersChat:
    """A local causal LM answering through `omni.chat` (chat template, left padding, batched generate)."""

    def __init__(self, config: LLMBackendConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if config.model.startswith((".", "/", "~")) and not Path(config.model).expanduser().exists():
            raise FileNotFoundError(f"no model directory {config.model} (the demo's SmolLM2: python -m omni.assets)")
        self.config = config
        self.batch_size = config.batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(config.model)
        dtype = getattr(torch, config.dtype)
        self.llm = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype).eval()
        if torch.cuda.is_available():
            self.llm.to("cuda")

    def __repr__(self) -> str:
        return f"TransformersChat(model={self.config.model!r}, dtype={self.config.dtype!r})"

    def chat(self, conversations: list[Conversation]) -> list[str | LLMError]:
        config = self.config
        answers: list[str | LLMError] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            for result in self.complete(chunk, config.max_new_tokens, config.temperature, config.seed):
                answers.append(result if isinstance(result, LLMError) else answer_text(result.text))
        return answers

    def complete(
        self, conversations: list[Conversation], max_new_tokens: int, temperature: float, seed: int | None
    ) -> list[Completion | LLMError]:
        """One generate call; if it fails, each conversation alone, so that one bad item (a conversation
        its chat template rejects, say) costs only its own answer."""
        from omni.chat import chat_completions

        try:
            kwargs = {"temperature": temperature, "seed": seed}
            return list(chat_completions(self.llm, self.tokenizer, conversations, max_new_tokens, **kwargs))
        except Exception as err:
            if len(conversations) == 1:
                return [LLMError(short(err))]
        return [self.complete([c], max_new_tokens, temperature, seed)[0] for c in conversations]
