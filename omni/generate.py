"""Speak while writing: text, speech units and audio streamed from a spoken question.

    python -m omni.generate question.wav --chunk-size 40 -o answer.wav
    python -m omni.generate question.wav --model runs/stage1_demo/model --decoder runs/stage2_demo/model \
        --vocoder runs/vocoder_demo/model --chunk-size 10 --sample-rate 16000 -o answer.wav
    python -m omni.generate follow_up.wav --conversation chat.json -o answer2.wav   # in the context of chat.json

After every text token the LLM's new hidden state goes through the speech decoder; its greedy CTC
units accumulate, and once at least `chunk_size` (Omega) new units exist they all go to the vocoder
(the reference's semantics); the rest is flushed at the end. The decoder runs incrementally (only the
new token's lambda frames, over cached keys and values) unless `incremental=False`, the reference's
full-prefix recomputation; both give the same units. A decoder configured with `alignment: predicting`
(LLaMA-Omni's released one) reads instead the state that chose each token, so a token's units are out
before the LLM reads it. `--model` also takes LLaMA-Omni's released checkpoint, or the directory
`python -m omni.convert.llama_omni` writes (its model/, decoder/ and vocoder/).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile
import torch
from transformers import DynamicCache

from omni.audio import load_audio
from omni.conversation import Conversation
from omni.data import Example, SpeechCollator
from omni.model import OmniModel
from omni.prompt import Turn
from omni.speech_decoder import SpeechDecoder
from omni.vocoder.base import Vocoder, load_vocoder, resample
from omni.vocoder.streaming import StreamingVocoder


@dataclass
class Event:
    kind: Literal["prefill", "text", "units", "audio", "done"]
    time: float  # seconds since the request began
    text: str = ""
    units: list[int] = field(default_factory=list)
    audio: np.ndarray | None = None  # float32 at `sample_rate`
    sample_rate: int = 0
    ready: float = 0.0  # audio events: when their units were all there (the rest of `time` is vocoding)
    request: int = 0  # which request of a batch


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
        if decoder.config.num_units > vocoder.num_units:
            raise ValueError(
                f"the speech decoder predicts {decoder.config.num_units} units but the vocoder speaks only "
                f"{vocoder.num_units}: they were trained on different codebooks"
            )
        if decoder.llm_hidden_size != model.hidden_size:
            raise ValueError(
                f"the speech decoder reads states of width {decoder.llm_hidden_size}, the LLM's are {model.hidden_size}"
            )
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

    def __call__(
        self,
        audio: np.ndarray | str | Path,
        chunk_size: int | None = 40,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        history: Sequence[Turn] = (),
    ) -> Iterator[Event]:
        """Events of one request as they happen; `chunk_size=None` vocodes the whole answer at the end;
        `history`: the conversation's earlier turns."""
        return self.batch([audio], chunk_size, max_new_tokens, do_sample, temperature, top_p, [history])

    @torch.no_grad()
    def batch(
        self,
        audios: list[np.ndarray | str | Path],
        chunk_size: int | None = 40,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        histories: list[Sequence[Turn]] | None = None,
    ) -> Iterator[Event]:
        """Several requests in one batch (left-padded, for throughput); each event names its `request`.
        `histories`: each request's earlier turns (omni.conversation keeps them), if any."""
        start = time.perf_counter()
        clips = [a if isinstance(a, np.ndarray) else load_audio(a) for a in audios]
        histories = histories or [()] * len(clips)
        if len(histories) != len(clips):
            raise ValueError(f"{len(clips)} questions but {len(histories)} histories")
        examples = [
            Example(str(i), clip, None, None, None, history=tuple(history))
            for i, (clip, history) in enumerate(zip(clips, histories, strict=True))
        ]
        batch = {k: v.to(self.device) for k, v in self.collate(examples).items()}
        llm = self.model.base_llm
        body, head = llm.get_decoder(), llm.get_output_embeddings()
        mask = batch["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each row's positions start at 0
        embeds = self.model.inputs_embeds(batch)
        out = body(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True)
        past, state, position = out.past_key_values, out.last_hidden_state[:, -1:], positions[:, -1:] + 1
        logits = head(state[:, -1])
        for i in range(len(clips)):
            yield Event("prefill", self._clock(start), request=i)

        def llm_step(tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            """The LLM reads the picked tokens: their states (B, 1, H) and the logits of the next ones."""
            nonlocal mask, past, position
            mask = torch.cat([mask, mask.new_ones(len(clips), 1)], dim=1)
            ids = torch.tensor(tokens, device=self.device)[:, None]
            out = body(input_ids=ids, attention_mask=mask, position_ids=position, past_key_values=past, use_cache=True)
            past, position = out.past_key_values, position + 1
            return out.last_hidden_state, head(out.last_hidden_state[:, -1])

        requests = [_Request(StreamingVocoder(self.vocoder, self.join), self.decoder.blank) for _ in clips]
        ends, pad = self.model.prompt.end_of_turn_ids, min(self.model.prompt.end_of_turn_ids)
        predicting = self.decoder.config.alignment == "predicting"
        cache, states = None, []
        for _ in range(max_new_tokens):
            tokens = [
                pad if r.done else self._pick(logits[i], do_sample, temperature, top_p) for i, r in enumerate(requests)
            ]
            if not predicting:
                state, logits = llm_step(tokens)  # the tokens' own states
            # "predicting": `state` chose these tokens, so their units need not wait for the LLM's next step
            read = state
            if self.decoder.config.token_embeddings:  # each state with its token's embedding, as in training
                embedded = self.model.token_embeddings(torch.tensor(tokens, device=self.device)[:, None])
                read = torch.cat([state, embedded.to(state.dtype)], dim=-1)
            labels, cache = self._unit_labels(read, cache, states)
            for i, r in enumerate(requests):
                if not r.done:
                    yield from self._advance(r, i, tokens[i], labels[i], chunk_size, start)
                    if tokens[i] in ends:
                        yield from self._finish(r, i, start)
            if all(r.done for r in requests):
                break
            if predicting:
                state, logits = llm_step(tokens)  # the states that choose the next tokens
        for i, r in enumerate(requests):
            if not r.done:
                yield from self._finish(r, i, start)

    def _unit_labels(
        self, state: torch.Tensor, cache: DynamicCache | None, states: list[torch.Tensor]
    ) -> tuple[list[list[int]], DynamicCache | None]:
        """Best class of each decoder frame of the new answer states (B, 1, H), per request."""
        if self.incremental:
            frames, cache = self.decoder.step(state, cache)
        else:  # the reference: the whole prefix again, keeping the new token's frames
            states.append(state)
            prefix = torch.cat(states, dim=1)
            lengths = torch.full((len(prefix),), prefix.shape[1], device=self.device)
            frames = self.decoder(prefix, lengths)[0][:, -self.decoder.config.upsample :]
        return frames.argmax(-1).tolist(), cache

    def _advance(
        self, r: _Request, i: int, token: int, labels: list[int], chunk_size: int | None, start: float
    ) -> Iterator[Event]:
        r.tokens.append(token)
        text = self.model.tokenizer.decode(r.tokens, skip_special_tokens=True)
        if len(text) > len(r.text) and not text.endswith("\ufffd"):  # hold back half a UTF-8 character
            yield Event("text", self._clock(start), text=text[len(r.text) :], request=i)
            r.text = text
        new = []
        for label in labels:  # greedy CTC, continued across tokens: merge repeats, drop blanks
            if label != self.decoder.blank and label != r.previous:
                new.append(label)
            r.previous = label
        if new:
            r.pending += new
            r.units += new
            yield Event("units", self._clock(start), units=new, request=i)
        if chunk_size is not None and len(r.pending) >= chunk_size:
            ready = self._clock(start)
            r.pieces.append(r.stream.push(r.pending))
            r.pending = []
            rate = self.vocoder.sample_rate
            yield Event("audio", self._clock(start), audio=r.pieces[-1], sample_rate=rate, ready=ready, request=i)

    def _finish(self, r: _Request, i: int, start: float) -> Iterator[Event]:
        r.done = True
        text = self.model.tokenizer.decode(r.tokens, skip_special_tokens=True)
        if text != r.text:
            yield Event("text", self._clock(start), text=text[len(r.text) :], request=i)
            r.text = text
        ready, rate = self._clock(start), self.vocoder.sample_rate
        tail = [r.stream.push(r.pending), r.stream.flush()]
        r.pieces += tail
        if sum(len(t) for t in tail):
            yield Event(
                "audio", self._clock(start), audio=np.concatenate(tail), sample_rate=rate, ready=ready, request=i
            )
        whole = np.concatenate(r.pieces)
        yield Event("done", self._clock(start), r.text, r.units, whole, rate, request=i)


@dataclass
class _Request:
    """What one request of a batch has produced so far."""

    stream: StreamingVocoder
    previous: int  # the last frame's best class, for merging repeats across tokens
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    pending: list[int] = field(default_factory=list)
    units: list[int] = field(default_factory=list)
    pieces: list[np.ndarray] = field(default_factory=list)
    done: bool = False


DEMO_PARTS = (Path("runs/stage1_demo/model"), Path("runs/stage2_demo/model"), Path("runs/vocoder_demo/model"))


def load_parts(
    model: Path | None, decoder: Path | None, vocoder: Path | None, device: str = "cpu"
) -> tuple[OmniModel, SpeechDecoder, Vocoder]:
    """The three parts `main` speaks with. `model` is a stage-1 model directory, a directory holding model/,
    decoder/ and vocoder/ (what `omni.convert.llama_omni` writes), or LLaMA-Omni's released checkpoint itself;
    a part not named comes from there, else from the demo's runs."""
    from omni.convert.llama_omni import DECODER_DIR, MODEL_DIR, VOCODER_DIR, is_llama_omni, load_llama_omni

    model = model or DEMO_PARTS[0]
    if is_llama_omni(model):
        bundle = model
        omni_model, speech_decoder = load_llama_omni(model)
        if decoder is not None:  # another decoder for the released model
            speech_decoder = SpeechDecoder.from_pretrained(decoder)
        if not (vocoder or (bundle / VOCODER_DIR).is_dir()):
            raise FileNotFoundError("name LLaMA-Omni's unit vocoder: --vocoder DIR (g_00500000 and config.json)")
    else:
        bundle = model if (model / MODEL_DIR).is_dir() and (model / DECODER_DIR).is_dir() else None
        if bundle is not None:
            model, decoder = bundle / MODEL_DIR, decoder or bundle / DECODER_DIR
        omni_model = OmniModel.from_pretrained(model)
        speech_decoder = SpeechDecoder.from_pretrained(decoder or DEMO_PARTS[1])
    if vocoder is None:
        vocoder = bundle / VOCODER_DIR if bundle and (bundle / VOCODER_DIR).is_dir() else DEMO_PARTS[2]
    return omni_model.to(device), speech_decoder.to(device), load_vocoder(vocoder, device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", type=Path, help="the spoken question (any format soundfile reads)")
    parser.add_argument(
        "--model",
        type=Path,
        help=f"stage-1 model, converted LLaMA-Omni directory or LLaMA-Omni's checkpoint (default {DEMO_PARTS[0]})",
    )
    parser.add_argument("--decoder", type=Path, help=f"speech decoder (default: the model's, else {DEMO_PARTS[1]})")
    parser.add_argument("--vocoder", type=Path, help=f"unit vocoder (default: the model's, else {DEMO_PARTS[2]})")
    parser.add_argument("--chunk-size", type=int, default=40, help="Omega: minimum units per vocoder call; 0 = offline")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--join", choices=["crossfade", "bare"], default="crossfade")
    parser.add_argument("--sample-rate", type=int, default=16000, help="rate of the written answer")
    parser.add_argument("-o", "--output", type=Path, default=Path("answer.wav"))
    parser.add_argument(
        "--conversation", type=Path, help="a saved conversation to answer in (created if missing, the turn added)"
    )
    parser.add_argument("--text", help="the question's words (needed when the model reads earlier questions as text)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    question = load_audio(args.audio)  # a bad question fails before the models load
    conversation = None
    if args.conversation:
        conversation = Conversation.load(args.conversation) if args.conversation.exists() else Conversation()
    generator = SpeechGenerator(*load_parts(args.model, args.decoder, args.vocoder, args.device), join=args.join)
    sampling = {"do_sample": args.sample, "temperature": args.temperature, "top_p": args.top_p}
    if conversation is not None:
        chunk = args.chunk_size or None
        events = conversation.ask(generator, question, args.text, chunk, args.max_new_tokens, **sampling)
    else:
        events = generator(question, args.chunk_size or None, args.max_new_tokens, **sampling)
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
    if conversation is not None:
        turns = len(conversation.turns) // 2
        print(f"conversation of {turns} exchanges saved to {conversation.save(args.conversation)}")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
