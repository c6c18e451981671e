"""Typed configuration: dataclasses filled from YAML, with unknown keys rejected.

A config file is data; these dataclasses are its schema. `load_config(path, Schema)` reads a YAML
file, applies `key.sub=value` overrides and builds the dataclass tree, naming the file and the key
path on any error so that a typo never trains silently with a default.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import re
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")

REFERENCE_SYSTEM_PROMPT = (
    "You are a helpful language and speech assistant. You are able to understand the speech content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
REFERENCE_USER_PROMPT = "<speech>\nPlease directly answer the questions in the user's speech."
# where `make demo` writes its trained parts (stage-1 model, speech decoder, unit vocoder): the commands' defaults
DEMO_PARTS = (Path("runs/stage1_demo/model"), Path("runs/stage2_demo/model"), Path("runs/vocoder_demo/model"))


class ConfigError(ValueError):
    pass


def check(condition: bool, key: str, message: str) -> None:
    """For `__post_init__`: a ConfigError naming the key; `load_config` adds the file and the key's path."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def check_positive(config: Any, *keys: str) -> None:
    """Sizes and counts: each key is None or at least 1 (ints), above 0 (floats)."""
    for key in keys:
        value = getattr(config, key)
        if isinstance(value, float):
            check(value > 0, key, f"must be above 0, got {value}")
        elif value is not None:
            check(value >= 1, key, f"must be at least 1, got {value}")


@dataclass
class EncoderConfig:
    """The frozen Whisper encoder."""

    name_or_path: str = "large-v3"
    """openai-whisper model name (large-v3, base, ...) or a local checkpoint file"""
    pad_to_30s: bool = False
    """false: each clip's own frames, padded to the batch's longest; true: the reference's 30 s padding"""
    long_audio: Literal["window", "error"] = "window"
    """clips over 30 s: window = encode 30 s windows and join them | error = reject them"""
    download_root: str | None = None
    """where named Whisper models are downloaded; null = ~/.cache/whisper"""


@dataclass
class AdaptorConfig:
    """Frame stacking plus a 2-layer MLP from encoder width to LLM width."""

    stride: int = 5
    """k: encoder frames stacked into one LLM embedding (reference 5)"""
    hidden_size: int = 2048
    """width of the adaptor's hidden layer (reference 2048)"""
    init_from: str | None = None
    """an adaptor.safetensors stage 1 starts from (e.g. converted LLaMA-Omni's); null = fresh weights"""

    def __post_init__(self) -> None:
        check_positive(self, "stride", "hidden_size")


@dataclass
class LoraConfig:
    """peft LoRA adapters on the LLM (used when llm.train is lora)."""

    r: int = 16
    """LoRA rank"""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)"""
    dropout: float = 0.05
    """dropout on the LoRA path"""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """linear layers that get adapters"""

    def __post_init__(self) -> None:
        check_positive(self, "r", "alpha")
        check(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class LLMConfig:
    """Any Hugging Face causal LM, by hub name or local directory."""

    name_or_path: str = "meta-llama/Llama-3.1-8B-Instruct"
    """hub name or local directory"""
    train: Literal["full", "lora", "frozen"] = "full"
    """full | lora | frozen (reference: full); the adaptor always trains"""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """adapter settings, used when train is lora"""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """weights dtype at load (bfloat16 for 8B models under DeepSpeed, which keeps fp32 master weights)"""
    attn_implementation: str = "sdpa"
    """eager | sdpa | flash_attention_2 (if installed)"""


@dataclass
class PromptConfig:
    """The chat turns around the speech, rendered by the LLM's own chat template."""

    system: str | None = REFERENCE_SYSTEM_PROMPT
    """system prompt; null for none (default: the reference's)"""
    user: str = REFERENCE_USER_PROMPT
    """user turn; the placeholder marks where the speech goes (default: the reference's)"""
    placeholder: str = "<speech>"
    """text in the user turn replaced by the speech embeddings"""
    end_of_turn: str | None = None
    """token that ends the answer; null = the model's EOS tokens (<|eot_id|> for Llama-3.1-Instruct)"""
    history: Literal["speech", "text"] = "speech"
    """earlier questions of a conversation: speech = their audio (what a voice chat has) | text = their words"""
    train_on: Literal["answer", "every_answer"] = "answer"
    """stage-1 labels in a conversation: answer = the current answer only | every_answer = every assistant turn"""


@dataclass
class DecoderInputConfig:
    """What the speech decoder reads of each answer token, and how it makes frames of it (omni/decoder_input.py)."""

    fusion: Literal["none", "add", "gate"] = "none"
    """LLM state h, token embedding e: none = h alone (LLaMA-Omni) | add = h + e | gate = learned mix (LLaMA-Omni 2)"""
    alignment: Literal["at_token", "predicting"] = "at_token"
    """LLM state per answer token: at_token = at it (training) | predicting = the one that chose it (LLaMA-Omni's)"""
    frame_offsets: bool = False
    """add a learned embedding of each frame's place among its token's lambda frames (off = the reference's copies)"""


@dataclass
class SpeechDecoderConfig:
    """The non-autoregressive CTC speech decoder (reference: 2 Llama layers of 4096, 425M parameters)."""

    num_units: int = 1000
    """K, the codebook size; class K is the CTC blank"""
    upsample: int = 25
    """lambda: decoder frames per answer token (reference 25)"""
    input: DecoderInputConfig = field(default_factory=DecoderInputConfig)
    """what the decoder reads per answer token (omni/decoder_input.py)"""
    hidden_size: int = 4096
    """width of the decoder layers"""
    num_layers: int = 2
    """causal Llama decoder layers"""
    num_heads: int = 32
    """attention heads (full multi-head attention)"""
    intermediate_size: int = 11008
    """feed-forward width"""
    rope_theta: float = 10000.0
    """rotary position base"""
    rope_scaling: dict[str, Any] | None = None
    """rotary scaling as in a Hugging Face Llama config (LLaMA-Omni: Llama-3.1's llama3); null = none"""
    rms_norm_eps: float = 1e-6
    """RMSNorm epsilon of the decoder layers (LLaMA-Omni's inherit Llama-3.1's 1e-5)"""
    init_from: str | None = None
    """a speech decoder directory to start from (TTS-pretrained: train/decoder_tts.py; LLaMA-Omni's); null = fresh"""
    attention_dropout: float = 0.0
    """dropout on attention weights"""
    attn_implementation: str = "sdpa"
    """eager | sdpa | flash_attention_2 (if installed)"""
    too_short: Literal["extend", "skip"] = "extend"
    """answers with more units than lambda x tokens: extend = stretch the frames (reference) | skip = leave out"""

    def __post_init__(self) -> None:
        check_positive(self, "num_units", "upsample", "hidden_size", "num_layers", "num_heads", "intermediate_size")
        check_positive(self, "rms_norm_eps")
        check(self.hidden_size % self.num_heads == 0, "num_heads", f"must divide hidden_size {self.hidden_size}")


@dataclass
class UnitToMelConfig:
    """The demo's unit-to-mel model (omni/vocoder/unit_to_mel.py), whose mel a pretrained HiFi-GAN speaks."""

    num_units: int = 100
    """K: must match the units' codebook"""
    hidden_size: int = 256
    """width of the convolution blocks"""
    encoder_layers: int = 3
    """convolution blocks over the units (context for durations and sound)"""
    decoder_layers: int = 4
    """convolution blocks over the mel frames"""
    kernel_size: int = 5
    """convolution width"""
    n_mels: int = 80
    """mel bins of the HiFi-GAN it feeds"""
    unit_rate: float = 50.0
    """unit frames per second (Whisper encoder frames)"""
    mel_rate: float = 22050 / 256  # HiFi-GAN V1's sample rate / hop (omni/vocoder/mel.py: MelConfig)
    """mel frames per second of the HiFi-GAN it feeds"""
    dropout: float = 0.1
    """dropout in the convolution blocks"""
    contrast: float = 1.0
    """generated log-mel deviations from the training mean x this (1 = as trained; the L1 model over-smooths)"""

    def __post_init__(self) -> None:
        check_positive(self, "num_units", "hidden_size", "encoder_layers", "decoder_layers", "kernel_size", "n_mels")
        check_positive(self, "unit_rate", "mel_rate", "contrast")
        check(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class ModelConfig:
    """What stage 1 trains: encoder -> adaptor -> LLM, and the prompt."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """the speech encoder (always frozen)"""
    adaptor: AdaptorConfig = field(default_factory=AdaptorConfig)
    """speech frames -> LLM embeddings (always trained)"""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """the chat LLM"""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """chat turns around the speech (rendered by the LLM's chat template)"""


def field_docs(schema: type) -> dict[str, str]:
    """Each field's one-line doc: the string literal under it in the class body (litgpt's way)."""
    docs: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
        for node, following in zip(body, body[1:], strict=False):
            documented = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
            if isinstance(node, ast.AnnAssign) and documented and isinstance(following.value.value, str):
                docs[node.target.id] = following.value.value
    return docs


def from_dict(schema: type[T], data: Any, where: str = "config") -> T:
    """Build `schema` from plain data, checking every key and type."""
    return _convert(schema, data, where)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {unknown}{nearest(unknown, names)}; expected some of {sorted(names)}"
            )
        fields = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in value.items()}
        try:
            return tp(**fields)
        except ConfigError as err:  # a `__post_init__` check
            raise ConfigError(f"{where}.{err}") from None
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin is Literal:
        if isinstance(value, bool) and ("no" if value is False else "yes") in typing.get_args(tp):
            value = "no" if value is False else "yes"  # YAML 1.1 reads a bare no / yes as a boolean
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, item = typing.get_args(tp)
        return {k: _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and not isinstance(value, bool) and isinstance(value, (int, str)):
        try:
            return float(value)  # YAML reads 1e-4 (no dot) as text
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is Any:
        return value
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def nearest(unknown: list[str], names: set[str]) -> str:
    """ "; did you mean ...?" for the known names closest to mistyped ones, or ""."""
    close = [match for key in unknown for match in difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.6)]
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def check_override_keys(schema: type, overrides: list[str]) -> None:
    """Overrides name keys of the schema: a mistyped one is blamed on the command line, with the nearest key."""
    for item in (o for o in overrides if "=" in o):  # one without "=" is refused by apply_overrides
        key = item.split("=", 1)[0]
        node: Any = schema
        for depth, part in enumerate(key.split(".")):
            if not dataclasses.is_dataclass(node):
                break  # a mapping-valued field (e.g. rope_scaling): its keys are free
            names = {f.name for f in dataclasses.fields(node)}
            if part not in names:
                where = ".".join(key.split(".")[:depth]) or "the top level"
                raise ConfigError(
                    f"command line override {item!r}: unknown key {part!r} in {where}{nearest([part], names)}; "
                    f"expected one of {sorted(names)}"
                )
            node = _field_schema(node, part)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings (values parsed as YAML) onto nested dicts."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a mapping")
        node[leaf] = yaml.safe_load(raw)
    return data


def load_config(path: str | Path, schema: type[T], overrides: list[str] | None = None) -> T:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    check_override_keys(schema, overrides or [])
    data = apply_overrides(data, overrides or [])
    return from_dict(schema, data, where=str(path))


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_]\w*):(?P<rest>.*)$")
COMMENT_COLUMN = 28


def _split_comment(text: str) -> tuple[str, str | None]:
    """`value  # comment` -> (value, comment), with '#' inside quotes left alone."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1 :].strip()
    return text.rstrip(), None


def _field_schema(schema: type, name: str) -> type | None:
    """The dataclass a field holds (through `X | None`), or None for a plain value."""
    tp = typing.get_type_hints(schema).get(name)
    for candidate in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def annotate_yaml(text: str, schema: type) -> str:
    """A YAML recipe with each known key's comment set to its field doc; full-line comments and unknown keys
    (such as entries of a mapping value) are left as written."""
    lines, stack = [], []  # stack: (indent, dataclass of that level)
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if not match:
            lines.append(line)
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else schema
        key = match["key"]
        docs = field_docs(parent) if parent is not None else {}
        stack.append((indent, _field_schema(parent, key) if key in docs else None))
        if key not in docs:
            lines.append(line)
            continue
        code = f"{match['indent']}{key}:{_split_comment(match['rest'])[0]}"
        lines.append(f"{code.ljust(max(COMMENT_COLUMN, len(code) + 2))}# {docs[key]}")
    return "\n".join(lines) + "\n"
