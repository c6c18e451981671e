"""The vocoder evaluation (omni/eval/vocoder.py) on a briefly trained tiny unit vocoder."""

import json

from omni import assets
from omni.eval import vocoder as vocoder_eval
from omni.vocoder.mel_unit import MelUnitVocoder
from tests.conftest import train_vocoder as train


def test_vocoder_evaluation_writes_its_report(unit_answers, tiny_hifigan, tmp_path):
    train(unit_answers, tiny_hifigan, tmp_path / "run", "train.max_steps=2")
    out = tmp_path / "eval"
    args = ["--vocoder", str(tmp_path / "run" / "model"), "--data", str(unit_answers), "--out", str(out)]
    asr = str(assets.ensure("whisper_tiny_en"))
    args += ["--dtype", "bfloat16"]  # the HiFi-GAN as generation runs it on a GPU
    report = vocoder_eval.main([*args, "--items", "2", "--whisper", asr, "--chunks", "4", "--contrast", "1.2"])
    results = report["results"]
    assert set(results) == {"original", "mel_copy", "resynthesis", "chunk4_bare", "chunk4_crossfade"}
    assert report["contrast"] == 1.2 and "contrast 1.2, HiFi-GAN bfloat16" in (out / "vocoder.md").read_text()
    assert report["dtype"] == "bfloat16"
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
