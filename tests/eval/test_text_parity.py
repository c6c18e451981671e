import json

import pytest

from omni import assets
from omni.eval.text_parity import cascade, exact, main, rouge_l


def test_rouge_l_and_exact_match():
    assert rouge_l("Paris is the capital.", "paris is the capital") == pytest.approx(1.0)
    assert rouge_l("the capital is Paris", "Paris is the capital") == pytest.approx(0.5)  # LCS "the capital" 2/4
    assert rouge_l("", "anything") == 0.0 and rouge_l("a b", "c d") == 0.0
    assert exact("Yes!", "yes") and not exact("", "") and not exact("yes no", "yes")


def test_parity_run_on_a_trained_tiny_model(tiny_dir, toy_dir, tmp_path):
    from accelerate.state import AcceleratorState

    from tests.train.test_stage1 import CONFIG, overrides
    from train import stage1

    stage1.main(
        [
            "--config",
            CONFIG,
            *overrides(tiny_dir, toy_dir, tmp_path / "run", "train.max_steps=30", "train.eval_every=0"),
        ]
    )
    AcceleratorState._reset_state(reset_partial_state=True)
    results = main(
        [
            "--model",
            str(tmp_path / "run" / "model"),
            "--data",
            str(toy_dir / "eval.jsonl"),
            "--out",
            str(tmp_path / "ev"),
            "--limit",
            "4",
            "--max-new-tokens",
            "8",
            "--text-system-prompt",
            "",
            "--cascade",  # the real tiny.en: the tiny random checkpoint's decoder has no real vocabulary
            str(assets.ensure("whisper_tiny_en")),
        ]
    )
    assert set(results) == {"untrained", "trained", "whisper_cascade"}
    assert results["trained"]["heldout_loss"] < results["untrained"]["heldout_loss"]
    assert results["trained"]["rouge_l_vs_reference"] > results["untrained"]["rouge_l_vs_reference"]
    saved = json.loads((tmp_path / "ev" / "parity.json").read_text())
    assert saved["trained"]["items"] == 4
    table = (tmp_path / "ev" / "parity.md").read_text().splitlines()
    assert table[0] == "| metric | untrained | trained | whisper_cascade |" and table[2] == "| items | 4 | 4 | 4 |"
    assert len(table) == 2 + len(saved["trained"]) + 2  # the cascade adds its transcripts' exact match and WER
    assert table[-1].startswith("| transcript_wer |  |  | ")  # blank where a row does not apply
    # the untrained model's LLM is the one before stage 1: its text answers are the base ones
    untrained = saved["untrained"]
    assert untrained["exact_match_vs_base_text"] == untrained["exact_match_vs_text"]
    assert untrained["rouge_l_vs_base_text"] == untrained["rouge_l_vs_text"]
    rows = [json.loads(line) for line in (tmp_path / "ev" / "examples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {"speech_answer", "text_answer", "untrained_speech_answer"} <= rows[0].keys()
    assert {"whisper_transcript", "whisper_cascade_answer"} <= rows[0].keys()
    # the trained LLM (fully tuned here) answers text otherwise than before; base_text keeps the old answers
    assert any(r["base_text_answer"] != r["text_answer"] for r in rows)


def test_cascade_scores_what_the_ear_heard(model_config, toy_dir):
    """An ear that hears the instruction exactly gets the text's own answers; one that mishears does not."""
    import torch

    from omni.data import SpeechInstructionDataset
    from omni.model import OmniModel
    from tests.conftest import with_llm

    torch.manual_seed(0)
    model = OmniModel.from_config(with_llm(model_config, train="frozen"))
    data = SpeechInstructionDataset(toy_dir / "eval.jsonl")
    examples = [data[i] for i in range(3)]
    perfect, rows = cascade(model, examples, lambda exs: [e.instruction for e in exs], None, 2, 8)
    assert perfect["transcript_exact"] == 1.0 and perfect["transcript_wer"] == 0.0
    assert [r["speech_answer"] for r in rows] == [r["base_text_answer"] for r in rows]
    deaf, rows = cascade(model, examples, lambda exs: ["Which one is this?"] * len(exs), None, 2, 8)
    assert deaf["transcript_exact"] == 0.0 and deaf["transcript_wer"] == pytest.approx(0.25)  # tone -> one
    assert [r["transcript"] for r in rows] == ["Which one is this?"] * 3
