"""The training loop every stage shares: Accelerate (DDP / DeepSpeed ZeRO-2/3, bf16), exact resume.

A stage hands in a model whose trainable parameters are already chosen (and which writes itself with
`save_pretrained`), datasets, a collator, a loss function and, optionally, a function that measures more
than the loss at each evaluation. The loop owns the rest: AdamW over the trainable parameters only, a
warmup + decay schedule, gradient accumulation and clipping, periodic eval loss, atomic checkpoints (a
crash mid-save never leaves one that loads), resume that replays the same data order and random state
and refuses a checkpoint of other inputs, the records the data left out, a progress bar, TensorBoard and a
JSON summary. With `keep_best` the model written is the one of the lowest held-out loss (a small decoder
on few answers overfits: its held-out loss turns up long before the schedule ends).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, InitProcessGroupKwargs, ProjectConfiguration, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_scheduler

from omni.cli import command_parser
from omni.config import load_config, to_dict
from omni.precision import native_bf16
from train.config import TrainConfig

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
SKIPPED_FILE = "skipped_records.jsonl"
PARTIAL = ".partial"
BEST = "best"  # with keep_best: the lowest held-out loss's model so far, beside the checkpoints
BEST_FILE = "best.json"  # in best/: its step, held-out loss and the run's inputs key
KEEP_BEST_NEEDS_EVAL = "train.keep_best needs a held-out set to choose by: set data.eval"
# Config keys that change neither what is learned nor from what: a run may resume after they change
# (train longer, another schedule, other logging). The data's paths give way to the data's signatures.
NOT_INPUTS = {"data", "cache", "eval_metric_batches"} | {
    f"train.{key}"
    for key in (
        "output_dir", "epochs", "max_steps", "lr", "param_lr", "schedule", "warmup_ratio", "log_every",
        "eval_every", "eval_batches", "save_every", "keep_last", "keep_best", "resume", "num_workers",
        "gradient_checkpointing",
    )
}  # fmt: skip


def make_accelerator(config: TrainConfig) -> Accelerator:
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
    distributed_cpu = processes > 1 and not torch.cuda.is_available()
    precision = config.mixed_precision
    if precision == "auto":  # several CPU processes run fp32: DeepSpeed's bf16 engine has no CPU kernels for it
        precision = "bf16" if native_bf16() and not distributed_cpu else "no"
    handlers = [InitProcessGroupKwargs(backend="gloo", timeout=timedelta(minutes=30))] if distributed_cpu else []
    if distributed_cpu:
        _without_deepspeed_shm_op()
    return Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=config.accumulation_for(processes),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
        project_config=ProjectConfiguration(
            project_dir=config.output_dir, logging_dir=str(Path(config.output_dir) / "tensorboard")
        ),
        log_with="tensorboard",
        step_scheduler_with_optimizer=False,  # one schedule step per optimizer step, whatever the process count
        kwargs_handlers=handlers,
    )


def _without_deepspeed_shm_op() -> None:
    """DeepSpeed's CPU backend compiles its shared-memory all-reduce when it starts (about 20 s, again whenever another
    environment built it last); only inference calls it, so training over gloo does without. DeepSpeed keeps this
    table for the process, edits included."""
    with contextlib.suppress(ImportError):
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def run(
    argv: list[str] | None, schema: type, build: Callable[[Any, Accelerator], Trainer], description: str
) -> dict[str, Any]:
    """What every recipe's main does: `--config` + overrides -> accelerator, the resolved config saved
    beside the run, build, train. The process group is always torn down, even on error (gloo otherwise
    hangs at exit)."""
    parser = command_parser(description)
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. train/configs/stage1_tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. train.lr=1e-4")
    args = parser.parse_args(argv)
    config = load_config(args.config, schema, args.overrides)
    if config.train.keep_best and not config.data.eval:  # said before any model loads or cache is built
        raise ValueError(KEEP_BEST_NEEDS_EVAL)
    accelerator = make_accelerator(config.train)
    if accelerator.is_main_process:
        Path(config.train.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.train.output_dir) / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    try:
        return build(config, accelerator).train()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def fill_deepspeed_auto(ds: dict, config: TrainConfig, hidden_size: int | None) -> None:
    """Fill the DeepSpeed "auto" values Accelerate cannot: clipping from our config, ZeRO-3 buckets from the width."""
    if ds.get("gradient_clipping", "auto") == "auto":
        ds["gradient_clipping"] = config.max_grad_norm
    zero = ds.get("zero_optimization", {})
    if hidden_size:
        sizes = {
            "reduce_bucket_size": hidden_size * hidden_size,
            "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
            "stage3_param_persistence_threshold": 10 * hidden_size,
        }
        zero.update({key: value for key, value in sizes.items() if zero.get(key) == "auto"})


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Trainable parameters grouped by learning rate: `param_lr` prefixes first, `lr` for the rest."""
    groups: dict[float, list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            lr = next((lr for prefix, lr in config.param_lr.items() if name.startswith(prefix)), config.lr)
            groups.setdefault(lr, []).append(param)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return [{"params": params, "lr": lr} for lr, params in groups.items()]


def inputs_key(run_config: dict[str, Any], signatures: list[str]) -> str:
    """What a run learns from: its config less `NOT_INPUTS`, and the signatures of its data and frozen parts."""

    def learned(node: Any, path: str = "") -> Any:
        if not isinstance(node, dict):
            return node
        return {k: learned(v, f"{path}{k}.") for k, v in node.items() if f"{path}{k}" not in NOT_INPUTS}

    text = json.dumps([learned(run_config), signatures], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def skipped_records(**splits: Any) -> list[dict[str, Any]]:
    """The records each split's dataset left out when opened, tagged with the split's name."""
    return [record | {"split": name} for name, data in splits.items() for record in getattr(data, "skipped", [])]


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (partial ones from a crash are ignored)."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if not p.name.endswith(PARTIAL) and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def resume_path(config: TrainConfig) -> Path | None:
    if config.resume is None:
        return None
    if config.resume == "auto":
        found = checkpoints(config.output_dir)
        return found[-1] if found else None
    path = Path(config.resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"train.resume={config.resume}: not a complete checkpoint (no {STATE_FILE})")
    return path


@dataclass
class TrainingData:
    """What a run learns from: its training and held-out sets, how their records make a batch, and the records the
    data left out when it was opened (`data.on_bad_record: skip`; `skipped_records` gathers them)."""

    train: Dataset
    collate: Callable[[list], dict[str, torch.Tensor]]
    eval: Dataset | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        accelerator: Accelerator,
        model: nn.Module,
        data: TrainingData,
        loss_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor],
        *,
        run_config: dict[str, Any],
        eval_metrics: Callable[[nn.Module], dict[str, float]] | None = None,
        frozen: list[str] = (),
        save_kwargs: dict[str, Any] | None = None,
    ):
        """`run_config` is the resolved recipe config; `eval_metrics` measures more than the held-out loss at each
        evaluation; `frozen` signs what the run reads outside its config and training data (a frozen model's
        files); `save_kwargs` go to the model's `save_pretrained`."""
        train_data, collate, eval_data = data.train, data.collate, data.eval
        self.train_data = train_data
        self.config = config
        self.accelerator = accelerator
        self.loss_fn = loss_fn
        self.eval_metrics = eval_metrics
        self.save_kwargs = save_kwargs or {}
        self.run_config = run_config
        self.output_dir = Path(config.output_dir)
        # a checkpoint of other inputs is never resumed
        self.inputs_key = inputs_key(run_config, [train_data.signature(), *frozen])
        self.skip_log = self.output_dir / SKIPPED_FILE
        if config.keep_best and eval_data is None:
            raise ValueError(KEEP_BEST_NEEDS_EVAL)
        self._log_skipped(list(data.skipped), [train_data, eval_data])
        set_seed(config.seed)

        if accelerator.distributed_type.name == "DEEPSPEED":
            fill_deepspeed_auto(
                accelerator.state.deepspeed_plugin.deepspeed_config, config, getattr(model, "hidden_size", None)
            )

        def loader(data: Dataset, shuffle: bool) -> DataLoader:
            return DataLoader(
                data,
                batch_size=config.batch_size,
                shuffle=shuffle,
                collate_fn=collate,
                num_workers=config.num_workers,
                generator=torch.Generator().manual_seed(config.seed),
            )

        train_loader = loader(train_data, shuffle=True)
        eval_loader = loader(eval_data, shuffle=False) if eval_data is not None else None
        steps_per_epoch = max(
            len(train_loader) // accelerator.num_processes // accelerator.gradient_accumulation_steps, 1
        )
        self.total_steps = config.max_steps or steps_per_epoch * config.epochs
        optimizer = torch.optim.AdamW(
            param_groups(model, config), lr=config.lr, weight_decay=config.weight_decay, betas=tuple(config.betas)
        )
        scheduler = get_scheduler(
            config.schedule,
            optimizer,
            num_warmup_steps=math.ceil(config.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        prepared = accelerator.prepare(
            model, optimizer, train_loader, scheduler, *([eval_loader] if eval_loader else [])
        )
        self.model, self.optimizer, self.train_loader, self.scheduler = prepared[:4]
        self.eval_loader = prepared[4] if eval_loader else None
        self.state = {
            "step": 0,
            "epoch": 0,
            "batches_in_epoch": 0,
            "samples": 0,
            "train_loss": [],
            "eval_loss": [],
            "eval_metrics": [],
            "best": None,  # {"step", "loss"} of the model in best/ (keep_best)
            "inputs_key": self.inputs_key,
        }

    def _log_skipped(self, skipped: list[dict[str, Any]], datasets: list[Dataset | None]) -> None:
        """Records left out when the data was opened go to `skipped_records.jsonl` (rewritten each run); records
        found bad when loaded are appended to it by the datasets themselves (kept across resumes)."""
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            old = self.skip_log.read_text().splitlines() if self.skip_log.is_file() else []
            at_load = [line for line in old if json.loads(line).get("at") == "load"]
            opened = [json.dumps(record | {"at": "open"}) for record in skipped]
            self.skip_log.write_text("".join(line + "\n" for line in opened + at_load))
        for data in datasets:
            if hasattr(data, "skip_log"):
                data.skip_log = self.skip_log

    # ---- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """accelerate state + trainer state into step-N.partial, renamed into place once complete."""
        root = self.output_dir / CHECKPOINTS
        final = root / f"step-{self.state['step']:07d}"
        partial = final.with_name(final.name + PARTIAL)
        acc = self.accelerator
        if acc.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(partial))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (partial / STATE_FILE).write_text(json.dumps(self.state))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
            for old in checkpoints(self.output_dir)[: -max(self.config.keep_last, 1)]:  # never the one just written
                shutil.rmtree(old)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        state = json.loads((path / STATE_FILE).read_text())
        if state.get("inputs_key") != self.inputs_key:
            raise ValueError(
                f"{path} was trained on other inputs (config, data or frozen model changed since); "
                "use a new train.output_dir or train.resume=null to start afresh"
            )
        self.accelerator.load_state(str(path))
        self.state = state
        best = self.output_dir / BEST / BEST_FILE
        if self.config.keep_best and best.is_file():  # best/ may hold a model from after this checkpoint
            saved = json.loads(best.read_text())
            if saved.pop("inputs_key", None) == self.inputs_key:
                self.state["best"] = saved
        self.accelerator.print(f"resumed from {path} at step {self.state['step']}")

    # ---- loop -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float | None:
        if self.eval_loader is None:
            return None
        self.model.eval()
        total, count = torch.zeros((), device=self.accelerator.device), 0
        for i, batch in enumerate(self.eval_loader):
            if self.config.eval_batches is not None and i >= self.config.eval_batches:
                break
            total += self.accelerator.reduce(self.loss_fn(self.model, batch).detach().float(), "mean")
            count += 1
        self.model.train()
        return (total / max(count, 1)).item()

    def train(self) -> dict[str, Any]:
        acc, config = self.accelerator, self.config
        start = resume_path(config)
        if start is not None:
            self.load_checkpoint(start)
        acc.init_trackers("omni", config={k: str(v) for k, v in self.run_config.items()})
        bar = tqdm(
            total=self.total_steps, initial=self.state["step"], disable=not acc.is_local_main_process, desc="train"
        )
        self.model.train()
        began, samples_at_start = time.perf_counter(), self.state["samples"]
        micro_losses: list[torch.Tensor] = []
        while self.state["step"] < self.total_steps:
            self.train_loader.set_epoch(self.state["epoch"])
            if hasattr(self.train_data, "set_epoch"):  # its augmentation draws (accelerate tells only the sampler)
                self.train_data.set_epoch(self.state["epoch"])
            loader = (
                acc.skip_first_batches(self.train_loader, self.state["batches_in_epoch"])
                if self.state["batches_in_epoch"]
                else self.train_loader
            )
            for batch in loader:
                with acc.accumulate(self.model):
                    loss = self.loss_fn(self.model, batch)
                    acc.backward(loss)
                    if acc.sync_gradients:  # under DeepSpeed these are done by the engine in backward
                        acc.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
                        self.optimizer.step()
                        self.scheduler.step()
                        self.optimizer.zero_grad()
                micro_losses.append(loss.detach().float())
                self.state["batches_in_epoch"] += 1
                self.state["samples"] += len(next(iter(batch.values()))) * acc.num_processes
                if acc.sync_gradients:
                    self._end_step(torch.stack(micro_losses).mean(), bar, began, samples_at_start)
                    micro_losses = []
                    if self.state["step"] >= self.total_steps:
                        break
            else:
                self.state["epoch"] += 1
                self.state["batches_in_epoch"] = 0
        bar.close()
        return self._finish(time.perf_counter() - began, self.state["samples"] - samples_at_start)

    def _end_step(self, loss: torch.Tensor, bar: tqdm, began: float, samples_at_start: int) -> None:
        acc, config, state = self.accelerator, self.config, self.state
        state["step"] += 1
        step = state["step"]
        loss_value = acc.reduce(loss, "mean").item()
        state["train_loss"].append(loss_value)
        rate = (state["samples"] - samples_at_start) / max(time.perf_counter() - began, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{rate:.2f}")
        if step % max(config.log_every, 1) == 0:
            acc.log(
                {"train/loss": loss_value, "train/lr": self.scheduler.get_last_lr()[0], "train/samples_per_s": rate},
                step=step,
            )
        if config.eval_every and step % config.eval_every == 0 and step < self.total_steps:
            self._log_eval(step)
        if config.save_every and (step % config.save_every == 0 or step == self.total_steps):
            self.save_checkpoint()  # the last one too: rerunning a finished run then costs nothing

    def _log_eval(self, step: int) -> None:
        loss = self.evaluate()
        if loss is not None:
            self.state["eval_loss"].append({"step": step, "loss": loss})
            self.accelerator.log({"eval/loss": loss}, step=step)
            self.accelerator.print(f"step {step}: eval loss {loss:.4f}")
            best = self.state.get("best")
            if self.config.keep_best and math.isfinite(loss) and (best is None or loss < best["loss"]):
                self.state["best"] = {"step": step, "loss": loss}
                self._save_model(
                    self.output_dir / BEST, {BEST_FILE: self.state["best"] | {"inputs_key": self.inputs_key}}
                )
        if self.eval_metrics is not None:
            self.model.eval()
            metrics = self.eval_metrics(self.model)
            self.model.train()
            self.state.setdefault("eval_metrics", []).append({"step": step} | metrics)
            self.accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
            self.accelerator.print(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    def _count_skipped(self) -> dict[str, int]:
        records = (
            [json.loads(line) for line in self.skip_log.read_text().splitlines()] if self.skip_log.is_file() else []
        )
        return {
            "when_opened": sum(r["at"] == "open" for r in records),
            "when_loaded": sum(r["at"] == "load" for r in records),
            "file": str(self.skip_log),
        }

    def _save_model(self, final: Path, extra: dict[str, dict] | None = None) -> None:
        """The unwrapped model's `save_pretrained` (and `extra` JSON files) into `final`, through a partial folder
        renamed into place."""
        acc = self.accelerator
        partial = final.with_name(final.name + PARTIAL)
        if acc.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        acc.wait_for_everyone()
        state = acc.get_state_dict(self.model)  # gathers ZeRO-3 shards (collective: every process)
        if acc.is_main_process:
            acc.unwrap_model(self.model).save_pretrained(partial, state_dict=state, **self.save_kwargs)
            for name, content in (extra or {}).items():
                (partial / name).write_text(json.dumps(content))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
        acc.wait_for_everyone()

    def _finish(self, seconds: float, samples: int) -> dict[str, Any]:
        acc = self.accelerator
        self._log_eval(self.state["step"])
        final = self.output_dir / "model"
        best = self.output_dir / BEST
        kept = self.state.get("best") if self.config.keep_best else None
        if kept is not None:  # the model of the lowest held-out loss (decided alike on every process)
            if acc.is_main_process:
                if not (best / BEST_FILE).is_file():
                    raise FileNotFoundError(f"{best}: the model of step {kept['step']} is missing (keep_best)")
                partial = final.with_name(final.name + PARTIAL)
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(best, partial, ignore=shutil.ignore_patterns(BEST_FILE))
                shutil.rmtree(final, ignore_errors=True)
                os.replace(partial, final)
            acc.wait_for_everyone()
        else:
            self._save_model(final)
        losses = self.state["train_loss"]
        summary = {
            "steps": self.state["step"],
            "samples": self.state["samples"],
            "epochs_completed": self.state["epoch"],
            "processes": acc.num_processes,
            "wall_seconds": round(seconds, 2),
            "samples_per_second": round(samples / max(seconds, 1e-9), 3),
            "first_train_loss": losses[0] if losses else None,
            "final_train_loss": losses[-1] if losses else None,
            "train_loss": losses,
            "eval_loss": self.state["eval_loss"],
            "eval_metrics": self.state.get("eval_metrics", []),
            "best": kept,  # keep_best: the step model/ comes from and its held-out loss
            "skipped_records": self._count_skipped(),
            "model_dir": str(final),
        }
        if acc.is_main_process:
            (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            print(f"model saved to {final}; summary in {self.output_dir / 'summary.json'}")
        acc.end_training()
        return summary
