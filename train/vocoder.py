"""Train the demo's unit vocoder: units (with their durations) -> mel, spoken by a pretrained HiFi-GAN.

    python -m train.vocoder --config train/configs/vocoder_demo.yaml
    python -m train.vocoder --config train/configs/vocoder_demo.yaml train.max_steps=100

setup (answers with units and speech -> log-mel targets and their mean) -> train (shared loop) -> save (the
unit-to-mel model and which HiFi-GAN it feeds). Only the unit-to-mel model trains; HiFi-GAN is used as released.
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from omni.assets import hifigan_dir
from omni.config import to_dict
from omni.vocoder.data import UnitSpeechDataset, collate_unit_speech
from omni.vocoder.hifigan import MEL_CONFIG
from omni.vocoder.unit_to_mel import UnitToMel, unit_to_mel_loss
from train.config import VocoderConfig
from train.loop import Trainer, TrainingData, run, skipped_records


def build(config: VocoderConfig, accelerator: Accelerator) -> Trainer:
    num_units, d = config.model.num_units, config.data
    train_data = UnitSpeechDataset(d.train, num_units, MEL_CONFIG, d.on_bad_record)
    eval_data = UnitSpeechDataset(d.eval, num_units, MEL_CONFIG, d.on_bad_record) if d.eval else None
    hifigan = str(Path(config.hifigan or hifigan_dir() / "generator_universal.pth.tar").resolve())
    set_seed(config.train.seed)
    model = UnitToMel(config.model)
    model.mel_mean.copy_(train_data.mean_mel())  # what `contrast` scales around when generating
    for data in (train_data, eval_data):
        if data is not None:
            data.check_unit_rate(config.model.unit_rate, config.model.mel_rate)

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        predicted, log_durations = model(batch["units"], batch["lengths"], batch["durations"], batch["frames"])
        return unit_to_mel_loss(predicted, log_durations, batch)

    return Trainer(
        config.train,
        accelerator,
        model,
        TrainingData(train_data, collate_unit_speech, eval_data, skipped_records(train=train_data, eval=eval_data)),
        loss_fn,
        run_config=to_dict(config),
        frozen=[hifigan],
        save_kwargs={"hifigan": hifigan},
    )


def main(argv: list[str] | None = None) -> dict:
    return run(argv, VocoderConfig, build, __doc__)


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
