import csv

import pytest

from omni import assets
from omni.eval import latency


def test_latency_table_ours_against_the_reference_way(trio, toy_dir, tmp_path):
    args = ["--model", str(trio / "model"), "--decoder", str(trio / "decoder"), "--vocoder", str(trio / "vocoder")]
    args += ["--data", str(toy_dir / "eval.jsonl"), "--whisper", str(assets.ensure("whisper_tiny_en"))]
    report = latency.main(
        [*args, "--items", "2", "--omegas", "3", "0", "--max-new-tokens", "6", "--out", str(tmp_path / "o")]
    )
    summary = report["summary"]
    assert list(summary) == ["3", "offline"] and set(summary["3"]) == {"ours", "reference"}
    for ways in summary.values():
        for row in ways.values():
            parts = row["encode_prefill_ms_median"] + row["decode_to_first_chunk_ms_median"]
            assert parts + row["vocode_first_chunk_ms_median"] == pytest.approx(row["first_packet_ms_median"], rel=0.05)
            assert row["asr_wer"] >= 0.0 and row["chunks_median"] >= 1
    assert summary["offline"]["ours"]["chunks_median"] == 1
    assert len(report["runs"]) == 2 * 2 * 2 and report["environment"]["device"].startswith("cpu")
    out = tmp_path / "o"
    assert "| 3 |" in (out / "latency.md").read_text() and (out / "latency.png").stat().st_size > 1000
    rows = list(csv.DictReader((out / "latency.csv").open()))
    assert [(r["omega"], r["way"]) for r in rows] == [
        ("3", "ours"),
        ("3", "reference"),
        ("offline", "ours"),
        ("offline", "reference"),
    ]
