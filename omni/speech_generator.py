"""Speak while writing: text, speech units and audio streamed from a spoken question (`omni generate` runs it).

    generator = SpeechGenerator(*load_parts(model_dir, decoder_dir, vocoder_dir))
    for event in generator("question.wav", chunk_size=40): ...   # prefill | text | units | audio | done

After every text token the LLM's new hidden state goes through the speech decoder; its greedy CTC
units accumulate, and once at least `chunk_size` (Omega) new units exist they all go to the vocoder
(the reference's semantics); the rest is flushed at the end. With `first_chunk` an answer's first audio is
its first units alone, out once that many exist (less to vocode before the first sound, and often fewer tokens to
wait for), the units already there after them vocoded next; Omega holds after it.
The decoder runs incrementally (only the new token's lambda frames, over cached keys and values) unless
`incremental=False`, the reference's full-prefix recomputation; both give the same units. A decoder configured with
`alignment: predicting` (LLaMA-Omni's released one) reads instead the state that chose each token, so a token's
units are out before the LLM reads it. `load_parts` also takes LLaMA-Omni's released checkpoint, or the directory
`python -m omni.convert.llama_omni` writes (its model/, decoder/ and vocoder/). With `vocoder_process=True` (CPU
models) the audio is made in a child process while the next tokens are written (`omni.vocoder.process`, what
`omni serve` does on a CPU): the same events, the audio's a little later.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from omni.audio import load_audio
from omni.config import DEMO_PARTS
from omni.data import Example, SpeechCollator
from omni.decoder_input import TextEmbeddings
from omni.model import OmniModel
from omni.prompt import SPEECH_TOKEN_ID, Turn
from omni.speech_decoder import SpeechDecoder
from omni.vocoder.base import Vocoder, load_vocoder
from omni.vocoder.process import VocoderProcess, Vocoding


@dataclass
class Event:
    kind: Literal["prefill", "text", "units", "audio", "done"]
    time: float  # seconds since the request began
    text: str = ""
    units: list[int] = field(default_factory=list)
    audio: np.ndarray | None = None  # float32 at `sample_rate`
    sample_rate: int = 0
    ready: float = 0.0  # audio events: when their units were all there (the rest of `time` is vocoding)
    request: Hashable = 0  # which request of a batch (its index, or the name it joined a LiveBatch with)


class SpeechGenerator:
    def __init__(
        self,
        model: OmniModel,
        decoder: SpeechDecoder,
        vocoder: Vocoder,
        join: Literal["crossfade", "bare"] = "crossfade",
        incremental: bool = True,
        pad_to_30s: bool | None = None,
        lookahead_units: int = 0,
        prefix_cache: bool = True,
        first_chunk: int | None = None,
        vocoder_process: bool = False,
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
        self.lookahead_units = lookahead_units  # each chunk's last units wait for the next: omni/vocoder/streaming.py
        self.prefix_cache = prefix_cache  # the prompt's text before the first speech, prefilled once (`_prefix`)
        self.first_chunk = first_chunk  # units that release an answer's first audio; None: Omega (the reference's)
        self.vocoder_process = vocoder_process  # live batches vocode in a child process (`omni.vocoder.process`)
        self._process: VocoderProcess | None = None
        self._prefix: tuple[torch.Tensor, DynamicCache] | None = None  # its token ids and keys and values
        encoder = model.config.encoder
        if pad_to_30s is not None:  # the reference pads every question to 30 s
            encoder = replace(encoder, pad_to_30s=pad_to_30s)
        c = model.config
        self.collate = SpeechCollator(model.prompt, encoder, model.encoder.n_mels, c.adaptor.stride, "left", False)
        self.device = next(model.adaptor.parameters()).device
        if vocoder_process and self.device.type != "cpu":
            raise ValueError(f"a vocoder process serves CPU models; these are on {self.device}")

    def _clock(self, start: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # queued kernels count
        return time.perf_counter() - start

    def _prefix_for(self, rows: list[torch.Tensor]) -> tuple[int, DynamicCache | None]:
        """The keys and values of the text every question starts with (the system prompt and the template up to the
        first speech), prefilled once: (its length, a copy for these rows), or (0, None) when a row starts otherwise
        (a conversation whose earlier turns are text). `rows`: each row's token ids without padding."""
        if not self.prefix_cache:
            return 0, None
        if self._prefix is None:
            prompt = self.model.prompt.encode(1)[0]  # a first question: the prefix is what precedes its speech
            ids = torch.tensor(prompt[: prompt.index(SPEECH_TOKEN_ID)], device=self.device)
            if not len(ids):
                self.prefix_cache = False
                return 0, None
            self._prefix = ids, self.model.base_llm.get_decoder()(input_ids=ids[None], use_cache=True).past_key_values
        ids, cache = self._prefix
        if any(len(r) <= len(ids) or not torch.equal(r[: len(ids)], ids) for r in rows):
            return 0, None
        copy = DynamicCache()
        for i, layer in enumerate(cache.layers):
            copy.update(layer.keys.repeat(len(rows), 1, 1, 1), layer.values.repeat(len(rows), 1, 1, 1), i)
        return len(ids), copy

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
        """Several requests answered together from the start; each event names its `request` (its index).
        `histories`: each request's earlier turns (omni.conversation keeps them), if any."""
        histories = histories or [()] * len(audios)
        if len(histories) != len(audios):
            raise ValueError(f"{len(audios)} questions but {len(histories)} histories")
        live = self.live(do_sample, temperature, top_p)
        yield from live.join(
            [
                Question(a, chunk_size, tuple(h), max_new_tokens, i)
                for i, (a, h) in enumerate(zip(audios, histories, strict=True))
            ]
        )
        while live:
            yield from live.step()

    def live(self, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0) -> LiveBatch:
        """An empty live batch over these parts: questions join it and leave it at token steps."""
        return LiveBatch(self, do_sample, temperature, top_p)

    def vocoding(self) -> Vocoding:
        """Where a live batch's audio is made: here, or in the one child process every batch shares (started again
        if it died)."""
        if not self.vocoder_process:
            return Vocoding(self.vocoder, self.join, self.lookahead_units)
        if self._process is None or not self._process.alive():
            self._process = VocoderProcess(self.vocoder, self.join, self.lookahead_units)
        return self._process


@dataclass
class Question:
    """One spoken question for a `LiveBatch`: its audio, Omega (None: the whole answer vocoded at the end), its
    conversation's earlier turns, its longest answer, and the name its events carry (`request`)."""

    audio: np.ndarray | str | Path
    chunk_size: int | None = 40
    history: Sequence[Turn] = ()
    max_new_tokens: int = 256
    request: Hashable = 0
    began: float | None = None  # when it was asked (time.perf_counter()): its events' times count from here


class LiveBatch:
    """The answers being written now. Questions join at any token step (`join`: prefilled together, then their
    LLM and speech-decoder caches are merged into the running ones, left-padded and masked) and leave when
    answered or cancelled (`leave`), so a question never waits for another's answer to end. Every row keeps its
    own positions, decoder frames and vocoder stream: its units are those it would get alone. A row's units go to
    the generator's `vocoding` as they complete a chunk, and its audio is an event once made; a row whose tokens
    ended waits in `finishing` (out of the LLM's batch) until its last audio is made, then is "done"."""

    def __init__(
        self, generator: SpeechGenerator, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0
    ):
        self.g = generator
        self.sampling = (do_sample, temperature, top_p)
        self.rows: list[_Request] = []
        self.finishing: list[_Request] = []  # written to the end, their last audio still being made
        self.vocoding = generator.vocoding()
        llm = generator.model.base_llm
        self.body, self.head = llm.get_decoder(), llm.get_output_embeddings()
        self.ends = generator.model.prompt.end_of_turn_ids
        self.predicting = generator.decoder.config.input.alignment == "predicting"
        self.cache: DynamicCache | None = None  # the LLM's keys and values, (rows, heads, T, d), left-padded
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=generator.device)
        self.position = torch.zeros(0, 1, dtype=torch.long, device=generator.device)  # each row's next position
        self.state = torch.zeros(0, 1, generator.model.hidden_size, device=generator.device)  # chose the next tokens
        self.logits = torch.zeros(0, 0, device=generator.device)  # of the next tokens
        self.frames: DynamicCache | None = None  # the speech decoder's, (rows, heads, F, d), left-padded
        self.frame_mask = torch.zeros(0, 0, dtype=torch.long, device=generator.device)

    def __len__(self) -> int:
        return len(self.rows) + len(self.finishing)

    @torch.no_grad()
    def join(self, questions: Sequence[Question]) -> list[Event]:
        """Prefill the questions together and add them to the running rows; their "prefill" events."""
        if not questions:
            return []
        g, now = self.g, time.perf_counter()
        clips = [q.audio if isinstance(q.audio, np.ndarray) else load_audio(q.audio) for q in questions]
        examples = [
            Example(str(i), c, None, None, None, history=tuple(q.history))
            for i, (c, q) in enumerate(zip(clips, questions, strict=True))
        ]
        batch = {k: v.to(g.device) for k, v in g.collate(examples).items()}
        embeds, mask = g.model.inputs_embeds(batch), batch["attention_mask"]
        pads = (mask.cumsum(-1) == 0).sum(-1)
        known, cache = g._prefix_for([ids[pad:] for ids, pad in zip(batch["input_ids"], pads.tolist(), strict=True)])
        if known:  # each row's padding moves behind the cached prefix: [prefix][padding][the rest]
            columns = torch.arange(mask.shape[1], device=mask.device)[None]
            order = torch.where(columns < known, columns + pads[:, None], columns)
            order = torch.where((columns >= known) & (columns < known + pads[:, None]), columns - known, order)
            mask = mask.gather(1, order)
            embeds = embeds.gather(1, order[..., None].expand(-1, -1, embeds.shape[-1]))
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each row's positions start at 0
        out = self.body(
            inputs_embeds=embeds[:, known:],
            attention_mask=mask,
            position_ids=positions[:, known:],
            past_key_values=cache,
            use_cache=True,
        )
        state = out.last_hidden_state[:, -1:]
        self.cache, self.mask = _stacked([(self.cache, self.mask), (out.past_key_values, mask)])
        self.frames, self.frame_mask = _stacked(
            [
                (self.frames, self.frame_mask),
                (None, self.frame_mask.new_zeros(len(questions), self.frame_mask.shape[1])),
            ],
            like=self.frames,
        )
        self.position = torch.cat([self.position, positions[:, -1:] + 1])
        self.state = torch.cat([self.state, state.to(self.state.dtype)])
        logits = self.head(state[:, -1])
        self.logits = logits if not len(self.logits) else torch.cat([self.logits, logits])
        new = [
            _Request(
                next(_streams),
                g.decoder.blank,
                q.request,
                q.chunk_size,
                q.max_new_tokens,
                now if q.began is None else q.began,
            )
            for q in questions
        ]
        self.rows += new
        return [Event("prefill", g._clock(r.began), request=r.request) for r in new]

    @torch.no_grad()
    def step(self) -> Iterator[Event]:
        """The next token of every row, its units and any audio they complete, each row's events as soon as they
        exist; rows still waiting for their first audio are vocoded first (the others have audio playing). Rows that
        end leave the LLM's batch once the step is read to its end. With only `finishing` rows, waits a little for
        their audio."""
        g = self.g
        if not self.rows:
            yield from self._heard(wait=0.01)
            return
        tokens = [g._pick(self.logits[i], *self.sampling) for i in range(len(self.rows))]
        ids = torch.tensor(tokens, device=g.device)[:, None]
        if not self.predicting:
            self._read(ids)  # the tokens' own states
        # "predicting": `state` chose these tokens, so their units need not wait for the LLM's next step
        labels = self._unit_labels(ids)
        finished = []
        for i in sorted(range(len(self.rows)), key=lambda i: self.rows[i].pushed > 0):
            r = self.rows[i]
            yield from self._advance(r, tokens[i], labels[i])
            if tokens[i] in self.ends or len(r.tokens) >= r.max_new_tokens:
                yield from self._finish(r)
                finished.append(r)
            yield from self._heard()
        if self.predicting:
            self._read(ids)  # the states that choose the next tokens
        for r in finished:
            self._forget(r.request)
            if not r.done:
                self.finishing.append(r)

    def leave(self, request: Hashable) -> None:
        """Drop a row now (answered, cancelled or interrupted): the others go on as they were, and nothing more of its
        audio is made."""
        for r in [*self.rows, *self.finishing]:
            if r.request == request:
                self.vocoding.drop(r.stream)
        self.finishing = [r for r in self.finishing if r.request != request]
        self._forget(request)

    def _advance(self, r: _Request, token: int, labels: list[int]) -> list[Event]:
        """A row's new token: its text and its units (greedy CTC continued across tokens); once at least Omega units
        wait (`first_chunk` for the first audio) they go to the vocoder."""
        g, events, at = self.g, [], r.request
        r.tokens.append(token)
        text = g.model.tokenizer.decode(r.tokens, skip_special_tokens=True)
        if len(text) > len(r.text) and not text.endswith("\ufffd"):  # hold back half a UTF-8 character
            events.append(Event("text", g._clock(r.began), text=text[len(r.text) :], request=at))
            r.text = text
        new = []
        for label in labels:  # merge repeats, drop blanks
            if label != g.decoder.blank and label != r.previous:
                new.append(label)
            r.previous = label
        if new:
            r.pending += new
            r.units += new
            events.append(Event("units", g._clock(r.began), units=new, request=at))
        omega, pieces = r.chunk_size, [r.pending]
        if omega is not None and not r.pushed and g.first_chunk is not None:  # the answer's first audio
            omega, pieces = min(omega, g.first_chunk), [r.pending[: g.first_chunk], r.pending[g.first_chunk :]]
        if omega is not None and len(r.pending) >= omega:
            for piece in filter(None, pieces):  # a short first piece is heard while the rest is vocoded
                self._push(r, piece)
            r.pending = []
        return events

    def _finish(self, r: _Request) -> list[Event]:
        """A row's end: the rest of its text; the rest of its units go to the vocoder, the stream's last."""
        events = []
        text = self.g.model.tokenizer.decode(r.tokens, skip_special_tokens=True)
        if text != r.text:
            events.append(Event("text", self.g._clock(r.began), text=text[len(r.text) :], request=r.request))
            r.text = text
        self._push(r, r.pending, last=True)
        r.pending = []
        return events

    def _push(self, r: _Request, units: list[int], last: bool = False) -> None:
        r.ready.append(self.g._clock(r.began))  # when this piece's units were all there
        self.vocoding.push(r.stream, units, last=last, first=not r.pushed)
        r.pushed += 1

    def _heard(self, wait: float = 0.0) -> Iterator[Event]:
        """The audio made since, as events (a row's last piece only if it is not empty), and the "done" of each row
        whose last audio it was: its whole text, units and audio."""
        made = self.vocoding.take(wait)
        if not made:  # most calls: after every row of every step
            return
        rows = {r.stream: r for r in [*self.rows, *self.finishing]}
        rate = self.g.vocoder.sample_rate
        for stream, audio, last in made:
            if (r := rows.get(stream)) is None:  # left meanwhile
                continue
            ready, at = r.ready.popleft(), r.request
            r.pieces.append(audio)
            if len(audio) or not last:
                yield Event("audio", self.g._clock(r.began), audio=audio, sample_rate=rate, ready=ready, request=at)
            if last:
                r.done = True
                self.finishing = [f for f in self.finishing if f is not r]
                whole = np.concatenate(r.pieces)
                yield Event("done", self.g._clock(r.began), r.text, r.units, whole, rate, request=at)

    def _forget(self, request: Hashable) -> None:
        """A row out of the LLM's and the speech decoder's batch."""
        keep = [i for i, r in enumerate(self.rows) if r.request != request]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.mask, self.position, self.state, self.logits = (
            t[index] for t in (self.mask, self.position, self.state, self.logits)
        )
        self.frame_mask = self.frame_mask[index]
        self.cache, self.mask = _selected(self.cache, self.mask, index)
        self.frames, self.frame_mask = _selected(self.frames, self.frame_mask, index, already=True)

    def _read(self, ids: torch.Tensor) -> None:
        """The LLM reads one token per row: its state (B, 1, H) and the logits of the next ones."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        out = self.body(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=self.position,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache, self.position = out.past_key_values, self.position + 1
        self.state = out.last_hidden_state
        self.logits = self.head(out.last_hidden_state[:, -1])

    def _unit_labels(self, ids: torch.Tensor) -> list[list[int]]:
        """Best class of each decoder frame of the new tokens, per row."""
        decoder, upsample = self.g.decoder, self.g.decoder.config.upsample
        if not self.g.incremental:  # the reference: each row's whole prefix again, keeping the new token's frames
            labels = []
            for i, r in enumerate(self.rows):
                r.prefix.append((self.state[i : i + 1], ids[i : i + 1]))
                states, tokens = (torch.cat(part, dim=1) for part in zip(*r.prefix, strict=True))
                frames = decoder(states, torch.tensor([states.shape[1]], device=states.device), tokens)[0]
                labels.append(frames[0, -upsample:].argmax(-1).tolist())
            return labels
        done = (
            self.frame_mask.sum(1, keepdim=True)
            if self.frame_mask.numel()
            else self.frame_mask.new_zeros(len(self.rows), 1)
        )
        positions = done + torch.arange(upsample, device=done.device)[None, :]
        self.frame_mask = torch.cat([self.frame_mask, self.frame_mask.new_ones(len(self.rows), upsample)], dim=1)
        logits, self.frames = decoder.step(self.state, self.frames, ids, self.frame_mask, positions)
        return logits.argmax(-1).tolist()


_streams = itertools.count()  # every row's vocoder stream its own name, whichever batch it is in


@dataclass
class _Request:
    """What one row of a live batch has produced so far."""

    stream: int  # its audio's stream in the batch's vocoding
    previous: int  # the last frame's best class, for merging repeats across tokens
    request: Hashable  # the name its events carry
    chunk_size: int | None  # Omega; None: vocoded whole at the end
    max_new_tokens: int
    began: float  # when it was asked: its events' times count from here
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    pending: list[int] = field(default_factory=list)
    units: list[int] = field(default_factory=list)
    pieces: list[np.ndarray] = field(default_factory=list)  # its audio so far
    pushed: int = 0  # pieces sent to the vocoder
    ready: deque[float] = field(default_factory=deque)  # when the units of each piece still being vocoded were there
    done: bool = False  # its last audio is made
    prefix: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # the reference's full pass


def _stacked(
    parts: list[tuple[DynamicCache | None, torch.Tensor]], like: DynamicCache | None = None
) -> tuple[DynamicCache | None, torch.Tensor]:
    """Caches and their masks (rows, T_i) joined along the rows, each left-padded (masked) to the longest; a part
    without a cache (no frames yet) gets masked zeros shaped like the others'."""
    width = max(mask.shape[1] for _, mask in parts)
    masks = [torch.cat([mask.new_zeros(mask.shape[0], width - mask.shape[1]), mask], dim=1) for _, mask in parts]
    template = next((c for c, _ in parts if c is not None and c.get_seq_length()), None)
    if template is None or width == 0:
        return None, torch.cat(masks)
    joined = DynamicCache()
    for layer, reference in enumerate(template.layers):
        keys, values = [], []
        for (cache, mask), _ in zip(parts, masks, strict=True):
            rows = mask.shape[0]
            if not rows:
                continue
            if cache is None:
                shape = (rows, reference.keys.shape[1], width, reference.keys.shape[3])
                keys.append(reference.keys.new_zeros(shape))
                values.append(reference.values.new_zeros(shape))
                continue
            k, v = cache.layers[layer].keys, cache.layers[layer].values
            pad = width - k.shape[2]
            keys.append(F.pad(k, (0, 0, pad, 0)))
            values.append(F.pad(v, (0, 0, pad, 0)))
        joined.update(torch.cat(keys), torch.cat(values), layer)
    return joined, torch.cat(masks)


def _selected(
    cache: DynamicCache | None, mask: torch.Tensor, index: torch.Tensor, already: bool = False
) -> tuple[DynamicCache | None, torch.Tensor]:
    """The cache's rows at `index` (the mask already selected when `already`), less the padding all of them have."""
    if not already:
        mask = mask[index] if mask.shape[0] != len(index) else mask
    if cache is not None:
        cache.batch_select_indices(index)
    if not len(index) or not mask.numel():
        return (None if not len(index) else cache), mask
    unused = int((mask.cumsum(1) == 0).all(0).sum())  # leading columns every row pads
    if unused and cache is not None:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]
    return cache, mask[:, unused:]


def load_parts(
    model: Path | None, decoder: Path | None, vocoder: Path | None, device: str = "cpu", vocoder_dtype: str = "auto"
) -> tuple[OmniModel, SpeechDecoder, Vocoder]:
    """The three parts `omni generate`, `omni serve` and the evaluations speak with. `model` is a stage-1 model
    directory, a directory holding model/, decoder/ and vocoder/ (what `omni.convert.llama_omni` writes), or
    LLaMA-Omni's released checkpoint itself; a part not named comes from there, else from the demo's runs. A decoder
    that reads token embeddings shares the model's table. `vocoder_dtype`: its HiFi-GAN's (`load_vocoder`)."""
    from omni.convert.llama_omni import DECODER_DIR, MODEL_DIR, VOCODER_DIR, is_llama_omni, load_llama_omni

    model = model or DEMO_PARTS[0]
    if is_llama_omni(model):
        bundle = model
        omni_model, speech_decoder = load_llama_omni(model)
        if decoder is not None:  # another decoder for the released model
            speech_decoder = SpeechDecoder.from_pretrained(decoder, TextEmbeddings.from_model(omni_model))
        if not (vocoder or (bundle / VOCODER_DIR).is_dir()):
            raise FileNotFoundError("name LLaMA-Omni's unit vocoder: --vocoder DIR (g_00500000 and config.json)")
    else:
        bundle = model if (model / MODEL_DIR).is_dir() and (model / DECODER_DIR).is_dir() else None
        if bundle is not None:
            model, decoder = bundle / MODEL_DIR, decoder or bundle / DECODER_DIR
        omni_model = OmniModel.from_pretrained(model)
        speech_decoder = SpeechDecoder.from_pretrained(decoder or DEMO_PARTS[1], TextEmbeddings.from_model(omni_model))
    if vocoder is None:
        vocoder = bundle / VOCODER_DIR if bundle and (bundle / VOCODER_DIR).is_dir() else DEMO_PARTS[2]
    return omni_model.to(device), speech_decoder.to(device), load_vocoder(vocoder, device, vocoder_dtype)
