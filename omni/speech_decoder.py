"""The non-autoregressive speech decoder: response hidden states -> speech units, trained with CTC.

    hidden (B, M, H_llm) -> input projection -> each state repeated lambda times -> causal Llama layers
    -> output projection to K + 1 classes (blank = K) -> CTC against the answer's units

It reads the LLM's last-layer hidden states after the final norm, one per answer token (its tokens and
its end-of-turn token): by default the state at each token, as both omni and LLaMA-Omni train; with
`alignment: predicting` the state that predicted it (the last prompt state, then the states at tokens 1 to
N-1), which is what LLaMA-Omni's inference feeds its decoder. With `token_embeddings` each state comes with
the LLM's input embedding of its token (scaled to unit mean norm, `OmniModel.token_embeddings`): the token's
identity, which the last layer, busy predicting the next token, keeps only faintly. With `frame_offsets`
each frame also gets a learned embedding of its place among its token's lambda frames: plain copies of one
state look alike to the layers (the first token's copies give identical outputs), yet must emit different
units. Being causal, the frames
of a token see only earlier tokens, which is what lets streaming emit units while the text is still being written.
Projecting before repeating gives the reference's result (the projection acts per frame) at 1/lambda
of its cost.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaModel

from omni.config import SpeechDecoderConfig, from_dict, to_dict
from omni.weights import load_weights, save_weights

CONFIG_FILE = "speech_decoder.yaml"
WEIGHTS_FILE = "speech_decoder.safetensors"
STAGE1_MODEL_FILE = "stage1_model.txt"  # the frozen stage-1 model whose hidden states it was trained on


class SpeechDecoder(nn.Module):
    def __init__(self, config: SpeechDecoderConfig, llm_hidden_size: int):
        super().__init__()
        self.config = config
        self.llm_hidden_size = llm_hidden_size
        self.blank = config.num_units
        self.input_proj = nn.Linear(llm_hidden_size * (2 if config.token_embeddings else 1), config.hidden_size)
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
        self.frame_offsets = nn.Embedding(config.upsample, config.hidden_size) if config.frame_offsets else None
        if self.frame_offsets is not None:
            nn.init.normal_(self.frame_offsets.weight, std=0.1)

    def frame_lengths(self, lengths: torch.Tensor, min_frames: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder frames per row: lambda * M, stretched to what CTC needs when that is more ("extend")."""
        frames = lengths * self.config.upsample
        if min_frames is not None and self.config.too_short == "extend":
            frames = torch.maximum(frames, min_frames.to(frames.device))
        return frames

    @staticmethod
    def upsample(x: torch.Tensor, lengths: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Spread each row's M states uniformly over its frames: frame j takes state floor(j * M / frames).

        With frames = lambda * M this is each state repeated lambda times.
        """
        j = torch.arange(int(frames.max()), device=x.device)
        source = (j[None, :] * lengths[:, None]) // frames.clamp(min=1)[:, None]
        source = torch.minimum(source, (lengths - 1).clamp(min=0)[:, None])
        return x.gather(1, source[..., None].expand(-1, -1, x.shape[-1]))

    def offsets(self, lengths: torch.Tensor, frames: torch.Tensor, width: int) -> torch.Tensor:
        """Each frame's place among the frames of its state, 0 to lambda - 1 (B, width); a stretched row's
        frames are spread over the same lambda places."""
        places = torch.arange(width, device=lengths.device)[None, :] * lengths[:, None] * self.config.upsample
        return (places // frames.clamp(min=1)[:, None]) % self.config.upsample

    def forward(
        self, hidden: torch.Tensor, lengths: torch.Tensor, min_frames: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (B, M, H_llm) right-padded, lengths (B,) -> logits (B, frames, K + 1), frames (B,).
        `min_frames` (training: `ctc_min_frames` of the targets) stretches rows too short for their units.

        Right padding needs no attention mask: under causal attention real frames never see the pads.
        """
        frames = self.frame_lengths(lengths, min_frames)
        x = self.input_proj(hidden.to(self.input_proj.weight.dtype))
        x = self.upsample(x, lengths, frames)
        if self.frame_offsets is not None:
            x = x + self.frame_offsets(self.offsets(lengths.to(x.device), frames.to(x.device), x.shape[1]))
        x = self.layers(inputs_embeds=x, use_cache=False).last_hidden_state
        return self.output_proj(x), frames

    @torch.no_grad()
    def step(self, hidden: torch.Tensor, cache: DynamicCache | None = None) -> tuple[torch.Tensor, DynamicCache]:
        """Logits of the frames of new response states (B, n, H_llm) -> (B, n * lambda, K + 1), attending to
        the cached keys and values of all earlier frames: what a full pass over the prefix gives for these
        frames (the layers are causal), at the cost of the new frames only. Streaming calls it per token."""
        cache = cache if cache is not None else DynamicCache()
        x = self.input_proj(hidden.to(self.input_proj.weight.dtype)).repeat_interleave(self.config.upsample, dim=1)
        if self.frame_offsets is not None:
            x = x + self.frame_offsets.weight.repeat(hidden.shape[1], 1)
        out = self.layers(inputs_embeds=x, past_key_values=cache, use_cache=True)
        return self.output_proj(out.last_hidden_state), out.past_key_values

    def loss(
        self, hidden: torch.Tensor, lengths: torch.Tensor, units: torch.Tensor, unit_lengths: torch.Tensor
    ) -> torch.Tensor:
        logits, frames = self(hidden, lengths, ctc_min_frames(units, unit_lengths))
        return ctc_loss(logits, frames, units, unit_lengths, self.blank)

    @torch.no_grad()
    def generate(self, hidden: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        logits, frames = self(hidden, lengths)
        return ctc_greedy(logits, frames, self.blank)

    # ---- save / load ----------------------------------------------------------------------
    def save_pretrained(
        self,
        directory: str | Path,
        state_dict: dict[str, torch.Tensor] | None = None,
        stage1_model: str | Path | None = None,
    ) -> None:
        """`stage1_model`: the frozen model it reads, recorded so that evaluation and generation find it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"llm_hidden_size": self.llm_hidden_size, "decoder": to_dict(self.config)}
        (directory / CONFIG_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
        state = state_dict if state_dict is not None else self.state_dict()
        save_weights(state, directory / WEIGHTS_FILE)
        if stage1_model is not None:
            (directory / STAGE1_MODEL_FILE).write_text(f"{Path(stage1_model).resolve()}\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SpeechDecoder:
        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: not a speech decoder directory (no {CONFIG_FILE})")
        meta = yaml.safe_load(path.read_text())
        decoder = cls(from_dict(SpeechDecoderConfig, meta["decoder"], str(path)), int(meta["llm_hidden_size"]))
        decoder.load_state_dict(load_weights(directory / WEIGHTS_FILE))
        return decoder


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


def pad_units(units: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit sequences -> (B, T) padded with -1 and their lengths."""
    lengths = torch.tensor([len(u) for u in units])
    padded = torch.full((len(units), max(int(lengths.max()), 1)), -1, dtype=torch.long)
    for row, seq in enumerate(units):
        padded[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return padded, lengths
