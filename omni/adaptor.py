"""Speech adaptor: stack every k encoder frames, then Linear -> ReLU -> Linear into the LLM's width."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence


class SpeechAdaptor(nn.Module):
    def __init__(self, encoder_width: int, llm_width: int, stride: int = 5, hidden_size: int = 2048):
        super().__init__()
        self.stride = stride
        self.proj = nn.Sequential(
            nn.Linear(encoder_width * stride, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, llm_width),
        )

    def output_length(self, encoder_frames: int | torch.Tensor) -> int | torch.Tensor:
        return encoder_frames // self.stride  # the last T mod k frames are dropped

    def forward(self, clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """clips: one (T_i, encoder_width) tensor each -> (B, max T_i // k, llm_width), lengths (B,)."""
        lengths = torch.tensor([self.output_length(c.shape[0]) for c in clips], device=clips[0].device)
        padded = pad_sequence(clips, batch_first=True)
        groups = max(int(lengths.max()), 1)
        need = groups * self.stride
        padded = F.pad(padded, (0, 0, 0, max(need - padded.shape[1], 0)))
        stacked = padded[:, :need].reshape(len(clips), groups, -1)
        return self.proj(stacked.to(self.proj[0].weight.dtype)), lengths
