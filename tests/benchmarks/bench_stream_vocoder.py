"""Benchmark: streaming an answer's units to audio, the generator reading only what the new chunk depends on vs
vocoding each chunk's whole left context too (a script, not a timed test).

    python tests/benchmarks/bench_stream_vocoder.py                                 # the demo's vocoder
    python tests/benchmarks/bench_stream_vocoder.py --vocoder runs/vocoder_demo/model --omegas 10 40

A streamed chunk of Omega units is vocoded after 20 units of left context, so that its sound continues the last
chunk's (omni/vocoder/streaming.py). The HiFi-GAN needs only the context's last `receptive_frames` mel frames of it,
not all: both ways run side by side, alternating, in one process on the same units; printed per Omega are the
milliseconds of vocoding per second of audio, their ratio, and the largest difference between the two audios.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from omni.vocoder.base import load_vocoder
from omni.vocoder.streaming import vocode_in_chunks


class WholeContext:
    """The vocoder, made to vocode every unit it is given, the context's too: the way before."""

    def __init__(self, vocoder):
        self.vocoder, self.sample_rate, self.num_units = vocoder, vocoder.sample_rate, vocoder.num_units

    def synthesize(self, units, from_unit: int = 0, lead: int = 0):
        return self.vocoder.synthesize(units)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocoder", type=Path, default=Path("runs/vocoder_demo/model"), help="a unit vocoder")
    parser.add_argument("--omegas", type=int, nargs="*", default=[10, 20, 40])
    parser.add_argument("--units", type=int, default=150, help="units per answer (about 6 s with the demo's)")
    parser.add_argument("--answers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    vocoder = load_vocoder(args.vocoder)
    rng = np.random.default_rng(0)
    answers = [rng.integers(0, vocoder.num_units, args.units).tolist() for _ in range(args.answers)]
    torch.set_grad_enabled(False)
    reach = vocoder.generator.config.receptive_frames
    print(f"vocoder={args.vocoder} threads={torch.get_num_threads()} receptive_frames={reach}")
    print("| Omega | whole context, ms per s of audio | only what the chunk needs | ratio | largest difference |")
    print("|---|---|---|---|---|")
    vocode_in_chunks(vocoder, answers[0][:30], 10)  # warm-up
    for omega in args.omegas:
        times: dict[str, list[float]] = {"whole": [], "skip": []}
        seconds, difference = 0.0, 0.0
        for _ in range(args.repeats):
            for units in answers:
                audios = {}
                for name, way in (("whole", WholeContext(vocoder)), ("skip", vocoder)):
                    began = time.perf_counter()
                    audios[name] = vocode_in_chunks(way, units, omega)
                    times[name].append(time.perf_counter() - began)
                seconds += len(audios["skip"]) / vocoder.sample_rate
                difference = max(difference, float(np.abs(audios["skip"] - audios["whole"]).max()))
        whole, skip = (1000 * sum(times[k]) / seconds for k in ("whole", "skip"))
        print(f"| {omega} | {whole:.0f} | {skip:.0f} | {whole / skip:.2f}x | {difference:.1e} |")


if __name__ == "__main__":
    main()
