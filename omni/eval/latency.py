"""Latency against chunk size (Omega), ours and the reference's way, measured side by side in one run.

    python -m omni.eval.latency --out runs/latency                        # the demo model on this machine
    python -m omni.eval.latency --model M --decoder D --vocoder V --device cuda --items 50 --out runs/latency

For each Omega in {10, 20, 40, 60, 80, 100, offline}, held-out spoken instructions are answered (after warm-up
runs) and timed: first-packet latency (end of the question to the first audio sample), split into speech encoding +
prefill, decoding until the first chunk's units exist, and vocoding that chunk; total time, real-time factor
(compute / audio), stalls (how long playback that starts at the first packet waits for later chunks), chunks;
ASR-WER between the text answer and a Whisper transcript of the spoken one; and how many words of text were written
when the first chunk played. With a judge (`--judge-url`, any OpenAI-compatible endpoint: omni/eval/judge.py) each
Omega also gets the paper's S2TIF (the text answer) and S2SIF (the transcript of the spoken answer) content and
style scores, 1-5; every answer's speech gets a predicted MOS (DNSMOS: omni/eval/quality.py; `--no-quality` skips
it). Each run is appended to `runs.jsonl` as it finishes (its transcript and scores with it): a rerun into the same
`--out` with the same settings measures only what is missing.
"Ours" is variable-length encoding, the system prompt prefilled once for all questions, the incremental decoder, a
short first chunk (`--first-chunk` units; Omega after it), crossfaded chunks and the vocoder's HiFi-GAN in bf16 on
a GPU that runs it natively; "reference" is 30 s padding, the whole prompt prefilled per question, full-prefix
decoder recomputation, bare joins and an fp32 vocoder (LLaMA-Omni's), on the same inputs and weights. Writes
latency.json, latency.csv, latency.md (laid out like the reference's table) and latency.png.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from omni.audio import SAMPLE_RATE
from omni.cli import command_parser
from omni.data import SpeechInstructionDataset
from omni.eval.asr import Ear, wer
from omni.eval.judge import Judge, JudgeConfig, mean_scores, sanity
from omni.eval.quality import PREDICTOR, Quality, mean_quality
from omni.speech_generator import SpeechGenerator, load_parts
from omni.vocoder.base import Vocoder, load_vocoder, resample, waveform_dtype

JUDGE_START_S = 300.0
"""how long a judge endpoint that is still starting is waited for"""
OMEGAS: list[int | None] = [10, 20, 40, 60, 80, 100, None]
FIRST_CHUNK = 4
"""units of ours' first audio, vocoded alone (a short piece heard while the rest of the chunk is vocoded)"""
TIMED = [
    "encode_prefill_ms",
    "decode_to_first_chunk_ms",
    "vocode_first_chunk_ms",
    "first_packet_ms",
    "total_s",
    "real_time_factor",
    "stall_ms",
    "chunks",
    "words_written_at_first_chunk",
]
WAYS = {  # name -> (pad_to_30s, incremental decoder, join, the prompt's prefix prefilled once, HiFi-GAN's dtype,
    # a short first chunk: --first-chunk units)
    "ours": (False, True, "crossfade", True, "auto", True),
    "reference": (True, False, "bare", False, "float32", False),
}


def cast(vocoder: Vocoder, dtype: str, device: torch.device) -> Vocoder:
    """`vocoder` itself when its HiFi-GAN already runs in `dtype`, else a copy that does."""
    wanted = waveform_dtype(dtype, device)
    if vocoder.generator.dtype == wanted:
        return vocoder
    other = copy.deepcopy(vocoder)
    other.generator.cast(wanted)
    return other


def measure(generator: SpeechGenerator, audio: np.ndarray, omega: int | None, max_new_tokens: int) -> dict[str, Any]:
    events = list(generator(audio, omega, max_new_tokens))
    prefill = next(e for e in events if e.kind == "prefill").time
    audio_events = [e for e in events if e.kind == "audio"]
    done = events[-1]
    nan = float("nan")  # no audio at all (a decoder emitting only blanks): no first packet to time
    first = audio_events[0] if audio_events else None
    written = "".join(e.text for e in events if e.kind == "text" and first and e.time <= first.time)
    seconds = len(done.audio) / done.sample_rate if done.sample_rate else 0.0
    stall, played = 0.0, first.time if first else 0.0  # playback from the first packet on: how long it waits
    for e in audio_events:
        stall += max(0.0, e.time - played)
        played = max(played, e.time) + len(e.audio) / e.sample_rate
    return {
        "encode_prefill_ms": 1000 * prefill,
        "decode_to_first_chunk_ms": 1000 * (first.ready - prefill) if first else nan,
        "vocode_first_chunk_ms": 1000 * (first.time - first.ready) if first else nan,
        "first_packet_ms": 1000 * first.time if first else nan,
        "total_s": done.time,
        "audio_s": seconds,
        "real_time_factor": done.time / seconds if seconds else float("nan"),
        "stall_ms": 1000 * stall if first else nan,
        "chunks": len(audio_events),
        "words_written_at_first_chunk": len(written.split()),
        "text": done.text,
        "speech": resample(done.audio, done.sample_rate, SAMPLE_RATE) if seconds else np.zeros(0, np.float32),
    }


def heard(row: dict[str, Any], ear: Ear, judge: Judge | None, quality: Quality | None) -> dict[str, Any]:
    """A measured run with what Whisper heard of its speech, its predicted quality and, with a judge, S2TIF and
    S2SIF scores; the audio itself is dropped (the run is stored)."""
    speech = row["speech"]
    row = {k: v for k, v in row.items() if k != "speech"} | {"transcript": ear(speech)}
    if quality is not None:
        row["quality"] = quality(speech)
    if judge is not None:  # S2TIF judges the text answer, S2SIF what Whisper heard of the spoken one
        text, spoken = judge.scores([(row["question"], row["text"]), (row["question"], row["transcript"])])
        row |= {"s2tif": text, "s2sif": spoken}
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in TIMED:
        values = [r[key] for r in rows]
        out[f"{key}_median"] = float(np.nanmedian(values)) if not np.isnan(values).all() else float("nan")
        out[f"{key}_p90"] = float(np.nanpercentile(values, 90)) if not np.isnan(values).all() else float("nan")
    out["runs_without_audio"] = int(sum(np.isnan(r["first_packet_ms"]) for r in rows))
    out["asr_wer"] = wer([r["text"] for r in rows], [r["transcript"] for r in rows])
    for name in ("s2tif", "s2sif"):
        if any(name in r for r in rows):
            out |= {f"{name}_{k}": v for k, v in mean_scores([r.get(name) for r in rows]).items()}
    if any("quality" in r for r in rows):
        out |= {f"quality_{k}": v for k, v in mean_quality([r.get("quality") for r in rows]).items()}
    return out


def done_runs(path: Path, settings: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The runs a stopped evaluation already made with the same settings, by (omega, way, item)."""
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]
    return {(r["omega"], r["way"], r["item"]): r for r in rows if r.get("settings") == settings}


def environment(device: torch.device, args: argparse.Namespace) -> dict[str, str]:
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": f"{device.type}: {name}",
        "threads": str(torch.get_num_threads()),
        "model": str(args.model),
        "decoder": str(args.decoder),
        "vocoder": str(args.vocoder),
        "asr": str(args.whisper),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def markdown(
    summary: dict[str, dict[str, dict[str, Any]]], env: dict[str, str], items: int, judge: dict | None = None
) -> str:
    lines = [
        f"Latency against Omega on {items} held-out spoken instructions ({env['device']}, {env['threads']} threads, "
        f"HiFi-GAN {env.get('vocoder_dtype', 'float32')} (dtype x initial channels); "
        f"ours' first chunk: {env.get('first_chunk', 'Omega')} units; medians, ms; first packet = encode + prefill "
        "+ decode to the first chunk + vocode it; stall = how long playback from the first packet waits for audio)",
        "",
        "| Omega | ours: encode+prefill | decode | LLM total | vocoder | **first packet** | ASR-WER | RTF | stall "
        "| reference way: first packet | ASR-WER | stall | first packet ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    first = next(iter(summary.values()))["ours"]
    judged, rated = "s2tif_content" in first, "quality_mos_mean" in first
    if judged:
        lines[2] += " S2TIF content / style | S2SIF content / style |"
        lines[3] += "---|---|"
    if rated:
        lines[2] += " MOS (DNSMOS) |"
        lines[3] += "---|"
    for omega, ways in summary.items():
        o, r = ways["ours"], ways["reference"]
        llm = o["encode_prefill_ms_median"] + o["decode_to_first_chunk_ms_median"]
        ratio = r["first_packet_ms_median"] / o["first_packet_ms_median"]
        lines.append(
            f"| {omega} | {o['encode_prefill_ms_median']:.0f} | {o['decode_to_first_chunk_ms_median']:.0f} | {llm:.0f} "
            f"| {o['vocode_first_chunk_ms_median']:.0f} | **{o['first_packet_ms_median']:.0f}** | {o['asr_wer']:.3f} "
            f"| {o['real_time_factor_median']:.2f} | {o['stall_ms_median']:.0f} | {r['first_packet_ms_median']:.0f} "
            f"| {r['asr_wer']:.3f} | {r['stall_ms_median']:.0f} | {ratio:.2f}x |"
        )
        if judged:
            lines[-1] += "".join(
                f" {_score(o, f'{n}_content')} / {_score(o, f'{n}_style')} |" for n in ("s2tif", "s2sif")
            )
        if rated:
            lines[-1] += f" {_score(o, 'quality_mos_mean')} |"
    if judge is not None:
        trust = judge["sanity"]
        lines += [
            "",
            f"Judge: {judge['model']}. On {trust['items']} questions with a known answer it agreed on "
            f"{trust['agreement']} of the right and wrong answers and ranked the wrong one below the right one "
            f"{trust['ranks_wrong_below_right']} of the time ({trust['unscored']} replies held no score): "
            "read S2TIF / S2SIF with that trust.",
        ]
    return "\n".join(lines) + "\n"


def _score(row: dict[str, Any], key: str) -> str:
    return "" if row.get(key) is None else f"{row[key]:.2f}"


def plot(summary: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(summary)
    x = np.arange(len(labels))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for way, marker in (("ours", "o"), ("reference", "s")):
        left.plot(x, [summary[k][way]["first_packet_ms_median"] for k in labels], marker=marker, label=way)
        right.plot(x, [summary[k][way]["asr_wer"] for k in labels], marker=marker, label=way)
    for ax, title in ((left, "first-packet latency (ms, median)"), (right, "ASR-WER")):
        ax.set_xticks(x, labels)
        ax.set_xlabel("Omega (units per chunk)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser(__doc__)
    parser.add_argument("--model", type=Path, default=Path("runs/stage1_demo/model"))
    parser.add_argument("--decoder", type=Path, default=Path("runs/stage2_demo/model"))
    parser.add_argument("--vocoder", type=Path, default=Path("runs/vocoder_demo/model"))
    parser.add_argument(
        "--reference-vocoder",
        type=Path,
        help="the reference way's unit vocoder when ours is another (a distilled one: python -m train.hifigan_distill)",
    )
    parser.add_argument(
        "--data",
        "--bench",
        type=Path,
        default=Path("data/demo/heldout.jsonl"),
        help="spoken questions: records.jsonl of any set (data_recipes.builder.importers brings benchmarks in)",
    )
    parser.add_argument("--whisper", default=".cache/assets/whisper_base.pt", help="ASR for ASR-WER")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per way first")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--omegas", type=int, nargs="*", default=None, help="chunk sizes; 0 = offline")
    parser.add_argument(
        "--first-chunk", type=int, default=FIRST_CHUNK, help="units of ours' first audio chunk; 0 = Omega's"
    )
    parser.add_argument("--judge-url", default=None, help="a judge's OpenAI-compatible endpoint: S2TIF, S2SIF scores")
    parser.add_argument("--judge-model", default=JudgeConfig.model, help="the model name the judge's endpoint serves")
    parser.add_argument(
        "--quality", action=argparse.BooleanOptionalAction, default=True, help=f"a MOS per answer: {PREDICTOR}"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    quality = Quality() if args.quality else None
    judge = Judge(JudgeConfig(model=args.judge_model, base_url=args.judge_url)) if args.judge_url else None
    if judge is not None:
        judge.client.wait_ready(JUDGE_START_S)  # a local judge may still be loading its model
    device = torch.device(args.device)
    omegas = OMEGAS if args.omegas is None else [o or None for o in args.omegas]
    model, decoder, vocoder = load_parts(args.model, args.decoder, args.vocoder, str(device), "float32")
    vocoders = {"ours": vocoder, "reference": vocoder}
    if args.reference_vocoder:
        vocoders["reference"] = load_vocoder(args.reference_vocoder, device, "float32")
    data = SpeechInstructionDataset(args.data, require_response=False)
    examples = [data[i] for i in range(min(args.items, len(data)))]
    clips = [e.audio for e in examples]
    ear = Ear.load(args.whisper, device)
    generators = {
        way: SpeechGenerator(
            model,
            decoder,
            cast(vocoders[way], dtype, device),
            join,
            incremental,
            pad,
            prefix_cache=prefix,
            first_chunk=args.first_chunk if short and args.first_chunk else None,
        )
        for way, (pad, incremental, join, prefix, dtype, short) in WAYS.items()
    }
    settings = {"model": str(args.model), "decoder": str(args.decoder), "vocoder": str(args.vocoder)}
    settings["reference_vocoder"] = str(args.reference_vocoder or args.vocoder)
    settings |= {"data": str(args.data), "max_new_tokens": args.max_new_tokens, "judge": judge and judge.record()}
    settings["quality"] = PREDICTOR if quality else None
    settings["first_chunk"] = args.first_chunk
    hifigans = {way: g.vocoder.generator for way, g in generators.items()}
    settings["vocoders"] = {  # each way's HiFi-GAN: its dtype and width
        way: f"{str(h.dtype).removeprefix('torch.')} x{h.config.upsample_initial_channel}"
        for way, h in hifigans.items()
    }
    args.out.mkdir(parents=True, exist_ok=True)
    done = done_runs(args.out / "runs.jsonl", settings)
    total = len(omegas) * len(WAYS) * len(clips)
    if len(done) < total:
        for generator in generators.values():
            for clip in clips[: args.warmup]:
                measure(generator, clip, omegas[0], args.max_new_tokens)
    rows: list[dict[str, Any]] = []
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    with tqdm(total=total, initial=len(done), desc="latency") as bar, (args.out / "runs.jsonl").open("a") as log:
        for omega in omegas:
            label = str(omega) if omega else "offline"
            summary[label] = {}
            for way, generator in generators.items():
                measured = []
                for index, clip in enumerate(clips):
                    row = done.get((label, way, index))
                    if row is None:
                        asked = {"omega": label, "way": way, "item": index, "question": examples[index].instruction}
                        row = heard(asked | measure(generator, clip, omega, args.max_new_tokens), ear, judge, quality)
                        log.write(json.dumps(row | {"settings": settings}) + "\n")
                        log.flush()
                        bar.update(1)
                    measured.append({k: v for k, v in row.items() if k != "settings"})
                summary[label][way] = summarise(measured)
                rows += measured
    env = environment(device, args)
    env["first_chunk"] = str(args.first_chunk or "Omega")
    env["vocoder_dtype"] = ", ".join(f"{way} {kind}" for way, kind in settings["vocoders"].items())
    report = {"environment": env, "items": len(clips), "summary": summary, "runs": rows}
    if judge is not None:  # how far its scores can be trusted, asked each time: 16 short replies
        report["judge"] = judge.record() | {"sanity": {k: v for k, v in sanity(judge).items() if k != "scores"}}
    if quality is not None:
        report["quality"] = PREDICTOR
    (args.out / "latency.json").write_text(json.dumps(report, indent=2))
    with (args.out / "latency.csv").open("w", newline="") as f:
        fields = ["omega", "way", *next(iter(next(iter(summary.values())).values())).keys()]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for omega, ways in summary.items():
            for way, values in ways.items():
                writer.writerow({"omega": omega, "way": way} | values)
    table = markdown(summary, env, len(clips), report.get("judge"))
    (args.out / "latency.md").write_text(table)
    plot(summary, args.out / "latency.png")
    print(table)
    print(f"wrote {args.out}/latency.json, latency.csv, latency.md and latency.png")
    return report


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
