"""Response hidden states of the frozen speech LLM, computed once and stored for stage 2.

Stage 2 freezes encoder, adaptor and LLM, so their output for a record never changes: computing it
once turns every later epoch into decoder-only work. The cache is a folder of safetensors shards
(`shard-00000.safetensors`: the rows' hidden states and answer token ids concatenated, and their lengths;
record ids in the metadata) plus `cache.json` with a fingerprint of the model and of what the LLM saw of the
data. It holds what a decoder of any fusion reads (omni/decoder_input.py), so changing the fusion keeps it.
Units are not cached: they come from the dataset at training time, so units re-extracted with another
codebook reuse the cache. Shards are written atomically, so an interrupted build resumes where it
stopped, and several processes build disjoint shards (`rank`, `world`). Reading memory-maps the shards.
`open_or_build` is the one entry point stage 2 and the unit evaluation use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from omni.atomic import atomic_path
from omni.data import Example, SpeechCollator, SpeechInstructionDataset
from omni.decoder_input import CACHE_LAYOUT, answer_features
from omni.model import OmniModel
from omni.speech_decoder import ctc_min_frames, pad_units

META_FILE = "cache.json"
SHARD_SIZE = 1024  # records per shard file


@dataclass(frozen=True)
class Processes:
    """The processes building a cache together: this one's `rank` of `world`, and a `barrier` that waits for all."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None


def open_or_build(
    directory: str | Path,
    dataset: SpeechInstructionDataset,
    model_dir: str | Path,
    load_model: Callable[[], OmniModel],
    *,
    alignment: str = "at_token",
    batch_size: int = 8,
    shard_size: int = SHARD_SIZE,
    processes: Processes = Processes(),
) -> HiddenCacheDataset:
    """The finished cache of `dataset`'s answers under the model in `model_dir`, joined with their units.

    Shards missing or stale (another model, data, alignment or shard size) are built first, each process writing
    its share; the model is loaded only when there is work. `alignment` is the decoder's (omni/decoder_input.py).
    """
    directory = Path(directory)
    key = fingerprint(model_dir, dataset, alignment)
    if missing_shards(directory, key, len(dataset), shard_size, processes.rank, processes.world):
        model = load_model()
        build_cache(
            model, dataset, directory, key, alignment=alignment, batch_size=batch_size, shard_size=shard_size,
            rank=processes.rank, world=processes.world,
        )  # fmt: skip
    processes.barrier()
    if processes.rank == 0:
        finish_cache(directory, key, len(dataset), shard_size)
    processes.barrier()
    return HiddenCacheDataset(directory, dataset.column("units"))


def model_signature(model_dir: str | Path) -> str:
    """Changes when any file of a saved model changes (names, sizes, modification times)."""
    files = [p for p in sorted(Path(model_dir).rglob("*")) if p.is_file()]
    entries = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha1(json.dumps(entries).encode()).hexdigest()


def fingerprint(model_dir: str | Path, dataset: SpeechInstructionDataset, alignment: str = "at_token") -> str:
    """Changes when the model's files change, what the LLM sees of the records does (not their units), which
    states are read, or what a shard holds."""
    parts = [model_signature(model_dir), dataset.signature(with_units=False), alignment, CACHE_LAYOUT]
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()


def shard_path(directory: Path, shard: int) -> Path:
    return directory / f"shard-{shard:05d}.safetensors"


def missing_shards(
    directory: Path, key: str, records: int, shard_size: int, rank: int = 0, world: int = 1
) -> list[int]:
    """This process's shards that are absent or from other inputs. Every shard's own metadata is checked (not
    cache.json alone): shards written by an older omni are rebuilt."""
    shards = range(rank, -(-records // shard_size), world)
    return [s for s in shards if not _shard_matches(shard_path(directory, s), key, shard_size)]


def build_cache(
    model: OmniModel,
    dataset: SpeechInstructionDataset,
    directory: str | Path,
    key: str,
    *,
    alignment: str = "at_token",
    batch_size: int = 8,
    shard_size: int = SHARD_SIZE,
    rank: int = 0,
    world: int = 1,
    sort_pool: int = 16,
) -> Path:
    """Write this process's missing shards; the caller waits for all ranks, then `finish_cache` on one.

    `sort_pool` batches' worth of records are read at a time and batched by length, which pads far less than
    the records' own order; each shard still keeps its records in the dataset's order. 1 = the dataset's order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    collate = SpeechCollator.for_model(model, label_history=False)  # the states of the current answer only
    device = next(model.adaptor.parameters()).device
    todo = missing_shards(directory, key, len(dataset), shard_size, rank, world)
    with tqdm(total=sum(min(shard_size, len(dataset) - s * shard_size) for s in todo), desc="hidden cache") as bar:
        for shard in todo:
            start, stop = shard * shard_size, min((shard + 1) * shard_size, len(dataset))
            done: dict[int, tuple[torch.Tensor, torch.Tensor, str, int | None]] = {}  # row -> states, tokens, id, index
            pool_size = batch_size * max(1, sort_pool)
            for first in range(start, stop, pool_size):
                pool = [(i - start, dataset[i]) for i in range(first, min(first + pool_size, stop))]
                pool.sort(key=lambda row_example: _input_size(row_example[1]))  # similar lengths batched together
                for b in range(0, len(pool), batch_size):
                    rows, examples = zip(*pool[b : b + batch_size], strict=True)
                    batch = {k: v.to(device) for k, v in collate(list(examples)).items()}
                    hidden, tokens, lengths = answer_features(model, batch, alignment)
                    for n, (row, ex) in enumerate(zip(rows, examples, strict=True)):
                        done[row] = hidden[n, : lengths[n]].cpu(), tokens[n, : lengths[n]].cpu(), ex.id, ex.index
                    bar.update(len(examples))
            states, tokens, ids, indices = zip(*(done[row] for row in range(stop - start)), strict=True)
            # indices: in skip mode a record that fails to load has a stand-in, whose units are its own
            tensors = {
                "hidden": torch.cat(states).contiguous(),
                "tokens": torch.cat(tokens).to(torch.int32),
                "lengths": torch.tensor([len(s) for s in states]),
            }
            meta = {
                "ids": json.dumps(list(ids)),
                "indices": json.dumps(list(indices)),
                "key": key,
                "shard_size": str(shard_size),
            }
            with atomic_path(shard_path(directory, shard)) as partial:
                save_file(tensors, partial, metadata=meta)
    return directory


def _input_size(example: Example) -> int:
    """About how long the frozen model's input for the current turn is, in audio samples (1,600 a speech
    embedding; 400 a character of text, about 4 a token): enough to batch similar lengths together."""
    text = len(example.response or "") + (len(example.instruction or "") if example.audio is None else 0)
    audio = len(example.audio) if example.audio is not None else 0
    return audio + 400 * text


def finish_cache(directory: str | Path, key: str, records: int, shard_size: int) -> dict[str, Any]:
    """Check every shard is there, then write `cache.json`: the cache is usable from then on."""
    directory = Path(directory)
    shards = -(-records // shard_size)
    states = 0
    for shard in range(shards):
        path = shard_path(directory, shard)
        if not _shard_matches(path, key, shard_size):
            raise FileNotFoundError(f"{path}: missing, or from another model, data or shard size; build the cache")
        with safe_open(str(path), "pt") as f:
            states += int(f.get_tensor("lengths").sum())
    meta = {"key": key, "records": records, "shard_size": shard_size, "shards": shards, "hidden_states": states}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def _shard_matches(path: Path, key: str, shard_size: int) -> bool:
    if not path.is_file():
        return False
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return meta.get("key") == key and meta.get("shard_size") == str(shard_size) and "indices" in meta


class HiddenCacheDataset(Dataset):
    """Records of a finished cache joined with their units: {"id", "hidden" (M, H), "tokens" (M,), "units" (T,)}.

    `units` holds one sequence per dataset record; each cached record takes those of the record it was
    computed from (a stand-in for a record that failed to load takes its own)."""

    def __init__(self, directory: str | Path, units: list[list[int]] | None = None):
        self.directory = Path(directory)
        meta_path = self.directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.directory}: no finished hidden-state cache ({META_FILE} missing)")
        self.meta = json.loads(meta_path.read_text())
        self.index: list[tuple[int, int, int]] = []  # shard, start and stop of the record's states
        self.ids: list[str] = []
        sources: list[int] = []
        self.lengths: list[int] = []
        for shard in range(self.meta["shards"]):
            with safe_open(str(shard_path(self.directory, shard)), "pt") as f:
                lengths = f.get_tensor("lengths").tolist()
                self.ids += json.loads(f.metadata()["ids"])
                sources += json.loads(f.metadata()["indices"])
            starts = torch.tensor([0, *lengths]).cumsum(0).tolist()
            self.index += [(shard, starts[i], starts[i + 1]) for i in range(len(lengths))]
            self.lengths += lengths
        if units is not None and len(units) != len(self.index):
            raise ValueError(f"{self.directory}: {len(self.index)} cached records but {len(units)} unit sequences")
        self.units = [units[source] for source in sources] if units is not None else None
        self._files: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _file(self, shard: int):
        if shard not in self._files:  # opened lazily: each DataLoader worker gets its own handles
            self._files[shard] = safe_open(str(shard_path(self.directory, shard)), "pt")
        return self._files[shard]

    def __getitem__(self, i: int) -> dict[str, Any]:
        shard, start, stop = self.index[i]
        units = torch.tensor(self.units[i] if self.units is not None else [], dtype=torch.long)
        f = self._file(shard)
        hidden, tokens = f.get_slice("hidden")[start:stop], f.get_slice("tokens")[start:stop].long()
        return {"id": self.ids[i], "hidden": hidden, "tokens": tokens, "units": units}

    def signature(self) -> str:
        """What training on it learns from: the cached states (model and answers) and the units."""
        return hashlib.sha1(json.dumps([self.meta["key"], self.units]).encode()).hexdigest()

    def too_short(self, upsample: int) -> int:
        """Records that need more CTC frames than lambda * answer tokens (stretched, or skipped)."""
        if self.units is None:
            return 0
        need = ctc_min_frames(*pad_units(self.units))
        return int((torch.as_tensor(self.lengths) * upsample < need).sum())

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_files": {}}


def collate_hidden(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Cached records -> right-padded hidden states and token ids, and units, with their lengths."""
    lengths = torch.tensor([item["hidden"].shape[0] for item in items])
    hidden = items[0]["hidden"].new_zeros(len(items), int(lengths.max()), items[0]["hidden"].shape[-1])
    tokens = torch.zeros(len(items), int(lengths.max()), dtype=torch.long)
    for row, item in enumerate(items):
        hidden[row, : lengths[row]] = item["hidden"]
        tokens[row, : lengths[row]] = item["tokens"]
    units, unit_lengths = pad_units([item["units"].tolist() for item in items])
    return {"hidden": hidden, "tokens": tokens, "lengths": lengths, "units": units, "unit_lengths": unit_lengths}
