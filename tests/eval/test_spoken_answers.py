import json
import math

import pytest
import torch

from data_recipes.toy import NUM_UNITS
from omni import assets
from omni.config import UnitToMelConfig
from omni.eval import spoken_answers
from omni.speech_decoder import SpeechDecoder
from omni.vocoder.unit_to_mel import UnitToMel
from tests.conftest import run_stage2

DEMO_SIZED = ["decoder.hidden_size=256", "decoder.num_layers=2", "decoder.num_heads=4"]
DEMO_SIZED += ["decoder.intermediate_size=1024"]


@pytest.fixture
def parts(stage1_dir, toy_dir, tiny_hifigan, tmp_path):
    """The tiny stage-1 model, a demo-sized decoder trained a few steps on the toy set, a random unit vocoder."""
    run_stage2(stage1_dir, toy_dir, tmp_path / "s2", *DEMO_SIZED, "train.max_steps=3", "train.eval_every=0")
    torch.manual_seed(0)
    vocoder = UnitToMel(UnitToMelConfig(num_units=NUM_UNITS, hidden_size=16, encoder_layers=1, decoder_layers=1))
    vocoder.save_pretrained(tmp_path / "vocoder", hifigan=tiny_hifigan)
    return stage1_dir, tmp_path / "s2" / "model", tmp_path / "vocoder"


def evaluate(parts, toy_dir, out, decoder=None, train=True) -> dict:
    model, trained, vocoder = parts
    args = ["--model", str(model), "--decoder", str(decoder or trained), "--vocoder", str(vocoder)]
    args += ["--heldout", str(toy_dir / "eval.jsonl"), "--train", str(toy_dir / "train.jsonl") if train else ""]
    args += ["--whisper", str(assets.ensure("whisper_tiny_en")), "--items", "2", "--omegas", "4", "--listen", "2"]
    return spoken_answers.main([*args, "--max-new-tokens", "6", "--batch-size", "2", "--out", str(out)])


def with_blank_bias(parts, bias: float, out) -> str:
    """The trained decoder with its blank logit pushed up (never speaks) or down (always speaks)."""
    decoder = SpeechDecoder.from_pretrained(parts[1])
    with torch.no_grad():
        decoder.output_proj.bias[decoder.blank] = bias
    decoder.save_pretrained(out, stage1_model=parts[0])
    return out


def test_a_few_steps_of_training_leave_the_decoder_stalled_and_the_evaluation_says_so(parts, toy_dir, tmp_path):
    report = evaluate(parts, toy_dir, tmp_path / "o")
    assert set(report["splits"]) == {"held-out", "training"}
    for split in report["splits"].values():  # 3 steps: still in the all-blank phase that precedes learning
        assert split["items"] == 2 and split["verdict"] == "stalled" and split["length_ratio"] == 0
        assert split["answers_without_audio"] == 2
        assert set(split["asr_wer"]) == {"omega_4", "offline", "resynthesis", "ceiling"}  # toy answers have speech
        assert split["asr_wer"]["offline"] == 1.0 and split["asr_wer"]["omega_4"] == 1.0
    out = tmp_path / "o"
    saved = json.loads((out / "spoken_answers.json").read_text())
    assert saved["splits"]["held-out"]["asr_wer"] == report["splits"]["held-out"]["asr_wer"]
    assert "| held-out | 2 |" in (out / "spoken_answers.md").read_text()
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [r["split"] for r in rows] == ["held-out"] * 2 + ["training"] * 2


def test_a_decoder_that_speaks_gets_audio_transcripts_and_a_listening_page(parts, toy_dir, tmp_path):
    report = evaluate(parts, toy_dir, tmp_path / "o", with_blank_bias(parts, -1e4, tmp_path / "speaks"), train=False)
    held_out = report["splits"]["held-out"]
    assert set(report["splits"]) == {"held-out"} and held_out["answers_without_audio"] == 0
    assert held_out["length_ratio"] > 0.2 and held_out["verdict"] == "babble"  # random units say nothing
    assert all(math.isfinite(v) and v >= 0 for v in held_out["asr_wer"].values())
    page = (tmp_path / "o" / "listen" / "listen.md").read_text()
    assert page.count("## ") == 2 and "Which tone is this?" in page and "Whisper heard" in page
    for name in ("01_question", "01_omega_4", "01_offline", "02_question", "02_offline"):
        assert (tmp_path / "o" / "listen" / f"{name}.wav").stat().st_size > 100, name


@pytest.mark.parametrize(
    ("wer", "length_ratio", "expected"),
    [(0.2, 1.0, "intelligible"), (0.5, 0.9, "partly intelligible"), (0.95, 1.1, "babble"), (0.1, 0.05, "stalled")],
)
def test_verdict(wer, length_ratio, expected):
    assert spoken_answers.verdict(wer, length_ratio) == expected


def test_streamed_chunk_sizes_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="--omegas"):
        spoken_answers.main(["--omegas", "0", "--out", str(tmp_path)])
