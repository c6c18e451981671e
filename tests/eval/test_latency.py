import csv
import json
from dataclasses import asdict

import pytest
import torch

from omni import assets
from omni.config import AdaptorConfig, EncoderConfig, LLMConfig, ModelConfig, SpeechDecoderConfig, UnitToMelConfig
from omni.eval import latency
from omni.model import OmniModel
from omni.speech_decoder import SpeechDecoder
from omni.vocoder.hifigan import HifiGanConfig, HifiGanGenerator
from omni.vocoder.unit_to_mel import UnitToMel


@pytest.fixture
def trio(tiny_dir, tmp_path):
    """A tiny stage-1 model, speech decoder and unit vocoder saved as the recipes save them."""
    torch.manual_seed(0)
    config = ModelConfig(
        encoder=EncoderConfig(name_or_path=str(tiny_dir / "whisper_tiny.pt")),
        adaptor=AdaptorConfig(stride=5, hidden_size=32),
        llm=LLMConfig(name_or_path=str(tiny_dir / "llm"), train="full"),
    )
    model = OmniModel.from_config(config)
    model.save_pretrained(tmp_path / "model")
    sizes = {"hidden_size": 32, "num_layers": 1, "num_heads": 4, "intermediate_size": 64}
    SpeechDecoder(SpeechDecoderConfig(num_units=12, upsample=4, **sizes), model.hidden_size).save_pretrained(
        tmp_path / "decoder"
    )
    UnitToMel(UnitToMelConfig(num_units=12, hidden_size=16, encoder_layers=1, decoder_layers=1)).save_pretrained(
        tmp_path / "vocoder", hifigan=tmp_path / "g.pt"
    )
    hifigan = HifiGanConfig(upsample_initial_channel=16)
    torch.save({"generator": HifiGanGenerator(hifigan).state_dict()}, tmp_path / "g.pt")
    (tmp_path / "config.json").write_text(json.dumps(asdict(hifigan) | {"num_mels": 80}))
    return tmp_path


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
