"""Load test of `omni serve`: concurrent clients on loopback, some of them bad (a script, not a timed test).

    python tests/benchmarks/load_serve.py                          # tiny random models
    python tests/benchmarks/load_serve.py --model runs/stage1_demo/model --decoder runs/stage2_demo/model \
        --vocoder runs/vocoder_demo/model --max-new-tokens 128

Starts a real server; one client asks `--requests` / 4 questions, one after another (the baseline), then
`--clients` clients ask over the WebSocket at once until `--requests` questions were asked or `--seconds` passed;
`--rounds` times in turn, so that the ratio (the median of the rounds') is not one run's luck.
Every `--bad-every`th question is bad, in turn:
empty, NaN, not audio, too long, malformed, too large, or a client that leaves mid-answer. The good ones
are Debian's pocketsphinx test recordings (1-7 s of speech), sent at once, not at the pace of speech.
Prints first-packet p50/p90 (from the end of the question to the first audio, at the client), throughput,
outcomes by kind, good questions dropped (any: exit status 1) and the server's memory (RSS, its vocoder process's
included) before, at its peak and after, with its own counters; last, side by side, the first packet under load
against alone per round: the ratio of the loaded p90 to the lone p50 (continuous batching's target: 4x or less); then
where the first packet's time goes, by the server's own timings of each answer: waiting to join, prefilled, first
audio sent. `--vocoder-process off` runs the server with its vocoding in the token steps' process (the way before).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil
import websockets

from omni.audio import load_audio
from omni.serve.client import read_events, ws_url
from omni.serve.launch import launched
from omni.tiny import write_tiny_models

RECORDINGS = Path("/usr/share/pocketsphinx/test/data")
MAX_SECONDS = 10.0
MAX_MESSAGE_BYTES = 1_000_000
START = {"type": "start", "format": "f32", "chunk_size": 10, "sample_rate": 16000}
END = {"type": "end"}
BAD = {  # kind -> the messages of such a question, and the error kind the server must answer with
    "empty": ([START, END], "empty_audio"),
    "nan": ([START, np.full(1600, np.nan, "<f4").tobytes(), END], "invalid_audio"),
    "not_audio": ([START | {"format": "file"}, b"not a wav " * 1000, END], "not_audio"),
    "too_long": ([START, np.zeros(int((MAX_SECONDS + 1) * 16000), "<f4").tobytes(), END], "too_long"),
    "malformed": (["{not json"], "bad_message"),
    "too_large": ([START | {"format": "file"}, b"\0" * (MAX_MESSAGE_BYTES + 1), END], "too_large"),
    "leaves": (None, None),  # leaves after the first text of its answer
}


async def send(ws, message: dict | str | bytes) -> None:
    await ws.send(json.dumps(message) if isinstance(message, dict) else message)


async def good(url: str, audio: np.ndarray) -> dict:
    """One question; its outcome, first packet (ms) and answer audio (s)."""
    async with websockets.connect(ws_url(url)) as ws:
        await send(ws, START)
        for i in range(0, len(audio), 1600):
            await send(ws, audio[i : i + 1600].astype("<f4").tobytes())
        await send(ws, END)
        asked, first, server = time.perf_counter(), None, {}
        async for event in read_events(ws):
            if event["type"] == "audio" and first is None:
                first = 1000 * (time.perf_counter() - asked)
            if event["type"] == "timing":
                server[event["name"]] = event["ms"]
            if event["type"] == "done":
                server["queued"] = event["queued_ms"]
                return {"outcome": "answered", "first_packet_ms": first, "audio_s": event["audio_seconds"], **server}
            if event["type"] == "error":
                return {"outcome": f"error {event['kind']}"}
    return {"outcome": "closed"}


async def bad(url: str, kind: str, audio: np.ndarray) -> dict:
    messages, expected = BAD[kind]
    async with websockets.connect(ws_url(url), max_size=None) as ws:
        if messages is None:  # a client that leaves mid-answer
            for message in (START, audio.astype("<f4").tobytes(), END):
                await send(ws, message)
            async for event in read_events(ws):
                if event["type"] == "text":
                    return {"outcome": "left"}
            return {"outcome": "closed"}
        for message in messages:
            await send(ws, message)
        async for event in read_events(ws):
            if event["type"] == "error":
                return {"outcome": "refused" if event["kind"] == expected else f"error {event['kind']}"}
    return {"outcome": "closed"}


async def load(
    url: str, clips: list[np.ndarray], args: argparse.Namespace, clients: int, requests: int
) -> tuple[list[dict], float]:
    plan = iter(range(requests))
    bad_kinds = itertools.cycle(BAD)
    deadline = time.monotonic() + args.seconds
    results: list[dict] = []

    async def client() -> None:
        for n in plan:
            if time.monotonic() > deadline:
                return
            audio = clips[n % len(clips)]
            kind = next(bad_kinds) if n % args.bad_every == args.bad_every - 1 else "good"
            try:
                result = await (good(url, audio) if kind == "good" else bad(url, kind, audio))
            except Exception as err:  # counted, not raised: a load test reports what went wrong
                result = {"outcome": f"exception {type(err).__name__}"}
            results.append({"kind": kind, **result})

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return results, time.perf_counter() - began


def watch_memory(process: psutil.Process, samples: list[int], stop: threading.Event) -> None:
    """The server's RSS every 0.2 s."""
    while not stop.wait(0.2):
        samples.append(rss(process))


def rss(process: psutil.Process) -> int:
    """The server's resident memory, its vocoder process's included."""
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="default: tiny random models")
    parser.add_argument("--decoder", type=Path)
    parser.add_argument("--vocoder", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=80, help="questions in all")
    parser.add_argument("--seconds", type=float, default=300, help="no question starts after this")
    parser.add_argument("--bad-every", type=int, default=4, help="every nth question is bad")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--first-chunk", type=int, default=0, help="the server's --first-chunk (0: Omega)")
    parser.add_argument("--vocoder-process", default="auto", help="the server's --vocoder-process (auto, on, off)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of 1 client then all; the ratio is their median")
    args = parser.parse_args()
    models = {"model": args.model, "decoder": args.decoder, "vocoder": args.vocoder}
    if args.model is None:
        models = write_tiny_models(Path(tempfile.mkdtemp(prefix="omni-load-")))
    flags = [f"--{name}={path}" for name, path in models.items()]
    flags += [f"--device={args.device}", f"--max-queue={2 * args.clients}", f"--max-batch={args.max_batch}"]
    flags += [f"--max-seconds={MAX_SECONDS}", f"--max-message-bytes={MAX_MESSAGE_BYTES}"]
    flags += [f"--max-new-tokens={args.max_new_tokens}", f"--first-chunk={args.first_chunk}"]
    flags += [f"--vocoder-process={args.vocoder_process}"]
    files = sorted(p for p in RECORDINGS.rglob("*.wav") if p.stat().st_size < 2 * 16000 * 8)  # under 8 s
    clips = [load_audio(p) for p in files]
    with launched(flags) as server:
        process = psutil.Process(server.process.pid)
        asyncio.run(good(server.url, clips[0]))  # the first answer of a process allocates what later ones reuse
        rss_samples, stop = [rss(process)], threading.Event()
        watcher = threading.Thread(target=watch_memory, args=(process, rss_samples, stop), daemon=True)
        watcher.start()
        rounds, singles, results, wall = [], [], [], 0.0  # alone, loaded in turn: drift touches both alike
        for _ in range(args.rounds):
            alone, _ = asyncio.run(load(server.url, clips, args, 1, max(args.requests // 4, 4)))
            loaded, seconds = asyncio.run(load(server.url, clips, args, args.clients, args.requests))
            rounds.append((first_packets(alone), first_packets(loaded)))
            singles, results, wall = singles + alone, results + loaded, wall + seconds
        stop.set()
        watcher.join()
        rss_samples.append(rss(process))
        status = httpx.get(f"{server.url}/health").json()
    failed = report(results, wall, rss_samples, status, args)
    print(f"\n| round | 1 client p50 / p90 | {args.clients} clients p50 / p90 | p90 loaded / p50 alone |")
    print("|---|---|---|---|")
    ratios = [loaded[1] / lone[0] for lone, loaded in rounds]
    for n, ((lone, loaded), ratio) in enumerate(zip(rounds, ratios, strict=True), 1):
        alone_ms, loaded_ms = f"{lone[0]:.0f} / {lone[1]:.0f} ms", f"{loaded[0]:.0f} / {loaded[1]:.0f} ms"
        print(f"| {n} | {alone_ms} | {loaded_ms} | {ratio:.2f}x |")
    print(f"\n{args.clients}-client p90 / 1-client p50, median of {args.rounds} rounds: {np.median(ratios):.2f}x")
    print("\nWhere the first packet's time goes, ms from the end of the question, p50 / p90 over all rounds:")
    print("| clients | waited to join | prefilled | first audio sent (server) | first audio read (client) |")
    print("|---|---|---|---|---|")
    for clients, answers in ((1, singles), (args.clients, results)):
        keys = ("queued", "prefill", "first_packet", "first_packet_ms")
        cells = ["{:.0f} / {:.0f}".format(*first_packets(answers, key)) for key in keys]
        print(f"| {clients} | {' | '.join(cells)} |")
    if failed:
        raise SystemExit(1)


def first_packets(results: list[dict], key: str = "first_packet_ms") -> tuple[float, float]:
    """p50 and p90 of the answered questions' first packets (ms; `key`: another of their times)."""
    times = [r[key] for r in results if r.get(key) is not None]
    return float(np.percentile(times, 50)), float(np.percentile(times, 90))


def report(results: list[dict], wall: float, rss: list[int], status: dict, args) -> bool:
    """The loaded run's figures; True if a good question was dropped or a bad one not refused."""
    answered = [r for r in results if r["outcome"] == "answered"]
    goods = [r for r in results if r["kind"] == "good"]
    audio = sum(r["audio_s"] for r in answered)
    dropped = len(goods) - len(answered)
    unexpected = [r for r in results if r["kind"] != "good" and r["outcome"] not in ("refused", "left")]
    mib = 1 << 20
    print(f"{len(results)} questions from {args.clients} clients in {wall:.1f} s ({len(goods)} good)")
    p50, p90 = first_packets(answered)
    print(f"first packet (client): p50 {p50:.0f} ms, p90 {p90:.0f} ms")
    print(f"throughput: {len(answered) / wall:.2f} answers/s, {audio / wall:.2f} s of answer audio per s")
    outcomes = Counter(f"{r['kind']}: {r['outcome']}" for r in results)
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(f"server errors by kind: {status['errors']}")
    batches, per_batch = status["batches"], status["batched"] / max(status["batches"], 1)
    print(f"server: served {status['served']}, cancelled {status['cancelled']}, places held now {status['active']}")
    print(f"server: {batches} batches, {per_batch:.2f} questions each")
    quarters = ", ".join(f"{rss[min(len(rss) - 1, q * len(rss) // 4)] / mib:.0f}" for q in (1, 2, 3))
    print(f"server RSS (its vocoder process's too): {rss[0] / mib:.0f} MiB before, ", end="")
    print(f"{quarters} MiB after each quarter of the run, ", end="")
    print(f"{rss[-1] / mib:.0f} MiB after, {max(rss) / mib:.0f} MiB peak")
    print(f"good questions dropped: {dropped}; bad ones not refused as they should be: {len(unexpected)}")
    return bool(dropped or unexpected or status["active"])


if __name__ == "__main__":
    main()
