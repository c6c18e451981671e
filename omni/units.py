"""Discrete speech units: frame features from a frozen speech model, quantised by a k-means codebook.

    features (T, D) -> nearest centroid per frame -> consecutive duplicates merged -> units

Two feature sources share the codebook logic:
- `HubertFeatures`: any HuBERT-family model transformers loads (mHuBERT: layer 11, K=1000, as the
  reference's units);
- `WhisperFeatures`: a layer of the frozen Whisper encoder the speech LLM already carries (the offline
  default: no other model needed).

Codebooks are centroids in a safe format (.npy, or .safetensors, which also keeps a standardising mean
and scale). A scikit-learn/joblib pickle (fairseq's `km.bin`) runs code when loaded, so it is read only
with `trust_pickle=True`.

Units for a dataset whose records hold `response_audio` (the answer spoken):

    python -m omni.units --data train.jsonl --out train_units.jsonl \\
        --hubert utter-project/mHuBERT-147 --layer 11 --codebook km1000.npy
    python -m omni.units --data train.jsonl --out train_units.jsonl \\
        --whisper .cache/assets/whisper_base.pt --layer 2 --codebook data/demo/units/codebook.safetensors
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from omni.atomic import atomic_path
from omni.audio import SAMPLE_RATE, load_audio, mel_windows
from omni.cli import command_parser
from omni.config import EncoderConfig
from omni.data import relocated
from omni.encoder import SpeechEncoder

SAFE_SUFFIXES = (".npy", ".safetensors")


class UnitError(ValueError):
    pass


def dedup(units: Sequence[int]) -> list[int]:
    """Merge runs of the same unit: [5, 5, 3, 3, 5] -> [5, 3, 5]."""
    return [u for i, u in enumerate(units) if i == 0 or u != units[i - 1]]


def runs(units: Sequence[int]) -> tuple[list[int], list[int]]:
    """Merged units and how many frames each run lasted: [5, 5, 3] -> ([5, 3], [2, 1]) (vocoder durations)."""
    merged, durations = [], []
    for i, u in enumerate(units):
        if i and u == units[i - 1]:
            durations[-1] += 1
        else:
            merged.append(u)
            durations.append(1)
    return merged, durations


class Codebook:
    """k-means centroids (K, D); a frame's unit is the index of its nearest centroid.

    A codebook may carry a per-dimension `mean` and `scale` that standardise frames before the distance
    is taken. A few wide dimensions of a middle Whisper layer otherwise decide every distance and the
    units say little about the sound (docs/results.md measures it on the demo's answers).
    """

    def __init__(
        self,
        centroids: torch.Tensor | np.ndarray,
        mean: torch.Tensor | np.ndarray | None = None,
        scale: torch.Tensor | np.ndarray | None = None,
    ):
        centroids = torch.as_tensor(np.asarray(centroids, dtype=np.float32))
        if centroids.ndim != 2 or centroids.shape[0] < 1:
            raise UnitError(f"codebook centroids must be (K, D), got shape {tuple(centroids.shape)}")
        if (mean is None) != (scale is None):
            raise UnitError("a standardising codebook needs both mean and scale")
        tensors = {"centroids": centroids}
        if mean is not None:
            tensors["mean"] = torch.as_tensor(np.asarray(mean, dtype=np.float32))
            tensors["scale"] = torch.as_tensor(np.asarray(scale, dtype=np.float32))
            width = centroids.shape[1]
            for name in ("mean", "scale"):
                if tensors[name].shape != (width,):
                    raise UnitError(f"codebook {name} must be ({width},), got {tuple(tensors[name].shape)}")
            if not (tensors["scale"] > 0).all():
                raise UnitError("codebook scale must be positive")
        for name, tensor in tensors.items():
            if not torch.isfinite(tensor).all():
                raise UnitError(f"codebook {name} holds NaN or infinite values")
        self.centroids = centroids
        self.mean, self.scale = tensors.get("mean"), tensors.get("scale")

    @property
    def size(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @classmethod
    def fit(
        cls, features: np.ndarray, size: int, seed: int = 0, batch_size: int = 10000, standardise: bool = False
    ) -> Codebook:
        """Mini-batch k-means over (N, D) frames, with fairseq's HuBERT recipe settings; `standardise` first
        scales every dimension to zero mean and unit variance over these frames."""
        from sklearn.cluster import MiniBatchKMeans

        if len(features) < size:
            raise UnitError(f"k-means with K={size} needs at least {size} frames, got {len(features)}")
        kmeans = MiniBatchKMeans(
            n_clusters=size,
            init="k-means++",
            max_iter=100,
            batch_size=batch_size,
            tol=0.0,
            max_no_improvement=100,
            n_init=3,
            reassignment_ratio=0.0,
            random_state=seed,
        )
        features = np.asarray(features, dtype=np.float32)
        if not standardise:
            return cls(kmeans.fit(features).cluster_centers_)
        mean, scale = features.mean(0), features.std(0).clip(min=1e-6)
        return cls(kmeans.fit((features - mean) / scale).cluster_centers_, mean, scale)

    @classmethod
    def load(cls, path: str | Path, trust_pickle: bool = False) -> Codebook:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"codebook not found: {path}")
        if path.suffix == ".npy":
            return cls(np.load(path, allow_pickle=False))
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(path)
            if "centroids" not in tensors:
                raise UnitError(f"{path}: expected a tensor named 'centroids', found {sorted(tensors)}")
            return cls(tensors["centroids"], tensors.get("mean"), tensors.get("scale"))
        if not trust_pickle:
            raise UnitError(
                f"{path}: not a safe codebook format {SAFE_SUFFIXES}; it is presumably a joblib pickle, which can run "
                "code when loaded. Convert it to .npy, or pass trust_pickle=True if you trust where it came from"
            )
        import joblib

        kmeans = joblib.load(path)
        if not hasattr(kmeans, "cluster_centers_"):
            raise UnitError(f"{path}: the pickle holds {type(kmeans).__name__}, not a fitted k-means model")
        return cls(kmeans.cluster_centers_)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npy":
            if self.mean is not None:
                raise UnitError(f"{path}: a standardising codebook keeps its mean and scale only in .safetensors")
            np.save(path, self.centroids.numpy())
        elif path.suffix == ".safetensors":
            from safetensors.torch import save_file

            tensors = {"centroids": self.centroids, "mean": self.mean, "scale": self.scale}
            save_file({k: v.contiguous() for k, v in tensors.items() if v is not None}, path)
        else:
            raise UnitError(f"{path}: save codebooks as one of {SAFE_SUFFIXES}")
        return path

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        """Features in the space the centroids live in (unchanged for a plain codebook)."""
        if features.shape[-1] != self.dim:
            raise UnitError(f"features of width {features.shape[-1]} do not match the codebook's width {self.dim}")
        x = features.float()
        if self.mean is None:
            return x
        return (x - self.mean.to(x.device)) / self.scale.to(x.device)

    def assign(self, features: torch.Tensor) -> torch.Tensor:
        """(T, D) features -> (T,) nearest-centroid indices (squared Euclidean distance)."""
        x = self.standardise(features)
        c = self.centroids.to(x.device)
        distances = (x * x).sum(-1, keepdim=True) - 2 * x @ c.T + (c * c).sum(-1)
        return distances.argmin(-1)


class WhisperFeatures:
    """Features from `layer` blocks into a frozen Whisper encoder: 50 frames per second, or 50 / `pool` with
    each `pool` consecutive frames averaged (the last group may be shorter). Fewer, longer frames make fewer
    units per second for the speech decoder to predict."""

    def __init__(self, encoder: SpeechEncoder, layer: int, pool: int = 1):
        if not 0 < layer <= len(encoder.whisper.blocks):
            raise UnitError(f"Whisper layer {layer} is outside 1..{len(encoder.whisper.blocks)}")
        if pool < 1:
            raise UnitError(f"pool must be at least 1 (frames averaged into one), got {pool}")
        self.encoder = encoder
        self.layer = layer
        self.pool = pool

    @torch.no_grad()
    def __call__(self, clips: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """A batch of 16 kHz clips -> one (frames, width) tensor per clip, padding excluded."""
        windows, per_clip = [], []
        for clip in clips:
            parts = mel_windows(clip, self.encoder.n_mels, pad_to_30s=False)
            windows += parts
            per_clip.append(len(parts))
        frames = torch.tensor([w.shape[-1] for w in windows])
        mels = torch.zeros(len(windows), self.encoder.n_mels, int(frames.max()))
        for i, w in enumerate(windows):
            mels[i, :, : w.shape[-1]] = w
        device = next(self.encoder.parameters()).device
        features, _ = self.encoder.encode_clips(mels.to(device), frames.to(device), per_clip, self.layer)
        return [average_frames(f.float().cpu(), self.pool) for f in features]


def average_frames(features: torch.Tensor, pool: int) -> torch.Tensor:
    """(T, D) -> (ceil(T / pool), D): the mean of each `pool` consecutive frames."""
    if pool == 1:
        return features
    return torch.stack([group.mean(0) for group in features.split(pool)])


class HubertFeatures:
    """Hidden states of a HuBERT-family model (transformers) at `layer`, one clip at a time.

    Clips run unbatched because base HuBERT models have no padding mask: padding would change them.
    """

    def __init__(self, name_or_path: str, layer: int, device: str | torch.device = "cpu"):
        from transformers import AutoFeatureExtractor, AutoModel, Wav2Vec2FeatureExtractor

        self.model = AutoModel.from_pretrained(name_or_path).to(device).eval()
        layers = self.model.config.num_hidden_layers
        if not 0 < layer <= layers:
            raise UnitError(f"{name_or_path}: layer {layer} is outside 1..{layers}")
        try:
            self.processor = AutoFeatureExtractor.from_pretrained(name_or_path)
        except OSError:  # no preprocessor_config.json: raw waveform in, as fairseq HuBERT takes it
            self.processor = Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False)
        self.layer = layer
        self.device = device

    @torch.no_grad()
    def __call__(self, clips: Sequence[np.ndarray]) -> list[torch.Tensor]:
        out = []
        for clip in clips:
            inputs = self.processor(clip, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            hidden = self.model(inputs.input_values.to(self.device), output_hidden_states=True).hidden_states
            out.append(hidden[self.layer][0].float().cpu())
        return out


class UnitExtractor:
    """16 kHz clips -> deduplicated unit sequences."""

    def __init__(self, features: WhisperFeatures | HubertFeatures, codebook: Codebook):
        self.features = features
        self.codebook = codebook

    def __call__(self, clips: Sequence[np.ndarray]) -> list[list[int]]:
        return [dedup(self.codebook.assign(f).tolist()) for f in self.features(clips)]

    def with_durations(self, clips: Sequence[np.ndarray]) -> list[tuple[list[int], list[int]]]:
        """Units and how many feature frames each lasted (what a unit vocoder learns to predict)."""
        return [runs(self.codebook.assign(f).tolist()) for f in self.features(clips)]


def extract_manifest(extractor: UnitExtractor, data: Path, out: Path, batch_size: int = 8) -> int:
    """Copy a JSON-lines manifest, adding `units` and `unit_durations` from each record's `response_audio`;
    relative paths are rewritten to point from the copy's folder to the same files. Returns the count."""
    from tqdm.auto import tqdm

    records = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    for number, record in enumerate(records, start=1):
        if not isinstance(record.get("response_audio"), str):
            raise UnitError(f"{data}, line {number}, field 'response_audio': missing (a path to the answer's speech)")

    def absolute(value: str) -> str:
        return str(value if Path(value).is_absolute() else (data.parent / value).resolve())

    paths = [Path(absolute(r["response_audio"])) for r in records]
    with atomic_path(out) as partial, partial.open("w") as f:
        for start in tqdm(range(0, len(records), batch_size), desc="units"):
            chunk, chunk_paths = records[start : start + batch_size], paths[start : start + batch_size]
            found = extractor.with_durations([load_audio(p) for p in chunk_paths])
            for record, (units, durations) in zip(chunk, found, strict=True):
                moved = relocated(record, data.parent, out.parent)  # relative paths stay relative, as make units
                f.write(json.dumps(moved | {"units": units, "unit_durations": durations}) + "\n")
    return len(records)


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="JSON-lines manifest with response_audio")
    parser.add_argument("--out", type=Path, required=True, help="the manifest with units added")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--hubert", help="HuBERT-family model (transformers): hub name or directory")
    source.add_argument("--whisper", help="openai-whisper name or checkpoint")
    parser.add_argument("--layer", type=int, required=True)
    parser.add_argument("--pool", type=int, default=1, help="Whisper frames averaged into one (as the codebook's)")
    parser.add_argument("--codebook", type=Path, required=True, help=".npy / .safetensors centroids (or a pickle)")
    parser.add_argument("--trust-pickle", action="store_true", help="allow a joblib/pickle codebook (runs code)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    if args.hubert and args.pool != 1:
        parser.error("--pool applies to Whisper features only")
    if not args.data.is_file():
        raise UnitError(f"{args.data}: manifest not found")
    codebook = Codebook.load(args.codebook, args.trust_pickle)  # both checked before a model loads
    if args.hubert:
        features = HubertFeatures(args.hubert, args.layer, args.device)
    else:
        encoder = SpeechEncoder.from_config(EncoderConfig(name_or_path=args.whisper)).to(args.device)
        features = WhisperFeatures(encoder, args.layer, args.pool)
    extractor = UnitExtractor(features, codebook)
    count = extract_manifest(extractor, args.data, args.out, args.batch_size)
    print(f"wrote {args.out}: {count} records with units (K={extractor.codebook.size})")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
