"""Two evaluations side by side: the columns of each, their difference, and clear errors for what is not one."""

import csv
import json

import pytest

from omni.eval.compare import compare


def report(folder, first_packet: float, wer: float, mos: float | None, omegas=("10", "offline"), questions=("q1",)):
    ours = {"first_packet_ms_median": first_packet, "asr_wer": wer, "s2tif_content": 3.0, "s2sif_content": 2.5}
    if mos is not None:
        ours["quality_mos_mean"] = mos
    body = {
        "environment": {"model": f"{folder.name}/model"},
        "items": len(questions),
        "summary": {o: {"ours": ours, "reference": ours} for o in omegas},
        "runs": [{"question": q} for q in questions],
    }
    folder.mkdir()
    (folder / "latency.json").write_text(json.dumps(body))
    return folder


def test_side_by_side_with_differences(tmp_path):
    a = report(tmp_path / "a", 800.0, 0.5, 3.1)
    b = report(tmp_path / "b", 200.0, 0.25, None, omegas=("10", "40"))
    rows = compare(a, b, tmp_path / "out", names=("demo", "cascade"))
    assert [r["omega"] for r in rows] == ["10"]  # the Omegas both have
    row = rows[0]
    assert row["first_packet_ms_median_diff"] == -600.0 and row["asr_wer_diff"] == -0.25
    assert row["quality_mos_mean_a"] == 3.1 and row["quality_mos_mean_b"] is None
    assert row["quality_mos_mean_diff"] is None
    table = (tmp_path / "out" / "compare.md").read_text()
    assert "A = demo" in table and "B = cascade" in table and "the same questions" in table
    assert "| 10 | 800 / 200 (-600) | 0.500 / 0.250 (-0.250) |" in table and "3.10 / -" in table
    assert list(csv.DictReader((tmp_path / "out" / "compare.csv").open()))[0]["omega"] == "10"
    assert (tmp_path / "out" / "compare.png").stat().st_size > 1000


def test_different_questions_are_said_and_bad_folders_refused(tmp_path):
    a = report(tmp_path / "a", 1.0, 0.1, 3.0)
    b = report(tmp_path / "b", 2.0, 0.2, 3.0, questions=("q2",))
    compare(a, b, tmp_path / "out")
    assert "NOT the same questions" in (tmp_path / "out" / "compare.md").read_text()
    with pytest.raises(FileNotFoundError, match="latency.json: no such file"):
        compare(a, tmp_path / "missing", tmp_path / "out")
    c = report(tmp_path / "c", 1.0, 0.1, 3.0, omegas=("20",))
    with pytest.raises(ValueError, match="share no Omega"):
        compare(a, c, tmp_path / "out")
