import joblib
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from transformers import HubertConfig, HubertModel

from omni.config import EncoderConfig
from omni.data import DataError, SpeechInstructionDataset, units_problem
from omni.encoder import SpeechEncoder
from omni.units import Codebook, HubertFeatures, UnitError, UnitExtractor, WhisperFeatures, dedup, runs
from tests.conftest import noise


def clustered(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three tight clusters far apart in 4 dimensions."""
    rng = np.random.default_rng(seed)
    centers = np.array([[10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 10, 0]], dtype=np.float32)
    labels = rng.integers(3, size=600)
    return centers[labels] + 0.1 * rng.standard_normal((600, 4)).astype(np.float32), labels


def test_dedup_merges_runs_only():
    assert dedup([5, 5, 3, 3, 5, 1, 1, 1]) == [5, 3, 5, 1]
    assert dedup([]) == []
    assert runs([5, 5, 3, 3, 5, 1, 1, 1]) == ([5, 3, 5, 1], [2, 2, 1, 3])
    assert runs([]) == ([], [])


def test_out_of_range_units_are_rejected_with_the_record():
    assert units_problem([0, 99], 100) is None
    assert units_problem([3, 100, 4096, 100], 100).startswith("unit ids 100, 4096 are outside [0, 100)")


def test_codebook_fit_assigns_each_cluster_one_unit():
    frames, labels = clustered()
    codebook = Codebook.fit(frames, 3, batch_size=256)
    units = codebook.assign(torch.from_numpy(frames)).numpy()
    # the same partition as the true labels, whatever the numbering
    assert len(set(zip(labels.tolist(), units.tolist(), strict=True))) == 3


def test_standardising_codebook_is_not_ruled_by_one_wide_dimension(tmp_path):
    """Three clusters told apart by 4 narrow dimensions, plus one dimension of wide noise that would decide
    raw distances: only the standardising codebook finds the clusters."""
    frames, labels = clustered()
    wide = 1000 * np.random.default_rng(1).standard_normal((len(frames), 1)).astype(np.float32)
    frames = np.concatenate([frames, wide], axis=1)
    partitions = {}
    for standardise in (False, True):
        codebook = Codebook.fit(frames, 3, batch_size=256, standardise=standardise)
        units = codebook.assign(torch.from_numpy(frames)).tolist()
        partitions[standardise] = set(zip(labels.tolist(), units, strict=True))
    assert len(partitions[True]) == 3 and len(partitions[False]) > 3
    loaded = Codebook.load(codebook.save(tmp_path / "km.safetensors"))
    torch.testing.assert_close(loaded.mean, torch.from_numpy(frames.mean(0)))
    torch.testing.assert_close(loaded.assign(torch.from_numpy(frames)), codebook.assign(torch.from_numpy(frames)))
    with pytest.raises(UnitError, match="mean and scale only in .safetensors"):
        codebook.save(tmp_path / "km.npy")


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_codebook_round_trip(tmp_path, suffix):
    codebook = Codebook(np.random.default_rng(0).standard_normal((7, 5)))
    loaded = Codebook.load(codebook.save(tmp_path / f"km{suffix}"))
    torch.testing.assert_close(loaded.centroids, codebook.centroids)
    assert (loaded.size, loaded.dim) == (7, 5)


def test_pickled_codebook_needs_explicit_trust(tmp_path):
    frames, _ = clustered()
    kmeans = KMeans(3, n_init=1, random_state=0).fit(frames)
    path = tmp_path / "km.bin"  # fairseq's name for a joblib-pickled k-means model
    joblib.dump(kmeans, path)
    with pytest.raises(UnitError, match="pickle.*trust_pickle=True"):
        Codebook.load(path)
    trusted = Codebook.load(path, trust_pickle=True)
    np.testing.assert_allclose(trusted.centroids.numpy(), kmeans.cluster_centers_, rtol=1e-6)


def test_bad_codebooks_fail_clearly(tmp_path):
    with pytest.raises(UnitError, match="NaN"):
        Codebook(np.array([[0.0, np.nan]]))
    with pytest.raises(UnitError, match="width 3 do not match the codebook's width 2"):
        Codebook(np.zeros((4, 2))).assign(torch.zeros(5, 3))
    with pytest.raises(FileNotFoundError):
        Codebook.load(tmp_path / "missing.npy")
    with pytest.raises(UnitError, match="both mean and scale"):
        Codebook(np.zeros((4, 2)), mean=np.zeros(2))
    with pytest.raises(UnitError, match=r"scale must be \(2,\), got \(3,\)"):
        Codebook(np.zeros((4, 2)), np.zeros(2), np.ones(3))
    with pytest.raises(UnitError, match="scale must be positive"):
        Codebook(np.zeros((4, 2)), np.zeros(2), np.array([1.0, 0.0]))


def test_whisper_features_per_layer_and_batch_independent(tiny_dir):
    encoder = SpeechEncoder.from_config(EncoderConfig(name_or_path=str(tiny_dir / "whisper_tiny.pt")))
    clips = [noise(1.0, 1), noise(2.5, 2)]
    first = WhisperFeatures(encoder, 1)
    alone = [first([c])[0] for c in clips]
    batch = first(clips)
    assert [f.shape for f in batch] == [(50, 64), (125, 64)]  # 50 frames per second
    for a, b in zip(alone, batch, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    last = WhisperFeatures(encoder, 2)([clips[0]])[0]
    assert not torch.allclose(last, alone[0])
    with pytest.raises(UnitError, match="outside 1..2"):
        WhisperFeatures(encoder, 3)
    pooled = WhisperFeatures(encoder, 1, pool=2)(clips)
    assert [f.shape for f in pooled] == [(25, 64), (63, 64)]  # 25 frames per second; the last group is one frame
    torch.testing.assert_close(pooled[1][:62], alone[1][:124].view(62, 2, 64).mean(1))
    torch.testing.assert_close(pooled[1][62], alone[1][124])
    with pytest.raises(UnitError, match="pool must be at least 1"):
        WhisperFeatures(encoder, 1, pool=0)


def tiny_hubert(directory):
    torch.manual_seed(0)
    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    HubertModel(config).save_pretrained(directory)
    return directory


def test_hubert_features_and_units(tmp_path):
    tiny_hubert(tmp_path / "hubert")
    features = HubertFeatures(str(tmp_path / "hubert"), layer=2)
    clip = noise(1.0)
    (out,) = features([clip])
    expected = features.model(torch.from_numpy(clip)[None], output_hidden_states=True).hidden_states[2][0]
    torch.testing.assert_close(out, expected)
    codebook = Codebook(np.random.default_rng(0).standard_normal((10, 32)))
    (units,) = UnitExtractor(features, codebook)([clip])
    assert units and all(0 <= u < 10 for u in units)
    assert all(a != b for a, b in zip(units, units[1:], strict=False))
    with pytest.raises(UnitError, match="layer 4 is outside 1..3"):
        HubertFeatures(str(tmp_path / "hubert"), layer=4)


def test_dataset_rejects_units_outside_the_codebook(toy_dir, tmp_path):
    import json

    rows = [json.loads(line) for line in (toy_dir / "train.jsonl").read_text().splitlines()]
    rows[1]["units"] = [1, 2, 1001]
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text("".join(json.dumps(r | {"audio": str(toy_dir / r["audio"])}) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"bad.jsonl, line 2 \(id 'train-00001'\), field 'units'.*1001.*\[0, 32\)"):
        SpeechInstructionDataset(manifest, num_units=32)
    del rows[1]["units"]
    manifest.write_text("".join(json.dumps(r | {"audio": str(toy_dir / r["audio"])}) + "\n" for r in rows))
    with pytest.raises(DataError, match="line 2.*'units': missing or empty"):
        SpeechInstructionDataset(manifest, num_units=32)
    assert len(SpeechInstructionDataset(manifest)) == len(rows)  # stage 1 does not need units


def test_units_command_adds_units_to_a_manifest(tmp_path, capsys):
    import json

    import soundfile

    from omni.units import main

    tiny_hubert(tmp_path / "hubert")
    Codebook(np.random.default_rng(0).standard_normal((10, 32))).save(tmp_path / "km.npy")
    (tmp_path / "answers").mkdir()
    lines = []
    for i in range(3):
        soundfile.write(tmp_path / "answers" / f"{i}.wav", noise(0.6 + 0.3 * i, i), 16000)
        lines.append(
            json.dumps({"id": f"r{i}", "audio": "q.wav", "response": "ok", "response_audio": f"answers/{i}.wav"})
        )
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    args = ["--data", str(tmp_path / "data.jsonl"), "--out", str(tmp_path / "elsewhere" / "out.jsonl"), "--hubert"]
    main([*args, str(tmp_path / "hubert"), "--layer", "3", "--codebook", str(tmp_path / "km.npy"), "--batch-size", "2"])
    rows = [json.loads(line) for line in (tmp_path / "elsewhere" / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r0", "r1", "r2"]
    assert all(r["units"] and max(r["units"]) < 10 for r in rows)
    extractor = UnitExtractor(HubertFeatures(str(tmp_path / "hubert"), 3), Codebook.load(tmp_path / "km.npy"))
    clips = [soundfile.read(tmp_path / "answers" / f"{i}.wav", dtype="float32")[0] for i in range(3)]
    assert [r["units"] for r in rows] == extractor(clips)  # batched by 2 in the command, one by one here
    assert [len(r["unit_durations"]) for r in rows] == [len(r["units"]) for r in rows]
    assert rows[0]["audio"] == "../q.wav"  # from the copy's folder, the same file
    with pytest.raises(UnitError, match="data.jsonl, line 1, field 'response_audio'"):
        (tmp_path / "data.jsonl").write_text(json.dumps({"id": "x", "audio": "q.wav"}) + "\n")
        main([*args, str(tmp_path / "hubert"), "--layer", "3", "--codebook", str(tmp_path / "km.npy")])
    with pytest.raises(SystemExit):  # HuBERT frames are not pooled: refused before any model loads
        main([*args, str(tmp_path / "hubert"), "--layer", "3", "--codebook", str(tmp_path / "km.npy"), "--pool", "2"])
    assert "--pool applies to Whisper features only" in capsys.readouterr().err
