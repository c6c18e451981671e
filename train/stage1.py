"""Stage 1: teach the LLM to answer speech (adaptor + full LLM or LoRA; the encoder stays frozen).

    python -m train.stage1 --config train/configs/stage1_tiny.yaml
    python -m train.stage1 --config train/configs/stage1_tiny.yaml train.max_steps=10 train.lr=1e-3
    accelerate launch --config_file train/configs/accelerate_zero2.yaml -m train.stage1 \\
        --config train/configs/stage1_llama31_8b.yaml

setup (config, accelerator, model, data) -> train (shared loop) -> save (the model's hand-off directory + summary).
"""

from __future__ import annotations

from functools import partial

from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file

from omni.config import to_dict
from omni.data import SpeechCollator, SpeechInstructionDataset
from omni.encoder import whisper_checkpoint
from omni.model import OmniModel
from train.config import Stage1Config
from train.loop import Trainer, TrainingData, run, skipped_records


def build(config: Stage1Config, accelerator: Accelerator) -> Trainer:
    set_seed(config.train.seed)  # the new adaptor's initial weights depend on it
    with accelerator.main_process_first():  # one process downloads; loading stays collective (ZeRO-3)
        whisper_checkpoint(config.model.encoder.name_or_path, config.model.encoder.download_root)
    model = OmniModel.from_config(config.model)
    if config.model.adaptor.init_from:  # fine-tuning a saved adaptor (e.g. converted LLaMA-Omni's): same shapes
        model.adaptor.load_state_dict(load_file(config.model.adaptor.init_from))
    if config.train.gradient_checkpointing:
        model.base_llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.base_llm.config.use_cache = False
    d = config.data
    open_data = partial(
        SpeechInstructionDataset, on_bad_record=d.on_bad_record, adaptor_stride=config.model.adaptor.stride
    )
    train_data = open_data(d.train, augment=d.augment)
    eval_data = open_data(d.eval) if d.eval else None
    return Trainer(
        config.train,
        accelerator,
        model,
        TrainingData(
            train_data, SpeechCollator.for_model(model), eval_data, skipped_records(train=train_data, eval=eval_data)
        ),
        loss_fn=lambda m, batch: m(batch).loss,
        run_config=to_dict(config),
    )


def main(argv: list[str] | None = None) -> dict:
    return run(argv, Stage1Config, build, __doc__)


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
