import json
from pathlib import Path

import pytest
import torch

from omni.hidden_cache import META_FILE
from omni.speech_decoder import STAGE1_MODEL_FILE, SpeechDecoder
from tests.conftest import run_stage2 as run
from train import stage2
from train.config import Stage2Config
from train.loop import checkpoints

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "train" / "configs" / "stage2_tiny.yaml")


def test_stage2_trains_only_the_decoder(stage1_dir, toy_dir, tmp_path):
    summary = run(stage1_dir, toy_dir, tmp_path / "run", "train.max_steps=30", "train.eval_every=15")
    assert summary["steps"] == 30 and summary["samples"] == 240
    assert summary["final_train_loss"] < 0.6 * summary["first_train_loss"]
    metrics = summary["eval_metrics"]
    assert [m["step"] for m in metrics] == [15, 30]
    assert {"unit_error_rate", "blank_share", "length_ratio", "ctc_loss", "stalled"} <= metrics[-1].keys()
    assert metrics[-1]["unit_error_rate"] < 1.0 and metrics[-1]["stalled"] == 0.0
    model_dir = tmp_path / "run" / "model"
    decoder = SpeechDecoder.from_pretrained(model_dir)
    assert decoder.config.num_units == 32
    assert (model_dir / STAGE1_MODEL_FILE).read_text().strip() == str(stage1_dir.resolve())
    assert json.loads((tmp_path / "run" / "hidden_cache" / "train" / META_FILE).read_text())["records"] == 16
    # streaming's incremental decoder gives the trained decoder's full-pass units, token by token
    from omni.hidden_cache import HiddenCacheDataset
    from omni.speech_decoder import ctc_greedy

    hidden = HiddenCacheDataset(tmp_path / "run" / "hidden_cache" / "eval")[0]["hidden"][None]
    full, frames = decoder.eval()(hidden, torch.tensor([hidden.shape[1]]))
    cache, steps = None, []
    for t in range(hidden.shape[1]):
        logits, cache = decoder.step(hidden[:, t : t + 1], cache)
        steps.append(logits)
    incremental = torch.cat(steps, dim=1)
    assert ctc_greedy(incremental, frames, decoder.blank) == ctc_greedy(full, frames, decoder.blank)
    assert ctc_greedy(full, frames, decoder.blank)[0]  # a trained decoder says something


def test_trainer_holds_the_decoder_alone(stage1_dir, toy_dir, tmp_path):
    from omni.config import load_config
    from train.loop import make_accelerator

    keys = [f"model={stage1_dir}", f"data.train={toy_dir / 'train.jsonl'}", "data.eval=null"]
    config = load_config(CONFIG, Stage2Config, [*keys, f"train.output_dir={tmp_path}"])
    trainer = stage2.build(config, make_accelerator(config.train))
    params = list(trainer.model.parameters())
    assert all(p.requires_grad for p in params)
    decoder = SpeechDecoder(config.decoder, 64)
    assert sum(p.numel() for p in params) == sum(p.numel() for p in decoder.parameters())
    optimized = sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"])
    assert optimized == sum(p.numel() for p in params)


@pytest.mark.parametrize("fusion", ["none", "add", "gate"])
def test_cache_and_recompute_train_the_same(stage1_dir, toy_dir, tmp_path, fusion):
    common = ["train.max_steps=4", "train.eval_every=0", f"decoder.input.fusion={fusion}"]
    cached = run(stage1_dir, toy_dir, tmp_path / "cached", *common)
    recomputed = run(stage1_dir, toy_dir, tmp_path / "recomputed", *common, "cache.enabled=false")
    assert not (tmp_path / "recomputed" / "hidden_cache").exists()
    torch.testing.assert_close(
        torch.tensor(cached["train_loss"]), torch.tensor(recomputed["train_loss"]), atol=1e-4, rtol=1e-4
    )


def test_stage2_resumes_exactly(stage1_dir, toy_dir, tmp_path):
    common = ["train.max_steps=6", "train.save_every=3", "train.eval_every=0", "decoder.attention_dropout=0.2"]
    straight = run(stage1_dir, toy_dir, tmp_path / "a", *common)
    first = checkpoints(tmp_path / "a")[0]
    resumed = run(stage1_dir, toy_dir, tmp_path / "b", *common, f"train.resume={first}")
    assert resumed["train_loss"] == straight["train_loss"]


def test_a_checkpoint_of_other_units_is_not_resumed(stage1_dir, toy_dir, tmp_path):
    run(stage1_dir, toy_dir, tmp_path / "run", "train.max_steps=3", "train.save_every=3", "train.eval_every=0")
    rows = [json.loads(line) for line in (toy_dir / "train.jsonl").read_text().splitlines()]
    other = tmp_path / "other.jsonl"  # the same answers with units from another codebook
    other.write_text(
        "".join(json.dumps(r | {"audio": str(toy_dir / r["audio"]), "units": [7, 8]}) + "\n" for r in rows)
    )
    with pytest.raises(ValueError, match="trained on other inputs"):
        run(stage1_dir, toy_dir, tmp_path / "run", "train.max_steps=6", f"data.train={other}")


# stage 2 under ZeRO-2 runs in `make test-all` only: stage 1's test runs the shared loop under ZeRO-2 and 3
@pytest.mark.parametrize("zero", [pytest.param("zero2", marks=pytest.mark.slow), "zero3"])
def test_deepspeed_two_processes_on_cpu(stage1_dir, toy_dir, tmp_path, zero):
    import os
    import subprocess
    import sys

    out = tmp_path / zero
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        f"train/configs/accelerate_{zero}_cpu.yaml",
        "-m",
        "train.stage2",
        "--config",
        CONFIG,
        f"model={stage1_dir}",
        f"data.train={toy_dir / 'train.jsonl'}",
        f"data.eval={toy_dir / 'eval.jsonl'}",
        f"train.output_dir={out}",
        "train.max_steps=6",
        "train.eval_every=3",
        "cache.shard_size=4",  # 4 shards: each process builds two
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 6 and summary["samples"] == 96
    assert summary["final_train_loss"] < summary["first_train_loss"]
    assert [m["step"] for m in summary["eval_metrics"]] == [3, 6]
    assert len(list((out / "hidden_cache" / "train").glob("shard-*.safetensors"))) == 4
    decoder = SpeechDecoder.from_pretrained(out / "model")  # ZeRO-3 shards gathered into full tensors
    torch.manual_seed(0)
    initial = SpeechDecoder(decoder.config, decoder.llm_hidden_size).state_dict()
    trained = decoder.state_dict()
    assert all(trained[k].shape == initial[k].shape for k in initial)
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_keep_best_saves_the_lowest_heldout_loss(stage1_dir, toy_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from train.loop import Trainer

    scripted = iter([float("nan"), 2.0, 3.0, 4.0])  # held-out losses at steps 2, 4, 6, 8: lowest (finite) at 4
    monkeypatch.setattr(Trainer, "evaluate", lambda self: next(scripted))
    keys = [
        "train.max_steps=8",
        "train.eval_every=2",
        "train.save_every=2",
        "train.keep_last=4",
        "train.keep_best=true",
    ]
    summary = run(stage1_dir, toy_dir, tmp_path / "run", *keys)
    assert summary["best"] == {"step": 4, "loss": 2.0}
    kept = SpeechDecoder.from_pretrained(tmp_path / "run" / "model").state_dict()
    by_step = {int(c.name.split("-")[1]): load_file(c / "model.safetensors") for c in checkpoints(tmp_path / "run")}
    assert sorted(by_step) == [2, 4, 6, 8]
    for name, value in kept.items():
        torch.testing.assert_close(value, by_step[4][name])
    assert any(not torch.equal(value, by_step[8][name]) for name, value in kept.items())
    with pytest.raises(ValueError, match="keep_best needs a held-out set"):
        run(stage1_dir, toy_dir, tmp_path / "no_eval", "train.max_steps=2", "train.keep_best=true", "data.eval=null")


def test_resume_adopts_a_best_model_newer_than_its_checkpoint(stage1_dir, toy_dir, tmp_path, monkeypatch):
    """A crash after best/ was written at step 6 but before step 6's checkpoint: the resumed run, back at step 4,
    keeps best/ (step 6) and says so, instead of the checkpoint's older idea of the best."""
    import shutil

    from train.loop import Trainer

    scripted = iter([3.0, 2.5, 2.0, 9.0])  # steps 2, 4, 6; then step 6 again after the resume
    monkeypatch.setattr(Trainer, "evaluate", lambda self: next(scripted))
    keys = [
        "train.max_steps=6",
        "train.eval_every=2",
        "train.save_every=2",
        "train.keep_last=4",
        "train.keep_best=true",
    ]
    assert run(stage1_dir, toy_dir, tmp_path / "run", *keys)["best"] == {"step": 6, "loss": 2.0}
    best_weights = SpeechDecoder.from_pretrained(tmp_path / "run" / "best").state_dict()
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-0000006")
    shutil.rmtree(tmp_path / "run" / "model")
    summary = run(stage1_dir, toy_dir, tmp_path / "run", *keys)
    assert summary["best"] == {"step": 6, "loss": 2.0}
    kept = SpeechDecoder.from_pretrained(tmp_path / "run" / "model").state_dict()
    for name, value in kept.items():
        torch.testing.assert_close(value, best_weights[name])


def test_stage2_trains_on_several_manifests(stage1_dir, toy_dir, tmp_path):
    """Extra answers asked as text, in their own folder, beside the spoken set: data.train lists both."""
    rows = [json.loads(line) for line in (toy_dir / "train.jsonl").read_text().splitlines()]
    (tmp_path / "extra").mkdir()
    extra = tmp_path / "extra" / "answers.jsonl"
    extra.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "audio"}) + "\n" for r in rows[:4]))
    both = f"data.train=[{toy_dir / 'train.jsonl'},{extra}]"
    summary = run(stage1_dir, toy_dir, tmp_path / "run", both, "train.max_steps=2", "train.eval_every=0")
    assert summary["samples"] == 16 and summary["steps"] == 2
    assert json.loads((tmp_path / "run" / "hidden_cache" / "train" / META_FILE).read_text())["records"] == 20
