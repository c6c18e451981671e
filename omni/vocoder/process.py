"""The streamed answers of a live batch vocoded as their units come: here, or in a process of its own beside it.

`Vocoding` keeps one `StreamingVocoder` per answer (a stream, named by an int) and makes each pushed piece's audio at
once; `take` hands over what was made since it was last called. `VocoderProcess` does the same work in a child
process, so that on a CPU the vocoding (about half of what an answer costs with the tiny models: docs/results.md)
runs on another core while the LLM and the speech decoder take the next token steps; `take` then returns what is
ready. Each stream's audio comes back in the order its pieces were pushed; a stream's first piece (an answer's first
audio, what its listener waits for) goes before the later pieces of other answers that wait with it.

    vocoding = VocoderProcess(vocoder)      # or Vocoding(vocoder): the same calls
    vocoding.push(7, units, first=True); ...; vocoding.push(7, rest, last=True)
    for stream, audio, last in vocoding.take(wait=0.05): ...
"""

from __future__ import annotations

import contextlib
import pickle
import socket
import subprocess
import sys
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Literal

import numpy as np
import torch

from omni.vocoder.base import Vocoder
from omni.vocoder.streaming import StreamingVocoder

Made = tuple[int, np.ndarray, bool]  # a stream, its new audio, and whether that was its last (the stream is closed)


class Vocoding:
    """The streams vocoded in this process, each piece when it is pushed."""

    def __init__(self, vocoder: Vocoder, join: Literal["crossfade", "bare"] = "crossfade", lookahead_units: int = 0):
        self.vocoder, self.join, self.lookahead_units = vocoder, join, lookahead_units
        self.streams: dict[int, StreamingVocoder] = {}
        self.made: list[Made] = []

    def push(self, stream: int, units: Sequence[int], last: bool = False, first: bool = False) -> None:
        """A stream's next units (a new stream starts with its first); `last`: the stream ends after them, its held
        audio flushed. `first` only orders a `VocoderProcess`'s work."""
        self.made.append((stream, self.speak(stream, units, last), last))

    def speak(self, stream: int, units: Sequence[int], last: bool) -> np.ndarray:
        """The audio the stream can play after these units."""
        if stream not in self.streams:
            self.streams[stream] = StreamingVocoder(self.vocoder, self.join, lookahead_units=self.lookahead_units)
        audio = self.streams[stream].push(units)
        if last:
            audio = np.concatenate([audio, self.streams.pop(stream).flush()])
        return audio

    def drop(self, stream: int) -> None:
        """A stream no longer wanted (its answer was interrupted or left): nothing more of it is made or returned."""
        self.streams.pop(stream, None)
        self.made = [m for m in self.made if m[0] != stream]

    def take(self, wait: float = 0.0) -> list[Made]:
        """The audio made since the last call, in the order it was made (`wait` matters to a `VocoderProcess`)."""
        made, self.made = self.made, []
        return made


class VocoderProcess(Vocoding):
    """`Vocoding` in a child process (`python -m omni.vocoder.process`, sent a copy of the vocoder, `threads` torch
    threads of its own): `push` and `drop` return at once, `take` returns the audio made so far, waiting up to `wait`
    seconds for some when none is there yet. The child ends with this object, with its parent, or when `close` is
    called; if it dies, `take` says so (`RuntimeError`) and `alive` turns False. It is started as a command, not by
    `multiprocessing`, so that a script need not guard its `__main__` for it."""

    def __init__(
        self,
        vocoder: Vocoder,
        join: Literal["crossfade", "bare"] = "crossfade",
        lookahead_units: int = 0,
        threads: int = 1,
    ):
        super().__init__(vocoder, join, lookahead_units)
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "omni.vocoder.process", str(theirs.fileno()), str(threads)]
        self._process = subprocess.Popen(command, pass_fds=[theirs.fileno()])
        theirs.close()
        self._conn = Connection(ours.detach())
        self._stop = weakref.finalize(self, _stop, self._conn, self._process)
        # plain pickle: `send` would share the weights' memory the way only `multiprocessing` children can open
        self._conn.send_bytes(pickle.dumps(Vocoding(vocoder, join, lookahead_units)))

    def push(self, stream: int, units: Sequence[int], last: bool = False, first: bool = False) -> None:
        self._send(("push", stream, list(units), last, first))

    def drop(self, stream: int) -> None:
        self._send(("drop", stream))

    def take(self, wait: float = 0.0) -> list[Made]:
        made: list[Made] = []
        try:
            ready = self._conn.poll(wait)
            while ready:
                made.append(self._conn.recv())
                ready = self._conn.poll()
        except (EOFError, OSError) as err:
            raise RuntimeError(f"the vocoder process stopped (exit status {self._process.poll()})") from err
        return made

    def alive(self) -> bool:
        return self._process.poll() is None

    def close(self) -> None:
        self._stop()

    def _send(self, message: object) -> None:
        try:
            self._conn.send(message)
        except OSError as err:  # BrokenPipeError included: the child is gone
            raise RuntimeError(f"the vocoder process stopped (exit status {self._process.poll()})") from err


def serve(conn: Connection, threads: int) -> None:
    """The child: takes its `Vocoding`, then reads every message waiting and vocodes one piece (a stream's first
    before any other), and so on until told to stop (None) or its parent is gone."""
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    waiting: deque[tuple] = deque()
    try:
        vocoding: Vocoding = pickle.loads(conn.recv_bytes())
        while True:
            while not waiting or conn.poll():
                message = conn.recv()
                if message is None:
                    return
                if message[0] == "drop":
                    vocoding.drop(message[1])
                    waiting = deque(m for m in waiting if m[1] != message[1])
                else:
                    waiting.append(message)
            job = next((m for m in waiting if m[4]), waiting[0])
            waiting.remove(job)
            _, stream, units, last, _ = job
            conn.send((stream, vocoding.speak(stream, units, last), last))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return


def _stop(conn: Connection, process: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):  # already gone
        conn.send(None)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    conn.close()


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
