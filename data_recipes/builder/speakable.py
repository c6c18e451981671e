"""Whether a text can be spoken as it is: no lists, no markup, no symbols, not too long.

TTS reads "1." or "*" or "%" aloud or stumbles over them, and a spoken answer cannot show a list, so
such answers are skipped (with the reason kept for the report) rather than voiced badly.
"""

from __future__ import annotations

import re

SPEAKABLE = re.compile(r"^[A-Za-z0-9 ,.'?!-]+$")
LIST_ITEM = re.compile(r"(^|\n)\s*(\d+[.)]|[-*•])\s")
SENTENCE = re.compile(r"[^.!?]+[.!?]")


def speakable(text: str, max_words: int, max_sentences: int | None = None) -> tuple[str | None, str | None]:
    """The text on one line, cut to `max_sentences`, or None and why it cannot be spoken."""
    if LIST_ITEM.search(text):
        return None, "symbols or list markup"
    text = " ".join(text.split())
    sentences = SENTENCE.findall(text)
    if max_sentences is not None and sentences:
        text = "".join(sentences[:max_sentences]).strip()
    if not text:
        return None, "empty"
    if not SPEAKABLE.match(text):
        return None, "symbols or list markup"
    if len(text.split()) > max_words:
        return None, f"longer than {max_words} words"
    return text, None
