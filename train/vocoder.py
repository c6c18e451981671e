"""Train the demo's unit vocoder: units (with their durations) -> mel, spoken by a pretrained HiFi-GAN.

    python -m train.vocoder --config train/configs/vocoder_demo.yaml
    python -m train.vocoder --config train/configs/vocoder_demo.yaml train.max_steps=100

setup (answers with units and speech -> log-mel targets and their mean) -> train (shared loop) -> save (the
unit-to-mel model and which HiFi-GAN it feeds). Only the unit-to-mel model trains; HiFi-GAN is used as released.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from omni.config import to_dict
from omni.vocoder.data import UnitSpeechDataset, collate_unit_speech
from omni.vocoder.hifigan import MEL_CONFIG, hifigan_asset_dir
from omni.vocoder.streaming import HIFIGAN_FILE
from omni.vocoder.unit_to_mel import UnitToMel, unit_to_mel_loss
from train.config import VocoderConfig
from train.loop import Trainer, run


def build(config: VocoderConfig, accelerator: Accelerator) -> Trainer:
    num_units = config.model.num_units
    train_data = UnitSpeechDataset(config.data.train, num_units, MEL_CONFIG)
    eval_data = UnitSpeechDataset(config.data.eval, num_units, MEL_CONFIG) if config.data.eval else None
    hifigan = str(Path(config.hifigan or hifigan_asset_dir() / "generator_universal.pth.tar").resolve())
    set_seed(config.train.seed)
    model = UnitToMel(config.model)
    model.mel_mean.copy_(train_data.mean_mel())  # what `contrast` scales around when generating

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        predicted, log_durations = model(batch["units"], batch["lengths"], batch["durations"], batch["frames"])
        return unit_to_mel_loss(predicted, log_durations, batch)

    def save_model(acc: Accelerator, model: nn.Module, directory: Path) -> None:
        state = acc.get_state_dict(model)
        if acc.is_main_process:
            acc.unwrap_model(model).save_pretrained(directory, state_dict=state)
            (directory / HIFIGAN_FILE).write_text(hifigan + "\n")

    records = [train_data.rows, eval_data.rows if eval_data else None]
    inputs_key = hashlib.sha1(json.dumps([records, hifigan], default=str).encode()).hexdigest()
    return Trainer(
        config.train,
        accelerator,
        model,
        train_data,
        collate_unit_speech,
        loss_fn=loss_fn,
        save_model=save_model,
        eval_data=eval_data,
        run_config=to_dict(config),
        inputs_key=inputs_key,
    )


def main(argv: list[str] | None = None) -> dict:
    return run(argv, VocoderConfig, build, __doc__)


if __name__ == "__main__":
    main()
