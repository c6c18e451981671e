"""Speak while writing: text, speech units and audio streamed from a spoken question.

    python -m omni.generate question.wav --chunk-size 40 -o answer.wav
    python -m omni.generate question.wav --model runs/stage1_demo/model --decoder runs/stage2_demo/model \
        --vocoder runs/vocoder_demo/model --chunk-size 10 --sample-rate 16000 -o answer.wav

After every text token the LLM's new hidden state goes through the speech decoder; its greedy CTC
units accumulate, and once at least `chunk_size` (Omega) new units exist they all go to the vocoder
(the reference's semantics); the rest is flushed at the end. The decoder runs incrementally (only the
new token's lambda frames, over cached keys and values) unless `incremental=False`, the reference's
full-prefix recomputation; both give the same units.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile
import torch

from omni.audio import load_audio
from omni.data import Example, SpeechCollator
from omni.model import OmniModel
from omni.speech_decoder import SpeechDecoder
from omni.vocoder.streaming import StreamingVocoder, Vocoder, resample


@dataclass
class Event:
    kind: Literal["prefill", "text", "units", "audio", "done"]
    time: float  # seconds since the request began
    text: str = ""
    units: list[int] = field(default_factory=list)
    audio: np.ndarray | None = None  # float32 at `sample_rate`
    sample_rate: int = 0
    ready: float = 0.0  # audio events: when their units were all there (the rest of `time` is vocoding)


class SpeechGenerator:
    def __init__(
        self,
        model: OmniModel,
        decoder: SpeechDecoder,
        vocoder: Vocoder,
        join: Literal["crossfade", "bare"] = "crossfade",
        incremental: bool = True,
        pad_to_30s: bool | None = None,
    ):
        self.model = model.eval()
        self.decoder = decoder.eval()
        self.vocoder = vocoder
        self.join = join
        self.incremental = incremental
        encoder = model.config.encoder
        if pad_to_30s is not None:  # the reference pads every question to 30 s
            encoder = replace(encoder, pad_to_30s=pad_to_30s)
        c = model.config
        self.collate = SpeechCollator(model.prompt, encoder, model.encoder.n_mels, c.adaptor.stride, "left", False)
        self.device = next(model.adaptor.parameters()).device

    def _clock(self, start: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # queued kernels count
        return time.perf_counter() - start

    def _pick(self, logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float) -> int:
        if not do_sample:
            return int(logits.argmax(-1))
        probs = torch.softmax(logits.float() / temperature, -1)
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        sorted_probs = sorted_probs * keep
        return int(order[torch.multinomial(sorted_probs / sorted_probs.sum(), 1)])

    @torch.no_grad()
    def __call__(
        self,
        audio: np.ndarray | str | Path,
        chunk_size: int | None = 40,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ) -> Iterator[Event]:
        """Events as they happen; `chunk_size=None` vocodes the whole answer at the end (offline)."""
        start = time.perf_counter()
        if not isinstance(audio, np.ndarray):
            audio = load_audio(audio)
        batch = {k: v.to(self.device) for k, v in self.collate([Example("request", audio, None, None, None)]).items()}
        llm = self.model.base_llm
        body, head = llm.get_decoder(), llm.get_output_embeddings()
        out = body(
            inputs_embeds=self.model.inputs_embeds(batch), attention_mask=batch["attention_mask"], use_cache=True
        )
        past, logits = out.past_key_values, head(out.last_hidden_state[:, -1])
        yield Event("prefill", self._clock(start))

        tokenizer, ends = self.model.tokenizer, self.model.prompt.end_of_turn_ids
        stream = StreamingVocoder(self.vocoder, self.join)
        tokens: list[int] = []
        states: list[torch.Tensor] = []
        text, pending, units, pieces = "", [], [], []
        cache, previous = None, self.decoder.blank
        for _ in range(max_new_tokens):
            token = self._pick(logits[0], do_sample, temperature, top_p)
            tokens.append(token)
            out = body(input_ids=torch.tensor([[token]], device=self.device), past_key_values=past, use_cache=True)
            past, state = out.past_key_values, out.last_hidden_state  # the token's state: what the decoder reads
            logits = head(state[:, -1])
            now = tokenizer.decode(tokens, skip_special_tokens=True)
            if len(now) > len(text) and not now.endswith("\ufffd"):  # hold back half a UTF-8 character
                yield Event("text", self._clock(start), text=now[len(text) :])
                text = now
            if self.incremental:
                frames, cache = self.decoder.step(state, cache)
            else:  # the reference: the whole prefix again, keeping the new token's frames
                states.append(state)
                prefix = torch.cat(states, dim=1)
                frames = self.decoder(prefix, torch.tensor([prefix.shape[1]], device=self.device))[0]
                frames = frames[:, -self.decoder.config.upsample :]
            new = []
            for label in frames[0].argmax(-1).tolist():
                if label != self.decoder.blank and label != previous:
                    new.append(label)
                previous = label
            if new:
                pending += new
                units += new
                yield Event("units", self._clock(start), units=new)
            if chunk_size is not None and len(pending) >= chunk_size:
                ready = self._clock(start)
                pieces.append(stream.push(pending))
                pending = []
                rate = self.vocoder.sample_rate
                yield Event("audio", self._clock(start), audio=pieces[-1], sample_rate=rate, ready=ready)
            if token in ends:
                break
        now = tokenizer.decode(tokens, skip_special_tokens=True)
        if now != text:
            yield Event("text", self._clock(start), text=now[len(text) :])
            text = now
        ready = self._clock(start)
        if pending:
            pieces.append(stream.push(pending))
        pieces.append(stream.flush())
        tail = np.concatenate(pieces[-2:] if pending else pieces[-1:])
        if len(tail):
            yield Event("audio", self._clock(start), audio=tail, sample_rate=self.vocoder.sample_rate, ready=ready)
        whole = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        yield Event("done", self._clock(start), text, units, whole, self.vocoder.sample_rate)


def main(argv: list[str] | None = None) -> None:
    from omni.vocoder.streaming import MelUnitVocoder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", type=Path, help="the spoken question (any format soundfile reads)")
    parser.add_argument("--model", type=Path, default=Path("runs/stage1_demo/model"), help="stage-1 model")
    parser.add_argument("--decoder", type=Path, default=Path("runs/stage2_demo/model"), help="speech decoder")
    parser.add_argument("--vocoder", type=Path, default=Path("runs/vocoder_demo/model"), help="unit vocoder")
    parser.add_argument("--chunk-size", type=int, default=40, help="Omega: minimum units per vocoder call; 0 = offline")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--join", choices=["crossfade", "bare"], default="crossfade")
    parser.add_argument("--sample-rate", type=int, default=16000, help="rate of the written answer")
    parser.add_argument("-o", "--output", type=Path, default=Path("answer.wav"))
    args = parser.parse_args(argv)
    generator = SpeechGenerator(
        OmniModel.from_pretrained(args.model),
        SpeechDecoder.from_pretrained(args.decoder),
        MelUnitVocoder.from_pretrained(args.vocoder),
        join=args.join,
    )
    events = generator(
        args.audio, args.chunk_size or None, args.max_new_tokens, args.sample, args.temperature, args.top_p
    )
    first_audio = None
    for event in events:
        if event.kind == "text":
            print(event.text, end="", flush=True)
        elif event.kind == "audio" and first_audio is None:
            first_audio = event.time
        elif event.kind == "done":
            soundfile.write(args.output, resample(event.audio, event.sample_rate, args.sample_rate), args.sample_rate)
            seconds = len(event.audio) / event.sample_rate
            first = first_audio or event.time
            print(f"\n{len(event.units)} units, {seconds:.1f} s of speech in {event.time:.2f} s", end="")
            print(f"; first audio after {first:.2f} s; written to {args.output}")


if __name__ == "__main__":
    main()
