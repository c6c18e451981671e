"""How well the speech decoder predicts the answer's units, trained against untrained, in one run.

    python -m omni.eval.speech_units --decoder runs/stage2_demo/model \\
        --data data/demo/units/heldout.jsonl --out runs/stage2_demo/eval

Metrics on held-out records (`omni/unit_metrics.py`: unit error rate, blank share, length ratio, CTC
loss of the greedy CTC units), with a stalled decoder flagged. Writes `units.json`,
`units.md` and `examples.jsonl`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from omni.cli import command_parser
from omni.config import to_dict
from omni.speech_decoder import SpeechDecoder, stage1_model_of
from omni.unit_metrics import evaluate_decoder, is_stalled


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
    from omni.hidden_cache import collate_hidden, open_or_build
    from omni.model import OmniModel

    parser = command_parser(__doc__)
    parser.add_argument("--decoder", type=Path, required=True, help="trained speech decoder directory")
    parser.add_argument("--model", type=Path, default=None, help="stage-1 model (default: the one it was trained on)")
    parser.add_argument("--data", type=Path, required=True, help="held-out records with units")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the untrained decoder's initial weights")
    parser.add_argument("--examples", type=int, default=3, help="records printed")
    args = parser.parse_args(argv)

    trained = SpeechDecoder.from_pretrained(args.decoder)
    model_dir = args.model or stage1_model_of(args.decoder)
    torch.manual_seed(args.seed)
    untrained = SpeechDecoder(trained.config, trained.llm_hidden_size, trained.input.text)
    data = SpeechInstructionDataset(args.data, num_units=trained.config.num_units)
    cached = open_or_build(
        args.out / "hidden_cache",
        data,
        model_dir,
        lambda: OmniModel.from_pretrained(model_dir).eval(),
        alignment=trained.config.input.alignment,
        batch_size=args.batch_size,
    )
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
        "decoder_config": to_dict(trained.config),
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
    from omni.cli import run_command

    run_command(main)
