"""Typed configuration: dataclasses filled from YAML, with unknown keys rejected.

A config file is data; these dataclasses are its schema. `load_config(path, Schema)` reads a YAML
file, applies `key.sub=value` overrides and builds the dataclass tree, naming the file and the key
path on any error so that a typo never trains silently with a default.
"""

from __future__ import annotations

import dataclasses
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


@dataclass
class EncoderConfig:
    """The frozen Whisper encoder."""

    name_or_path: str = "large-v3"
    pad_to_30s: bool = False
    long_audio: Literal["window", "error"] = "window"
    download_root: str | None = None


@dataclass
class AdaptorConfig:
    """Frame stacking plus a 2-layer MLP from encoder width to LLM width."""

    stride: int = 5
    hidden_size: int = 2048


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class LLMConfig:
    """Any Hugging Face causal LM, by hub name or local directory."""

    name_or_path: str = "meta-llama/Llama-3.1-8B-Instruct"
    train: Literal["full", "lora", "frozen"] = "full"
    lora: LoraConfig = field(default_factory=LoraConfig)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: str = "sdpa"


@dataclass
class PromptConfig:
    system: str | None = REFERENCE_SYSTEM_PROMPT
    user: str = REFERENCE_USER_PROMPT
    placeholder: str = "<speech>"
    end_of_turn: str | None = None


@dataclass
class SpeechDecoderConfig:
    """The non-autoregressive CTC speech decoder (reference: 2 Llama layers of 4096, 425M parameters)."""

    num_units: int = 1000  # K; class K is the CTC blank
    upsample: int = 25  # lambda: decoder frames per response hidden state
    hidden_size: int = 4096
    num_layers: int = 2
    num_heads: int = 32
    intermediate_size: int = 11008
    rope_theta: float = 10000.0
    attention_dropout: float = 0.0
    attn_implementation: str = "sdpa"
    too_short: Literal["extend", "skip"] = "extend"  # lambda*M < units: stretch the frames (reference) or drop


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    adaptor: AdaptorConfig = field(default_factory=AdaptorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)


class ConfigError(ValueError):
    pass


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
            raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(names)}")
        return tp(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in value.items()})
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
    data = apply_overrides(data, overrides or [])
    return from_dict(schema, data, where=str(path))


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)
