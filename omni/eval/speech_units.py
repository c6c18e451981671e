"""How well the speech decoder predicts the answer's units, trained against untrained, in one run.

    python -m omni.eval.speech_units --decoder runs/stage2_demo/model \
        --data data/demo/units/heldout.jsonl --out runs/stage2_demo/eval

Metrics on held-out records (greedy CTC decoding of the response hidden states):
- unit error rate: edit distance to the reference units / reference units (can exceed 1);
- blank share: share of decoder frames whose best class is the blank;
- length ratio: predicted units / reference units.
A stalled decoder (loss flat near its start, nearly all-blank output: a known failure of this setup)
shows as a blank share near 1 with a length ratio near 0, and is flagged. Writes `units.json`,
`units.md` and `examples.jsonl`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import yaml
from rapidfuzz.distance import Levenshtein
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from omni.speech_decoder import SpeechDecoder, ctc_greedy

STALL_BLANK_SHARE = 0.95
STALL_LENGTH_RATIO = 0.1
STAGE1_MODEL_FILE = "stage1_model.txt"  # written beside a trained decoder: the frozen model it reads


def is_stalled(metrics: dict[str, float]) -> bool:
    return metrics["blank_share"] >= STALL_BLANK_SHARE and metrics["length_ratio"] <= STALL_LENGTH_RATIO


@torch.no_grad()
def evaluate_decoder(
    decoder: SpeechDecoder, batches: Iterable[dict[str, torch.Tensor]], max_batches: int | None = None
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics over cached-style batches ({"hidden", "lengths", "units", "unit_lengths"}), plus per-record rows."""
    device = next(decoder.parameters()).device
    was_training = decoder.training
    decoder.eval()
    errors = reference = predicted = blanks = frames_total = seen = 0
    loss_sum, rows = 0.0, []
    for batch in batches:
        if max_batches is not None and seen >= max_batches:
            break
        seen += 1
        batch = {k: v.to(device) for k, v in batch.items()}
        logits, frames = decoder(batch["hidden"], batch["lengths"])
        best = logits.argmax(-1)
        valid = torch.arange(best.shape[1], device=device) < frames[:, None]
        blanks += int(((best == decoder.blank) & valid).sum())
        frames_total += int(frames.sum())
        loss_sum += float(decoder.loss(batch["hidden"], batch["lengths"], batch["units"], batch["unit_lengths"]))
        for row, units in enumerate(ctc_greedy(logits, frames, decoder.blank)):
            ref = batch["units"][row, : batch["unit_lengths"][row]].tolist()
            distance = Levenshtein.distance(units, ref)
            errors += distance
            reference += len(ref)
            predicted += len(units)
            rows.append({"predicted": units, "reference": ref, "edit_distance": distance})
    metrics = {
        "unit_error_rate": errors / max(reference, 1),
        "blank_share": blanks / max(frames_total, 1),
        "length_ratio": predicted / max(reference, 1),
        "ctc_loss": loss_sum / max(seen, 1),
    }
    decoder.train(was_training)
    return metrics, rows


def markdown(results: dict[str, dict[str, float]], records: int) -> str:
    lines = [
        f"Speech-unit prediction on {records} held-out records (greedy CTC)",
        "",
        "| decoder | unit error rate | blank share | length ratio | CTC loss | stalled |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        lines.append(
            f"| {name} | {m['unit_error_rate']:.3f} | {m['blank_share']:.3f} | {m['length_ratio']:.3f} "
            f"| {m['ctc_loss']:.3f} | {'yes' if m['stalled'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from omni.data import SpeechInstructionDataset
    from omni.hidden_cache import HiddenCacheDataset, build_cache, collate_hidden, fingerprint, finish_cache
    from omni.model import OmniModel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder", type=Path, required=True, help="trained speech decoder directory")
    parser.add_argument("--model", type=Path, default=None, help="stage-1 model (default: the one it was trained on)")
    parser.add_argument("--data", type=Path, required=True, help="held-out records with units")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the untrained decoder's initial weights")
    parser.add_argument("--examples", type=int, default=3, help="records printed")
    args = parser.parse_args(argv)

    trained = SpeechDecoder.from_pretrained(args.decoder)
    if args.model is None and not (args.decoder / STAGE1_MODEL_FILE).is_file():
        raise FileNotFoundError(f"{args.decoder / STAGE1_MODEL_FILE} is missing: pass the stage-1 model with --model")
    model_dir = args.model or Path((args.decoder / STAGE1_MODEL_FILE).read_text().strip())
    torch.manual_seed(args.seed)
    untrained = SpeechDecoder(trained.config, trained.llm_hidden_size)
    cache_dir = args.out / "hidden_cache"
    data = SpeechInstructionDataset(args.data, num_units=trained.config.num_units)
    key = fingerprint(model_dir, data)
    meta = cache_dir / "cache.json"
    if not meta.is_file() or json.loads(meta.read_text())["key"] != key:
        model = OmniModel.from_pretrained(model_dir).eval()
        build_cache(model, data, cache_dir, key, args.batch_size)
        finish_cache(cache_dir, key, len(data), 1024)
        del model
    cached = HiddenCacheDataset(cache_dir, data.column("units"))
    loader = DataLoader(cached, batch_size=args.batch_size, collate_fn=collate_hidden)
    results, rows = {}, {}
    for name, decoder in (("untrained", untrained), ("trained", trained)):
        metrics, rows[name] = evaluate_decoder(decoder, tqdm(loader, desc=name))
        results[name] = metrics | {"stalled": is_stalled(metrics)}
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "decoder": str(args.decoder),
        "model": str(model_dir),
        "data": str(args.data),
        "records": len(cached),
        "decoder_config": yaml.safe_load((args.decoder / "speech_decoder.yaml").read_text()),
        "answer_tokens": sum(cached.lengths),
        "reference_units": sum(len(u) for u in cached.units),
        "too_short_for_upsample": cached.too_short(trained.config.upsample),
        "results": results,
    }
    (args.out / "units.json").write_text(json.dumps(report, indent=2))
    (args.out / "units.md").write_text(markdown(results, len(cached)))
    with (args.out / "examples.jsonl").open("w") as f:
        for i, record_id in enumerate(cached.ids):
            f.write(json.dumps({"id": record_id, **{n: rows[n][i] for n in rows}}) + "\n")
    print(markdown(results, len(cached)))
    for i in range(min(args.examples, len(cached))):
        t = rows["trained"][i]
        print(f"{cached.ids[i]}: reference {len(t['reference'])} units {t['reference'][:20]}...")
        print(
            f"    predicted {len(t['predicted'])} units {t['predicted'][:20]}... (edit distance {t['edit_distance']})"
        )
    if results["trained"]["stalled"]:
        print("WARNING: the trained decoder looks stalled (nearly all frames blank): see the stage-2 README notes")
    print(f"wrote {args.out / 'units.json'}, units.md and examples.jsonl")
    return report


if __name__ == "__main__":
    main()
