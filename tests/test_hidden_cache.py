import json

import pytest
import torch

from omni.data import DataError, SpeechCollator, SpeechInstructionDataset
from omni.hidden_cache import (
    META_FILE,
    SHARD_SIZE,
    HiddenCacheDataset,
    build_cache,
    collate_hidden,
    fingerprint,
    finish_cache,
    open_or_build,
    shard_path,
)
from omni.model import OmniModel
from omni.prompt import SPEECH_TOKEN_ID
from omni.speech_decoder import SpeechDecoder, pad_units
from tests.test_speech_decoder import SMALL


@pytest.fixture
def omni(model_config) -> OmniModel:
    torch.manual_seed(0)
    return OmniModel.from_config(model_config).eval()


@pytest.fixture
def data(toy_dir) -> SpeechInstructionDataset:
    return SpeechInstructionDataset(toy_dir / "train.jsonl", num_units=32)


def test_cached_loss_equals_recomputed_loss(omni, data, tmp_path):
    build_cache(omni, data, tmp_path, "k", batch_size=3, shard_size=5)
    meta = finish_cache(tmp_path, "k", len(data), shard_size=5)
    assert meta["shards"] == 4 and meta["records"] == len(data) == 16
    cached = HiddenCacheDataset(tmp_path, data.column("units"))
    assert cached.ids == [data[i].id for i in range(len(data))]
    d = SpeechDecoder(SMALL.__class__(**{**SMALL.__dict__, "num_units": 32}), omni.hidden_size).eval()
    indices = [0, 6, 11, 15]  # across shards
    from_cache = collate_hidden([cached[i] for i in indices])
    examples = [data[i] for i in indices]
    hidden, lengths = omni.response_hidden_states(SpeechCollator.for_model(omni)(examples))
    units, unit_lengths = pad_units([ex.units for ex in examples])
    assert torch.equal(from_cache["lengths"], lengths) and torch.equal(from_cache["units"], units)
    recomputed = d.loss(hidden, lengths, units, unit_lengths)
    torch.testing.assert_close(
        d.loss(from_cache["hidden"], from_cache["lengths"], from_cache["units"], from_cache["unit_lengths"]),
        recomputed,
        atol=1e-5,
        rtol=1e-5,
    )


def test_cache_resumes_splits_across_ranks_and_rebuilds_on_change(omni, data, tmp_path):
    for rank in (0, 1):  # two processes, disjoint shards
        build_cache(omni, data, tmp_path, "k", batch_size=4, shard_size=4, rank=rank, world=2)
    finish_cache(tmp_path, "k", len(data), shard_size=4)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("shard-*")}
    assert len(stamps) == 4
    build_cache(omni, data, tmp_path, "k", batch_size=4, shard_size=4)  # finished: nothing rebuilt
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # shard 2 lost, shard 3 from other settings (or an older omni) while cache.json still says finished:
    # both are rebuilt, the rest kept
    shard_path(tmp_path, 2).unlink()
    build_cache(omni, data, tmp_path / "other", "other-key", batch_size=4, shard_size=4)
    shard_path(tmp_path / "other", 3).replace(shard_path(tmp_path, 3))
    with pytest.raises(FileNotFoundError, match="shard-00002"):
        finish_cache(tmp_path, "k", len(data), shard_size=4)
    build_cache(omni, data, tmp_path, "k", batch_size=4, shard_size=4)
    assert finish_cache(tmp_path, "k", len(data), shard_size=4)["records"] == 16
    after = {p: p.stat().st_mtime_ns for p in stamps}
    assert after[shard_path(tmp_path, 0)] == stamps[shard_path(tmp_path, 0)]
    assert after[shard_path(tmp_path, 3)] != stamps[shard_path(tmp_path, 3)]


def test_fingerprint_follows_model_and_answers_not_units(toy_dir, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "adaptor.safetensors").write_bytes(b"a")
    rows = [json.loads(line) for line in (toy_dir / "train.jsonl").read_text().splitlines()]

    def dataset(rows):
        path = tmp_path / "data.jsonl"
        path.write_text("".join(json.dumps(r | {"audio": str(toy_dir / r["audio"])}) + "\n" for r in rows))
        return SpeechInstructionDataset(path)

    first = fingerprint(model, dataset(rows))
    assert fingerprint(model, dataset([r | {"units": [7, 8]} for r in rows])) == first  # new units: cache still valid
    assert fingerprint(model, dataset([rows[0] | {"response": "Another."}, *rows[1:]])) != first
    assert fingerprint(model, dataset(rows), "predicting") != first  # other states: another cache
    assert fingerprint(model, dataset(rows), "at_token") == first
    (model / "adaptor.safetensors").write_bytes(b"ab")
    assert fingerprint(model, dataset(rows)) != first


def test_units_join_the_cache_and_too_short_is_counted(omni, data, tmp_path):
    build_cache(omni, data, tmp_path, "k", batch_size=8)
    finish_cache(tmp_path, "k", len(data), shard_size=SHARD_SIZE)
    units = data.column("units")
    cached = HiddenCacheDataset(tmp_path, units)
    assert cached[3]["units"].tolist() == units[3]
    assert cached.too_short(upsample=4) == 0
    assert cached.too_short(upsample=1) == sum(m < len(u) for m, u in zip(cached.lengths, units, strict=True)) > 0
    with pytest.raises(ValueError, match="16 cached records but 2 unit sequences"):
        HiddenCacheDataset(tmp_path, units[:2])


def test_unfinished_cache_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished hidden-state cache"):
        HiddenCacheDataset(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({"shards": 0}))
    assert len(HiddenCacheDataset(tmp_path)) == 0


def test_open_or_build_loads_the_model_only_when_shards_are_missing(omni, data, stage1_dir, tmp_path):
    loads = []

    def load():
        loads.append(1)
        return omni

    first = open_or_build(tmp_path, data, stage1_dir, load, batch_size=8, shard_size=5)
    assert len(loads) == 1 and len(first) == 16 and first.units == data.column("units")
    again = open_or_build(tmp_path, data, stage1_dir, load, batch_size=8, shard_size=5)
    assert len(loads) == 1  # finished: nothing to build, no model loaded
    torch.testing.assert_close(again[7]["hidden"], first[7]["hidden"])
    assert again.signature() == first.signature()
    shard_path(tmp_path, 2).unlink()  # a lost shard is rebuilt, alone
    open_or_build(tmp_path, data, stage1_dir, load, batch_size=8, shard_size=5)
    assert len(loads) == 2
    other_units = HiddenCacheDataset(tmp_path, [[1, 2]] * 16)
    assert other_units.signature() != first.signature()  # what stage 2 learns from includes the units


def test_text_questions_are_read_as_words_alone_or_beside_spoken_ones(omni, toy_dir, tmp_path):
    rows = [json.loads(line) for line in (toy_dir / "train.jsonl").read_text().splitlines()][:4]
    for row in rows:
        row["audio"] = str(toy_dir / row["audio"])
    rows[0].pop("audio")  # text questions: the LLM reads "Which tone is this?"
    rows[2].pop("audio")
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"line 1 .*field 'audio': missing \(questions without audio serve stage 2"):
        SpeechInstructionDataset(manifest, num_units=32)
    data = SpeechInstructionDataset(manifest, num_units=32, questions="speech_or_text")
    assert data[0].audio is None and data[1].audio is not None

    collate = SpeechCollator.for_model(omni, label_history=False)
    alone = collate([data[0]])  # a batch without any speech
    words = omni.tokenizer("Which tone is this?", add_special_tokens=False)["input_ids"]
    ids = alone["input_ids"][0].tolist()
    assert SPEECH_TOKEN_ID not in ids and any(ids[i : i + len(words)] == words for i in range(len(ids)))
    assert alone["mels"].shape[0] == 0 and alone["clips_per_row"].tolist() == [0]

    build_cache(omni, data, tmp_path / "cache", "k", batch_size=3)  # rows 0-2 share a batch
    finish_cache(tmp_path / "cache", "k", len(data), SHARD_SIZE)
    cached = HiddenCacheDataset(tmp_path / "cache", data.column("units"))
    for i in range(len(data)):
        hidden, lengths = omni.response_hidden_states(collate([data[i]]))
        assert cached.lengths[i] == int(lengths[0]) == len(omni.prompt.response_ids(data[i].response))
        torch.testing.assert_close(cached[i]["hidden"], hidden[0, : lengths[0]], atol=1e-5, rtol=1e-5)

    before = data.signature(with_units=False)
    rows[0]["instruction"] = "Which pitch is this?"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert SpeechInstructionDataset(manifest, questions="speech_or_text").signature(with_units=False) != before
    rows[0].pop("instruction")
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"line 1 .*field 'instruction': expected the question's text"):
        SpeechInstructionDataset(manifest, questions="speech_or_text")


def test_records_batched_by_length_are_stored_in_their_order(omni, data, tmp_path):
    """Batching by length changes what is padded, not the states, nor where each record's states are."""
    from omni.hidden_cache import _input_size

    sizes = [_input_size(data[i]) for i in range(len(data))]
    assert sizes != sorted(sizes)  # the toy set's order is not by length: sorting regroups its batches
    for pool, folder in ((1, "as_read"), (4, "by_length")):
        build_cache(omni, data, tmp_path / folder, "k", batch_size=4, shard_size=16, sort_pool=pool)
        finish_cache(tmp_path / folder, "k", len(data), shard_size=16)
    as_read, by_length = HiddenCacheDataset(tmp_path / "as_read"), HiddenCacheDataset(tmp_path / "by_length")
    assert by_length.ids == as_read.ids == [data[i].id for i in range(len(data))]
    assert by_length.lengths == as_read.lengths
    for i in range(len(data)):
        torch.testing.assert_close(by_length[i]["hidden"], as_read[i]["hidden"], atol=1e-5, rtol=1e-4)
