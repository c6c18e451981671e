"""A predicted naturalness score (MOS, 1-5) of speech, without the hub: DNSMOS through `speechmos`.

    python -m omni.eval.quality answer.wav other.wav      # one line per file: overall, signal, background, P.808

The paper reports UTMOS; its weights come from the hub only. DNSMOS (Microsoft's deep noise suppression MOS,
P.808-trained) ships its ONNX weights inside the `speechmos` wheel, so it installs offline from the registry; it
was checked to rank clean speech above the same speech degraded (tests/eval/test_quality.py). Checked and not
taken: distillmos (installs, but its package imports torchaudio for a helper and its scores of espeak-ng speech
did not rank clean above degraded reliably), nisqa / utmos / utmosv2 / utmos-pytorch (weights from the hub or a
URL at first use). Scores of synthetic speech are comparative: use them between Omegas or models, not as absolute
human ratings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omni.audio import SAMPLE_RATE, load_audio
from omni.cli import command_parser

PREDICTOR = "DNSMOS P.808 (speechmos 0.0.1.1, ONNX weights in the wheel)"
KEYS = ("mos", "overall", "signal", "background")
MIN_SECONDS = 0.5
"""shorter clips get no score: DNSMOS tiles a clip up to 9 s, and a few frames tiled say nothing"""


class Quality:
    """Scores 16 kHz speech. `mos` is DNSMOS's P.808 score (the one trained on listeners' absolute category
    ratings, as UTMOS is); overall / signal / background are its P.835 scores, kept beside it."""

    def __init__(self) -> None:
        from speechmos import dnsmos  # imported here: onnxruntime and librosa only when scores are asked for

        self._run = dnsmos.run

    def __call__(self, audio: np.ndarray) -> dict[str, float] | None:
        audio = np.asarray(audio, dtype=np.float32)
        if len(audio) < MIN_SECONDS * SAMPLE_RATE or not np.isfinite(audio).all():
            return None
        scores = self._run(np.clip(audio, -1.0, 1.0), sr=SAMPLE_RATE)
        return {
            "mos": float(scores["p808_mos"]),
            "overall": float(scores["ovrl_mos"]),
            "signal": float(scores["sig_mos"]),
            "background": float(scores["bak_mos"]),
        }


def mean_quality(scores: list[dict[str, float] | None]) -> dict[str, float | int | None]:
    """The mean of each score over the clips that have one, and how many had none (too short, silent)."""
    scored = [s for s in scores if s]
    means = {f"{k}_mean": float(np.mean([s[k] for s in scored])) if scored else None for k in KEYS}
    return means | {"unscored": len(scores) - len(scored)}


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("wavs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    quality = Quality()
    for path in args.wavs:
        scores = quality(load_audio(path))
        shown = " ".join(f"{k} {v:.2f}" for k, v in scores.items()) if scores else f"too short (< {MIN_SECONDS} s)"
        print(f"{path}: {shown}")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
