import json
from dataclasses import asdict
from pathlib import Path

import pytest
import soundfile
import torch
from accelerate.state import AcceleratorState

from omni import assets
from omni.eval import vocoder as vocoder_eval
from omni.vocoder.data import UnitSpeechDataset
from omni.vocoder.hifigan import MEL_CONFIG, HifiGanConfig, HifiGanGenerator
from omni.vocoder.streaming import HIFIGAN_FILE, MelUnitVocoder
from omni.vocoder.unit_to_mel import UnitToMel
from tests.conftest import noise
from train import vocoder

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "train" / "configs" / "vocoder_demo.yaml")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def answers(tmp_path) -> Path:
    """Eight spoken answers (noise stands in) with units and durations that fill them."""
    (tmp_path / "a").mkdir()
    lines = []
    for i in range(8):
        seconds = 0.6 + 0.1 * i
        soundfile.write(tmp_path / "a" / f"{i}.wav", noise(seconds, i), 16000)
        frames = int(seconds * 50)
        units = [(i + j) % 12 for j in range(frames // 3)]
        durations = [3] * (len(units) - 1) + [frames - 3 * (len(units) - 1)]
        record = {"id": f"r{i}", "response": "one two three", "response_audio": f"a/{i}.wav"}
        lines.append(json.dumps(record | {"units": units, "unit_durations": durations}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "m.jsonl"


@pytest.fixture
def tiny_hifigan(tmp_path) -> Path:
    torch.manual_seed(0)
    config = HifiGanConfig(upsample_initial_channel=16)
    torch.save({"generator": HifiGanGenerator(config).state_dict()}, tmp_path / "g.pt")
    (tmp_path / "config.json").write_text(json.dumps(asdict(config) | {"num_mels": 80}))
    return tmp_path / "g.pt"


def train(answers, tiny_hifigan, out, *extra) -> dict:
    AcceleratorState._reset_state(reset_partial_state=True)
    overrides = [
        "model.num_units=12",
        "model.hidden_size=32",
        f"hifigan={tiny_hifigan}",
        f"data.train={answers}",
        f"data.eval={answers}",
        f"train.output_dir={out}",
        "train.batch_size=4",
        "train.eval_every=0",
        "train.save_every=5",
    ]
    return vocoder.main(["--config", CONFIG, *overrides, *extra])


def test_vocoder_recipe_trains_saves_and_resumes(answers, tiny_hifigan, tmp_path):
    summary = train(answers, tiny_hifigan, tmp_path / "run", "train.max_steps=10")
    assert summary["steps"] == 10 and summary["samples"] == 40
    assert summary["final_train_loss"] < summary["first_train_loss"]
    model_dir = tmp_path / "run" / "model"
    assert (model_dir / HIFIGAN_FILE).read_text().strip() == str(tiny_hifigan.resolve())
    trained = UnitToMel.from_pretrained(model_dir)
    assert trained.config.num_units == 12
    torch.testing.assert_close(trained.mel_mean, UnitSpeechDataset(answers, 12, MEL_CONFIG).mean_mel())
    resumed = train(
        answers,
        tiny_hifigan,
        tmp_path / "b",
        "train.max_steps=10",
        f"train.resume={tmp_path}/run/checkpoints/step-0000005",
    )
    assert resumed["train_loss"] == summary["train_loss"]


def test_vocoder_evaluation_writes_its_report(answers, tiny_hifigan, tmp_path):
    train(answers, tiny_hifigan, tmp_path / "run", "train.max_steps=2")
    out = tmp_path / "eval"
    args = ["--vocoder", str(tmp_path / "run" / "model"), "--data", str(answers), "--out", str(out)]
    asr = str(assets.ensure("whisper_tiny_en"))
    report = vocoder_eval.main([*args, "--items", "2", "--whisper", asr, "--chunks", "4", "--contrast", "1.2"])
    results = report["results"]
    assert set(results) == {"original", "mel_copy", "resynthesis", "chunk4_bare", "chunk4_crossfade"}
    assert report["contrast"] == 1.2 and "contrast 1.2" in (out / "vocoder.md").read_text()
    assert "real_time_factor" in results["resynthesis"] and "real_time_factor" not in results["mel_copy"]
    assert all(r["wer"] >= 0.0 for r in results.values())
    assert results["chunk4_bare"]["mel_distance_to_whole"] >= 0.0
    assert report["items"] == 2 and (out / "spectrogram.png").stat().st_size > 1000
    assert len(list((out / "wavs").glob("*.wav"))) == 10
    assert "| resynthesis |" in (out / "vocoder.md").read_text()
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r0", "r1"] and "resynthesis" in rows[0]
    vocoder_model = MelUnitVocoder.from_pretrained(tmp_path / "run" / "model")
    assert vocoder_model.sample_rate == 22050
