import csv

import pytest
import torch

from omni import assets
from omni.eval import latency


def test_latency_table_ours_against_the_reference_way(trio, toy_dir, tmp_path, judge_url, monkeypatch):
    as_on_a_gpu = {"auto": torch.bfloat16, "float32": torch.float32}
    monkeypatch.setattr(latency, "waveform_dtype", lambda dtype, device: as_on_a_gpu[dtype])
    args = ["--model", str(trio / "model"), "--decoder", str(trio / "decoder"), "--vocoder", str(trio / "vocoder")]
    args += ["--reference-vocoder", str(trio / "vocoder")]  # loaded on its own: the reference's fp32 vocoder
    args += ["--data", str(toy_dir / "eval.jsonl"), "--whisper", str(assets.ensure("whisper_tiny_en"))]
    args += ["--judge-url", judge_url(), "--judge-model", "judge"]
    args += ["--items", "2", "--omegas", "3", "0", "--max-new-tokens", "6", "--first-chunk", "2"]
    args += ["--out", str(tmp_path / "o")]
    report = latency.main(args)
    summary = report["summary"]
    assert list(summary) == ["3", "offline"] and set(summary["3"]) == {"ours", "reference"}
    for ways in summary.values():
        for row in ways.values():
            parts = row["encode_prefill_ms_median"] + row["decode_to_first_chunk_ms_median"]
            assert parts + row["vocode_first_chunk_ms_median"] == pytest.approx(row["first_packet_ms_median"], rel=0.05)
            assert row["asr_wer"] >= 0.0 and row["chunks_median"] >= 1
            assert row["s2tif_content"] == 3.0 and row["s2tif_unscored"] == row["s2sif_unscored"] == 0  # the judge's
            assert row["s2sif_style"] in (2.0, 3.5, 5.0)  # 5 unless what Whisper heard has digits
            assert (row["quality_mos_mean"] is None) == (row["quality_unscored"] == 2)  # a MOS per clip long enough
    assert summary["offline"]["ours"]["chunks_median"] == 1 and summary["offline"]["ours"]["stall_ms_median"] == 0
    assert summary["3"]["reference"]["stall_ms_median"] >= 0.0
    assert len(report["runs"]) == 2 * 2 * 2 and report["environment"]["device"].startswith("cpu")
    out = tmp_path / "o"
    table = (out / "latency.md").read_text()
    width = report["environment"]["vocoder_dtype"].split(" x")[1].split(",")[0]  # the tiny vocoder's channels
    kinds = f"ours bfloat16 x{width}, reference float32 x{width}"  # LLaMA-Omni's is fp32
    assert report["environment"]["vocoder_dtype"] == kinds and f"HiFi-GAN {kinds} (dtype x initial channels)" in table
    assert "ours' first chunk: 2 units" in table and "| 3 |" in table
    assert "S2TIF content / style" in table and "MOS (DNSMOS)" in table
    assert (out / "latency.png").stat().st_size > 1000
    assert report["judge"]["model"] == "judge"  # with how far the judge can be trusted, said under the table
    assert report["judge"]["sanity"] == {"items": 8, "agreement": 1.0, "ranks_wrong_below_right": 1.0, "unscored": 0}
    assert "agreed on 1.0 of the right and wrong answers" in table
    rows = list(csv.DictReader((out / "latency.csv").open()))
    assert [(r["omega"], r["way"]) for r in rows] == [
        ("3", "ours"),
        ("3", "reference"),
        ("offline", "ours"),
        ("offline", "reference"),
    ]
    # a rerun into the same folder measures nothing again: every run is in runs.jsonl already
    logged = (out / "runs.jsonl").read_text()
    again = latency.main(args)
    assert (out / "runs.jsonl").read_text() == logged and len(logged.splitlines()) == 8
    assert again["summary"] == report["summary"]
