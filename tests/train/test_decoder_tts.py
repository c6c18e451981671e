"""TTS pretraining of the speech decoder (train/decoder_tts.py) and its hand-off to stage 2."""

import json
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from omni.config import ConfigError
from omni.hidden_cache import META_FILE
from omni.speech_decoder import SpeechDecoder
from tests.conftest import run_stage2
from train import decoder_tts
from train.loop import checkpoints

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "train" / "configs" / "decoder_tts_tiny.yaml")


def run(tiny_dir: Path, toy_dir: Path, out: Path, *extra: str) -> dict:
    AcceleratorState._reset_state(reset_partial_state=True)
    return decoder_tts.main(
        [
            "--config",
            CONFIG,
            f"llm={tiny_dir / 'llm'}",
            f"data.train={toy_dir / 'train.jsonl'}",
            f"data.eval={toy_dir / 'eval.jsonl'}",
            f"train.output_dir={out}",
            *extra,
        ]
    )


def test_the_decoder_learns_to_say_text_without_any_llm_state(tiny_dir, toy_dir, tmp_path):
    summary = run(tiny_dir, toy_dir, tmp_path / "tts", "train.max_steps=60", "train.eval_every=30")
    assert summary["final_train_loss"] < 0.6 * summary["first_train_loss"]
    assert summary["eval_metrics"][-1]["unit_error_rate"] < 1.0
    meta = (tmp_path / "tts" / "model" / "speech_decoder.yaml").read_text()
    assert f"text_embeddings: {(tiny_dir / 'llm').resolve()}" in meta  # the table it reads, not saved with it
    decoder = SpeechDecoder.from_pretrained(tmp_path / "tts" / "model")
    assert decoder.config.input.fusion == "gate" and decoder.input.text is not None


def test_tts_pretraining_resumes_exactly(tiny_dir, toy_dir, tmp_path):
    common = ["train.max_steps=6", "train.save_every=3", "train.eval_every=0", "decoder.attention_dropout=0.2"]
    straight = run(tiny_dir, toy_dir, tmp_path / "a", *common)
    resumed = run(tiny_dir, toy_dir, tmp_path / "b", *common, f"train.resume={checkpoints(tmp_path / 'a')[0]}")
    assert resumed["train_loss"] == straight["train_loss"]


def test_tts_pretraining_needs_a_decoder_that_reads_token_embeddings(tiny_dir, toy_dir, tmp_path):
    with pytest.raises(ConfigError, match="decoder.input.fusion: TTS pretraining reads the answer's token embeddings"):
        run(tiny_dir, toy_dir, tmp_path / "none", "decoder.input.fusion=none")


def test_stage2_starts_from_the_tts_decoder_and_refuses_stale_checkpoints(tiny_dir, stage1_dir, toy_dir, tmp_path):
    run(tiny_dir, toy_dir, tmp_path / "tts", "train.max_steps=4", "train.eval_every=0")
    tts = SpeechDecoder.from_pretrained(tmp_path / "tts" / "model").state_dict()
    fused = ["decoder.input.fusion=gate", "decoder.input.frame_offsets=true", f"decoder.init_from={tmp_path / 'tts'}"]
    with pytest.raises(FileNotFoundError, match="not a speech decoder directory"):
        run_stage2(stage1_dir, toy_dir, tmp_path / "wrong", *fused, "train.max_steps=1")
    fused[-1] = f"decoder.init_from={tmp_path / 'tts' / 'model'}"
    still = ["train.lr=0", "train.max_steps=1", "train.eval_every=0", "train.save_every=1"]
    run_stage2(stage1_dir, toy_dir, tmp_path / "s2", *fused, *still)
    handed = SpeechDecoder.from_pretrained(tmp_path / "s2" / "model").state_dict()
    assert handed.keys() == tts.keys()
    for name, value in tts.items():  # a learning rate of 0: stage 2's decoder is the TTS decoder as it was given
        torch.testing.assert_close(handed[name], value)
    # a checkpoint of another fusion, or of another TTS decoder, is never resumed
    with pytest.raises(ValueError, match="trained on other inputs"):
        run_stage2(stage1_dir, toy_dir, tmp_path / "s2", *fused[:-1], "decoder.input.fusion=add", *still[1:])
    run(tiny_dir, toy_dir, tmp_path / "tts", "train.max_steps=5", "train.eval_every=0")  # the TTS decoder changes
    with pytest.raises(ValueError, match="trained on other inputs"):
        run_stage2(stage1_dir, toy_dir, tmp_path / "s2", *fused, *still[1:])
    # a decoder of other shapes is refused, naming the setting
    with pytest.raises(ValueError, match="do not fit this decoder"):
        run_stage2(stage1_dir, toy_dir, tmp_path / "s2_wide", *fused, "decoder.hidden_size=32", *still)


def test_one_hidden_cache_serves_every_fusion_and_another_alignment_rebuilds_it(stage1_dir, toy_dir, tmp_path):
    cache = ["cache.dir=" + str(tmp_path / "cache"), "train.max_steps=1", "train.eval_every=0"]
    run_stage2(stage1_dir, toy_dir, tmp_path / "none", *cache)
    shard = tmp_path / "cache" / "train" / "shard-00000.safetensors"
    built = shard.stat().st_mtime_ns
    run_stage2(stage1_dir, toy_dir, tmp_path / "gate", *cache, "decoder.input.fusion=gate")
    assert shard.stat().st_mtime_ns == built  # states and token ids: all a gated decoder reads
    run_stage2(stage1_dir, toy_dir, tmp_path / "predicting", *cache, "decoder.input.alignment=predicting")
    assert shard.stat().st_mtime_ns != built
    assert json.loads((tmp_path / "cache" / "train" / META_FILE).read_text())["records"] == 16
