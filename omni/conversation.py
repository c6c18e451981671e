"""A spoken conversation: each question answered, in speech, in the context of the earlier turns.

    generator = SpeechGenerator(model, decoder, vocoder)
    conversation = Conversation(max_exchanges=8)
    for event in conversation.ask(generator, "q1.wav"): ...
    for event in conversation.ask(generator, "q2.wav"): ...   # "and what is its capital?" knows what "its" is
    conversation.save("chat.json")                               # Conversation.load("chat.json") goes on later

Every question re-renders the conversation through the LLM's chat template (omni/prompt.py): earlier
questions as speech, or as their words under `prompt.history: text` (then `ask(..., text=...)` supplies
them), earlier answers as the text the model wrote. Re-rendering costs one prefill of the earlier turns,
small next to the answer for the few turns a voice chat holds, and keeps every template right; the
streaming path of each answer is unchanged. `max_exchanges` bounds the prompt: the oldest go first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile

from omni.atomic import write_atomic
from omni.audio import SAMPLE_RATE, load_audio
from omni.prompt import Turn, check_history

if TYPE_CHECKING:
    from omni.speech_generator import Event, SpeechGenerator


class Conversation:
    def __init__(self, max_exchanges: int | None = 8, turns: list[Turn] | None = None):
        if max_exchanges is not None and max_exchanges < 0:
            raise ValueError(f"max_exchanges must be at least 0 (or None for all), got {max_exchanges}")
        self.max_exchanges = max_exchanges
        self.turns: list[Turn] = list(turns or [])

    def history(self) -> tuple[Turn, ...]:
        """The earlier turns the next question is answered with (the last `max_exchanges` exchanges)."""
        if self.max_exchanges is None:
            return tuple(self.turns)
        return tuple(self.turns[len(self.turns) - 2 * self.max_exchanges :] if self.max_exchanges else ())

    def add(self, question: np.ndarray, answer: str, text: str | None = None, interrupted: bool = False) -> bool:
        """Record an answered question (its 16 kHz audio and, if known, its words) and the answer; an empty
        answer said nothing, and the exchange is left out (the turns must alternate question, answer). An
        `interrupted` answer is what the user heard before talking over it, kept marked and ending in "…", so the
        next question is answered knowing where the last answer was cut (even before its first word)."""
        if interrupted:
            answer = _as_heard(answer)
        elif not answer.strip():
            return False
        self.turns += [Turn("user", text, question), Turn("assistant", answer, interrupted=interrupted)]
        return True

    def cut_last_answer(self, heard: str) -> None:
        """The user spoke over the last answer after it was written: keep only what was heard, marked interrupted."""
        if not self.turns or self.turns[-1].role != "assistant":
            raise ValueError("the conversation does not end with an answer to cut")
        self.turns[-1] = Turn("assistant", _as_heard(heard), interrupted=True)

    def ask(
        self,
        generator: SpeechGenerator,
        audio: np.ndarray | str | Path,
        text: str | None = None,
        chunk_size: int | None = 40,
        max_new_tokens: int = 256,
        **sampling,
    ) -> Iterator[Event]:
        """The events of the answer to this question, given the conversation so far; once it is done,
        the question and the answer join the conversation."""
        if generator.model.prompt.config.history == "text" and text is None:
            raise ValueError(
                "this model reads earlier questions as text (prompt.history: text): pass the question's words, "
                "ask(..., text=...)"
            )
        clip = audio if isinstance(audio, np.ndarray) else load_audio(audio)
        for event in generator(clip, chunk_size, max_new_tokens, history=self.history(), **sampling):
            if event.kind == "done":
                self.add(clip, event.text, text)
            yield event

    def save(self, path: str | Path) -> Path:
        """The turns as JSON (the record `history` format); questions' audio as wavs in `<path stem>_audio/`."""
        path = Path(path)
        folder = path.with_name(f"{path.stem}_audio")
        turns = []
        for i, turn in enumerate(self.turns):
            entry: dict = {"role": turn.role, "text": turn.text} | ({"interrupted": True} if turn.interrupted else {})
            if isinstance(turn.audio, np.ndarray):
                folder.mkdir(parents=True, exist_ok=True)
                soundfile.write(folder / f"turn-{i:03d}.wav", turn.audio, SAMPLE_RATE)
                entry["audio"] = f"{folder.name}/turn-{i:03d}.wav"
            elif turn.audio is not None:
                entry["audio"] = str(turn.audio)
            turns.append(entry)
        write_atomic(path, json.dumps({"turns": turns}, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, max_exchanges: int | None = 8) -> Conversation:
        """A conversation saved by `save` (audio paths relative to the file's folder)."""
        path = Path(path)
        try:
            entries = json.loads(path.read_text())["turns"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a saved conversation ({err})") from err
        turns = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f"{path}: turn {i}: expected an object with role, text and audio")
            audio = entry.get("audio")
            clip = load_audio(path.parent / audio) if audio else None
            turns.append(Turn(entry.get("role"), entry.get("text"), clip, bool(entry.get("interrupted"))))
        if problem := check_history(turns):
            raise ValueError(f"{path}: turn {problem[0]}, field {problem[1]!r}: {problem[2]}")
        return cls(max_exchanges, turns)


def _as_heard(text: str) -> str:
    """An interrupted answer's text: what was heard, ending in "…" where it was cut."""
    return text.rstrip() + "…"
