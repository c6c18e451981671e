"""WordNet's definitions and example sentences as text to speak: the source of TTS sets for the speech decoder.

    python -m data_recipes.builder.wordnet --out data/tts_text/wordnet.jsonl --limit 20000

A TTS set needs text that covers the words answers use, spoken as a person would say it. WordNet 3.0 (Princeton,
a BSD-style licence: Debian's `wordnet-base`, /usr/share/wordnet) holds 117,659 senses of English words, each with
a definition and often example sentences; definitions read like short spoken answers ("A thermometer is a
measuring instrument for measuring temperature."). Each sense gives its definition as a sentence (nouns "A lemma
is ...", verbs "To lemma means to ...", adjectives and adverbs "Lemma means ...") and its quoted examples; senses
are taken most used first (the tag counts of cntlist.rev, ties by file order), so a `--limit` keeps the common
words. Only what `speakable` passes is written (no digits or symbols). Rows: {"id", "text", "pos"}, one sentence
each, with `report.json` beside the file (senses read, sentences written and skipped, by reason).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from data_recipes.builder.speakable import speakable
from omni.atomic import write_atomic
from omni.cli import command_parser

DEBIAN_DIR = Path("/usr/share/wordnet")
FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
SENSE_POS = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}  # sense-key ss_type -> index file (5: satellite adj)
MAX_WORDS = 30
PARENTHESES = re.compile(r"\s*\([^)]*\)")


def sense_counts(directory: Path) -> Counter[tuple[str, int]]:
    """How often each synset (pos, offset) was tagged in the sense-tagged corpora: cntlist.rev's counts per
    lemma sense, mapped to synsets by the index files' sense order."""
    synsets: dict[tuple[str, str], list[int]] = {}  # (pos, lemma) -> offsets in sense-number order
    for pos, name in FILES.items():
        for line in (directory / f"index.{name}").read_text(errors="replace").splitlines():
            if line.startswith(" "):
                continue  # the licence header
            fields = line.split()
            p_cnt = int(fields[3])
            synset_count = int(fields[2])
            synsets[pos, fields[0]] = [int(o) for o in fields[6 + p_cnt : 6 + p_cnt + synset_count]]
    counts: Counter[tuple[str, int]] = Counter()
    for line in (directory / "cntlist.rev").read_text(errors="replace").splitlines():
        key, sense, tags = line.split()
        lemma, rest = key.split("%", 1)
        pos = SENSE_POS[rest[0]]
        offsets = synsets.get((pos, lemma), [])
        if 0 < int(sense) <= len(offsets):
            counts[pos, offsets[int(sense) - 1]] += int(tags)
    return counts


def senses(directory: Path) -> Iterator[tuple[str, int, list[str], str]]:
    """(pos, offset, its words, its gloss) of every synset, in file order."""
    for pos, name in FILES.items():
        for line in (directory / f"data.{name}").read_text(errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            fields = head.split()
            count = int(fields[3], 16)
            words = [re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in fields[4 : 4 + 2 * count : 2]]
            yield pos, int(fields[0]), words, gloss.strip()


def sentences(pos: str, word: str, gloss: str) -> Iterator[tuple[str, str]]:
    """(kind, sentence): the sense's definition said of its first word, then its quoted examples."""
    definition, *examples = [part.strip() for part in gloss.split(";")]
    definition = PARENTHESES.sub("", definition).strip()
    if definition and not definition.startswith('"'):
        if pos == "n":
            article = "An" if word[0].lower() in "aeiou" else "A"
            text = f"{article} {word} is {definition}." if word[0].islower() else f"{word} is {definition}."
        elif pos == "v":
            text = f"To {word} means to {definition}."
        else:
            text = f"{word[0].upper()}{word[1:]} means {definition}."
        yield "definition", text
    for i, example in enumerate(e for e in [definition, *examples] if e.startswith('"')):
        quote = example.strip('"').strip()
        if quote:
            yield f"example{i}", quote[0].upper() + quote[1:] + ("" if quote[-1] in ".?!" else ".")


def export(directory: Path, out: Path, limit: int | None = None) -> dict:
    counts = sense_counts(directory)
    ordered = sorted(senses(directory), key=lambda s: -counts[s[0], s[1]])  # stable: file order breaks ties
    rows, skipped, seen = [], Counter(), set()
    for pos, offset, words, gloss in ordered:
        for kind, text in sentences(pos, words[0], gloss):
            spoken, reason = speakable(text, MAX_WORDS)
            if spoken is None:
                skipped[reason] += 1
            elif spoken.lower() in seen:
                skipped["repeated"] += 1
            else:
                seen.add(spoken.lower())
                rows.append({"id": f"wn-{pos}{offset:08d}-{kind}", "text": spoken, "pos": pos})
        if limit is not None and len(rows) >= limit:
            break
    rows = rows[:limit]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, "".join(json.dumps(r) + "\n" for r in rows))
    report = {
        "source": str(directory),
        "licence": "WordNet 3.0 (Princeton University; BSD-style)",
        "senses": len(ordered),
        "tagged_senses": sum(1 for c in counts.values() if c),
        "sentences": len(rows),
        "words": sum(len(r["text"].split()) for r in rows),
        "skipped": dict(skipped.most_common()),
    }
    write_atomic(out.with_name(out.stem + "_report.json"), json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--wordnet", type=Path, default=DEBIAN_DIR, help="WordNet 3.0's dict folder")
    parser.add_argument("--out", type=Path, required=True, help="the .jsonl to write")
    parser.add_argument("--limit", type=int, help="sentences written, most used senses first")
    args = parser.parse_args(argv)
    if not (args.wordnet / "cntlist.rev").is_file():
        raise SystemExit(f"{args.wordnet}: no WordNet 3.0 dictionary (install Debian's wordnet-base: make system-deps)")
    report = export(args.wordnet, args.out, args.limit)
    print(f"{report['sentences']} sentences ({report['words']} words) -> {args.out}; skipped {report['skipped']}")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
