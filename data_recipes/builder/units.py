"""The builder's units step: the spoken answers' features (a frozen Whisper encoder layer, or a HuBERT-family
model) quantised by k-means into target units for stage 2.

    python -m data_recipes.builder.units --data data/demo --encoder .cache/assets/whisper_base.pt \
        --layer 2 --k 500 --out data/demo/units
    python -m data_recipes.builder.units --data data/built --features hubert --encoder <hubert dir> --layer 11 \
        --codebook km1000.safetensors --out data/built/units

The answers' speech (one voice) is encoded; k-means is fitted on training frames only, unless a codebook is
given; every answer becomes a deduplicated unit sequence, with each unit's duration in feature frames (what
the vocoder learns to predict). With a given codebook the answers are quantised as they are encoded, so a set
of any size never holds all its features in memory.

The defaults are the demo's, chosen on its answers end to end (docs/results.md, "Units the decoder can say"):
layer 2 keeps the sound, so the vocoder speaks its units near the TTS ceiling, where deeper layers give fewer,
more phone-like units that the decoder predicts more easily but the vocoder speaks worse; `--pool N` averages
each N frames first (50 / N frames per second: the vocoder's `unit_rate`). Features are standardised before
k-means (`--no-standardise` turns it off): raw layer-2 distances are ruled by a few wide dimensions. K=500: more
units carry more of the sound, and K=1000 is spoken worse by the same vocoder recipe.

Writes `codebook.safetensors`, `train.jsonl` and `heldout.jsonl` (the demo records plus `units` and
`unit_durations`) and `report.json` (frames and units per second, codebook use, quantisation error,
timings). `--compare-k` fits more codebook sizes on the same features and reports the same figures
for each, to choose K. A rerun with the same settings does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from omni.atomic import write_atomic
from omni.audio import load_audio
from omni.cli import command_parser
from omni.config import EncoderConfig
from omni.data import relocated
from omni.encoder import SpeechEncoder
from omni.units import Codebook, HubertFeatures, WhisperFeatures, runs

if TYPE_CHECKING:
    from data_recipes.builder.config import BuildConfig

SPLITS = ("train", "heldout")
FRAME_RATE = 50  # Whisper encoder frames per second
CODEBOOK_FILE = "codebook.safetensors"  # centroids with the standardising mean and scale


def read_manifest(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    missing = [r["id"] for r in records if "response_audio" not in r]
    if missing:
        raise ValueError(f"{path}: records {missing[:3]} have no response_audio; rerun make data-demo")
    return records


def encode_all(
    features: WhisperFeatures | HubertFeatures, paths: list[Path], batch_size: int, desc: str
) -> Iterator[torch.Tensor]:
    """Features of every clip, in the given order, batched by length (within windows of 64 batches) so little is
    padding; only a window's features are held at a time."""
    window = batch_size * 64
    with tqdm(total=len(paths), desc=desc) as bar:
        for first in range(0, len(paths), window):
            part = list(range(first, min(first + window, len(paths))))
            order = sorted(part, key=lambda i: os.path.getsize(paths[i]))
            out: dict[int, torch.Tensor] = {}
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                out |= dict(zip(chunk, features([load_audio(paths[i]) for i in chunk]), strict=True))
                bar.update(len(chunk))
            yield from (out[i] for i in part)


def quantise(
    codebook: Codebook, features: Iterable[torch.Tensor], frame_rate: float
) -> tuple[list[tuple[list[int], list[int]]], dict]:
    """Deduplicated units per clip with their durations in frames, and how the codebook fits these frames."""
    all_units, all_runs, raw, used, error = [], [], 0, set(), 0.0
    records = 0
    for feats in features:
        records += 1
        ids = codebook.assign(feats)
        all_runs.append(runs(ids.tolist()))
        all_units.append(all_runs[-1][0])
        raw += len(ids)
        used.update(all_units[-1])
        error += (codebook.standardise(feats) - codebook.centroids[ids]).pow(2).sum().item()
    merged = sum(len(u) for u in all_units)
    stats = {
        "records": records,
        "frames": raw,
        "units": merged,
        "units_per_second": round(merged / (raw / frame_rate), 2) if raw else 0.0,
        "frames_per_unit": round(raw / merged, 3) if merged else 0.0,
        "codebook_used": len(used),
        "mean_squared_error": round(error / raw, 4) if raw else 0.0,  # in the codebook's (standardised) space
    }
    return all_runs, stats


def write_split(out: Path, data: Path, split: str, records: list[dict], unit_runs: list) -> None:
    """`split`.jsonl in `out`: the records, their files relocated, with their units and durations."""
    lines = [
        json.dumps(relocated(record, data, out) | {"units": units, "unit_durations": durations})
        for record, (units, durations) in zip(records, unit_runs, strict=True)
    ]
    write_atomic(out / f"{split}.jsonl", "".join(line + "\n" for line in lines))


def manifests_signature(data: Path) -> str:
    """A hash of the records the units are made for (their manifests' text)."""
    text = "".join((data / f"{split}.jsonl").read_text() for split in SPLITS)
    return hashlib.sha1(text.encode()).hexdigest()


def build_units(
    data: Path,
    encoder: str,
    layer: int,
    size: int,
    out: Path,
    *,
    batch_size: int = 16,
    max_frames: int = 200_000,
    compare: tuple[int, ...] = (),
    standardise: bool = True,
    features: str = "whisper",
    codebook_path: str | None = None,
    pool: int = 1,
) -> dict:
    settings = {
        "data": str(data),
        "encoder": str(encoder),
        "features": features,
        "layer": layer,
        "pool": pool,
        "k": size,
        "codebook": codebook_path,
        "codebook_sha1": hashlib.sha1(Path(codebook_path).read_bytes()).hexdigest() if codebook_path else None,
        "max_frames": max_frames,
        "compare_k": list(compare),
        "standardise": standardise,
        "fields": ["units", "unit_durations"],  # a report without durations is rebuilt
        "records": manifests_signature(data),  # new or changed records are quantised again
    }
    report_path = out / "report.json"
    if report_path.is_file() and json.loads(report_path.read_text()).get("settings") == settings:
        print(f"{out}: units already built with these settings")
        return json.loads(report_path.read_text())
    began = time.perf_counter()
    if features == "hubert":
        if pool != 1:
            raise ValueError("pool applies to Whisper features only")
        extractor = HubertFeatures(encoder, layer)
    else:
        extractor = WhisperFeatures(SpeechEncoder.from_config(EncoderConfig(name_or_path=encoder)), layer, pool)
    frame_rate = FRAME_RATE / pool
    records = {split: read_manifest(data / f"{split}.jsonl") for split in SPLITS}
    out.mkdir(parents=True, exist_ok=True)
    stats: dict[str, dict] = {}
    if codebook_path:  # quantised as they are encoded: a large set's features never all sit in memory
        codebook = Codebook.load(codebook_path)
        sample, fit_s = [], 0.0
        for split, rs in records.items():
            paths = [data / r["response_audio"] for r in rs]
            unit_runs, stats[split] = quantise(
                codebook, encode_all(extractor, paths, batch_size, f"units {split}"), frame_rate
            )
            write_split(out, data, split, rs, unit_runs)
        encode_s = time.perf_counter() - began
    else:
        encoded = {
            split: list(
                encode_all(extractor, [data / r["response_audio"] for r in rs], batch_size, f"features {split}")
            )
            for split, rs in records.items()
        }
        encode_s = time.perf_counter() - began
        start = time.perf_counter()
        frames = torch.cat(encoded["train"]).numpy()
        rng = np.random.default_rng(0)
        sample = frames[rng.choice(len(frames), min(max_frames, len(frames)), replace=False)]
        codebook = Codebook.fit(sample, size, standardise=standardise)
        fit_s = time.perf_counter() - start
        for split, rs in records.items():
            unit_runs, stats[split] = quantise(codebook, encoded[split], frame_rate)
            write_split(out, data, split, rs, unit_runs)
    codebook.save(out / CODEBOOK_FILE)
    other_sizes = {
        str(k): quantise(Codebook.fit(sample, k, standardise=standardise), encoded["heldout"], frame_rate)[1]
        for k in compare
        if k != size and len(sample)
    }  # held-out figures of other codebook sizes, fitted on the same training frames
    report = {
        "settings": settings,
        "frames_per_second": frame_rate,  # the unit vocoder's unit_rate
        "kmeans_frames": len(sample),  # 0 with a given codebook
        "splits": stats,
        "compare_k_heldout": other_sizes,
        "timings": {"features_s": round(encode_s, 1), "kmeans_s": round(fit_s, 1)},
    }
    report_path.write_text(json.dumps(report, indent=2))
    return report


def build_units_step(config: BuildConfig) -> dict:
    """The builder's last step: units of the merged records' spoken answers, into `<out>/units/`."""
    u, out = config.units, Path(config.out)
    return build_units(
        out,
        u.model,
        u.layer,
        u.k,
        out / "units",
        batch_size=u.batch_size,
        max_frames=u.max_frames,
        standardise=u.standardise,
        features=u.features,
        codebook_path=u.codebook,
        pool=u.pool,
    )


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/demo"), help="folder of train.jsonl/heldout.jsonl")
    parser.add_argument("--encoder", default=".cache/assets/whisper_base.pt", help="Whisper checkpoint or name")
    parser.add_argument("--features", choices=["whisper", "hubert"], default="whisper", help="the feature model kind")
    parser.add_argument("--codebook", default=None, help="an existing codebook; default: fit one (--k)")
    parser.add_argument("--layer", type=int, default=2, help="encoder blocks to run (Whisper base has 6)")
    parser.add_argument("--pool", type=int, default=1, help="Whisper frames averaged into one before k-means")
    parser.add_argument("--k", type=int, default=500, help="codebook size K")
    parser.add_argument("--out", type=Path, default=Path("data/demo/units"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-frames", type=int, default=200_000, help="training frames sampled for k-means")
    parser.add_argument("--compare-k", type=int, nargs="*", default=[], help="other K to report figures for")
    parser.add_argument(
        "--no-standardise", dest="standardise", action="store_false", help="k-means on the raw features"
    )
    args = parser.parse_args(argv)
    report = build_units(
        args.data,
        args.encoder,
        args.layer,
        args.k,
        args.out,
        batch_size=args.batch_size,
        max_frames=args.max_frames,
        compare=tuple(args.compare_k),
        standardise=args.standardise,
        features=args.features,
        codebook_path=args.codebook,
        pool=args.pool,
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
