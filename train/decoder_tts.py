"""Pretrain the speech decoder as a TTS: answers given as text -> their units, no LLM forward.

    python -m train.decoder_tts --config train/configs/decoder_tts_demo.yaml
    python -m train.stage2 --config train/configs/stage2_demo.yaml decoder.init_from=runs/decoder_tts_demo/model

The decoder reads each answer token's embedding from the LLM's own table (frozen; no states: the text path of
omni/decoder_input.py) and learns to say it, from text spoken by the TTS and made into units: the cheapest speech
data there is, no question, no LLM answer, no hidden state. Stage 2 then starts from it (`decoder.init_from`) and
learns to mix in the LLM's states (`decoder.input.fusion: gate`), which is how LLaMA-Omni 2's speech generator
gets from 10.34 to 3.51 ASR-WER.

setup (the LLM's tokenizer and embedding table; records with response and units) -> train (shared loop) -> save
(a speech decoder directory that names the table it reads).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from omni.config import to_dict
from omni.data import Example, SpeechInstructionDataset
from omni.decoder_input import TextEmbeddings, answer_prompt, llm_directory
from omni.hidden_cache import model_signature
from omni.prompt import PromptBuilder
from omni.speech_decoder import SpeechDecoder, ctc_loss, ctc_min_frames, pad_units
from omni.unit_metrics import evaluate_decoder, is_stalled
from train.config import DecoderTTSConfig
from train.loop import SKIPPED_FILE, Trainer, TrainingData, run, skipped_records

Batch = dict[str, torch.Tensor]


class TextAnswers:
    """Answers given as text (records with `response` and `units`) -> the decoder's batch without states:
    {"tokens", "lengths", "units", "unit_lengths"}, the tokens as the LLM writes them (`prompt.response_ids`)."""

    def __init__(self, prompt: PromptBuilder):
        self.prompt = prompt

    def __call__(self, examples: list[Example]) -> Batch:
        ids = [self.prompt.response_ids(ex.response) for ex in examples]
        tokens, lengths = pad_units(ids, pad=0)
        units, unit_lengths = pad_units([ex.units for ex in examples])
        return {"tokens": tokens, "lengths": lengths, "units": units, "unit_lengths": unit_lengths}


def build(config: DecoderTTSConfig, accelerator: Accelerator) -> Trainer:
    num_units, d = config.decoder.num_units, config.data
    open_data = partial(SpeechInstructionDataset, num_units=num_units, on_bad_record=d.on_bad_record, questions="none")
    train_data = open_data(d.train)
    eval_data = open_data(d.eval) if d.eval else None
    for data in (train_data, eval_data):
        if data is not None:
            data.skip_log = Path(config.train.output_dir) / SKIPPED_FILE
    collate = TextAnswers(answer_prompt(config.llm))
    text = TextEmbeddings.from_pretrained(config.llm)

    def loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
        need = ctc_min_frames(batch["units"], batch["unit_lengths"])
        logits, frames = model(None, batch["lengths"], batch["tokens"], need)  # the wrapped forward
        return ctc_loss(logits, frames, batch["units"], batch["unit_lengths"], blank=num_units)

    def eval_metrics(model: nn.Module) -> dict[str, float]:
        loader = DataLoader(eval_data, batch_size=config.train.batch_size, collate_fn=collate)
        metrics, _ = evaluate_decoder(accelerator.unwrap_model(model), loader, config.eval_metric_batches)
        return metrics | {"stalled": float(is_stalled(metrics))}

    set_seed(config.train.seed)
    decoder = SpeechDecoder(config.decoder, text.width, text)
    if config.decoder.init_from:
        decoder.start_from(config.decoder.init_from)
    return Trainer(
        config.train,
        accelerator,
        decoder,
        TrainingData(train_data, collate, eval_data, skipped_records(train=train_data, eval=eval_data)),
        loss_fn,
        run_config=to_dict(config),
        eval_metrics=eval_metrics if eval_data is not None else None,
        frozen=[model_signature(p) for p in (llm_directory(config.llm), config.decoder.init_from) if p],
    )


def main(argv: list[str] | None = None) -> dict:
    return run(argv, DecoderTTSConfig, build, __doc__)


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
