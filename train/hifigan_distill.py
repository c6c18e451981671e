"""Distil the released HiFi-GAN into a narrower one: the same log-mel in, its waveform out, at a fraction of the cost.

    python -m train.hifigan_distill --config train/configs/hifigan_small_demo.yaml
    python -m train.hifigan_distill --config train/configs/hifigan_small_demo.yaml channels=128 train.max_steps=100

setup (answers' log-mels, the teacher, the student narrowed from it: omni/vocoder/distill.py) -> train (shared loop;
each step one random window of `segment_frames` per answer, the teacher's waveform the target) -> save (the student
in jik876's format beside the unit vocoder's unit-to-mel model: model/ is a `--vocoder` directory).
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn

from omni.assets import hifigan_dir
from omni.config import to_dict
from omni.vocoder.data import UnitSpeechDataset, collate_unit_speech
from omni.vocoder.distill import distillation_loss, narrowed
from omni.vocoder.hifigan import MEL_CONFIG, load_hifigan
from omni.vocoder.unit_to_mel import LOG_MEL_FLOOR, UnitToMel
from train.config import HifiGanDistillConfig
from train.loop import Trainer, TrainingData, run, skipped_records


def windows(mels: torch.Tensor, frames: torch.Tensor, size: int, at_random: bool) -> torch.Tensor:
    """One window of `size` frames from each answer's real frames (batch, size, n_mels): at a random start in
    training (the loop replays the random state on resume), at the start for evaluation."""
    if mels.shape[1] < size:  # every answer shorter than a window: silence after them, as the collator pads
        mels = torch.nn.functional.pad(mels, (0, 0, 0, size - mels.shape[1]), value=LOG_MEL_FLOOR)
    room = ((frames - size).clamp(min=0) + 1).cpu()
    starts = (torch.rand(len(room)) * room).long() if at_random else torch.zeros_like(room)
    return torch.stack([mels[row, int(start) : int(start) + size] for row, start in enumerate(starts)])


def build(config: HifiGanDistillConfig, accelerator: Accelerator) -> Trainer:
    num_units, d = UnitToMel.from_pretrained(config.vocoder).config.num_units, config.data
    train_data = UnitSpeechDataset(d.train, num_units, MEL_CONFIG, d.on_bad_record)
    eval_data = UnitSpeechDataset(d.eval, num_units, MEL_CONFIG, d.on_bad_record) if d.eval else None
    teacher_path = str(Path(config.teacher or hifigan_dir() / "generator_universal.pth.tar").resolve())
    teacher = load_hifigan(teacher_path).requires_grad_(False).to(accelerator.device)
    student = narrowed(teacher, config.channels)

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mels = windows(batch["mels"], batch["frames"], config.segment_frames, model.training).transpose(1, 2)
        with torch.no_grad():
            target = teacher(mels)[:, 0]
        return distillation_loss(model(mels)[:, 0], target, MEL_CONFIG)

    return Trainer(
        config.train,
        accelerator,
        student,
        TrainingData(train_data, collate_unit_speech, eval_data, skipped_records(train=train_data, eval=eval_data)),
        loss_fn,
        run_config=to_dict(config),
        frozen=[teacher_path, str(Path(config.vocoder).resolve())],
        save_kwargs={"unit_to_mel": config.vocoder},
    )


def main(argv: list[str] | None = None) -> dict:
    return run(argv, HifiGanDistillConfig, build, __doc__)


if __name__ == "__main__":
    main()
