"""A narrower HiFi-GAN taught by the released one: the same mel in, the same waveform out, a fraction of the cost.

The released generator (V1, 512 initial channels) spends most of the first packet's vocoding time. `narrowed`
keeps, at every stage, the channels whose filters carry most weight (HiFi-GAN V2's shape at 128), so the student
starts near its teacher instead of from noise; `distillation_loss` compares what the two say about one mel
(log-mel and multi-resolution spectra, and the waveform itself). train/hifigan_distill.py runs it.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from omni.vocoder.hifigan import HifiGanGenerator
from omni.vocoder.mel import MelConfig, log_mel

STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop): spectra the student must match


def narrowed(teacher: HifiGanGenerator, initial_channels: int) -> HifiGanGenerator:
    """A generator with `initial_channels` (halved at each upsampling, as the teacher's) holding the teacher's
    weights on the channels of largest filter norm: stage i keeps one channel set, through its upsampling, its
    residual blocks and into the next stage."""
    full, stages = teacher.config.upsample_initial_channel, 2 ** len(teacher.ups)
    if not 0 < initial_channels <= full or full % initial_channels or initial_channels % stages:
        raise ValueError(
            f"initial_channels must divide the teacher's {full} and be a multiple of {stages} (one channel or more "
            f"after the last upsampling), got {initial_channels}"
        )
    student = HifiGanGenerator(replace(teacher.config, upsample_initial_channel=initial_channels))
    width = initial_channels

    def strongest(weight: Tensor, n: int) -> Tensor:  # weight (channels, ...): the n rows of largest norm
        return weight.flatten(1).norm(dim=1).topk(n).indices.sort().values

    with torch.no_grad():
        kept = strongest(teacher.conv_pre.weight, width)
        student.conv_pre.weight.copy_(teacher.conv_pre.weight[kept])
        student.conv_pre.bias.copy_(teacher.conv_pre.bias[kept])
        n_kernels = len(teacher.config.resblock_kernel_sizes)
        for i, (up, small_up) in enumerate(zip(teacher.ups, student.ups, strict=True)):
            width //= 2
            previous, kept = kept, strongest(up.weight.transpose(0, 1), width)  # ConvTranspose: (in, out, k)
            small_up.weight.copy_(up.weight[previous][:, kept])
            small_up.bias.copy_(up.bias[kept])
            stage = slice(i * n_kernels, (i + 1) * n_kernels)
            for block, small_block in zip(teacher.resblocks[stage], student.resblocks[stage], strict=True):
                for conv, small_conv in zip(block.modules(), small_block.modules(), strict=True):
                    if isinstance(conv, torch.nn.Conv1d):
                        small_conv.weight.copy_(conv.weight[kept][:, kept])
                        small_conv.bias.copy_(conv.bias[kept])
        student.conv_post.weight.copy_(teacher.conv_post.weight[:, kept])
        student.conv_post.bias.copy_(teacher.conv_post.bias)
    return student


def distillation_loss(student: Tensor, teacher: Tensor, mel: MelConfig) -> Tensor:
    """How far the student's waveform (batch, samples) is from the teacher's: L1 between their log-mels
    (HiFi-GAN's own reconstruction loss), spectral convergence and log-magnitude L1 at `STFT_RESOLUTIONS`,
    and L1 between the waveforms (the student starts from the teacher's weights, so phase can follow)."""
    student, teacher = student.float(), teacher.float()
    loss = (log_mel(student, mel) - log_mel(teacher, mel)).abs().mean() + (student - teacher).abs().mean()
    for n_fft, hop in STFT_RESOLUTIONS:
        window = torch.hann_window(n_fft, device=student.device)
        s, t = (torch.stft(x, n_fft, hop, window=window, return_complex=True).abs() for x in (student, teacher))
        convergence = torch.linalg.norm(t - s) / torch.linalg.norm(t).clamp(min=1e-7)
        loss = loss + convergence + (s.clamp(min=1e-7).log() - t.clamp(min=1e-7).log()).abs().mean()
    return loss
