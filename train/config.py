"""Training settings shared by every stage; each recipe nests them beside its model and data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from omni.config import ModelConfig, SpeechDecoderConfig
from omni.vocoder.unit_to_mel import UnitToMelConfig


@dataclass
class TrainConfig:
    output_dir: str = "runs/stage1"
    seed: int = 0
    batch_size: int = 4  # per device
    gradient_accumulation_steps: int = 1
    epochs: int = 3
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    lr: float = 2e-5
    param_lr: dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> its own peak LR
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    num_workers: int = 0
    log_every: int = 1
    eval_every: int = 0  # optimizer steps; 0 = only at the end
    eval_batches: int | None = None  # cap on eval batches; None = the whole eval set
    save_every: int = 0  # optimizer steps; 0 = only the final model
    keep_last: int = 2
    resume: str | None = "auto"  # "auto" = latest checkpoint in output_dir, a checkpoint path, or null


@dataclass
class DataConfig:
    train: str = "data/train.jsonl"
    eval: str | None = None


@dataclass
class Stage1Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class CacheConfig:
    enabled: bool = True  # compute the frozen LLM's response states once; false = recompute every step
    dir: str | None = None  # default <output_dir>/hidden_cache
    batch_size: int = 8  # records per frozen-model forward while building
    shard_size: int = 1024  # records per shard file


@dataclass
class Stage2Config:
    model: str = "runs/stage1/model"  # the stage-1 model directory (encoder, adaptor and LLM stay frozen)
    decoder: SpeechDecoderConfig = field(default_factory=SpeechDecoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_metric_batches: int = 4  # held-out batches decoded at each eval for unit error and blank share


@dataclass
class VocoderConfig:
    model: UnitToMelConfig = field(default_factory=UnitToMelConfig)
    hifigan: str | None = None  # mel vocoder checkpoint; null = the real HiFi-GAN universal from make assets
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
