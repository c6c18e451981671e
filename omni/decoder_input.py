"""What the speech decoder reads, in one place: the LLM's answer states, the answer's tokens, or both.

For each answer token t (its tokens and the end-of-turn token) the decoder can read the LLM's last-layer state
h_t after the final norm, and the token's input embedding e_t: the LLM's own table, frozen, its rows scaled to
unit mean norm (the token's identity, which a last layer busy predicting the next token keeps only faintly).
`decoder.input.fusion` makes one vector of the decoder's width of them:

    none   c = W_h h                                                        LLaMA-Omni: states alone
    add    c = W_h h + W_e e
    gate   g = sigmoid(W_g [W_h h; W_e e]),  c = g * W_h h + (1 - g) * W_e e      LLaMA-Omni 2's gate fusion
    text   c = W_e e      (no states given: the decoder pretrained as a TTS, train/decoder_tts.py)

Each c_t then becomes lambda frames (`upsample`); with `frame_offsets` each frame also gets a learned embedding of
its place among its token's frames (copies of one vector look alike to causal layers, yet must emit different
units). `alignment` picks the state that goes with token t: its own (`at_token`, what training reads) or the one
that predicted it (`predicting`, LLaMA-Omni's inference: a token's units are out before the LLM reads it).

Where the inputs come from: `answer_features` runs the frozen LLM over a batch (stage 2 without a cache, the
cache's build); the hidden-state cache stores what it returns, states and token ids, so that one cache serves
every fusion (`CACHE_LAYOUT` names what a shard holds); TTS pretraining gives token ids alone; streaming gives
one token's state and id at a time (`DecoderInput.step`). The embedding lookup is the decoder's own
(`TextEmbeddings`: the LLM's table, shared or loaded, never saved with the decoder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
import yaml
from safetensors import safe_open
from torch import nn

from omni.config import DecoderInputConfig
from omni.prompt import PromptBuilder

if TYPE_CHECKING:
    from omni.model import OmniModel

CACHE_LAYOUT = "states+tokens"  # what a hidden-cache shard holds: part of the cache's key


class AnswerFeatures(NamedTuple):
    """Per answer token, right-padded: states (B, M, H) or None, token ids (B, M) (0 where padded), M per row."""

    states: torch.Tensor | None
    tokens: torch.Tensor
    lengths: torch.Tensor


class TextEmbeddings(nn.Module):
    """The LLM's input embedding table, frozen, rows divided by their mean norm.

    Held as a plain attribute, not a parameter or buffer: it is the LLM's, so it is neither saved with the decoder
    nor trained, broadcast or sharded with it; it follows the token ids to their device when looked up."""

    def __init__(self, table: torch.Tensor, source: str | None = None):
        """`source`: the model or LLM directory the table was read from, recorded with a decoder that reads it."""
        super().__init__()
        self.table = table.detach()
        self.scale = self.table.float().norm(dim=-1).mean().item()
        self.source = source

    @property
    def width(self) -> int:
        return self.table.shape[1]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.table.device != tokens.device:
            self.table = self.table.to(tokens.device)
        return F.embedding(tokens, self.table).float() / self.scale

    @classmethod
    def from_model(cls, model: OmniModel) -> TextEmbeddings:
        """The table of a loaded model's LLM, shared (no copy)."""
        return cls(model.base_llm.get_input_embeddings().weight)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TextEmbeddings:
        """The table of an omni model directory's LLM, or of a Hugging Face LLM directory, read without loading
        the rest of the LLM. A LoRA or frozen omni model reads its base LLM's (its adapters leave it as it is)."""
        return cls(load_input_embeddings(path), str(Path(path).resolve()))


def llm_directory(path: str | Path) -> Path:
    """The Hugging Face LLM directory holding the weights of `path`'s LLM: itself, or an omni model's llm/ or base."""
    path = Path(path)
    omni_config = path / "omni_config.yaml"
    if not omni_config.is_file():
        return path
    if (path / "llm").is_dir():
        return path / "llm"
    return Path(yaml.safe_load(omni_config.read_text())["llm"]["name_or_path"])


def load_input_embeddings(path: str | Path) -> torch.Tensor:
    """The input embedding table (vocabulary x width) of the LLM at `path`, from its safetensors when the
    checkpoint has them (one tensor read, whatever the model's size), else from the loaded model."""
    directory = llm_directory(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"{path}: no LLM directory at {directory} (its input embeddings are the decoder's)")
    index = directory / "model.safetensors.index.json"
    files = (
        {name: directory / file for name, file in json.loads(index.read_text())["weight_map"].items()}
        if index.is_file()
        else {}
    )
    if not files and (directory / "model.safetensors").is_file():
        with safe_open(str(directory / "model.safetensors"), "pt") as f:
            files = {name: directory / "model.safetensors" for name in f.keys()}  # noqa: SIM118 (not a dict)
    name = next((n for n in files if n.endswith("embed_tokens.weight")), None)
    if name is not None:
        with safe_open(str(files[name]), "pt") as f:
            return f.get_tensor(name)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(directory)).get_input_embeddings().weight.detach()


class DecoderInput(nn.Module):
    """Answer states and/or token ids -> the decoder's frames (B, frames, D): projection, fusion, upsampling and
    frame offsets, as the module docstring says. `text` is needed when the fusion reads token embeddings."""

    def __init__(
        self,
        config: DecoderInputConfig,
        llm_hidden_size: int,
        width: int,
        upsample: int,
        text: TextEmbeddings | None = None,
    ):
        super().__init__()
        self.config = config
        self.upsample = upsample
        self.states_proj = nn.Linear(llm_hidden_size, width)
        self.text_proj = nn.Linear(llm_hidden_size, width) if config.fusion != "none" else None
        self.gate = nn.Linear(2 * width, width) if config.fusion == "gate" else None
        if self.gate is not None:  # g = 1/2 at first: both inputs count alike until training says otherwise
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)
        self.frame_offsets = nn.Embedding(upsample, width) if config.frame_offsets else None
        if self.frame_offsets is not None:
            nn.init.normal_(self.frame_offsets.weight, std=0.1)
        self.text = text

    @property
    def reads_text(self) -> bool:
        return self.config.fusion != "none"

    def fuse(self, states: torch.Tensor | None, tokens: torch.Tensor | None) -> torch.Tensor:
        """One vector per answer token (B, M, D)."""
        if states is None and not self.reads_text:
            raise ValueError("this decoder reads LLM states alone (decoder.input.fusion: none): give it states")
        projected = None if states is None else self.states_proj(states.to(self.states_proj.weight.dtype))
        if not self.reads_text:
            return projected
        if tokens is None:
            raise ValueError(f"decoder.input.fusion {self.config.fusion} reads the answer's token ids: none given")
        if self.text is None:
            raise ValueError(
                "this decoder reads token embeddings but has no table: load it with "
                "SpeechDecoder.from_pretrained(..., text=TextEmbeddings...) or give the LLM it was trained with"
            )
        embedded = self.text_proj(self.text(tokens).to(self.text_proj.weight.dtype))
        if projected is None:  # text alone: the TTS
            return embedded
        if self.gate is None:
            return projected + embedded
        g = torch.sigmoid(self.gate(torch.cat([projected, embedded], dim=-1)))
        return g * projected + (1 - g) * embedded

    def frame_lengths(
        self, lengths: torch.Tensor, min_frames: torch.Tensor | None = None, extend: bool = True
    ) -> torch.Tensor:
        """Decoder frames per row: lambda * M, stretched to what CTC needs when that is more (`extend`)."""
        frames = lengths * self.upsample
        if min_frames is not None and extend:
            frames = torch.maximum(frames, min_frames.to(frames.device))
        return frames

    def forward(
        self,
        states: torch.Tensor | None,
        tokens: torch.Tensor | None,
        lengths: torch.Tensor,
        frames: torch.Tensor,
    ) -> torch.Tensor:
        """Each row's M vectors spread uniformly over its frames (frame j takes vector floor(j * M / frames): with
        frames = lambda * M, each repeated lambda times), plus each frame's offset among its token's frames."""
        x = self.fuse(states, tokens)
        j = torch.arange(int(frames.max()), device=x.device)
        source = (j[None, :] * lengths[:, None]) // frames.clamp(min=1)[:, None]
        source = torch.minimum(source, (lengths - 1).clamp(min=0)[:, None])
        x = x.gather(1, source[..., None].expand(-1, -1, x.shape[-1]))
        if self.frame_offsets is not None:
            places = j[None, :] * lengths[:, None] * self.upsample  # a stretched row spreads over the same places
            x = x + self.frame_offsets((places // frames.clamp(min=1)[:, None]) % self.upsample)
        return x

    def step(self, states: torch.Tensor | None, tokens: torch.Tensor | None) -> torch.Tensor:
        """The frames of new answer tokens (B, n, ...) -> (B, n * lambda, D): what `forward` gives for them."""
        x = self.fuse(states, tokens).repeat_interleave(self.upsample, dim=1)
        if self.frame_offsets is not None:
            x = x + self.frame_offsets.weight.repeat(x.shape[1] // self.upsample, 1)
        return x


def answer_features(model: OmniModel, batch: dict[str, torch.Tensor], alignment: str = "at_token") -> AnswerFeatures:
    """The frozen model's states at a batch's answers (`OmniModel.response_hidden_states`) with the answer's
    token ids: everything a decoder of any fusion reads, what the hidden-state cache stores."""
    from omni.model import select_rows
    from omni.prompt import IGNORE_INDEX

    states, lengths = model.response_hidden_states(batch, alignment)
    labels = batch["labels"]
    tokens, _ = select_rows(labels[..., None].clamp(min=0), labels != IGNORE_INDEX)
    return AnswerFeatures(states, tokens[..., 0], lengths)


def answer_prompt(path: str | Path) -> PromptBuilder:
    """The prompt builder of an omni model directory (its prompt settings) or of a Hugging Face LLM directory (the
    reference's): its `response_ids(text)` are an answer's tokens as the LLM writes them, its end-of-turn token
    last: what a decoder reads of an answer given as text (TTS pretraining)."""
    from transformers import AutoTokenizer, GenerationConfig

    from omni.config import PromptConfig
    from omni.model import load_model_config

    path = Path(path)
    prompt = load_model_config(path).prompt if (path / "omni_config.yaml").is_file() else PromptConfig()
    try:
        eos = GenerationConfig.from_pretrained(str(llm_directory(path))).eos_token_id
    except OSError:  # no generation_config.json: the tokenizer's EOS, or prompt.end_of_turn
        eos = None
    ends = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return PromptBuilder(AutoTokenizer.from_pretrained(str(path)), prompt, ends)
