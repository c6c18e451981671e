"""A stand-in TTS engine for the builder's tests, standard library only.

Takes piper's flags (--model, --length_scale, --output_file) or a command template's (--voice, --rate, --out,
--text); the text comes on stdin unless --text is given. Writes a 22.05 kHz sine wav, 0.2 s per word (times
the length scale). Texts that make it misbehave: "fail" (two stderr lines, exit 3), "hang" (sleeps a minute),
"silent" (all-zero samples), "nofile" (exits 0 without writing). FAKE_TTS_LOG, when set, is a file that gets
one JSON line per call: its pid, argv and stdin.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import struct
import sys
import time
import wave


def sine_wav(seconds: float, sample_rate: int = 22050, channels: int = 1, silent: bool = False) -> bytes:
    """16-bit wav bytes of a 220 Hz tone (the same in every channel)."""
    frames = bytearray()
    for i in range(round(seconds * sample_rate)):
        value = 0 if silent else round(8000 * math.sin(2 * math.pi * 220 * i / sample_rate))
        frames += struct.pack("<h", value) * channels
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(bytes(frames))
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", "--voice")
    parser.add_argument("--length_scale", "--rate", type=float, default=1.0)
    parser.add_argument("--output_file", "--out", required=True)
    parser.add_argument("--text")
    args = parser.parse_args()
    text = args.text if args.text is not None else sys.stdin.read()
    if log := os.environ.get("FAKE_TTS_LOG"):
        with open(log, "a") as file:
            file.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:], "stdin": text}) + "\n")
    command = text.strip()
    if command == "fail":
        print("loading the voice\nboom: the voice is broken", file=sys.stderr)
        sys.exit(3)
    if command == "hang":
        time.sleep(60)
    if command == "nofile":
        return
    seconds = 0.2 * len(text.split()) * (args.length_scale if args.length_scale < 5 else 1)
    with open(args.output_file, "wb") as file:
        file.write(sine_wav(seconds, silent=command == "silent"))


if __name__ == "__main__":
    main()
