"""`make gpu-check` at small shapes on the CPU: every section runs and its report holds together."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.benchmarks import gpu_check


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny shapes' many small ops: a second thread only adds waiting on a busy CPU
    try:
        gpu_check.main(["--shapes", "small", "--device", "cpu", "--steps", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_every_section_runs_with_positive_timings(report):
    data, _ = report
    assert data["environment"]["device_name"] == "CPU" and data["environment"]["torch"] == torch.__version__
    assert data["environment"]["date"] and data["shapes"] == "small"
    assert [data[s]["status"] for s in ("stage1", "stage2", "streaming")] == ["done"] * 3
    for mode in ("variable", "pad_to_30s"):
        step = data["stage1"][mode]
        assert step["s_per_step"] > 0 and step["llm_tokens_per_s"] > 0 and step["peak_memory_gib"] > 0
        assert all(math.isfinite(loss) for loss in step["losses"])
    assert data["stage1"]["pad_to_30s"]["mel_frames"] == 3000 > data["stage1"]["variable"]["mel_frames"]
    assert data["stage2"]["s_per_step"] > 0 and data["stage2"]["samples_per_s"] > 0
    assert set(data["params_m"]) == {"encoder", "adaptor", "llm", "speech decoder", "vocoder"}


def test_first_packet_is_the_sum_of_its_parts(report):
    data, _ = report
    streaming = data["streaming"]
    assert list(streaming["omegas"]) == ["10", "40", "offline"]
    per_token = streaming["units_per_token"]
    for omega, ways in streaming["omegas"].items():
        assert set(ways) == set(gpu_check.WAYS)
        for way in ways.values():
            for run in way["runs"]:
                parts = [run[key] for key in gpu_check.SPLIT]
                assert all(part > 0 for part in parts)
                assert sum(parts) == pytest.approx(run["first_packet_ms"], rel=1e-6)
                # the paced decoder: Omega units wait for ceil(Omega / units per token) tokens
                wanted = streaming["new_tokens"] if omega == "offline" else math.ceil(int(omega) / per_token)
                assert run["tokens_at_first_chunk"] == wanted
            assert way["first_packet_ms_median"] > 0
    assert streaming["omegas"]["10"]["ours"]["chunks_median"] >= 2


def test_incremental_and_recomputed_decoders_agree(report):
    data, _ = report
    for agree in data["streaming"]["units_agree"].values():
        assert agree["compared"] == 3 * data["shape_details"]["questions"]
        assert agree["identical"] == agree["compared"]


def test_markdown_has_the_goals_unjudged_on_a_cpu(report):
    data, text = report
    assert "| system | hardware | first packet | ours (this run, ms) | met? |" in text
    for system in ("| LLaMA-Omni (the reference) | 1x L40 | 226-236 ms |", "| VITA-Audio (7B) |", "| < 50 ms |"):
        assert system in text
    assert [goal["met"] for goal in data["goals"]] == [None] * 3
    assert "GPU figures are still to come" in text


def test_the_time_limit_stops_sections(tmp_path):
    gpu_check.main(["--shapes", "small", "--device", "cpu", "--time-limit", "0", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert all(data[s]["status"].startswith("skipped") for s in ("stage1", "stage2", "streaming"))
    assert "stage1: skipped" in (tmp_path / "gpu_check.md").read_text()


def test_real_shapes_refused_without_the_memory(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check, "REAL_NEEDS_GIB", 10**6)
    with pytest.raises(RuntimeError, match="--shapes real needs about 1000000 GiB"):
        gpu_check.main(["--shapes", "real", "--device", "cpu", "--out", str(tmp_path)])


def test_a_failing_section_is_reported_and_fails_the_run(monkeypatch, tmp_path):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(gpu_check, "stage2_section", out_of_memory)
    monkeypatch.setattr(gpu_check, "build_model", out_of_memory)
    with pytest.raises(RuntimeError, match="stage2, stage1 failed"):
        gpu_check.main(["--shapes", "small", "--device", "cpu", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["stage2"]["status"] == "failed: RuntimeError: CUDA out of memory"
    assert "out_of_memory" in data["stage2"]["traceback"]
    assert data["streaming"]["status"].startswith("skipped")
