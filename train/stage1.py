"""Stage 1: teach the LLM to answer speech (adaptor + full LLM or LoRA; the encoder stays frozen).

    python -m train.stage1 --config train/configs/stage1_tiny.yaml
    python -m train.stage1 --config train/configs/stage1_tiny.yaml train.max_steps=10 train.lr=1e-3
    accelerate launch --config_file train/configs/accelerate_zero2.yaml -m train.stage1 \
        --config train/configs/stage1_llama31_8b.yaml

setup (config, accelerator, model, data) -> train (shared loop) -> save (hand-off directory + summary).
"""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from omni.config import to_dict
from omni.data import SpeechCollator, SpeechInstructionDataset
from omni.encoder import whisper_checkpoint
from omni.model import OmniModel
from train.config import Stage1Config
from train.loop import Trainer, run


def save_model(accelerator: Accelerator, model: nn.Module, directory: Path) -> None:
    state = accelerator.get_state_dict(model)  # gathers ZeRO-3 shards
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(directory, state_dict=state)


def build(config: Stage1Config, accelerator: Accelerator) -> Trainer:
    set_seed(config.train.seed)  # the new adaptor's initial weights depend on it
    with accelerator.main_process_first():  # one process downloads; loading stays collective (ZeRO-3)
        whisper_checkpoint(config.model.encoder.name_or_path, config.model.encoder.download_root)
    model = OmniModel.from_config(config.model)
    if config.train.gradient_checkpointing:
        model.base_llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.base_llm.config.use_cache = False
    train_data = SpeechInstructionDataset(config.data.train)
    eval_data = SpeechInstructionDataset(config.data.eval) if config.data.eval else None
    collate = SpeechCollator.for_model(model)
    return Trainer(
        config.train,
        accelerator,
        model,
        train_data,
        collate,
        loss_fn=lambda m, batch: m(batch).loss,
        save_model=save_model,
        eval_data=eval_data,
        run_config=to_dict(config),
    )


def main(argv: list[str] | None = None) -> dict:
    return run(argv, Stage1Config, build, __doc__)


if __name__ == "__main__":
    main()
