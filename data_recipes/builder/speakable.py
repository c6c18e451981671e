"""Text a TTS reads well: written the way a speaker says it, or refused with the cause.

A text is normalised before it is judged: typographic quotes, apostrophes and dashes made plain, accents
dropped, quotation marks, brackets, colons and semicolons turned into the pauses a speaker makes; amounts,
percentages, ordinals, fractions, times, years, numbers and units written as words (`num2words` for the
numbers, a short table here for the rest; NeMo's WFST normaliser covers more but needs pynini and minutes to
compile its grammars); a few abbreviations spelt out; lists read as a speaker reads them. What still cannot be
spoken is refused with one cause: code, table, placeholder, `other symbol '#'`, or its length, so the report
says what was lost and the builder can ask the LLM to rewrite it for speech (pipeline.py).
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

SPEAKABLE = re.compile(r"^[A-Za-z0-9 ,.'?!-]+$")
LIST_ITEM = re.compile(r"(^|\n)\s*(\d+[.)]|[-*•+]|#{1,6})\s")
CODE = re.compile(r"`|[{}]|</[a-z]+>|<[a-z]+ [a-z]+=|\b(def|return|import|function|print)\b[^.]*[(=]|==|=>|\w\(\)")
TABLE = re.compile(r"\|.*\|")
PLACEHOLDER = re.compile(r"\[[^\]\n]{1,40}\]|<[^>\n]{1,40}>|\b(XXX+|___+)")
SENTENCE = re.compile(r"[^.!?]+[.!?]")
LIST_LINE = re.compile(r"^\s*(?:\d+[.)]|[-*•+]|#{1,6})(?:\s+(.*?))?[\s.:;,]*$")

TYPOGRAPHY = {"‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "…": "...", "\u00a0": " ", "–": "-", "—": "-"}
ABBREVIATIONS = {
    "e.g.": "for example",
    "i.e.": "that is",
    "etc.": "et cetera",
    "vs.": "versus",
    "approx.": "about",
    "Dr.": "Doctor",
    "Mr.": "Mister",
    "Mrs.": "Missus",
    "Ms.": "Miz",
    "U.S.": "US",
    "a.m.": "AM",
    "p.m.": "PM",
}
CURRENCIES = {"$": "USD", "£": "GBP", "€": "EUR"}
CURRENCY_WORDS = {"USD": "dollars", "GBP": "pounds", "EUR": "euros"}
UNITS = {
    "km/h": "kilometres per hour",
    "km/hr": "kilometres per hour",
    "m/s": "metres per second",
    "mph": "miles per hour",
    "km": "kilometres",
    "cm": "centimetres",
    "mm": "millimetres",
    "m": "metres",
    "kg": "kilograms",
    "g": "grams",
    "mg": "milligrams",
    "lbs": "pounds",
    "lb": "pounds",
    "oz": "ounces",
    "ft": "feet",
    "ml": "millilitres",
    "l": "litres",
    "°C": "degrees Celsius",
    "°F": "degrees Fahrenheit",
    "°": "degrees",
    "kWh": "kilowatt hours",
    "GB": "gigabytes",
    "MB": "megabytes",
    "tbsp": "tablespoons",
    "tsp": "teaspoons",
}
SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "%": " percent"}
NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
SCALE = r"(?:\s(thousand|million|billion|trillion))?"


def words(number: str, to: str = "cardinal") -> str:
    """A number as words, without the commas num2words puts between its groups (a TTS pauses at them)."""
    value = float(number.replace(",", "")) if "." in number else int(number.replace(",", ""))
    return num2words(value, to=to).replace(",", "").replace("-", " ")


def fraction(numerator: str, denominator: str) -> str:
    n, d = int(numerator), int(denominator)
    name = {2: "half", 4: "quarter"}.get(d) or words(denominator, "ordinal")
    if n != 1:
        name = "halves" if d == 2 else name + "s"
    return f"{words(numerator)} {name}"


def money(symbol: str, number: str, scale: str | None) -> str:
    code = CURRENCIES[symbol]
    if scale or "." not in number:
        return " ".join(filter(None, [words(number), scale, CURRENCY_WORDS[code]]))
    return num2words(float(number.replace(",", "")), to="currency", currency=code).replace(",", "").replace("-", " ")


def normalise(text: str) -> str:
    """The text as a speaker would say it (see the module's docstring); what it cannot place is left as it is."""
    for mark, plain in TYPOGRAPHY.items():
        text = text.replace(mark, plain)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = re.sub(r"\*\*(.+?)\*\*|__(.+?)__", lambda m: m.group(1) or m.group(2), text)  # bold: the words alone
    for short, spoken in ABBREVIATIONS.items():
        text = re.sub(rf"(?<!\w){re.escape(short)}", spoken, text)
    currency = "|".join(map(re.escape, CURRENCIES))
    text = re.sub(rf"({currency})\s?({NUMBER}){SCALE}", lambda m: money(m[1], m[2], m[3]), text)
    text = re.sub(rf"\b({NUMBER})\s?%", lambda m: f"{words(m[1])} percent", text)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: words(m[1], "ordinal"), text)
    text = re.sub(r"\b(\d+)/(\d+)\b", lambda m: fraction(m[1], m[2]), text)
    text = re.sub(r"\b(\d{1,2}):(\d{2})\b", lambda m: clock(m[1], m[2]), text)
    text = re.sub(rf"\b({NUMBER})\s?-\s?({NUMBER})\b", r"\1 to \2", text)  # a range: 700-1000
    unit = "|".join(map(re.escape, sorted(UNITS, key=len, reverse=True)))
    text = re.sub(rf"\b({NUMBER})\s?({unit})(?![\w/])", lambda m: f"{m[1]} {UNITS[m[2]]}", text)
    text = re.sub(r"\b(1[1-9]\d\d|20\d\d)s?\b(?!,\d)", lambda m: year(m[0]), text)
    text = re.sub(rf"(?<![\w.])({NUMBER})\b", lambda m: words(m[1]), text)
    for symbol, spoken in SYMBOLS.items():
        text = re.sub(rf"(?<=[\w ]){re.escape(symbol)}(?=[\w ])", spoken, text)
    text = re.sub(r'"|\*(?=\w)|(?<=\w)\*', "", text)  # quotation marks and emphasis are not read out
    text = re.sub(r"\s*[:;](\s+|$)|\s+-\s+|\s*\(\s*|\s*\)(?=\s*\w)", ", ", text)  # the pauses a speaker makes
    text = re.sub(r"\s*\)\s*", "", text)
    text = re.sub(r"\s+([,.?!])", r"\1", " ".join(text.split()))
    return re.sub(r",+", ",", text).strip(" ,")


def clock(hours: str, minutes: str) -> str:
    return f"{words(hours)} {'o clock' if minutes == '00' else words(minutes)}"


def year(text: str) -> str:
    plural = text.endswith("s")
    spoken = num2words(int(text.rstrip("s")), to="year").replace("-", " ")
    if plural:
        spoken = spoken[:-1] + "ies" if spoken.endswith("y") else spoken + "s"
    return spoken


def read_lists(text: str) -> str:
    """Lists and headings as a speaker reads them: a list's items joined into one sentence after the line that
    introduces it ("a, b, and c"), a heading as a sentence, a bare marker (a list cut off mid-item) dropped."""
    lines, items = [], []

    def said() -> None:
        if items:
            lines.append(
                (" and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + ", and " + items[-1]) + "."
            )
            items.clear()

    for line in text.splitlines():
        if item := LIST_LINE.match(line):
            items.extend([item[1]] if item[1] and re.search(r"\w", item[1]) else [])
        else:
            said()
            lines.append(line)
    said()
    return "\n".join(lines)


def markup_cause(text: str) -> str | None:
    """Why a written text has no spoken form at all (judged before normalising it), or None."""
    for cause, pattern in (("list markup", LIST_ITEM), ("code", CODE), ("table", TABLE), ("placeholder", PLACEHOLDER)):
        if pattern.search(text):
            return cause
    return None


def speakable(text: str, max_words: int, max_sentences: int | None = None) -> tuple[str | None, str | None]:
    """The text normalised, on one line, cut to `max_sentences`; or None and why it cannot be spoken."""
    text = read_lists(text)
    if cause := markup_cause(text):
        return None, cause
    text = normalise(text)
    sentences = SENTENCE.findall(text)
    if max_sentences is not None and sentences:
        text = "".join(sentences[:max_sentences]).strip()
    if not text:
        return None, "empty"
    if not SPEAKABLE.match(text):
        others = sorted({c for c in text if not SPEAKABLE.match(c)})
        return None, "other symbol " + " ".join(repr(c) for c in others[:3])
    if len(text.split()) > max_words:
        return None, f"longer than {max_words} words"
    return text, None
