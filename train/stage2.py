"""Stage 2: train the CTC speech decoder on the frozen speech LLM's answers.

    python -m train.stage2 --config train/configs/stage2_tiny.yaml
    python -m train.stage2 --config train/configs/stage2_demo.yaml train.max_steps=100 cache.enabled=false
    accelerate launch --config_file train/configs/accelerate_zero2.yaml -m train.stage2 \\
        --config train/configs/stage2_llama31_8b.yaml

setup (frozen stage-1 model -> response hidden states, cached once -> a new decoder) -> train (shared
loop, only the decoder has parameters to train) -> save (the decoder, and which stage-1 model it reads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset

from omni.config import to_dict
from omni.data import Example, SpeechCollator, SpeechInstructionDataset
from omni.decoder_input import TextEmbeddings, answer_features
from omni.hidden_cache import HiddenCacheDataset, Processes, collate_hidden, model_signature, open_or_build
from omni.model import OmniModel
from omni.speech_decoder import SpeechDecoder, ctc_loss, ctc_min_frames, pad_units
from omni.unit_metrics import evaluate_decoder, is_stalled
from train.config import Stage2Config
from train.loop import SKIPPED_FILE, Trainer, TrainingData, run, skipped_records

Batch = dict[str, torch.Tensor]


def load_frozen(model_dir: str | Path, accelerator: Accelerator) -> OmniModel:
    """The stage-1 model with nothing to train: no gradients, no optimizer state, eval mode.

    Under ZeRO-3, transformers would partition it at load for an engine that never wraps it (only the
    decoder trains): it is loaded whole on each process instead.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # transformers partitions at load while this config is registered
    try:
        model = OmniModel.from_pretrained(model_dir)
    finally:
        if plugin is not None:
            plugin.set_deepspeed_weakref()
    model.requires_grad_(False)
    return model.eval().to(accelerator.device)


def cached(
    config: Stage2Config, accelerator: Accelerator, frozen: OmniModel, data: SpeechInstructionDataset, name: str
) -> HiddenCacheDataset:
    """Open (building what is missing) the cache of one split, each process writing its share of the shards."""
    c = config.cache
    cache = open_or_build(
        Path(c.dir or Path(config.train.output_dir) / "hidden_cache") / name,
        data,
        config.model,
        lambda: frozen,
        alignment=config.decoder.input.alignment,
        batch_size=c.batch_size,
        shard_size=c.shard_size,
        processes=Processes(accelerator.process_index, accelerator.num_processes, accelerator.wait_for_everyone),
    )
    units = sum(len(u) for u in cache.units)
    accelerator.print(
        f"hidden cache {name}: {len(cache)} records, {units / sum(cache.lengths):.2f} units per answer token, "
        f"{cache.too_short(config.decoder.upsample)} with more units than lambda x tokens"
    )
    return cache


def with_units(collate: SpeechCollator) -> Callable[[list[Example]], Batch]:
    def collate_with_units(examples: list[Example]) -> Batch:
        units, unit_lengths = pad_units([ex.units for ex in examples])
        return collate(examples) | {"units": units, "unit_lengths": unit_lengths}

    return collate_with_units


def build(config: Stage2Config, accelerator: Accelerator) -> Trainer:
    num_units, d = config.decoder.num_units, config.data
    frozen = load_frozen(config.model, accelerator)
    open_data = partial(
        SpeechInstructionDataset,
        num_units=num_units,
        on_bad_record=d.on_bad_record,
        adaptor_stride=frozen.config.adaptor.stride,
        questions="speech_or_text",  # answers are what stage 2 learns from; a question may come as text
    )
    train_data = open_data(d.train)
    eval_data = open_data(d.eval) if d.eval else None
    for data in (train_data, eval_data):
        if data is not None:  # clips found bad while the cache is built are listed too
            data.skip_log = Path(config.train.output_dir) / SKIPPED_FILE
    hidden_size = frozen.hidden_size

    if config.cache.enabled:
        train_set: Dataset = cached(config, accelerator, frozen, train_data, "train")
        eval_set: Dataset | None = cached(config, accelerator, frozen, eval_data, "eval") if eval_data else None
        del frozen  # training from the cache needs no LLM at all
        collate: Callable = collate_hidden

        def hidden_batch(batch: Batch) -> Batch:
            return batch
    else:
        train_set, eval_set = train_data, eval_data
        collate = with_units(SpeechCollator.for_model(frozen, label_history=False))  # the current answer only

        def hidden_batch(batch: Batch) -> Batch:
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            hidden, tokens, lengths = answer_features(frozen, batch, config.decoder.input.alignment)
            return {"hidden": hidden, "tokens": tokens, "lengths": lengths} | {
                k: batch[k] for k in ("units", "unit_lengths")
            }

    def loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
        b = hidden_batch(batch)
        need = ctc_min_frames(b["units"], b["unit_lengths"])
        logits, frames = model(b["hidden"], b["lengths"], b["tokens"], need)  # the wrapped forward (DDP/DeepSpeed)
        return ctc_loss(logits, frames, b["units"], b["unit_lengths"], blank=num_units)

    def eval_metrics(model: nn.Module) -> dict[str, float]:
        loader = DataLoader(eval_set, batch_size=config.train.batch_size, collate_fn=collate)
        batches: Iterator[Batch] = (hidden_batch(b) for b in loader)
        metrics, _ = evaluate_decoder(accelerator.unwrap_model(model), batches, config.eval_metric_batches)
        return metrics | {"stalled": float(is_stalled(metrics))}

    set_seed(config.train.seed)  # the decoder's initial weights; the unit evaluation rebuilds them as "untrained"
    text = TextEmbeddings.from_pretrained(config.model) if config.decoder.input.fusion != "none" else None
    decoder = SpeechDecoder(config.decoder, hidden_size, text)
    if config.decoder.init_from:  # a TTS-pretrained decoder, or converted LLaMA-Omni's: same shapes
        decoder.start_from(config.decoder.init_from)
    if config.train.gradient_checkpointing:
        decoder.layers.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return Trainer(
        config.train,
        accelerator,
        decoder,
        TrainingData(train_set, collate, eval_set, skipped_records(train=train_data, eval=eval_data)),
        loss_fn,
        run_config=to_dict(config),
        eval_metrics=eval_metrics if eval_set is not None else None,
        frozen=[model_signature(p) for p in (config.model, config.decoder.init_from) if p],
        save_kwargs={"stage1_model": config.model},
    )


def report_stall(summary: dict[str, Any]) -> None:
    """Say loudly when training ended in the known all-blank failure."""
    metrics = summary.get("eval_metrics") or []
    if metrics and metrics[-1].get("stalled"):
        last = metrics[-1]
        print(
            f"WARNING: the speech decoder looks stalled at step {last['step']}: {last['blank_share']:.1%} of frames "
            f"are blank and it predicts {last['length_ratio']:.2f}x the reference units. Train longer, raise "
            "train.lr, or check that the units belong to these answers."
        )


def main(argv: list[str] | None = None) -> dict:
    summary = run(argv, Stage2Config, build, __doc__)
    if PartialState().is_main_process:
        report_stall(summary)
    return summary


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
