"""How well a speech decoder predicts an answer's units, and whether it has stalled.

Greedy CTC decoding of the answer hidden states, against the reference units:
- unit error rate: edit distance to the reference units / reference units (can exceed 1);
- blank share: share of decoder frames whose best class is the blank;
- length ratio: predicted units / reference units.
A stalled decoder (loss flat near its start, nearly all-blank output: a known failure of this setup)
shows as a blank share near 1 with a length ratio near 0. Stage 2 reports these at each evaluation;
`omni.eval.speech_units` compares a trained decoder with an untrained one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from rapidfuzz.distance import Levenshtein

from omni.speech_decoder import SpeechDecoder, ctc_greedy

STALL_BLANK_SHARE = 0.95
STALL_LENGTH_RATIO = 0.1


def is_stalled(metrics: dict[str, float]) -> bool:
    return metrics["blank_share"] >= STALL_BLANK_SHARE and metrics["length_ratio"] <= STALL_LENGTH_RATIO


@torch.no_grad()
def evaluate_decoder(
    decoder: SpeechDecoder, batches: Iterable[dict[str, torch.Tensor]], max_batches: int | None = None
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics over cached-style batches ({"hidden" (absent for text alone), "tokens", "lengths", "units",
    "unit_lengths"}), plus per-record rows."""
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
        states, tokens = batch.get("hidden"), batch.get("tokens")
        logits, frames = decoder(states, batch["lengths"], tokens)
        best = logits.argmax(-1)
        valid = torch.arange(best.shape[1], device=device) < frames[:, None]
        blanks += int(((best == decoder.blank) & valid).sum())
        frames_total += int(frames.sum())
        loss_sum += float(decoder.loss(states, batch["lengths"], batch["units"], batch["unit_lengths"], tokens))
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
