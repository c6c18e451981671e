"""The frozen Whisper encoder, run on variable-length windows with a padding mask.

openai-whisper's `AudioEncoder.forward` insists on exactly 3000 mel frames. We reuse its weights
and modules but run our own forward: slice the positional embedding to the window's length, zero
the padded frames between the convolutions and mask padded keys in attention. A clip is then
encoded the same alone or in a padded batch, and a 30 s window gives Whisper's own output.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import whisper
from torch import nn
from whisper.model import AudioEncoder, ModelDimensions

from omni.config import EncoderConfig


def whisper_checkpoint(name_or_path: str, download_root: str | None = None) -> str:
    """Local path of a Whisper checkpoint, downloading a named model on first use."""
    if os.path.isfile(name_or_path):
        return name_or_path
    if name_or_path in whisper._MODELS:
        root = download_root or os.path.join(os.path.expanduser("~"), ".cache", "whisper")
        return whisper._download(whisper._MODELS[name_or_path], root, in_memory=False)
    raise FileNotFoundError(f"Whisper encoder {name_or_path!r} is neither a file nor one of {sorted(whisper._MODELS)}")


def load_whisper_encoder(name_or_path: str, download_root: str | None = None) -> tuple[AudioEncoder, ModelDimensions]:
    """Encoder weights only, from an openai-whisper model name or a local checkpoint."""
    path = whisper_checkpoint(name_or_path, download_root)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    dims = ModelDimensions(**checkpoint["dims"])
    encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer)
    prefix = "encoder."
    state = {k[len(prefix) :]: v for k, v in checkpoint["model_state_dict"].items() if k.startswith(prefix)}
    encoder.load_state_dict(state)
    return encoder, dims


class SpeechEncoder(nn.Module):
    """Whisper encoder, always frozen and in eval mode."""

    def __init__(self, encoder: AudioEncoder, dims: ModelDimensions, config: EncoderConfig):
        super().__init__()
        self.whisper = encoder
        self.dims = dims
        self.config = config
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_config(cls, config: EncoderConfig) -> SpeechEncoder:
        encoder, dims = load_whisper_encoder(config.name_or_path, config.download_root)
        return cls(encoder, dims, config)

    @property
    def n_mels(self) -> int:
        return self.dims.n_mels

    @property
    def width(self) -> int:
        return self.dims.n_audio_state

    def train(self, mode: bool = True) -> SpeechEncoder:
        return super().train(False)  # frozen: dropout-free eval mode whatever the caller asks

    @staticmethod
    def output_frames(mel_frames: int | torch.Tensor) -> int | torch.Tensor:
        return (mel_frames + 1) // 2  # conv2 has stride 2

    @torch.no_grad()
    def forward(
        self, mels: torch.Tensor, mel_frames: torch.Tensor, layer: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mels (W, n_mels, F) padded windows, mel_frames (W,) -> features (W, F/2, width), lengths (W,).

        `layer` stops after that many blocks (speech units read a middle layer); the final norm is
        applied only after the last block, as in Whisper's own output.
        """
        w = self.whisper
        dtype = w.conv1.weight.dtype
        frame_mask = torch.arange(mels.shape[-1], device=mels.device) < mel_frames[:, None]
        x = mels.to(dtype) * frame_mask[:, None, :]
        x = F.gelu(w.conv1(x)) * frame_mask[:, None, :]
        x = F.gelu(w.conv2(x)).permute(0, 2, 1)
        lengths = self.output_frames(mel_frames)
        if x.shape[1] > w.positional_embedding.shape[0]:
            raise ValueError(f"{x.shape[1]} encoder frames exceed Whisper's context {w.positional_embedding.shape[0]}")
        x = x + w.positional_embedding[: x.shape[1]].to(x.dtype)
        key_mask = torch.arange(x.shape[1], device=x.device) < lengths[:, None]  # (W, T) True = real frame
        attn_mask = key_mask[:, None, None, :]
        blocks = list(w.blocks)[:layer]
        for block in blocks:
            x = x + self._attention(block.attn, block.attn_ln(x), attn_mask)
            x = x + block.mlp(block.mlp_ln(x))
        return (w.ln_post(x) if len(blocks) == len(w.blocks) else x), lengths

    @staticmethod
    def _attention(attn: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        heads = attn.n_head

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, heads, width // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(attn.query(x)), split(attn.key(x)), split(attn.value(x)), attn_mask=mask
        )
        return attn.out(out.transpose(1, 2).reshape(batch, length, width))

    def encode_clips(
        self, mels: torch.Tensor, mel_frames: torch.Tensor, windows_per_clip: list[int], layer: int | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Encode all windows and join each clip's windows back in time order."""
        features, lengths = self(mels, mel_frames, layer)
        clips, start = [], 0
        for count in windows_per_clip:
            parts = [features[i, : lengths[i]] for i in range(start, start + count)]
            clips.append(torch.cat(parts))
            start += count
        return clips, torch.tensor([c.shape[0] for c in clips], device=features.device)
