"""The ear and the scorer of every evaluation: Whisper's transcript, and word error rate after Whisper's normaliser.

    ear = Ear.load(".cache/assets/whisper_base.pt", "cpu")
    wer([text_answer], [ear(spoken_answer)])

One definition for all of them: the transcript is openai-whisper's greedy English decoding (temperature 0, the
same words every run); texts are compared after Whisper's English normaliser (case, punctuation, numbers and
spellings unified), and an empty reference counts as the one word "-" so that the rate is always defined (an
answer of nothing against speech of nothing is no error).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jiwer
import numpy as np
import torch
from whisper.normalizers import EnglishTextNormalizer

EMPTY = "-"  # what an empty reference is scored as
_normaliser = EnglishTextNormalizer()


def normalise(text: str) -> str:
    """Whisper's English normaliser: what two texts are compared after."""
    return _normaliser(text)


def words(text: str) -> list[str]:
    """A text's words after the normaliser (for ROUGE-L and exact match)."""
    return normalise(text).split()


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Word error rate over a set, each text normalised; an empty reference counts as one word."""
    return jiwer.wer([normalise(r) or EMPTY for r in references], [normalise(h) for h in hypotheses])


class Ear:
    """A Whisper model that transcribes 16 kHz audio, deterministically ("" for no audio)."""

    def __init__(self, model, device: torch.device | str = "cpu"):
        self.model = model
        self.fp16 = torch.device(device).type == "cuda"
        self.name = ""

    @classmethod
    def load(cls, checkpoint: str | Path, device: torch.device | str = "cpu") -> Ear:
        import whisper

        ear = cls(whisper.load_model(str(checkpoint), device=str(device)), device)
        ear.name = Path(str(checkpoint)).stem
        return ear

    def __call__(self, audio: np.ndarray) -> str:
        if not len(audio):
            return ""
        return self.model.transcribe(audio, language="en", temperature=0.0, fp16=self.fp16)["text"].strip()
