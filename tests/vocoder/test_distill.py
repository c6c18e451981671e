import pytest
import torch
from accelerate.state import AcceleratorState

from omni.vocoder.base import load_vocoder
from omni.vocoder.distill import distillation_loss, narrowed
from omni.vocoder.hifigan import MEL_CONFIG, HifiGanConfig, HifiGanGenerator, load_hifigan
from omni.vocoder.unit_to_mel import hifigan_reference
from tests.conftest import ROOT
from tests.conftest import train_vocoder as train_unit_vocoder
from train.hifigan_distill import main as distill_main


def test_a_generator_narrowed_to_its_own_width_is_itself_and_narrower_keeps_its_shape():
    torch.manual_seed(0)
    teacher = HifiGanGenerator(HifiGanConfig(upsample_initial_channel=32)).eval()
    mel = torch.randn(2, 80, 12)
    with torch.no_grad():
        torch.testing.assert_close(narrowed(teacher, 32)(mel), teacher(mel))
        student = narrowed(teacher, 16)
        assert student.config.upsample_initial_channel == 16 and student.ups[-1].out_channels == 1
        assert student(mel).shape == teacher(mel).shape
        # the strongest channels are kept: the first stage's are the teacher's of largest filter norm
        norms = teacher.conv_pre.weight.flatten(1).norm(dim=1)
        assert set(student.conv_pre.bias.tolist()) == set(teacher.conv_pre.bias[norms.topk(16).indices].tolist())
    for wrong in (12, 8):  # not a divisor; no channel left after the last upsampling
        with pytest.raises(ValueError, match="must divide the teacher's 32 and be a multiple of 16"):
            narrowed(teacher, wrong)


def test_the_distillation_loss_is_zero_only_for_the_teachers_waveform():
    wave = torch.sin(torch.linspace(0, 400, 8192))[None] * 0.5
    assert distillation_loss(wave, wave, MEL_CONFIG) == pytest.approx(0.0, abs=1e-5)
    assert distillation_loss(0.5 * wave, wave, MEL_CONFIG) > 0.5
    assert distillation_loss(torch.zeros_like(wave), wave, MEL_CONFIG) > distillation_loss(0.5 * wave, wave, MEL_CONFIG)


def distill(vocoder, answers, teacher, out, *extra):
    AcceleratorState._reset_state(reset_partial_state=True)
    overrides = [
        "channels=16",
        f"teacher={teacher}",
        f"vocoder={vocoder}",
        f"data.train={answers}",
        f"data.eval={answers}",
        f"train.output_dir={out}",
        "train.batch_size=4",
        "train.eval_every=0",
        "train.save_every=5",
        "segment_frames=8",
    ]
    config = str(ROOT / "train" / "configs" / "hifigan_small_demo.yaml")
    return distill_main(["--config", config, *overrides, *extra])


def test_the_distillation_recipe_trains_resumes_and_saves_a_unit_vocoder(unit_answers, tmp_path):
    torch.manual_seed(0)
    HifiGanGenerator(HifiGanConfig(upsample_initial_channel=32)).save_pretrained(tmp_path / "teacher")
    teacher = tmp_path / "teacher" / "generator.pth"
    assert load_hifigan(teacher).config.upsample_initial_channel == 32  # jik876's format, read back
    train_unit_vocoder(unit_answers, teacher, tmp_path / "unit_vocoder", "train.max_steps=2")
    unit_vocoder = tmp_path / "unit_vocoder" / "model"
    summary = distill(unit_vocoder, unit_answers, teacher, tmp_path / "run", "train.max_steps=10")
    assert summary["steps"] == 10 and summary["final_train_loss"] < summary["first_train_loss"]
    model = tmp_path / "run" / "model"
    assert hifigan_reference(model) == str(model / "generator.pth")
    student = load_hifigan(model / "generator.pth")
    assert student.config.upsample_initial_channel == 16
    vocoder = load_vocoder(model, "cpu")  # the unit vocoder speaking through the student
    assert vocoder.generator.config.upsample_initial_channel == 16
    audio, ends = vocoder.synthesize([1, 2, 3, 4, 5])
    assert len(audio) > 0 and len(ends) == 5 and torch.isfinite(torch.from_numpy(audio)).all()
    resumed = distill(
        unit_vocoder,
        unit_answers,
        teacher,
        tmp_path / "b",
        "train.max_steps=10",
        f"train.resume={tmp_path}/run/checkpoints/step-0000005",
    )
    assert resumed["train_loss"] == summary["train_loss"]
