"""Answers as a speaker says them, or refused with one cause (the texts are the kinds Alpaca's answers hold)."""

import pytest

from data_recipes.builder.speakable import speakable

SPOKEN = [
    ('The word "scarce" is an adjective; it means: rare (not common).',
     "The word scarce is an adjective, it means, rare, not common."),
    ("It’s about $1,200 — or 5% more.", "It's about one thousand two hundred dollars, or five percent more."),
    ("Café prices: €3.50 at 7:30.", "Cafe prices, three euro fifty cents at seven thirty."),
    ("He served from 2009 to 2017 as the 44th president.",
     "He served from two thousand and nine to twenty seventeen as the forty fourth president."),
    ("Add 1/2 cup of oats and 1tbsp of oil.", "Add one half cup of oats and one tablespoons of oil."),
    ("It is 20°C, 3.5 km away, e.g. near the 1990s tower.",
     "It is twenty degrees Celsius, three point five kilometres away, for example near the nineteen nineties tower."),
    ("Salt & pepper, 700-1000 calories.", "Salt and pepper, seven hundred to one thousand calories."),
    ("Think of it as **bold** text.", "Think of it as bold text."),
    ("Price: $5 million.", "Price, five million dollars."),
    ("The religions are:\n\nIslam:\nHinduism:", "The religions are, Islam, Hinduism"),
    ("Here is a checklist:\n\n1. Plan it.\n2. Choose a venue.\n3. Invite friends.\n4.",
     "Here is a checklist, Plan it, Choose a venue, and Invite friends."),
    ("Two fruits:\n- apples\n- pears", "Two fruits, apples and pears."),
    ("Here is a plan:\n\n- **Budget**:\n\n- **", "Here is a plan, Budget."),
    ("## Fruit\nApples are red.", "Fruit. Apples are red."),
    ("It runs at 36 km/hr.", "It runs at thirty six kilometres per hour."),
]  # fmt: skip


@pytest.mark.parametrize(("written", "spoken"), SPOKEN)
def test_written_text_becomes_what_a_speaker_says(written, spoken):
    assert speakable(written, 60) == (spoken, None)


@pytest.mark.parametrize(
    ("written", "cause"),
    [
        ("Use `print()` to show it.", "code"),
        ("def add(a, b): return a + b", "code"),
        ("| fruit | colour |\n|---|---|", "table"),
        ("Dear [person name], thank you.", "placeholder"),
        ("Hello <name>, welcome.", "placeholder"),
        ("C# is a language.", "other symbol '#'"),
        ("Ratio ~ 3 ^ 2.", "other symbol '^' '~'"),
        ("  ", "empty"),
        ("one two three", "longer than 2 words"),
    ],
)
def test_what_cannot_be_spoken_is_named_by_its_cause(written, cause):
    assert speakable(written, 60 if "three" not in written else 2) == (None, cause)
