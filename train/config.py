"""Training settings shared by every stage; each recipe nests them beside its model and data.

Every field carries a one-line doc under it: the comments of the shipped YAML recipes are written from
these (`python -m train.config --write`), and a test keeps the two the same.

    python -m train.config --write train/configs/*.yaml   # rewrite the key comments from the docs
    python -m train.config train/configs/*.yaml           # check them (exit 1 when out of date)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from omni.augment import AugmentConfig
from omni.cli import command_parser
from omni.config import (
    DecoderInputConfig,
    ModelConfig,
    SpeechDecoderConfig,
    UnitToMelConfig,
    annotate_yaml,
    check,
    check_positive,
)
from omni.hidden_cache import SHARD_SIZE


@dataclass
class TrainConfig:
    """Optimisation, logging and checkpoints (train/loop.py)."""

    output_dir: str = "runs/stage1"
    """checkpoints, TensorBoard logs, summary.json and the final model/"""
    seed: int = 0
    """seeds new weights and the data order"""
    batch_size: int = 4
    """records per device per micro-batch"""
    gradient_accumulation_steps: int = 1
    """micro-batches per optimizer step (derived when global_batch_size is set)"""
    global_batch_size: int | None = None
    """records per optimizer step over all processes; null = batch_size x processes x accumulation"""
    epochs: int = 3
    """passes over the data (ignored when max_steps is set)"""
    max_steps: int | None = None
    """optimizer steps; null = use epochs"""
    lr: float = 2e-5
    """peak learning rate"""
    param_lr: dict[str, float] = field(default_factory=dict)
    """parameter-name prefix -> its own peak learning rate; the rest use lr"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas"""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """learning-rate decay after warmup: cosine | linear | constant"""
    warmup_ratio: float = 0.03
    """share of the steps spent warming up, in [0, 1]"""
    max_grad_norm: float = 1.0
    """gradient clipping norm"""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """auto (bf16 where bf16 products are native: CUDA, AMX or AVX512-BF16 CPUs; else fp32) | no | bf16 | fp16"""
    gradient_checkpointing: bool = False
    """recompute activations in the backward pass: less memory, more compute"""
    num_workers: int = 0
    """DataLoader worker processes"""
    log_every: int = 1
    """optimizer steps between TensorBoard points"""
    eval_every: int = 0
    """optimizer steps between evaluations; 0 = only at the end"""
    eval_batches: int | None = None
    """cap on evaluation batches; null = the whole eval set"""
    save_every: int = 0
    """optimizer steps between checkpoints (the last step is always saved then); 0 = none"""
    keep_last: int = 2
    """checkpoints kept (at least 1 when checkpoints are saved)"""
    keep_best: bool = False
    """true = model/ is saved from the evaluation with the lowest held-out loss, not from the last step"""
    resume: str | None = "auto"
    """auto = the latest checkpoint in output_dir | a checkpoint path | null = start afresh"""

    def __post_init__(self) -> None:
        check_positive(self, "batch_size", "gradient_accumulation_steps", "global_batch_size", "epochs")
        check_positive(self, "max_steps", "log_every", "eval_batches", "max_grad_norm")
        check(self.lr >= 0, "lr", f"must be at least 0, got {self.lr}")
        check(all(lr >= 0 for lr in self.param_lr.values()), "param_lr", "every learning rate must be at least 0")
        check(self.weight_decay >= 0, "weight_decay", f"must be at least 0, got {self.weight_decay}")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "expected two values in [0, 1)")
        check(0 <= self.warmup_ratio <= 1, "warmup_ratio", f"must be in [0, 1], got {self.warmup_ratio}")
        for key in ("num_workers", "eval_every", "save_every"):
            check(getattr(self, key) >= 0, key, f"must be at least 0, got {getattr(self, key)}")
        saves = self.save_every > 0
        check(
            not saves or self.keep_last >= 1,
            "keep_last",
            f"must be at least 1 when save_every > 0, got {self.keep_last}",
        )
        if self.global_batch_size is not None:
            check(
                self.global_batch_size % self.batch_size == 0,
                "global_batch_size",
                f"{self.global_batch_size} is not a multiple of batch_size {self.batch_size}",
            )

    def accumulation_for(self, processes: int) -> int:
        """Micro-batches per optimizer step on `processes` processes."""
        if self.global_batch_size is None:
            return self.gradient_accumulation_steps
        per_step = self.batch_size * processes
        check(
            self.global_batch_size % per_step == 0,
            "global_batch_size",
            f"{self.global_batch_size} is not a multiple of batch_size {self.batch_size} x {processes} processes",
        )
        return self.global_batch_size // per_step


@dataclass
class DataConfig:
    """Datasets in omni's format (omni/data.py)."""

    train: str | list[str] = "data/train.jsonl"
    """JSON-lines manifest or datasets directory, or a list of manifests read as one set (e.g. extra answers)"""
    eval: str | None = None
    """held-out set for the evaluations; null for none"""
    on_bad_record: Literal["error", "skip"] = "error"
    """error = stop, listing every bad record | skip = leave them out, listed in <output_dir>/skipped_records.jsonl"""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """stage 1: changes to the training questions' audio (speed, room, telephone, noise, level); off by default"""


@dataclass
class Stage1Config:
    """Stage 1: teach the LLM to answer speech."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """what is trained: encoder -> adaptor -> LLM, and the prompt"""
    data: DataConfig = field(default_factory=DataConfig)
    """spoken instructions with text answers"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """optimisation, logging and checkpoints"""


@dataclass
class CacheConfig:
    """The frozen LLM's answer hidden states, computed once (omni/hidden_cache.py)."""

    enabled: bool = True
    """true = compute the frozen LLM's answer states once | false = recompute them every step (slower, same loss)"""
    dir: str | None = None
    """null = <output_dir>/hidden_cache"""
    batch_size: int = 8
    """records per frozen-model forward while building"""
    shard_size: int = SHARD_SIZE
    """records per shard file"""

    def __post_init__(self) -> None:
        check_positive(self, "batch_size", "shard_size")


@dataclass
class Stage2Config:
    """Stage 2: train the CTC speech decoder on the frozen stage-1 model's answers."""

    model: str = "runs/stage1/model"
    """the stage-1 model directory; encoder, adaptor and LLM stay frozen"""
    decoder: SpeechDecoderConfig = field(default_factory=SpeechDecoderConfig)
    """the CTC speech decoder (omni/speech_decoder.py)"""
    data: DataConfig = field(default_factory=DataConfig)
    """records with units"""
    cache: CacheConfig = field(default_factory=CacheConfig)
    """the frozen LLM's answer states, computed once"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """optimisation, logging and checkpoints; only the decoder trains"""
    eval_metric_batches: int = 4
    """held-out batches decoded at each evaluation for unit error rate and blank share"""

    def __post_init__(self) -> None:
        check_positive(self, "eval_metric_batches")


@dataclass
class DecoderTTSConfig:
    """TTS pretraining of the speech decoder: answers given as text -> their units, no LLM forward."""

    llm: str = "runs/stage1/model"
    """the LLM whose tokenizer and input embeddings the decoder reads (an LLM or stage-1 model directory)"""
    decoder: SpeechDecoderConfig = field(default_factory=lambda: SpeechDecoderConfig(input=DecoderInputConfig("gate")))
    """the CTC speech decoder (omni/speech_decoder.py); stage 2 starts from it with the same settings (init_from)"""
    data: DataConfig = field(default_factory=DataConfig)
    """records with response and units (questions are not read): TTS sets, stage-2 sets"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """optimisation, logging and checkpoints"""
    eval_metric_batches: int = 4
    """held-out batches decoded at each evaluation for unit error rate and blank share"""

    def __post_init__(self) -> None:
        check_positive(self, "eval_metric_batches")
        check(
            self.decoder.input.fusion != "none",
            "decoder.input.fusion",
            "TTS pretraining reads the answer's token embeddings: set add or gate (none reads LLM states alone)",
        )


@dataclass
class VocoderConfig:
    """The demo's unit vocoder: units -> mel (trained) -> a pretrained HiFi-GAN."""

    model: UnitToMelConfig = field(default_factory=UnitToMelConfig)
    """the unit-to-mel model (omni/vocoder/unit_to_mel.py)"""
    hifigan: str | None = None
    """mel vocoder checkpoint; null = the real HiFi-GAN universal installed by make assets"""
    data: DataConfig = field(default_factory=DataConfig)
    """records with units, unit_durations and response_audio (make units writes them)"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """optimisation, logging and checkpoints"""


@dataclass
class HifiGanDistillConfig:
    """A narrower HiFi-GAN taught by the released one, for a faster first packet (train/hifigan_distill.py)."""

    channels: int = 256
    """the student's initial channels, halved at each upsampling (the teacher's 512; HiFi-GAN V2's 128)"""
    teacher: str | None = None
    """mel vocoder checkpoint to learn from; null = the real HiFi-GAN universal installed by make assets"""
    vocoder: str = "runs/vocoder_demo/model"
    """the trained unit vocoder whose generator the student replaces: its unit-to-mel model is saved in model/"""
    segment_frames: int = 32
    """mel frames per training window (256 samples each), one random window per answer and step"""
    data: DataConfig = field(default_factory=DataConfig)
    """records with response_audio whose log-mels the two generators speak (make units writes them)"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """optimisation, logging and checkpoints"""


SCHEMAS = {
    "stage1": Stage1Config,
    "stage2": Stage2Config,
    "decoder": DecoderTTSConfig,
    "vocoder": VocoderConfig,
    "hifigan": HifiGanDistillConfig,
}


def schema_for(path: str | Path) -> type:
    """A recipe's schema from its file name: stage1_*.yaml, stage2_*.yaml, decoder_*.yaml (TTS), vocoder_*.yaml,
    hifigan_*.yaml (a distilled generator)."""
    kind = Path(path).name.split("_")[0]
    if kind not in SCHEMAS:
        raise ValueError(f"{path}: expected a name starting with one of {sorted(SCHEMAS)}_")
    return SCHEMAS[kind]


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="recipe YAML files")
    parser.add_argument("--write", action="store_true", help="rewrite the files instead of checking them")
    args = parser.parse_args(argv)
    stale = []
    for path in args.files:
        text = path.read_text()
        annotated = annotate_yaml(text, schema_for(path))
        if annotated != text:
            stale.append(path)
            if args.write:
                path.write_text(annotated)
    if stale and not args.write:
        sys.exit(f"key comments out of date in {', '.join(map(str, stale))}: run python -m train.config --write")
    print(f"{'rewrote' if args.write else 'up to date'}: {len(stale) if args.write else len(args.files)} file(s)")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
