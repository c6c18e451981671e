"""Chat prompts with a speech slot, and labels that train only on the answer.

The prompt text comes from the LLM's own chat template, so any instruct model works. The
placeholder in the user turn becomes a run of SPEECH_TOKEN_ID sentinels, one per speech embedding;
the model swaps them for the adaptor's output. Labels are -100 everywhere but the response and its
end-of-turn token: those are also the positions the speech decoder later reads.

Earlier turns of a conversation (`history`) are rendered by the same template before the current
question: earlier answers as text, earlier questions as speech slots of their own (`prompt.history:
speech`) or as their words (`text`). With `prompt.train_on: every_answer` earlier answers get labels too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from transformers import PreTrainedTokenizerBase

from omni.config import PromptConfig

SPEECH_TOKEN_ID = -200
IGNORE_INDEX = -100


class PromptError(ValueError):
    pass


@dataclass(frozen=True)
class Turn:
    """One earlier turn of a conversation. Answers carry their text; questions their words, their speech
    (16 kHz samples or a file), or both: `prompt.history` says which one the prompt uses."""

    role: Literal["user", "assistant"]
    text: str | None = None
    audio: Any = None  # np.ndarray (16 kHz) | str | Path | None
    interrupted: bool = False  # an answer the user talked over: its text is what was heard, ending in "…"

    @property
    def audio_path(self) -> Path | None:
        return Path(self.audio) if isinstance(self.audio, str | Path) else None


def check_history(history: Sequence[Turn]) -> tuple[int, str, str] | None:
    """The first problem of a history as (turn index, field, reason), or None: turns alternate from a
    question to an answer (the current question follows the last answer), and each has what it needs."""
    for i, turn in enumerate(history):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn.role != expected:
            return i, "role", f"expected {expected!r} (turns alternate, starting with the user), got {turn.role!r}"
        if turn.text is not None and (not isinstance(turn.text, str) or not turn.text.strip()):
            return i, "text", "expected non-empty text"
        if turn.role == "assistant" and turn.text is None:
            return i, "text", "missing (an earlier answer is given as text)"
        if turn.role == "user" and turn.text is None and turn.audio is None:
            return i, "text", "missing: an earlier question needs its text or its audio"
    if history and history[-1].role != "assistant":
        return len(history) - 1, "role", "the last earlier turn must be an answer (the current question follows it)"
    return None


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
        self.encode(1)  # a template that cannot render the prompt fails here, not in the first batch

    def messages(
        self, response: str | None = None, history: Sequence[Turn] = (), question: str | None = None
    ) -> list[dict[str, str]]:
        """The chat turns; the current question is its speech slot, or `question`'s words (a text question)."""
        messages = [{"role": "system", "content": self.config.system}] if self.config.system else []
        messages += [{"role": turn.role, "content": self._content(turn)} for turn in history]
        user = self.config.user if question is None else self.config.user.replace(self.config.placeholder, question)
        messages.append({"role": "user", "content": user})
        if response is not None:
            messages.append({"role": "assistant", "content": response})
        return messages

    def _content(self, turn: Turn) -> str:
        if turn.role == "assistant":
            return turn.text
        if self.config.history == "speech":
            if turn.audio is None:
                raise PromptError("prompt.history is speech but an earlier question has no audio")
            return self.config.user
        if turn.text is None:
            raise PromptError("prompt.history is text but an earlier question has no text")
        return self.config.user.replace(self.config.placeholder, turn.text)

    def speech_turns(self, history: Sequence[Turn]) -> list[Turn]:
        """The earlier questions that take speech slots (in order; the current question's slot follows)."""
        return [t for t in history if t.role == "user"] if self.config.history == "speech" else []

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _answer_end(self, ids: list[int]) -> int:
        """Index just past the first end-of-turn token of an answer's tokens."""
        end = next((i for i, t in enumerate(ids) if t in self.end_of_turn_ids), None)
        if end is None:
            raise PromptError(
                f"no end-of-turn token {sorted(self.end_of_turn_ids)} after the response; set prompt.end_of_turn"
            )
        return end + 1

    def response_ids(self, response: str) -> list[int]:
        """The answer's tokens through its end-of-turn token, as the template writes them."""
        prompt, full = self._render(self.messages(), True), self._render(self.messages(response), False)
        if not full.startswith(prompt):
            raise PromptError("the chat template renders the conversation differently from its generation prompt")
        ids = self._tokens(full[len(prompt) :])
        return ids[: self._answer_end(ids)]

    def encode(
        self,
        num_speech: int | Sequence[int],
        response: str | None = None,
        history: Sequence[Turn] = (),
        label_history: bool | None = None,
        question: str | None = None,
    ) -> tuple[list[int], list[int]]:
        """input_ids and labels for one example; without a response, the generation prompt.

        `num_speech`: speech embeddings of the current question, or of every speech slot in order (the
        earlier questions of `speech_turns(history)`, then the current one). `label_history` (default:
        `prompt.train_on`) labels the earlier answers too. `question`, for a text question, is the current
        question's words in place of its speech slot (stage 2 learns from answers alone)."""
        if problem := check_history(history):
            raise PromptError(f"history turn {problem[0]}, field {problem[1]!r}: {problem[2]}")
        counts = [num_speech] if isinstance(num_speech, int) else list(num_speech)
        if label_history is None:
            label_history = self.config.train_on == "every_answer"
        messages = self.messages(response, history, question)
        full = self._render(messages, response is None)
        cuts: list[tuple[int, int, str]] = []  # (start, end, what) in the rendered text
        for j, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before, after = self._render(messages[:j], True), self._render(messages[: j + 1], False)
            if not (after.startswith(before) and full.startswith(after)):
                raise PromptError("the chat template renders the conversation differently from its generation prompt")
            current = response is not None and j == len(messages) - 1
            cuts.append((len(before), len(after), "current" if current else "earlier"))
        placeholder = self.config.placeholder
        slots = [i for i in range(len(full)) if full.startswith(placeholder, i)]
        if len(slots) != len(counts):
            raise PromptError(
                f"{len(slots)} speech slots in the rendered prompt but {len(counts)} speech inputs "
                f"(is the placeholder {placeholder!r} in the system prompt or in a turn's text?)"
            )
        cuts += [(i, i + len(placeholder), "speech") for i in slots]
        ids: list[int] = []
        labels: list[int] = []
        position, speech = 0, iter(counts)
        for start, end, what in sorted(cuts):
            if start < position:
                raise PromptError(f"the placeholder {placeholder!r} appears inside an answer")
            ids += self._tokens(full[position:start])
            labels += [IGNORE_INDEX] * (len(ids) - len(labels))
            if what == "speech":
                ids += [SPEECH_TOKEN_ID] * next(speech)
                labels += [IGNORE_INDEX] * (len(ids) - len(labels))
            else:
                answer = self._tokens(full[start:end])
                cut = self._answer_end(answer)
                labelled = what == "current" or label_history
                ids += answer[:cut]
                labels += answer[:cut] if labelled else [IGNORE_INDEX] * cut
                if what == "current":  # nothing after the current answer's end of turn
                    return ids, labels
                ids += answer[cut:]
                labels += [IGNORE_INDEX] * (len(answer) - cut)
            position = end
        ids += self._tokens(full[position:])
        return ids, labels + [IGNORE_INDEX] * (len(ids) - len(labels))
