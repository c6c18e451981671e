"""One build, one YAML file: these dataclasses are its schema, each field documented by the line under it.

python -m data_recipes.builder build --config data_recipes/configs/demo.yaml
python -m data_recipes.builder annotate --write data_recipes/configs/*.yaml   # key comments from these docs
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from data_recipes.builder.llm import LLMBackendConfig
from data_recipes.builder.tts import TTSConfig
from omni.config import check, check_positive

REWRITE_SYSTEM = (
    "You turn written requests into what a person would say aloud to a voice assistant. Keep the meaning. "
    "Say numbers, symbols and abbreviations as words, add a filler word only where it sounds natural, keep it short, "
    "and reply with the spoken request alone."
)
FOLLOW_UP_SYSTEM = (
    "You write the next thing the user says to a voice assistant: one short follow-up question that only makes "
    "sense after the conversation so far (use it, that, they or there instead of repeating the subject). "
    "Reply with the question alone."
)
RESPEAK_SYSTEM = (
    "You rewrite a voice assistant's written answer so that it can be read aloud. Keep what it says, but as plain "
    "spoken sentences: no lists, headings, tables, code, placeholders or symbols, numbers as words, at most a few "
    "short sentences. Reply with the spoken answer alone."
)
ANSWER_SYSTEM = (
    "You are a voice assistant. Your answer will be spoken, so answer in plain spoken English: short, no lists, "
    "no markup, no symbols, numbers written as words."
)


@dataclass
class SourceConfig:
    """Where the text instructions come from and how their fields map onto a record."""

    path: str = "instructions.jsonl"
    """a .jsonl, .csv or .parquet file, a datasets directory (save_to_disk), or a hub dataset name"""
    split: str = "train"
    """the split read from a hub dataset or a directory holding several splits"""
    shape: Literal["auto", "alpaca", "messages", "conversations", "text", "field"] = "auto"
    """auto (by the columns) | alpaca (instruction + input) | messages, conversations (1st user turn) | text | field"""
    instruction_field: str = "instruction"
    """shape field: the column holding the instruction"""
    id_field: str | None = "id"
    """the column holding a record's id; records without one get a hash of their instruction"""
    keep_fields: list[str] = field(default_factory=list)
    """columns copied into the output records as they are (e.g. a category)"""
    audio_field: str | None = None
    """a column holding the instruction already spoken (a path, relative to the source file): its speech is not made"""
    response_field: str | None = None
    """a column holding an answer already written: the answer step is skipped for records that have one"""
    follow_ups_field: str | None = None
    """a column holding a list of follow-up questions (e.g. templated): each becomes a later turn of a dialogue"""
    heldout_field: str | None = None
    """a boolean column that marks held-out records; null = split by a stable hash of the id (split.heldout)"""
    limit: int | None = None
    """read at most this many rows; null = all"""

    def __post_init__(self) -> None:
        check_positive(self, "limit")


@dataclass
class FilterConfig:
    """Instructions dropped before any model sees them, each with its reason in the report."""

    min_words: int = 1
    """fewer words: dropped"""
    max_words: int = 60
    """more words: dropped (a spoken instruction is short)"""
    language: str | None = "en"
    """en = drop instructions whose letters are mostly outside the Latin alphabet; null keeps every script"""
    dedup: bool = True
    """drop repeats of an instruction (compared lower-cased, without punctuation or extra spaces)"""

    def __post_init__(self) -> None:
        check_positive(self, "min_words", "max_words")
        check(self.language in (None, "en"), "language", f"expected en or null, got {self.language!r}")


@dataclass
class RewriteConfig:
    """An LLM rewrites each instruction as a person would say it (optional)."""

    enabled: bool = False
    """true = rewrite every instruction for speech before answering it"""
    system: str = REWRITE_SYSTEM
    """the rewriting system prompt"""
    template: str = "{instruction}"
    """the user turn; {instruction} is the written instruction"""
    max_words: int = 40
    """rewrites longer than this are skipped"""

    def __post_init__(self) -> None:
        check("{instruction}" in self.template, "template", "must contain {instruction}")
        check_positive(self, "max_words")


@dataclass
class AnswerConfig:
    """An LLM writes a short, speakable answer to each (rewritten) instruction."""

    system: str | None = ANSWER_SYSTEM
    """the answering system prompt; null for none"""
    template: str = "{instruction}"
    """the user turn; {instruction} is the instruction as it is spoken"""
    max_sentences: int | None = None
    """keep the first N sentences of an answer; null keeps them all"""
    max_words: int = 60
    """answers longer than this (after cutting) are skipped as unspeakable"""
    respeak: bool = True
    """true = an answer that cannot be spoken as written (a list, code, a table, a symbol, too long) is rewritten
    for speech by the LLM and checked again: only what fails twice is skipped"""
    respeak_system: str = RESPEAK_SYSTEM
    """the rewriting-for-speech system prompt (the user turn holds the question and the written answer)"""

    def __post_init__(self) -> None:
        check("{instruction}" in self.template, "template", "must contain {instruction}")
        check_positive(self, "max_sentences", "max_words")


@dataclass
class DialogueConfig:
    """Dialogues: follow-up questions that lean on the earlier turn, answered with it in context (optional)."""

    turns: int = 1
    """questions per dialogue the LLM continues to by writing follow-ups (1 = none); given follow-ups come first"""
    share: float = 1.0
    """share of the first questions (by a stable hash of the id) the LLM continues into dialogues"""
    system: str = FOLLOW_UP_SYSTEM
    """the system prompt of the follow-up writer"""
    template: str = "{conversation}"
    """the follow-up writer's user turn; {conversation} is the dialogue so far, a "User:"/"Assistant:" line a turn"""
    max_words: int = 25
    """follow-up questions longer than this are skipped"""

    def __post_init__(self) -> None:
        check_positive(self, "turns", "max_words")
        check(0 <= self.share <= 1, "share", f"must be in [0, 1], got {self.share}")
        check("{conversation}" in self.template, "template", "must contain {conversation}")


@dataclass
class UnitsConfig:
    """Target units of the spoken answers for stage 2 (optional: stage-1 data needs none)."""

    enabled: bool = False
    """true = extract units of every spoken answer after the records are merged"""
    features: Literal["whisper", "hubert"] = "whisper"
    """whisper = a Whisper encoder layer (offline) | hubert = a HuBERT-family model (transformers)"""
    model: str = ".cache/assets/whisper_base.pt"
    """the feature model: a Whisper checkpoint or name, or a HuBERT model name or directory"""
    layer: int = 2
    """the encoder layer whose output is quantised"""
    pool: int = 1
    """Whisper frames averaged into one before quantising (50 / pool frames per second; the vocoder's unit_rate)"""
    k: int = 500
    """codebook size K when fitting one"""
    codebook: str | None = None
    """an existing codebook (.safetensors or .npy) to quantise with; null = fit one on the training answers"""
    standardise: bool = True
    """fit k-means on standardised features (the codebook keeps the mean and scale)"""
    max_frames: int = 200_000
    """training frames sampled for k-means"""
    batch_size: int = 16
    """clips per encoder forward"""

    def __post_init__(self) -> None:
        check_positive(self, "k", "max_frames", "batch_size", "pool")


@dataclass
class SplitConfig:
    """Which records are held out."""

    heldout: float = 0.05
    """share of records held out, chosen by a stable hash of the id (ignored with source.heldout_field)"""

    def __post_init__(self) -> None:
        check(0 <= self.heldout < 1, "heldout", f"must be in [0, 1), got {self.heldout}")


@dataclass
class BuildConfig:
    """A spoken-instruction build: source -> filters -> rewrite -> answer -> speech -> merge -> units."""

    out: str = "data/built"
    """the output folder: manifests, wavs, datasets directories, the report and the work logs"""
    source: SourceConfig = field(default_factory=SourceConfig)
    """where the text instructions come from"""
    filters: FilterConfig = field(default_factory=FilterConfig)
    """instructions dropped before any model sees them"""
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)
    """rewriting instructions for speech (optional)"""
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    """writing speakable answers"""
    dialogue: DialogueConfig = field(default_factory=DialogueConfig)
    """follow-up turns (optional): their records carry the earlier turns as `history`"""
    llm: LLMBackendConfig = field(default_factory=LLMBackendConfig)
    """the LLM that rewrites and answers"""
    instruction_tts: TTSConfig = field(default_factory=TTSConfig)
    """the speech of the instructions: varied voices, rates and pitches"""
    instruction_engines: list[TTSConfig] = field(default_factory=list)
    """more engines the instructions are spread over beside instruction_tts (each record's by a hash of its id)"""
    answer_tts: TTSConfig = field(default_factory=lambda: TTSConfig(voices=["en-us"], rates=[165]))
    """the speech of the answers: one consistent voice"""
    speak_instructions: bool = True
    """false = no instruction speech (answers-only sets: text for TTS pretraining, extra answers asked as text)"""
    speak_answers: bool = True
    """false = no answer speech (stage-1-only data)"""
    tts_workers: int = 2
    """speech synthesised in parallel threads"""
    units: UnitsConfig = field(default_factory=UnitsConfig)
    """target units of the spoken answers (optional)"""
    split: SplitConfig = field(default_factory=SplitConfig)
    """which records are held out"""

    def __post_init__(self) -> None:
        check_positive(self, "tts_workers")
        check(not self.units.enabled or self.speak_answers, "units.enabled", "needs speak_answers: true")
        check(self.speak_instructions or self.speak_answers, "speak_instructions", "false needs speak_answers: true")
