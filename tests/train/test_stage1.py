import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import AutoModelForCausalLM

from omni.model import OmniModel
from train import stage1
from train.config import TrainConfig
from train.loop import STATE_FILE, checkpoints, param_groups, resume_path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "train" / "configs" / "stage1_tiny.yaml")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def overrides(tiny_dir, toy_dir, out, *extra):
    return [
        f"model.encoder.name_or_path={tiny_dir / 'whisper_tiny.pt'}",
        f"model.llm.name_or_path={tiny_dir / 'llm'}",
        f"data.train={toy_dir / 'train.jsonl'}",
        f"data.eval={toy_dir / 'eval.jsonl'}",
        f"train.output_dir={out}",
        *extra,
    ]


def test_stage1_trains_saves_and_reports(tiny_dir, toy_dir, tmp_path):
    out = tmp_path / "run"
    summary = stage1.main(
        ["--config", CONFIG, *overrides(tiny_dir, toy_dir, out, "train.max_steps=12", "train.eval_every=6")]
    )
    assert summary["steps"] == 12 and summary["samples"] == 48
    assert summary["final_train_loss"] < summary["first_train_loss"] - 1.0
    assert [e["step"] for e in summary["eval_loss"]] == [6, 12]
    assert json.loads((out / "summary.json").read_text())["steps"] == 12
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert (out / "config.yaml").is_file()
    model = OmniModel.from_pretrained(out / "model")
    assert model.config.llm.name_or_path == str(tiny_dir / "llm")
    # rerunning the finished run resumes from its last checkpoint and trains no further
    AcceleratorState._reset_state(reset_partial_state=True)
    again = stage1.main(
        ["--config", CONFIG, *overrides(tiny_dir, toy_dir, out, "train.max_steps=12", "train.eval_every=6")]
    )
    assert again["steps"] == 12 and again["train_loss"] == summary["train_loss"]


def test_resume_continues_exactly(tiny_dir, toy_dir, tmp_path):
    # LoRA with dropout: equal losses need the same weights, optimizer, schedule, data order and RNG.
    common = [
        "train.max_steps=6",
        "train.save_every=3",
        "model.llm.train=lora",
        "model.llm.lora.dropout=0.2",
        "train.eval_every=0",
    ]
    straight = stage1.main(["--config", CONFIG, *overrides(tiny_dir, toy_dir, tmp_path / "a", *common)])
    AcceleratorState._reset_state(reset_partial_state=True)
    checkpoint, last = checkpoints(tmp_path / "a")
    assert (checkpoint.name, last.name) == ("step-0000003", "step-0000006")
    assert json.loads((checkpoint / STATE_FILE).read_text())["batches_in_epoch"] == 3  # mid-epoch: 4 batches per epoch
    resumed = stage1.main(
        ["--config", CONFIG, *overrides(tiny_dir, toy_dir, tmp_path / "b", *common, f"train.resume={checkpoint}")]
    )
    assert resumed["train_loss"] == straight["train_loss"]
    assert resumed["samples"] == straight["samples"] == 24


def test_partial_checkpoints_are_never_resumed(tmp_path):
    root = tmp_path / "checkpoints"
    for name, complete in [("step-0000002", True), ("step-0000004.partial", True), ("step-0000006", False)]:
        (root / name).mkdir(parents=True)
        if complete:
            (root / name / STATE_FILE).write_text("{}")
    assert [p.name for p in checkpoints(tmp_path)] == ["step-0000002"]
    assert resume_path(TrainConfig(output_dir=str(tmp_path))).name == "step-0000002"
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resume_path(TrainConfig(output_dir=str(tmp_path), resume=str(root / "step-0000006")))


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_deepspeed_two_processes_on_cpu(tiny_dir, toy_dir, tmp_path, zero):
    out = tmp_path / zero
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        f"train/configs/accelerate_{zero}_cpu.yaml",
    ]
    recipe = ["-m", "train.stage1", "--config", CONFIG]
    command = [*launch, *recipe, *overrides(tiny_dir, toy_dir, out, "train.max_steps=6", "train.save_every=3")]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 6 and summary["samples"] == 48
    assert summary["final_train_loss"] < summary["first_train_loss"]
    assert [p.name for p in checkpoints(out)] == ["step-0000003", "step-0000006"]
    model = OmniModel.from_pretrained(out / "model")  # under ZeRO-3 the shards were gathered into full tensors
    initial = AutoModelForCausalLM.from_pretrained(tiny_dir / "llm").state_dict()
    trained = model.llm.state_dict()
    assert trained.keys() == initial.keys()
    assert all(trained[k].shape == initial[k].shape for k in initial)
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)  # the LLM did train (full mode)


def test_gradient_checkpointing_gives_the_same_losses(tiny_dir, toy_dir, tmp_path):
    common = ["train.max_steps=3", "train.eval_every=0", "data.eval=null"]
    plain = stage1.main(["--config", CONFIG, *overrides(tiny_dir, toy_dir, tmp_path / "a", *common)])
    AcceleratorState._reset_state(reset_partial_state=True)
    extra = [*common, "train.gradient_checkpointing=true"]
    checkpointed = stage1.main(["--config", CONFIG, *overrides(tiny_dir, toy_dir, tmp_path / "b", *extra)])
    assert checkpointed["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-5)


def test_param_lr_gives_prefixes_their_own_learning_rate(model_config):
    model = OmniModel.from_config(model_config)
    groups = param_groups(model, TrainConfig(lr=1e-4, param_lr={"adaptor.": 1e-3}))
    by_lr = {g["lr"]: sum(p.numel() for p in g["params"]) for g in groups}
    assert by_lr == {
        1e-3: sum(p.numel() for p in model.adaptor.parameters()),
        1e-4: sum(p.numel() for p in model.llm.parameters()),
    }
