"""The unit evaluation (omni/eval/speech_units.py) and the metrics it shares with stage 2 (omni/unit_metrics.py)."""

import json

from omni.eval import speech_units
from omni.unit_metrics import is_stalled
from tests.conftest import run_stage2 as run
from train import stage2


def test_unit_evaluation_trained_against_untrained(stage1_dir, toy_dir, tmp_path):
    # lr 0: the "trained" decoder keeps its initial weights, so the evaluation's untrained one must equal it
    run(stage1_dir, toy_dir, tmp_path / "frozen", "train.max_steps=2", "train.lr=0.0")
    out = tmp_path / "eval"
    args = ["--decoder", str(tmp_path / "frozen" / "model"), "--data", str(toy_dir / "eval.jsonl"), "--out", str(out)]
    report = speech_units.main(args)
    assert report["results"]["trained"] == report["results"]["untrained"]
    run(stage1_dir, toy_dir, tmp_path / "trained", "train.max_steps=40")
    args[1] = str(tmp_path / "trained" / "model")
    report = speech_units.main([*args[:-1], str(tmp_path / "eval2")])
    trained, untrained = report["results"]["trained"], report["results"]["untrained"]
    assert trained["unit_error_rate"] < untrained["unit_error_rate"]
    assert trained["ctc_loss"] < untrained["ctc_loss"]
    assert report["records"] == 4
    assert "| trained |" in (tmp_path / "eval2" / "units.md").read_text()
    rows = [json.loads(line) for line in (tmp_path / "eval2" / "examples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["trained"]["reference"] == rows[0]["untrained"]["reference"]


def test_a_stalled_run_is_reported(capsys):
    stalled = {"unit_error_rate": 1.0, "blank_share": 0.99, "length_ratio": 0.02, "ctc_loss": 3.0}
    assert is_stalled(stalled)
    assert not is_stalled(stalled | {"blank_share": 0.6, "length_ratio": 0.8})
    stage2.report_stall({"eval_metrics": [{"step": 100, **stalled, "stalled": 1.0}]})
    assert "looks stalled at step 100: 99.0% of frames are blank" in capsys.readouterr().out
