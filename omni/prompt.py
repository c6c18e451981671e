"""Chat prompts with a speech slot, and labels that train only on the answer.

The prompt text comes from the LLM's own chat template, so any instruct model works. The
placeholder in the user turn becomes a run of SPEECH_TOKEN_ID sentinels, one per speech embedding;
the model swaps them for the adaptor's output. Labels are -100 everywhere but the response and its
end-of-turn token: those are also the positions the speech decoder later reads.
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerBase

from omni.config import PromptConfig

SPEECH_TOKEN_ID = -200
IGNORE_INDEX = -100


class PromptError(ValueError):
    pass


class PromptBuilder:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: PromptConfig, end_of_turn_ids: Iterable[int] = ()):
        if tokenizer.chat_template is None:
            raise PromptError(f"tokenizer {tokenizer.name_or_path!r} has no chat template; use an instruct model")
        if config.user.count(config.placeholder) != 1:
            raise PromptError(
                f"prompt.user must hold the placeholder {config.placeholder!r} exactly once: {config.user!r}"
            )
        self.tokenizer = tokenizer
        self.config = config
        ids = set(end_of_turn_ids)
        if config.end_of_turn is not None:
            ids = {tokenizer.convert_tokens_to_ids(config.end_of_turn)}
        elif tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        if not ids:
            raise PromptError("no end-of-turn token: set prompt.end_of_turn")
        self.end_of_turn_ids = ids
        self._prefix, self._suffix = self._prompt_ids()

    def messages(self, response: str | None = None) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.config.system}] if self.config.system else []
        messages.append({"role": "user", "content": self.config.user})
        if response is not None:
            messages.append({"role": "assistant", "content": response})
        return messages

    def _render(self, response: str | None) -> str:
        return self.tokenizer.apply_chat_template(
            self.messages(response), tokenize=False, add_generation_prompt=response is None
        )

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _prompt_ids(self) -> tuple[list[int], list[int]]:
        before, after = self._render(None).split(self.config.placeholder)
        return self._tokens(before), self._tokens(after)

    def response_ids(self, response: str) -> list[int]:
        """The answer's tokens through its end-of-turn token, as the template writes them."""
        prompt, full = self._render(None), self._render(response)
        if not full.startswith(prompt):
            raise PromptError("the chat template renders the conversation differently from its generation prompt")
        ids = self._tokens(full[len(prompt) :])
        end = next((i for i, t in enumerate(ids) if t in self.end_of_turn_ids), None)
        if end is None:
            raise PromptError(
                f"no end-of-turn token {sorted(self.end_of_turn_ids)} after the response; set prompt.end_of_turn"
            )
        return ids[: end + 1]

    def encode(self, num_speech: int, response: str | None = None) -> tuple[list[int], list[int]]:
        """input_ids and labels for one example; without a response, the generation prompt."""
        prompt = self._prefix + [SPEECH_TOKEN_ID] * num_speech + self._suffix
        labels = [IGNORE_INDEX] * len(prompt)
        if response is None:
            return prompt, labels
        answer = self.response_ids(response)
        return prompt + answer, labels + answer
