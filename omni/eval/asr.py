"""The ear and the scorer of every evaluation: Whisper's transcript, and word error rate after Whisper's normaliser.

    ear = Ear.load(".cache/assets/whisper_base.pt", "cpu")
    wer([text_answer], [ear(spoken_answer)])

One definition for all of them: the transcript is openai-whisper's greedy English decoding (temperature 0), and
only where that transcript loops (gzip compression ratio over 2.4, Whisper's own test: the "no, no, no, ..." it fell
into on 5 of 40 unclear spoken answers, scoring each at 20x its words) one sample at each of Whisper's rising
temperatures until one does not, seeded, so that the same audio gives the same words every run. Texts are compared
after Whisper's English normaliser (case, punctuation, numbers and spellings unified), and an empty reference counts
as the one word "-" so that the rate is always defined (an answer of nothing against speech of nothing is no error).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jiwer
import numpy as np
import torch
from whisper.normalizers import EnglishTextNormalizer

EMPTY = "-"  # what an empty reference is scored as
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # greedy first; Whisper's schedule for one that loops
LOOPING_RATIO = 2.4  # a transcript whose gzip compression ratio is over this loops (Whisper's own threshold)
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
        self.rng_devices = [torch.device(device)] if self.fp16 else []  # the generators the fallback samples from
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
        with torch.random.fork_rng(devices=self.rng_devices):  # seeded, leaving the caller's generators as they were
            torch.manual_seed(0)
            result = self.model.transcribe(
                audio,
                language="en",
                fp16=self.fp16,
                temperature=FALLBACK_TEMPERATURES,
                compression_ratio_threshold=LOOPING_RATIO,
                logprob_threshold=None,  # only a loop falls back: unclear speech keeps its greedy words
                no_speech_threshold=None,  # and is never dropped as silence
            )
        return result["text"].strip()
