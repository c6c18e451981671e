"""`make gpu-check`: training steps and streaming first-packet latency at the paper's shapes, nothing downloaded.

    python tests/benchmarks/gpu_check.py --out runs/gpu_check                 # real shapes on CUDA, small ones on a CPU
    python tests/benchmarks/gpu_check.py --shapes small --device cpu --steps 1 --out /tmp/gpu_check

Every part is built from omni's own classes with random weights at its real shape, directly on the device, so
what is timed is the trained model's code path (only the text is garbage): Whisper large-v3's encoder
(`SpeechEncoder` over openai-whisper's `AudioEncoder`, fp32 weights as omni loads them), the 21.5M adaptor, an
8B-shaped Llama-3.1 made in bf16 (its weights never pass through fp32 or the CPU) with LoRA through
`OmniModel._add_lora`, the 425M CTC speech decoder and fairseq's unit HiFi-GAN (`CodeHifiGan`'s default dims).
Three sections, each stopped once `--time-limit` is passed (the report says where):

1. stage-1 steps (LoRA r=16 on q,k,v,o + adaptor, AdamW, bf16 autocast, gradient checkpointing): s/step,
   samples/s, LLM tokens/s, peak memory; the same batch padded to 30 s (the reference) for the ratio;
2. stage-2 steps from cached hidden states (random states at the LLM's width): s/step, samples/s, peak memory;
3. streaming (`SpeechGenerator`, greedy, end of turn forbidden so that every answer has the same length, the
   random decoder paced to a trained one's units per token): first-packet latency at Omega 10, 40 and offline,
   CUDA-synchronised and split into features, encoder, prefill, decode to the first chunk and vocoder; ours
   (variable length, incremental decoder) against the recomputed decoder, 30 s padding and both (the
   reference's way); whether incremental and recomputed decoders give the same units.

Writes `gpu_check.json` and `gpu_check.md` (with the goals: the reference's 226-236 ms on an L40, VITA-Audio's
53 ms, ours under 50 ms on an H100) under `--out`.

On a GPU machine: the Makefile's `.venv` holds the CPU build of torch, so use a Python whose torch has CUDA,
e.g. `python -m venv .venv-gpu && .venv-gpu/bin/pip install -e .` (PyPI's Linux torch is a CUDA build), then
`.venv-gpu/bin/python tests/benchmarks/gpu_check.py --out runs/gpu_check`. A Python that already holds CUDA torch,
transformers, peft and accelerate needs only openai-whisper, soundfile and soxr beside it (`PYTHONPATH=.`).
The real shapes need about 40 GiB (GPU memory on CUDA, RAM on a CPU); with less the run stops at once, saying so.
"""

from __future__ import annotations

import datetime
import gc
import json
import math
import os
import platform
import resource
import statistics
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig, PreTrainedTokenizerBase
from whisper.model import AudioEncoder, ModelDimensions

from omni.adaptor import SpeechAdaptor
from omni.audio import SAMPLE_RATE
from omni.cli import command_parser
from omni.config import AdaptorConfig, EncoderConfig, LLMConfig, LoraConfig, ModelConfig, SpeechDecoderConfig
from omni.data import Example, SpeechCollator
from omni.encoder import SpeechEncoder
from omni.model import OmniModel
from omni.speech_decoder import SpeechDecoder
from omni.speech_generator import Event, LiveBatch, SpeechGenerator
from omni.tiny import tiny_tokenizer
from omni.vocoder.code_hifigan import CodeHifiGan, CodeHifiGanConfig, CodeHifiGanVocoder, DurationPredictorConfig
from omni.vocoder.hifigan import HifiGanConfig

OMEGAS: list[int | None] = [10, 40, None]  # None: offline, the whole answer vocoded at its end
WAYS = {  # name -> (pad_to_30s, incremental decoder, join, prompt prefix prefilled once): ours, each of the
    # reference's two main choices, and all of its ways
    "ours": (False, True, "crossfade", True),
    "recomputed_decoder": (False, False, "crossfade", True),
    "padded_30s": (True, True, "crossfade", True),
    "reference": (True, False, "bare", False),
}
SPLIT = ["features_ms", "encoder_ms", "prefill_ms", "decode_to_first_chunk_ms", "vocoder_ms"]
GOALS = [  # first packet at Omega 10: (who, where, what they reach, ms we must be under)
    ("LLaMA-Omni (the reference)", "1x L40", "226-236 ms", 236.0),
    ("VITA-Audio (7B)", "GPU", "53 ms", 53.0),
    ("omni's target", "1x H100", "< 50 ms", 50.0),
]
REAL_NEEDS_GIB = 40  # 8B bf16 weights (16 GiB), encoder, decoder + its AdamW state, activations
ANSWER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "yes", "no", "maybe"]


@dataclass
class Shapes:
    """Sizes of every part and of the work given to them."""

    # Whisper encoder (openai-whisper ModelDimensions)
    n_mels: int
    audio_state: int
    audio_heads: int
    audio_layers: int
    # the chat LLM (Llama-3.1)
    llm_hidden: int
    llm_layers: int
    llm_heads: int
    llm_kv_heads: int
    llm_ffn: int
    llm_vocab: int | None  # None: the tokenizer's
    adaptor_hidden: int
    decoder: SpeechDecoderConfig
    vocoder: CodeHifiGanConfig
    # the work
    steps: int
    stage1_batch: int
    clip_seconds: tuple[float, float]
    answer_tokens: int
    stage2_batch: int
    stage2_answer_tokens: tuple[int, int]
    units_per_token: int  # a trained decoder's rate: stage 2's targets, and the pace of streaming's units
    questions: int
    question_seconds: tuple[float, float]
    new_tokens: int
    time_limit_s: float
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=16, alpha=32, dropout=0.05))


SHAPES = {
    "real": Shapes(
        n_mels=128,
        audio_state=1280,
        audio_heads=20,
        audio_layers=32,
        llm_hidden=4096,
        llm_layers=32,
        llm_heads=32,
        llm_kv_heads=8,
        llm_ffn=14336,
        llm_vocab=128256,
        adaptor_hidden=2048,
        decoder=SpeechDecoderConfig(num_units=1000, upsample=25, rope_theta=500000.0),  # 425M: 2 x 4096, 11008
        vocoder=CodeHifiGanConfig(),  # fairseq's unit HiFi-GAN as LLaMA-Omni ships it
        steps=5,
        stage1_batch=4,
        clip_seconds=(5.0, 10.0),
        answer_tokens=40,
        stage2_batch=8,
        stage2_answer_tokens=(40, 80),
        units_per_token=10,
        questions=5,
        question_seconds=(3.0, 6.0),
        new_tokens=40,
        time_limit_s=480.0,
    ),
    "small": Shapes(
        n_mels=80,
        audio_state=64,
        audio_heads=2,
        audio_layers=2,
        llm_hidden=64,
        llm_layers=2,
        llm_heads=4,
        llm_kv_heads=2,
        llm_ffn=128,
        llm_vocab=None,
        adaptor_hidden=64,
        decoder=SpeechDecoderConfig(num_units=100, upsample=10, hidden_size=64, num_heads=4, intermediate_size=128),
        vocoder=CodeHifiGanConfig(
            num_embeddings=100,
            embedding_dim=16,
            generator=HifiGanConfig(
                [5, 4, 4, 2, 2],
                [11, 8, 8, 4, 4],
                upsample_initial_channel=32,
                resblock_kernel_sizes=[3],
                resblock_dilation_sizes=[[1, 3, 5]],
                in_channels=16,
            ),  # fmt: skip
            dur_predictor=DurationPredictorConfig(encoder_embed_dim=16, var_pred_hidden_dim=16),
        ),
        steps=2,
        stage1_batch=2,
        clip_seconds=(5.0, 10.0),
        answer_tokens=40,
        stage2_batch=4,
        stage2_answer_tokens=(10, 20),
        units_per_token=4,
        questions=2,
        question_seconds=(3.0, 6.0),
        new_tokens=12,
        time_limit_s=120.0,
    ),
}


# ---- clocks, memory, budget ---------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds `work` took, queued CUDA kernels included."""
    sync(device)
    start = time.perf_counter()
    out = work()
    sync(device)
    return time.perf_counter() - start, out


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    """CUDA: the most memory tensors held since `reset_peak`; CPU: the process's peak RSS so far (Linux)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def resident_gib(device: torch.device) -> float:
    return torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Budget:
    """The run's time limit: sections ask before each measurement whether time is left."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.perf_counter()

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def over(self) -> bool:
        return self.spent() >= self.seconds


def check_memory(device: torch.device, shapes_name: str) -> None:
    """Real shapes on a machine that cannot hold them: one clear line instead of an out-of-memory crash."""
    if shapes_name != "real":
        return
    if device.type == "cuda":
        have, where = torch.cuda.get_device_properties(device).total_memory / 2**30, "GPU memory"
    else:
        have, where = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, "RAM on this CPU machine"
    if have < REAL_NEEDS_GIB:
        raise RuntimeError(
            f"--shapes real needs about {REAL_NEEDS_GIB} GiB, this device has {have:.0f} GiB of {where}: "
            "run it on a GPU (see python tests/benchmarks/gpu_check.py --help) or use --shapes small"
        )


# ---- parts --------------------------------------------------------------------------------------
def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_encoder(s: Shapes, device: torch.device, config: EncoderConfig) -> SpeechEncoder:
    """Whisper's encoder from its dimensions (large-v3's at real shapes); no text decoder is built. Its weights
    stay fp32, as `SpeechEncoder.from_config` loads them (Whisper's LayerNorm computes in fp32 and its linear
    layers cast their weights to the input's dtype, so bf16 autocast runs it in bf16)."""
    dims = ModelDimensions(
        n_mels=s.n_mels,
        n_audio_ctx=1500,
        n_audio_state=s.audio_state,
        n_audio_head=s.audio_heads,
        n_audio_layer=s.audio_layers,
        n_vocab=51866,
        n_text_ctx=448,
        n_text_state=s.audio_state,
        n_text_head=s.audio_heads,
        n_text_layer=0,  # never built: SpeechEncoder takes the encoder alone
    )
    with device:  # weights made where they run
        encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer)
    return SpeechEncoder(encoder, dims, config)


def build_llm(s: Shapes, tokenizer: PreTrainedTokenizerBase, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A Llama-3.1-shaped causal LM (8B at real shapes: GQA, llama3-scaled RoPE), made in `dtype` on `device`."""
    config = LlamaConfig(
        vocab_size=s.llm_vocab or len(tokenizer),
        hidden_size=s.llm_hidden,
        intermediate_size=s.llm_ffn,
        num_hidden_layers=s.llm_layers,
        num_attention_heads=s.llm_heads,
        num_key_value_heads=s.llm_kv_heads,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with device:  # weights made where they run
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def build_model(s: Shapes, device: torch.device, dtype: torch.dtype) -> OmniModel:
    """The stage-1 model as `OmniModel.from_config` makes it (adaptor in the LLM's dtype, LoRA added, parts
    trainable as configured), from parts built here instead of loaded."""
    tokenizer = tiny_tokenizer()  # Llama-3's is a download; token ids only need to fall inside the vocabulary
    dtype_name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]
    config = ModelConfig(
        encoder=EncoderConfig(name_or_path="random weights"),
        adaptor=AdaptorConfig(stride=5, hidden_size=s.adaptor_hidden),
        llm=LLMConfig(name_or_path="random weights", train="lora", lora=s.lora, dtype=dtype_name),
    )
    encoder = build_encoder(s, device, config.encoder)
    llm = build_llm(s, tokenizer, device, dtype)
    with device:  # weights made where they run
        adaptor = SpeechAdaptor(encoder.width, llm.config.hidden_size, 5, s.adaptor_hidden).to(dtype)
    model = OmniModel(config, encoder, adaptor, llm, tokenizer)
    model.llm = OmniModel._add_lora(llm, config)
    model.set_trainable()
    return model


def build_vocoder(s: Shapes, device: torch.device) -> CodeHifiGanVocoder:
    with device:  # weights made where they run
        return CodeHifiGanVocoder(CodeHifiGan(s.vocoder))


def autocast(device: torch.device, dtype: torch.dtype) -> AbstractContextManager:
    """bf16 mixed precision as Accelerate's `mixed_precision: bf16` gives it; plain fp32 otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


def noise(rng: np.random.Generator, seconds: tuple[float, float]) -> np.ndarray:
    return (0.1 * rng.standard_normal(int(rng.uniform(*seconds) * SAMPLE_RATE))).astype(np.float32)


def answer_text(model: OmniModel, tokens: int) -> str:
    """Words whose answer (through its end of turn) is about `tokens` tokens long in this tokenizer."""
    words: list[str] = []
    while len(model.prompt.response_ids(" ".join(words or ["one"]))) < tokens:
        words.append(ANSWER_WORDS[len(words) % len(ANSWER_WORDS)])
    return " ".join(words)


def median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


# ---- sections -----------------------------------------------------------------------------------
def optimizer_step(parameters: list[nn.Parameter], optimizer: torch.optim.Optimizer) -> None:
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def time_steps(
    device: torch.device, budget: Budget, steps: int, step: Callable[[], float]
) -> tuple[list[float], list[float], bool]:
    """One untimed warm-up step, then up to `steps` timed ones while the budget lasts: times, losses, cut short."""
    step()
    times, losses = [], []
    for _ in range(steps):
        if budget.over():
            return times, losses, True
        seconds, loss = timed(device, step)
        times.append(seconds)
        losses.append(loss)
    return times, losses, False


class PacedDecoder(SpeechDecoder):
    """A random decoder puts nearly all frames of a token on one class (they share its state), so a chunk of
    Omega units would wait for about Omega tokens where a trained one writes `units_per_token` per token. With
    `units_per_token` set, frames 0, 2, 4, ... of each token are kept off the blank and the rest on it: the
    model's own choice of unit at each unit frame, at a trained decoder's pace, for the same compute.
    Unset (training), it is `SpeechDecoder` itself."""

    units_per_token: int | None = None

    def pace(self, logits: torch.Tensor, first_frame: int) -> torch.Tensor:
        if self.units_per_token is None:
            return logits
        frame = torch.arange(first_frame, first_frame + logits.shape[1], device=logits.device) % self.config.upsample
        speaks = (frame % 2 == 0) & (frame < 2 * self.units_per_token)
        logits = logits.clone()
        logits[..., self.blank] = torch.where(speaks, -math.inf, math.inf).to(logits.dtype)
        return logits

    def forward(
        self,
        hidden: torch.Tensor,
        lengths: torch.Tensor,
        tokens: torch.Tensor | None = None,
        min_frames: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, frames = super().forward(hidden, lengths, tokens, min_frames)
        return self.pace(logits, 0), frames

    @torch.no_grad()
    def step(
        self, hidden: torch.Tensor | None, cache: DynamicCache | None = None, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, DynamicCache]:
        first = cache.get_seq_length() if cache is not None else 0
        logits, cache = super().step(hidden, cache, *args, **kwargs)
        return self.pace(logits, first), cache


def stage2_section(
    s: Shapes, device: torch.device, dtype: torch.dtype, budget: Budget, steps: int, width: int
) -> tuple[dict[str, Any], PacedDecoder]:
    """The decoder trained on cached answer states: no LLM at all, as `train.stage2` with the cache on."""
    torch.manual_seed(0)
    reset_peak(device)
    with device:  # weights made where they run
        decoder = PacedDecoder(s.decoder, width)  # fp32 master weights, bf16 autocast: Accelerate's way
    params = [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    generator = torch.Generator().manual_seed(0)
    low, high = s.stage2_answer_tokens
    lengths = torch.randint(low, high + 1, (s.stage2_batch,), generator=generator)
    hidden = torch.randn(s.stage2_batch, int(lengths.max()), width, generator=generator).to(device, dtype)
    unit_lengths = lengths * s.units_per_token
    units = torch.randint(0, s.decoder.num_units, (s.stage2_batch, int(unit_lengths.max())), generator=generator)
    batch = [t.to(device) for t in (hidden, lengths, units, unit_lengths)]

    def step() -> float:
        with autocast(device, dtype):
            loss = decoder.loss(*batch)
        loss.backward()
        optimizer_step(params, optimizer)
        return loss.item()

    decoder.train()
    times, losses, cut = time_steps(device, budget, steps, step)
    seconds = median(times)
    frames = int(lengths.sum()) * s.decoder.upsample
    result = {
        "status": "stopped at the time limit" if cut else "done",
        "decoder_params_m": count(decoder) / 1e6,
        "batch": s.stage2_batch,
        "answer_tokens": lengths.tolist(),
        "units_per_token": s.units_per_token,
        "steps_timed": len(times),
        "s_per_step": seconds,
        "samples_per_s": s.stage2_batch / seconds if times else float("nan"),
        "decoder_frames_per_s": frames / seconds if times else float("nan"),
        "losses": losses,
        "peak_memory_gib": peak_gib(device),
    }
    decoder.zero_grad(set_to_none=True)  # the optimizer state goes with this frame
    return result, decoder.eval()


def stage1_section(
    s: Shapes, model: OmniModel, device: torch.device, dtype: torch.dtype, budget: Budget, steps: int
) -> dict[str, Any]:
    """One optimizer step as `train.stage1` takes it, on the same clips at their own length and padded to 30 s."""
    rng = np.random.default_rng(0)
    response = answer_text(model, s.answer_tokens)
    examples = [Example(str(i), noise(rng, s.clip_seconds), response, None, None) for i in range(s.stage1_batch)]
    model.base_llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.base_llm.config.use_cache = False
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-5)
    model.train()
    result: dict[str, Any] = {
        "status": "done",
        "trainable_params_m": sum(p.numel() for p in params) / 1e6,
        "batch": s.stage1_batch,
        "clip_seconds": [round(len(e.audio) / SAMPLE_RATE, 2) for e in examples],
        "answer_tokens": len(model.prompt.response_ids(response)),
        "gradient_checkpointing": True,
        "resident_before_gib": resident_gib(device),
    }
    for mode, pad in (("variable", False), ("pad_to_30s", True)):
        if budget.over():
            result["status"] = f"stopped at the time limit before {mode}"
            break
        encoder = EncoderConfig(name_or_path=model.config.encoder.name_or_path, pad_to_30s=pad)
        collate = SpeechCollator(model.prompt, encoder, model.encoder.n_mels, model.config.adaptor.stride)
        batch = {k: v.to(device) for k, v in collate(examples).items()}

        def step(batch: dict[str, torch.Tensor] = batch) -> float:
            with autocast(device, dtype):
                loss = model(batch).loss
            loss.backward()
            optimizer_step(params, optimizer)
            return loss.item()

        reset_peak(device)
        times, losses, cut = time_steps(device, budget, steps, step)
        seconds = median(times)
        tokens = int(batch["attention_mask"].sum())
        result[mode] = {
            "steps_timed": len(times),
            "s_per_step": seconds,
            "samples_per_s": s.stage1_batch / seconds if times else float("nan"),
            "llm_tokens_per_s": tokens / seconds if times else float("nan"),
            "llm_tokens_per_step": tokens,
            "sequence_length": int(batch["input_ids"].shape[1]),
            "mel_frames": int(batch["mels"].shape[-1]),
            "losses": losses,
            "peak_memory_gib": peak_gib(device),
        }
        if cut:
            result["status"] = f"stopped at the time limit during {mode}"
            break
    if "variable" in result and "pad_to_30s" in result:
        result["pad_to_30s_over_variable"] = result["pad_to_30s"]["s_per_step"] / result["variable"]["s_per_step"]
    model.zero_grad(set_to_none=True)  # the optimizer state goes with this frame
    model.base_llm.gradient_checkpointing_disable()
    model.base_llm.config.use_cache = True
    return result


class FixedLengthGenerator(SpeechGenerator):
    """`SpeechGenerator` that writes exactly `max_new_tokens` tokens (random weights would pick the end of turn
    at random, or ids the small tokenizer cannot write) and notes when each token's units were there."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        vocabulary = self.model.base_llm.config.vocab_size
        self.allowed = torch.zeros(vocabulary, dtype=torch.bool, device=self.device)
        self.allowed[: min(len(self.model.tokenizer), vocabulary)] = True
        self.allowed[sorted(self.model.prompt.end_of_turn_ids)] = False
        self.token_times: list[float] = []

    def _pick(self, logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float) -> int:
        return super()._pick(logits.masked_fill(~self.allowed, -math.inf), do_sample, temperature, top_p)

    def live(self, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0) -> LiveBatch:
        return TimedLiveBatch(self, do_sample, temperature, top_p)


class TimedLiveBatch(LiveBatch):
    """Notes in its generator's `token_times` when each token's units were there."""

    g: FixedLengthGenerator

    def _advance(self, r: Any, token: int, labels: list[int]) -> list[Event]:
        self.g.token_times.append(self.g._clock(r.began))  # the token's units are known: argmax was read
        return super()._advance(r, token, labels)


class EncoderClock:
    """Hooks that stamp when the encoder starts and the adaptor ends, CUDA-synchronised: the split of
    encoding + prefill into features (mel, prompt), encoder (+ adaptor) and prefill."""

    def __init__(self, model: OmniModel, device: torch.device):
        self.device = device
        self.stamps: dict[str, float] = {}
        self.handles = [
            model.encoder.register_forward_pre_hook(lambda *_: self._stamp("encoder_start")),
            model.adaptor.register_forward_hook(lambda *_: self._stamp("adaptor_end")),
        ]

    def _stamp(self, name: str) -> None:
        sync(self.device)
        self.stamps[name] = time.perf_counter()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def measure(
    generator: FixedLengthGenerator, clock: EncoderClock, audio: np.ndarray, omega: int | None, tokens: int
) -> dict[str, Any]:
    """One spoken question answered in streaming mode: the first packet and its parts, in ms."""
    generator.token_times = []
    sync(generator.device)
    began = time.perf_counter()  # the generator's own clock starts microseconds later, at its first step
    events = list(generator(audio, omega, tokens))
    prefill = next(e for e in events if e.kind == "prefill").time
    done = events[-1]
    chunks = [e for e in events if e.kind == "audio"]  # none only if the decoder wrote nothing but blanks
    ready, played = (chunks[0].ready, chunks[0].time) if chunks else (math.nan, math.nan)
    encoder_start = clock.stamps["encoder_start"] - began
    adaptor_end = clock.stamps["adaptor_end"] - began
    ready_tokens = sum(t <= ready for t in generator.token_times)
    return {
        "features_ms": 1000 * encoder_start,
        "encoder_ms": 1000 * (adaptor_end - encoder_start),
        "prefill_ms": 1000 * (prefill - adaptor_end),
        "decode_to_first_chunk_ms": 1000 * (ready - prefill),
        "vocoder_ms": 1000 * (played - ready),
        "first_packet_ms": 1000 * played,
        "tokens_at_first_chunk": ready_tokens,
        "decode_ms_per_token": 1000 * (ready - prefill) / max(ready_tokens, 1),
        "chunks": len(chunks),
        "units": done.units,
        "tokens": len(generator.token_times),
        "total_s": done.time,
    }


def streaming_section(
    s: Shapes, model: OmniModel, decoder: PacedDecoder, device: torch.device, dtype: torch.dtype, budget: Budget
) -> dict[str, Any]:
    """First-packet latency at each Omega, each way, over the same spoken questions (medians)."""
    rng = np.random.default_rng(1)
    questions = [noise(rng, s.question_seconds) for _ in range(s.questions)]
    vocoder = build_vocoder(s, device)
    decoder = decoder.to(dtype)
    decoder.units_per_token = s.units_per_token
    reset_peak(device)
    result: dict[str, Any] = {
        "status": "done",
        "vocoder_params_m": count(vocoder.model) / 1e6,
        "question_seconds": [round(len(q) / SAMPLE_RATE, 2) for q in questions],
        "new_tokens": s.new_tokens,
        "decoding": "greedy, end of turn forbidden",
        "units_per_token": s.units_per_token,
        "omegas": {},
    }
    units: dict[tuple[str, str, int], list[int]] = {}
    clock = EncoderClock(model, device)
    try:
        generators = {
            way: FixedLengthGenerator(
                model, decoder, vocoder, join=join, incremental=incremental, pad_to_30s=pad, prefix_cache=prefix
            )
            for way, (pad, incremental, join, prefix) in WAYS.items()
        }
        for generator in generators.values():  # warm-up: CUDA kernels, allocator, caches
            measure(generator, clock, questions[0], OMEGAS[0], s.new_tokens)
        for omega in OMEGAS:
            label = str(omega) if omega else "offline"
            result["omegas"][label] = {}
            for way, generator in generators.items():
                runs = []
                for index, question in enumerate(questions):
                    if budget.over():
                        result["status"] = f"stopped at the time limit at Omega {label}, {way}"
                        break
                    run = measure(generator, clock, question, omega, s.new_tokens)
                    units[(label, way, index)] = run.pop("units")
                    runs.append(run)
                if runs:
                    keys = [*SPLIT, "first_packet_ms", "tokens_at_first_chunk", "decode_ms_per_token", "chunks"]
                    summary = {f"{k}_median": median([r[k] for r in runs]) for k in keys}
                    result["omegas"][label][way] = summary | {"runs": runs}
                if result["status"] != "done":
                    break
            if result["status"] != "done":
                break
    finally:
        clock.remove()
    result["units_agree"] = units_agreement(units)
    result["peak_memory_gib"] = peak_gib(device)
    return result


def units_agreement(units: dict[tuple[str, str, int], list[int]]) -> dict[str, Any]:
    """Incremental and recomputed decoders on the same input: the same units (the reference's promise kept)."""
    out = {}
    for name, incremental, recomputed in (
        ("variable_length", "ours", "recomputed_decoder"),
        ("pad_to_30s", "padded_30s", "reference"),
    ):
        pairs = [(u, units.get((o, recomputed, i))) for (o, w, i), u in units.items() if w == incremental]
        pairs = [(a, b) for a, b in pairs if b is not None]  # a run cut by the time limit has no partner
        same = sum(a == b for a, b in pairs)
        out[name] = {"identical": same, "compared": len(pairs), "units_per_answer": median([len(a) for a, _ in pairs])}
    return out


# ---- report -------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict[str, Any]:
    import peft
    import transformers

    cuda = device.type == "cuda"
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else "CPU",
        "peak_memory_is": "torch.cuda.max_memory_allocated per section" if cuda else "the process's peak RSS so far",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Our Omega-10 first packet against the published ones; judged only on CUDA at real shapes."""
    ours = report.get("streaming", {}).get("omegas", {}).get("10", {}).get("ours", {}).get("first_packet_ms_median")
    judged = report["environment"]["device"] == "cuda" and report["shapes"] == "real" and ours is not None
    rows = []
    for who, where, reached, limit in GOALS:
        met = ours < limit if judged else None
        rows.append({"system": who, "hardware": where, "first_packet": reached, "ours_ms": ours, "met": met})
    return rows


def without_nan(value: Any) -> Any:
    """NaN (a measurement that did not happen) as null: strict JSON readers refuse NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_nan(v) for v in value]
    return value


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(report: dict[str, Any]) -> str:
    env, params = report["environment"], report["params_m"]
    on_gpu = env["device"] == "cuda" and report["shapes"] == "real"
    lines = [
        f"# GPU check: {env['device_name']}, {report['shapes']} shapes, {report['dtype']}",
        "",
        f"{env['date']}; torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, "
        f"peft {env['peft']}; {report['wall_s']:.0f} s of a {report['time_limit_s']:.0f} s limit; peak memory is "
        f"{env['peak_memory_is']}. Random weights at "
        "the shapes below; nothing downloaded. Parameters (M): "
        + ", ".join(f"{k} {v:.2f}" for k, v in params.items())
        + ".",
        "",
        "## Goals: first packet at Omega 10",
        "",
        "| system | hardware | first packet | ours (this run, ms) | met? |",
        "|---|---|---|---|---|",
    ]
    for g in report["goals"]:
        met = "-" if g["met"] is None else ("yes" if g["met"] else "no")
        lines.append(f"| {g['system']} | {g['hardware']} | {g['first_packet']} | {fmt(g['ours_ms'])} | {met} |")
    if not on_gpu:
        lines += ["", '"met?" is judged only on CUDA at real shapes.']
    s1 = report.get("stage1", {})
    lines += [
        "",
        f"## Stage 1: training steps ({s1.get('status', 'not run')})",
        "",
        f"LoRA r=16 on q,k,v,o + adaptor ({fmt(s1.get('trainable_params_m'), 2)} M trainable), AdamW, "
        f"{report['dtype']}, gradient checkpointing; batch {s1.get('batch')}, clips {s1.get('clip_seconds')} s, "
        f"answers of {s1.get('answer_tokens')} tokens.",
        "",
        "| input | s/step | samples/s | LLM tokens/s | sequence | mel frames | peak memory GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, name in (("variable", "own length"), ("pad_to_30s", "padded to 30 s (reference)")):
        if mode in s1:
            m = s1[mode]
            lines.append(
                f"| {name} | {fmt(m['s_per_step'], 3)} | {fmt(m['samples_per_s'], 2)} "
                f"| {fmt(m['llm_tokens_per_s'], 0)} | {m['sequence_length']} | {m['mel_frames']} "
                f"| {fmt(m['peak_memory_gib'], 2)} |"
            )
    if "pad_to_30s_over_variable" in s1:
        lines += ["", f"30 s padding costs {s1['pad_to_30s_over_variable']:.2f}x the step time."]
    s2 = report.get("stage2", {})
    lines += [
        "",
        f"## Stage 2: decoder steps from cached states ({s2.get('status', 'not run')})",
        "",
        f"{fmt(s2.get('decoder_params_m'), 2)} M-parameter decoder, batch {s2.get('batch')}, answers of "
        f"{s2.get('answer_tokens')} tokens, {s2.get('units_per_token')} units per token.",
        "",
        "| s/step | samples/s | decoder frames/s | peak memory GiB |",
        "|---|---|---|---|",
        f"| {fmt(s2.get('s_per_step'), 3)} | {fmt(s2.get('samples_per_s'), 2)} | "
        f"{fmt(s2.get('decoder_frames_per_s'), 0)} | {fmt(s2.get('peak_memory_gib'), 2)} |",
    ]
    st = report.get("streaming", {})
    lines += [
        "",
        f"## Streaming: first packet ({st.get('status', 'not run')})",
        "",
        f"Medians (ms) over {len(st.get('question_seconds', []))} spoken questions of {st.get('question_seconds')} s, "
        f"{st.get('new_tokens')} tokens each ({st.get('decoding')}), the decoder paced to {st.get('units_per_token')} "
        "units per token; first packet = features + encoder + prefill + decode to the first chunk + vocoder.",
        "",
        "| Omega | way | features | encoder | prefill | decode to first chunk | vocoder | **first packet** "
        "| tokens by then | ms/token |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for omega, ways in st.get("omegas", {}).items():
        for way, m in ways.items():
            lines.append(
                f"| {omega} | {way} | "
                + " | ".join(fmt(m[f"{k}_median"]) for k in SPLIT)
                + f" | **{fmt(m['first_packet_ms_median'])}** | {fmt(m['tokens_at_first_chunk_median'], 0)} "
                f"| {fmt(m['decode_ms_per_token_median'])} |"
            )
    for name, agree in st.get("units_agree", {}).items():
        label = {"variable_length": "variable length", "pad_to_30s": "padded to 30 s"}[name]
        lines.append(
            f"\nIncremental vs recomputed decoder ({label}): identical units in "
            f"{agree['identical']} of {agree['compared']} answers ({fmt(agree['units_per_answer'], 0)} units each)."
        )
    lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def notes(report: dict[str, Any]) -> list[str]:
    out = [
        "Random weights: the text is garbage, and a random decoder would write about one unit per token; streaming "
        "keeps its choice of unit but paces it to a trained decoder's rate (units per token above), so the first "
        "chunk waits for as many tokens as it would with a trained model ('tokens by then').",
        "The prompt uses a small ChatML tokenizer (Llama-3's is a download): prompt lengths differ from Llama-3's by "
        "a few tokens.",
        "Whisper's encoder keeps fp32 weights, as omni loads them: bf16 autocast runs it in bf16 in training, but "
        "streaming runs without autocast, so there it computes in fp32 (the 'encoder' column).",
    ]
    if not (report["environment"]["device"] == "cuda" and report["shapes"] == "real"):
        out.append(
            f"These are {report['environment']['device_name']} figures at {report['shapes']} shapes: they show the "
            "code path runs end to end, not how fast it is. The GPU figures are still to come: run "
            "`python tests/benchmarks/gpu_check.py` on a CUDA machine (see the module docstring)."
        )
    for section in ("stage1", "stage2", "streaming"):
        status = report.get(section, {}).get("status", "skipped")
        if status != "done":
            out.append(f"{section}: {status}.")
    return out


# ---- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = command_parser(__doc__)
    parser.add_argument("--shapes", choices=sorted(SHAPES), help="default: real on CUDA, small on a CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument("--steps", type=int, help="timed training steps per measurement (default: the shapes')")
    parser.add_argument("--time-limit", type=float, help="seconds; later measurements are skipped past it")
    parser.add_argument(
        "--dtype", choices=["auto", "bfloat16", "float32"], default="auto", help="auto: bf16 on CUDA or at real shapes"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    shapes_name = args.shapes or ("real" if device.type == "cuda" else "small")
    check_memory(device, shapes_name)
    s = SHAPES[shapes_name]
    steps = args.steps or s.steps
    budget = Budget(s.time_limit_s if args.time_limit is None else args.time_limit)
    dtype = torch.bfloat16 if device.type == "cuda" or shapes_name == "real" else torch.float32
    dtype = dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    torch.manual_seed(0)
    report: dict[str, Any] = {
        "environment": environment(device),
        "shapes": shapes_name,
        "dtype": str(dtype).removeprefix("torch."),
        "time_limit_s": budget.seconds,
        "shape_details": asdict(s),
    }

    def section(name: str, run: Callable[[], dict[str, Any]]) -> None:
        if budget.over():
            report[name] = {"status": "skipped: the time limit was reached before it"}
            return
        began = time.perf_counter()
        try:
            report[name] = run()
        except Exception as err:  # the report still says what ran, and how this broke (out of memory, say)
            report[name] = {"status": f"failed: {type(err).__name__}: {err}", "traceback": traceback.format_exc()}
            free_memory(device)
        report[name]["wall_s"] = time.perf_counter() - began
        print(f"{name}: {report[name]['status']} in {report[name]['wall_s']:.1f} s", flush=True)

    model = None
    decoder: PacedDecoder | None = None

    def run_stage2() -> dict[str, Any]:
        nonlocal decoder
        result, decoder = stage2_section(s, device, dtype, budget, steps, s.llm_hidden)
        return result

    def run_stage1() -> dict[str, Any]:
        nonlocal model
        free_memory(device)
        began = time.perf_counter()
        model = build_model(s, device, dtype)
        sync(device)
        return {"build_s": time.perf_counter() - began} | stage1_section(s, model, device, dtype, budget, steps)

    def run_streaming() -> dict[str, Any]:
        if model is None or decoder is None:
            return {"status": "skipped: stage 1 or 2 did not build its parts"}
        free_memory(device)
        model.llm = model.llm.merge_and_unload()  # LoRA folded in, as a deployed model runs
        model.config.llm.train = "frozen"
        model.set_trainable()
        return streaming_section(s, model.eval(), decoder, device, dtype, budget)

    section("stage2", run_stage2)  # first: it needs no LLM, so its memory is the decoder's alone
    section("stage1", run_stage1)
    section("streaming", run_streaming)
    report["params_m"] = {}
    if model is not None:
        report["params_m"] = {
            "encoder": count(model.encoder) / 1e6,
            "adaptor": count(model.adaptor) / 1e6,
            "llm": count(model.base_llm) / 1e6,
        }
    if decoder is not None:
        report["params_m"]["speech decoder"] = count(decoder) / 1e6
    if "vocoder_params_m" in report.get("streaming", {}):
        report["params_m"]["vocoder"] = report["streaming"]["vocoder_params_m"]
    report["wall_s"] = budget.spent()
    report["goals"] = goals(report)
    report["notes"] = notes(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(without_nan(report), indent=2))
    text = markdown(report)
    (args.out / "gpu_check.md").write_text(text)
    print(text)
    print(f"wrote {args.out}/gpu_check.json and gpu_check.md")
    failed = [name for name in ("stage2", "stage1", "streaming") if report[name]["status"].startswith("failed")]
    if failed:
        raise RuntimeError(f"{', '.join(failed)} failed: the traceback is in {args.out}/gpu_check.json")
    return report


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
