import pytest
import torch

from omni.data import DataError
from omni.vocoder.data import UnitSpeechDataset
from omni.vocoder.hifigan import MEL_CONFIG
from omni.vocoder.unit_to_mel import UnitToMel, hifigan_reference
from tests.conftest import train_vocoder as train


def test_vocoder_recipe_trains_saves_and_resumes(unit_answers, tiny_hifigan, tmp_path):
    summary = train(unit_answers, tiny_hifigan, tmp_path / "run", "train.max_steps=10")
    assert summary["steps"] == 10 and summary["samples"] == 40
    assert summary["final_train_loss"] < summary["first_train_loss"]
    model_dir = tmp_path / "run" / "model"
    assert hifigan_reference(model_dir) == str(tiny_hifigan.resolve())
    trained = UnitToMel.from_pretrained(model_dir)
    assert trained.config.num_units == 12
    torch.testing.assert_close(trained.mel_mean, UnitSpeechDataset(unit_answers, 12, MEL_CONFIG).mean_mel())
    resumed = train(
        unit_answers,
        tiny_hifigan,
        tmp_path / "b",
        "train.max_steps=10",
        f"train.resume={tmp_path}/run/checkpoints/step-0000005",
    )
    assert resumed["train_loss"] == summary["train_loss"]


def test_vocoder_recipe_checks_the_units_frame_rate(unit_answers, tiny_hifigan, tmp_path):
    summary = train(unit_answers, tiny_hifigan, tmp_path / "no_eval", "train.max_steps=2", "data.eval=null")
    assert summary["steps"] == 2  # no held-out set: nothing to check but the training answers
    with pytest.raises(DataError, match=r"field 'unit_durations': .* at unit_rate 25 frames per second"):
        train(unit_answers, tiny_hifigan, tmp_path / "pooled", "train.max_steps=2", "model.unit_rate=25")
