"""The non-autoregressive speech decoder: the answer's LLM states and/or tokens -> speech units, trained with CTC.

    answer tokens (states h, ids) -> DecoderInput: fusion, each token's vector repeated lambda times (+ offsets)
    -> causal Llama layers -> output projection to K + 1 classes (blank = K) -> CTC against the answer's units

What it reads of the LLM, and how (states, token embeddings, their fusion, frame offsets, which state goes with
which token), is omni/decoder_input.py's. Being causal, the frames of a token see only earlier tokens, which is
what lets streaming emit units while the text is still being written. Projecting before repeating gives the
reference's result (the projection acts per frame) at 1/lambda of its cost.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaModel

from omni.config import SpeechDecoderConfig, from_dict, to_dict
from omni.decoder_input import DecoderInput, TextEmbeddings
from omni.weights import load_weights, save_weights

CONFIG_FILE = "speech_decoder.yaml"
WEIGHTS_FILE = "speech_decoder.safetensors"
STAGE1_MODEL_FILE = "stage1_model.txt"  # the frozen stage-1 model whose hidden states it was trained on


class SpeechDecoder(nn.Module):
    def __init__(self, config: SpeechDecoderConfig, llm_hidden_size: int, text: TextEmbeddings | None = None):
        """`text`: the LLM's input embedding table, for a decoder whose fusion reads token embeddings."""
        super().__init__()
        self.config = config
        self.llm_hidden_size = llm_hidden_size
        self.blank = config.num_units
        if text is not None and text.width != llm_hidden_size:
            raise ValueError(f"token embeddings of width {text.width} for a decoder reading width {llm_hidden_size}")
        self.input = DecoderInput(config.input, llm_hidden_size, config.hidden_size, config.upsample, text)
        llama = LlamaConfig(
            vocab_size=1,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads,  # full multi-head attention, as the reference
            rope_theta=config.rope_theta,
            rope_scaling=dict(config.rope_scaling) if config.rope_scaling else None,
            rms_norm_eps=config.rms_norm_eps,
            attention_dropout=config.attention_dropout,
            max_position_embeddings=32768,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
            use_cache=False,
        )
        llama._attn_implementation = config.attn_implementation
        self.layers = LlamaModel(llama)
        self.layers.embed_tokens = None  # fed frames, never token ids
        self.layers.norm = nn.Identity()  # the reference has no final norm
        self.output_proj = nn.Linear(config.hidden_size, config.num_units + 1)

    def frame_lengths(self, lengths: torch.Tensor, min_frames: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder frames per row: lambda * M, stretched to what CTC needs when that is more ("extend")."""
        return self.input.frame_lengths(lengths, min_frames, extend=self.config.too_short == "extend")

    def forward(
        self,
        states: torch.Tensor | None,
        lengths: torch.Tensor,
        tokens: torch.Tensor | None = None,
        min_frames: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """states (B, M, H_llm) and/or token ids (B, M), right-padded, lengths (B,) -> logits (B, frames, K + 1),
        frames (B,). `min_frames` (training: `ctc_min_frames` of the targets) stretches rows too short for their
        units. Right padding needs no attention mask: under causal attention real frames never see the pads."""
        frames = self.frame_lengths(lengths, min_frames)
        x = self.input(states, tokens, lengths, frames)
        x = self.layers(inputs_embeds=x, use_cache=False).last_hidden_state
        return self.output_proj(x), frames

    @torch.no_grad()
    def step(
        self,
        states: torch.Tensor | None,
        cache: DynamicCache | None = None,
        tokens: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, DynamicCache]:
        """Logits of the frames of new answer tokens (B, n, ...) -> (B, n * lambda, K + 1), attending to the cached
        keys and values of all earlier frames: what a full pass over the prefix gives for these frames (the layers
        are causal), at the cost of the new frames only. Streaming calls it per token. Rows of different lengths
        (a live batch, left-padded) pass their mask over the cached and new frames, and each new frame's place."""
        cache = cache if cache is not None else DynamicCache()
        x = self.input.step(states, tokens)
        out = self.layers(
            inputs_embeds=x,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        return self.output_proj(out.last_hidden_state), out.past_key_values

    def loss(
        self,
        states: torch.Tensor | None,
        lengths: torch.Tensor,
        units: torch.Tensor,
        unit_lengths: torch.Tensor,
        tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logits, frames = self(states, lengths, tokens, ctc_min_frames(units, unit_lengths))
        return ctc_loss(logits, frames, units, unit_lengths, self.blank)

    @torch.no_grad()
    def generate(
        self, states: torch.Tensor | None, lengths: torch.Tensor, tokens: torch.Tensor | None = None
    ) -> list[list[int]]:
        logits, frames = self(states, lengths, tokens)
        return ctc_greedy(logits, frames, self.blank)

    # ---- save / load ----------------------------------------------------------------------
    def save_pretrained(
        self,
        directory: str | Path,
        state_dict: dict[str, torch.Tensor] | None = None,
        stage1_model: str | Path | None = None,
    ) -> None:
        """`stage1_model`: the frozen model it reads, recorded so that evaluation and generation find it. A decoder
        reading token embeddings records where its table comes from (the LLM's, not saved here)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"llm_hidden_size": self.llm_hidden_size, "decoder": to_dict(self.config)}
        text = self.input.text
        if self.input.reads_text and text is not None and text.source is not None:
            meta["text_embeddings"] = text.source
        (directory / CONFIG_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
        state = state_dict if state_dict is not None else self.state_dict()
        save_weights(state, directory / WEIGHTS_FILE)
        if stage1_model is not None:
            (directory / STAGE1_MODEL_FILE).write_text(f"{Path(stage1_model).resolve()}\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, text: TextEmbeddings | None = None) -> SpeechDecoder:
        """A saved decoder; one that reads token embeddings takes `text` (the LLM's table, e.g. shared with a loaded
        model: `TextEmbeddings.from_model`), else reads the table it was trained with."""
        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: not a speech decoder directory (no {CONFIG_FILE})")
        meta = yaml.safe_load(path.read_text())
        config = from_dict(SpeechDecoderConfig, meta["decoder"], str(path))
        if text is None and config.input.fusion != "none":
            if "text_embeddings" not in meta:
                raise ValueError(f"{path}: the decoder reads token embeddings but names no LLM to read them from")
            text = TextEmbeddings.from_pretrained(meta["text_embeddings"])
        decoder = cls(config, int(meta["llm_hidden_size"]), text)
        decoder.load_state_dict(load_weights(directory / WEIGHTS_FILE))
        return decoder

    def start_from(self, directory: str | Path) -> None:
        """The weights of a saved decoder of the same shapes (a TTS-pretrained one, LLaMA-Omni's converted one)."""
        path = Path(directory) / WEIGHTS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"decoder.init_from={directory}: not a speech decoder directory (no {WEIGHTS_FILE})"
            )
        try:
            self.load_state_dict(load_weights(path))
        except RuntimeError as err:
            raise ValueError(
                f"decoder.init_from={directory}: its weights do not fit this decoder (another width, layers, K, "
                f"lambda or decoder.input?): {str(err).splitlines()[1] if len(str(err).splitlines()) > 1 else err}"
            ) from None


def stage1_model_of(directory: str | Path) -> Path:
    """The stage-1 model a saved decoder was trained on."""
    path = Path(directory) / STAGE1_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: name the stage-1 model the decoder reads (--model)")
    return Path(path.read_text().strip())


def ctc_loss(
    logits: torch.Tensor, frames: torch.Tensor, units: torch.Tensor, unit_lengths: torch.Tensor, blank: int
) -> torch.Tensor:
    """CTC as the reference computes it: fp32 log-softmax, summed, divided by the total number of units.

    Rows with fewer frames than their units need (possible under too_short="skip") cannot be aligned:
    they are left out of the sum and the count, not silently zeroed by zero_infinity.
    """
    fits = frames >= ctc_min_frames(units, unit_lengths).to(frames.device)
    if not fits.any():
        return logits.sum() * 0.0  # keeps the graph (and every process in step) when nothing fits
    log_probs = F.log_softmax(logits[fits].float(), dim=-1).transpose(0, 1)
    targets = units[fits]
    target_lengths = unit_lengths[fits]
    flat = targets[torch.arange(targets.shape[1], device=targets.device) < target_lengths[:, None]]
    total = F.ctc_loss(log_probs, flat, frames[fits], target_lengths, blank=blank, reduction="sum", zero_infinity=True)
    return total / target_lengths.sum()


def ctc_min_frames(units: torch.Tensor, unit_lengths: torch.Tensor) -> torch.Tensor:
    """Frames a CTC alignment of each row needs: one per unit plus a blank between equal neighbours."""
    valid = torch.arange(units.shape[1], device=units.device) < unit_lengths[:, None]
    repeats = ((units[:, 1:] == units[:, :-1]) & valid[:, 1:]).sum(1)
    return unit_lengths + repeats


def ctc_greedy(logits: torch.Tensor, frames: torch.Tensor, blank: int) -> list[list[int]]:
    """Best path per row: argmax, merge repeats, drop blanks."""
    best = logits.argmax(-1).tolist()
    out = []
    for row, count in zip(best, frames.tolist(), strict=True):
        path = row[:count]
        out.append([u for i, u in enumerate(path) if u != blank and (i == 0 or u != path[i - 1])])
    return out


def pad_units(units: list[list[int]], pad: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Id sequences (units; token ids) -> (B, T) padded with `pad` and their lengths."""
    lengths = torch.tensor([len(u) for u in units])
    padded = torch.full((len(units), max(int(lengths.max()), 1)), pad, dtype=torch.long)
    for row, seq in enumerate(units):
        padded[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return padded, lengths
