import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import AutoModelForCausalLM

from omni.config import ConfigError, load_config
from omni.model import OmniModel
from train import stage1
from train.config import Stage1Config, TrainConfig
from train.loop import SKIPPED_FILE, STATE_FILE, checkpoints, param_groups, resume_path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "train" / "configs" / "stage1_tiny.yaml")


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
    # LoRA with dropout, questions augmented: equal losses need the same weights, optimizer, schedule, data order,
    # RNG and augmentation draws (6 steps of 4 batches an epoch: the resumed run crosses into the second epoch).
    common = [
        "train.max_steps=6",
        "train.save_every=3",
        "model.llm.train=lora",
        "model.llm.lora.dropout=0.2",
        "train.eval_every=0",
        "data.augment.enabled=true",
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
    extensions = tmp_path / "torch_extensions"  # where DeepSpeed would compile its ops
    env = os.environ | {"OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": str(extensions)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert not list(extensions.glob("*shm*")), "the shared-memory all-reduce, for inference only, was compiled"
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


def test_resume_is_refused_when_the_data_or_the_prompt_changed(tiny_dir, toy_dir, tmp_path):
    out = tmp_path / "run"
    first = ["train.max_steps=2", "train.save_every=2", "train.eval_every=0", "data.eval=null"]
    stage1.main(["--config", CONFIG, *overrides(tiny_dir, toy_dir, out, *first)])
    other_data = tmp_path / "other.jsonl"
    rows = (toy_dir / "train.jsonl").read_text().splitlines()
    audio = str(toy_dir / json.loads(rows[0])["audio"])
    other_data.write_text("".join(json.dumps(json.loads(r) | {"audio": audio}) + "\n" for r in rows))
    for change in ["model.prompt.system=You answer tones.", f"data.train={other_data}", "model.adaptor.hidden_size=16"]:
        AcceleratorState._reset_state(reset_partial_state=True)
        with pytest.raises(ValueError, match="was trained on other inputs"):
            stage1.main(["--config", CONFIG, *overrides(tiny_dir, toy_dir, out, *first), change])
    # what only shapes the schedule or logging may change: training goes on from step 2
    AcceleratorState._reset_state(reset_partial_state=True)
    longer = ["train.max_steps=3", "train.save_every=3", "train.eval_every=1", "train.lr=1e-3", "data.eval=null"]
    summary = stage1.main(["--config", CONFIG, *overrides(tiny_dir, toy_dir, out, *longer)])
    assert summary["steps"] == 3 and len(summary["train_loss"]) == 3


def test_keep_last_keeps_the_newest_checkpoints(tiny_dir, toy_dir, tmp_path):
    extra = ["train.max_steps=4", "train.save_every=1", "train.keep_last=1", "train.eval_every=0", "data.eval=null"]
    stage1.main(["--config", CONFIG, *overrides(tiny_dir, toy_dir, tmp_path, *extra)])
    assert [p.name for p in checkpoints(tmp_path)] == ["step-0000004"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.keep_last=0", r"stage1_tiny\.yaml\.train\.keep_last: must be at least 1 when save_every > 0, got 0"),
        ("train.warmup_ratio=1.5", r"train\.warmup_ratio: must be in \[0, 1\], got 1.5"),
        ("train.batch_size=0", r"train\.batch_size: must be at least 1, got 0"),
        ("train.global_batch_size=6", r"train\.global_batch_size: 6 is not a multiple of batch_size 4"),
        ("model.adaptor.stride=0", r"model\.adaptor\.stride: must be at least 1, got 0"),
    ],
)
def test_bad_values_are_refused_naming_file_and_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG, Stage1Config, ["train.save_every=5", override])


def test_global_batch_size_derives_accumulation(tiny_dir, toy_dir, tmp_path):
    assert TrainConfig(batch_size=2, global_batch_size=32).accumulation_for(4) == 4
    with pytest.raises(ConfigError, match="not a multiple of batch_size 2 x 3 processes"):
        TrainConfig(batch_size=2, global_batch_size=32).accumulation_for(3)
    extra = ["train.max_steps=2", "train.global_batch_size=8", "train.eval_every=0", "data.eval=null"]
    summary = stage1.main(["--config", CONFIG, *overrides(tiny_dir, toy_dir, tmp_path, *extra)])
    assert summary["steps"] == 2 and summary["samples"] == 16  # 2 micro-batches of 4 per step


def test_bad_records_are_skipped_and_listed(tiny_dir, toy_dir, tmp_path):
    rows = (toy_dir / "train.jsonl").read_text().splitlines()
    manifest = toy_dir / "with_bad.jsonl"  # beside the toy data: its audio paths are relative to it
    bad = {"id": "lost", "audio": "missing.wav", "response": "Nothing."}
    manifest.write_text("".join(r + "\n" for r in rows) + json.dumps(bad) + "\n")
    extra = [f"data.train={manifest}", "train.max_steps=1", "train.eval_every=0", "data.eval=null"]
    with pytest.raises(Exception, match="missing.wav"):
        stage1.main(["--config", CONFIG, *overrides(tiny_dir, toy_dir, tmp_path, *extra)])
    AcceleratorState._reset_state(reset_partial_state=True)
    summary = stage1.main(
        ["--config", CONFIG, *overrides(tiny_dir, toy_dir, tmp_path, *extra), "data.on_bad_record=skip"]
    )
    assert summary["skipped_records"]["when_opened"] == 1
    (listed,) = [json.loads(line) for line in (tmp_path / SKIPPED_FILE).read_text().splitlines()]
    assert listed["split"] == "train" and listed["field"] == "audio" and "missing.wav" in listed["reason"]
