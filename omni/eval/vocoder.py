"""Can the unit vocoder be understood? Resynthesis WER against the TTS ceiling, whole and streamed.

    python -m omni.eval.vocoder --vocoder runs/vocoder_demo/model --data data/demo/units/heldout.jsonl \\
        --whisper .cache/assets/whisper_base.pt --out runs/vocoder_demo/eval

Held-out answers are spoken again from their reference units and transcribed by a real Whisper model;
the WER against the answer text is set beside the WER of the original TTS audio (the ceiling), all in
one run. For a mel vocoder, the original's own mel spoken by it (`mel_copy`) tells what the mel vocoder
alone costs; the rest of the gap is the unit-to-mel model's. Streaming is measured too: the same units
vocoded in chunks of `--chunks` units, joined bare (the reference's way) and with the crossfade, with
each one's log-mel distance to the whole-answer synthesis (0 = no seams). `--contrast 1` measures the
model as trained (see `omni.vocoder.unit_to_mel`). Writes `vocoder.json`, `vocoder.md`, `examples.jsonl`,
a few wavs and a spectrogram PNG of one original against its resynthesis.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from tqdm.auto import tqdm

from omni.audio import SAMPLE_RATE, load_audio
from omni.cli import command_parser
from omni.eval.asr import Ear, wer
from omni.vocoder.base import DTYPES, Vocoder, resample, waveform_dtype
from omni.vocoder.data import UnitSpeechDataset
from omni.vocoder.hifigan import MEL_CONFIG
from omni.vocoder.mel import log_mel
from omni.vocoder.mel_unit import MelUnitVocoder
from omni.vocoder.streaming import vocode_in_chunks


def conditions(chunks: list[int]) -> list[tuple[str, int, str]]:
    """(name, chunk size or 0 for whole, join)."""
    out = [("resynthesis", 0, "crossfade")]
    for chunk in chunks:
        out += [(f"chunk{chunk}_bare", chunk, "bare"), (f"chunk{chunk}_crossfade", chunk, "crossfade")]
    return out


def mel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |log-mel difference| of two renderings of the same units (16 kHz), over their common length."""
    n = min(len(a), len(b))
    ma, mb = (log_mel(torch.from_numpy(x[:n]), MEL_CONFIG) for x in (a, b))
    return float((ma - mb).abs().mean())


def spectrogram_png(original: np.ndarray, resynthesis: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    for ax, audio, name in zip(
        axes, (original, resynthesis), ("original (TTS)", "resynthesis from units"), strict=True
    ):
        mel = log_mel(torch.from_numpy(resample(audio, SAMPLE_RATE, MEL_CONFIG.sample_rate)), MEL_CONFIG)
        ax.imshow(mel.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=-11.5)
        ax.set_ylabel(f"{name}\nmel bin")
    axes[-1].set_xlabel(f"frame ({MEL_CONFIG.hop / MEL_CONFIG.sample_rate * 1000:.1f} ms)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(
    vocoder: Vocoder,
    data: UnitSpeechDataset,
    ear: Ear,
    out: Path,
    items: int,
    chunks: list[int],
    wavs: int = 3,
) -> dict:
    copy = ["mel_copy"] if isinstance(vocoder, MelUnitVocoder) else []
    names = ["original", *copy, *(name for name, _, _ in conditions(chunks))]
    hypotheses: dict[str, list[str]] = {name: [] for name in names}
    distances: dict[str, list[float]] = {name: [] for name, chunk, _ in conditions(chunks) if chunk}
    references, rows, seconds, total_audio = [], [], {name: 0.0 for name, _, _ in conditions(chunks)}, 0.0
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    for index in tqdm(range(min(items, len(data))), desc="vocoder eval"):
        row = data.rows[index]
        audio = {"original": load_audio(row["response_audio"])}
        total_audio += len(audio["original"]) / SAMPLE_RATE
        if copy:
            audio["mel_copy"] = resample(vocoder.speak_mel(data.target(index)), vocoder.sample_rate, SAMPLE_RATE)
        for name, chunk, join in conditions(chunks):
            start = time.perf_counter()
            rendered = vocode_in_chunks(vocoder, row["units"], chunk, join)
            seconds[name] += time.perf_counter() - start
            audio[name] = resample(rendered, vocoder.sample_rate, SAMPLE_RATE)
        for name, chunk, _ in conditions(chunks):
            if chunk:
                distances[name].append(mel_distance(audio[name], audio["resynthesis"]))
        texts = {}
        for name in names:
            texts[name] = ear(audio[name])
            hypotheses[name].append(texts[name])
        references.append(row["response"])
        rows.append({"id": row.get("id"), "response": row["response"], "units": len(row["units"])} | texts)
        if index < wavs:
            for name, clip in audio.items():
                soundfile.write(out / "wavs" / f"{row.get('id', index)}_{name}.wav", clip, SAMPLE_RATE)
        if index == 0:
            spectrogram_png(audio["original"], audio["resynthesis"], out / "spectrogram.png", str(row.get("id")))
    results = {
        name: {
            "wer": wer(references, hypotheses[name]),
            **({"mel_distance_to_whole": float(np.mean(distances[name]))} if name in distances else {}),
            **({"real_time_factor": seconds[name] / total_audio} if name in seconds else {}),
        }
        for name in names
    }
    with (out / "examples.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return {"items": len(rows), "audio_seconds": round(total_audio, 1), "results": results}


def markdown(report: dict) -> str:
    r = report["results"]
    lines = [
        f"Vocoder on {report['items']} held-out answers ({report['audio_seconds']} s), contrast {report['contrast']}, "
        f"HiFi-GAN {report.get('dtype', 'float32')}, ASR {report['asr']}",
        "",
        "| audio | WER | points above the TTS ceiling | log-mel distance to whole synthesis | real-time factor |",
        "|---|---|---|---|---|",
    ]
    for name, m in r.items():
        gap = "" if name == "original" else f"{100 * (m['wer'] - r['original']['wer']):+.1f}"
        distance = f"{m['mel_distance_to_whole']:.3f}" if "mel_distance_to_whole" in m else ""
        rtf = f"{m['real_time_factor']:.3f}" if "real_time_factor" in m else ""
        lines.append(f"| {name} | {m['wer']:.3f} | {gap} | {distance} | {rtf} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser(__doc__)
    parser.add_argument("--vocoder", type=Path, required=True, help="trained unit-to-mel directory")
    parser.add_argument("--hifigan", type=Path, default=None, help="mel vocoder (default: the one it was trained for)")
    parser.add_argument("--data", type=Path, required=True, help="held-out records with units and response_audio")
    parser.add_argument("--whisper", default=".cache/assets/whisper_base.pt", help="ASR model: name or checkpoint")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--chunks", type=int, nargs="*", default=[10], help="streaming chunk sizes in units")
    parser.add_argument("--contrast", type=float, default=None, help="override the model's contrast (1 = as trained)")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", *DTYPES], help="the HiFi-GAN's, as generation's (load_vocoder)"
    )
    args = parser.parse_args(argv)
    vocoder = MelUnitVocoder.from_pretrained(args.vocoder, args.hifigan, contrast=args.contrast)
    vocoder.generator.cast(waveform_dtype(args.dtype, "cpu"))
    data = UnitSpeechDataset(args.data, vocoder.unit_to_mel.config.num_units, MEL_CONFIG)
    unanswered = [i + 1 for i, row in enumerate(data.rows) if not row.get("response")]
    if unanswered:
        raise ValueError(f"{args.data}, lines {unanswered[:5]}: field 'response' missing (the text the WER is against)")
    ear = Ear.load(args.whisper, "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    contrast = vocoder.unit_to_mel.config.contrast
    report = {
        "vocoder": str(args.vocoder),
        "contrast": contrast,
        "dtype": str(vocoder.generator.dtype).removeprefix("torch."),
        "asr": Path(args.whisper).name,
        "data": str(args.data),
    }
    report |= evaluate(vocoder, data, ear, args.out, args.items, args.chunks)
    (args.out / "vocoder.json").write_text(json.dumps(report, indent=2))
    (args.out / "vocoder.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.out}/vocoder.json, vocoder.md, examples.jsonl, wavs/ and spectrogram.png")
    return report


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
