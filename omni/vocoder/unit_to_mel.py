"""Units -> mel spectrogram, for a pretrained mel vocoder (HiFi-GAN) to speak.

    units (T,) -> embeddings -> conv encoder -> durations (in unit frames, predicted at inference)
    -> each unit spread over its frames, resampled to the mel frame rate -> conv decoder -> log-mel (F, 80)
    -> (generating only) deviations from the training speech's mean log-mel scaled by `contrast`

No pretrained unit vocoder ships offline, so the demo learns this small model on its own answers and
borrows a pretrained HiFi-GAN for the waveform. Durations are what deduplication threw away: the
model learns them from the runs the unit extractor recorded (`unit_durations`).

Trained with L1, the model settles on a central value where the units leave the sound uncertain: its
mel is over-smoothed, and the phones blur. `contrast` > 1 undoes some of that when generating, as
"global variance" compensation does in statistical speech synthesis. It scales around a fixed mean, not
the utterance's, so a chunk vocoded alone is scaled the same as the whole answer.

A saved directory holds `unit_to_mel.yaml`, `unit_to_mel.safetensors` and, when saved with `hifigan=`,
`hifigan.txt`: the path of the HiFi-GAN checkpoint the model was trained for (`hifigan_reference` reads it;
`omni.vocoder.mel_unit.MelUnitVocoder` speaks through it).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from omni.config import UnitToMelConfig, from_dict, to_dict
from omni.weights import load_weights, save_weights

CONFIG_FILE = "unit_to_mel.yaml"
WEIGHTS_FILE = "unit_to_mel.safetensors"
HIFIGAN_FILE = "hifigan.txt"  # the mel vocoder checkpoint the model was trained for, one path
LOG_MEL_FLOOR = -11.5129  # log(1e-5): the mel vocoder's silence


class ConvBlock(nn.Module):
    """Pre-norm residual 1-D convolution; padded positions are kept at zero."""

    def __init__(self, width: int, kernel_size: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.conv(F.gelu(self.norm(x)).transpose(1, 2)).transpose(1, 2)
        return (x + self.dropout(h)) * mask[..., None]


class UnitToMel(nn.Module):
    def __init__(self, config: UnitToMelConfig):
        super().__init__()
        self.config = config
        width, k, p = config.hidden_size, config.kernel_size, config.dropout
        self.embed = nn.Embedding(config.num_units, width)
        self.encoder = nn.ModuleList(ConvBlock(width, k, p) for _ in range(config.encoder_layers))
        self.duration = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 1))
        self.decoder = nn.ModuleList(ConvBlock(width, k, p) for _ in range(config.decoder_layers))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, config.n_mels))
        # the training speech's mean log-mel per bin, which `contrast` scales around (set by the recipe)
        self.register_buffer("mel_mean", torch.full((config.n_mels,), LOG_MEL_FLOOR))

    def check(self, units: torch.Tensor, lengths: torch.Tensor) -> None:
        if int(lengths.min()) < 1:
            raise ValueError("empty unit sequence: nothing to speak")
        valid = torch.arange(units.shape[1], device=units.device) < lengths[:, None]
        bad = units[valid & ((units < 0) | (units >= self.config.num_units))]
        if bad.numel():
            raise ValueError(f"unit ids {sorted(set(bad.tolist()))[:5]} are outside [0, {self.config.num_units})")

    def encode(self, units: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> unit states (B, T, H), their mask, predicted log(1 + duration) (B, T)."""
        self.check(units, lengths)
        mask = (torch.arange(units.shape[1], device=units.device) < lengths[:, None]).float()
        x = self.embed(units.clamp(min=0)) * mask[..., None]
        for block in self.encoder:
            x = block(x, mask)
        return x, mask, self.duration(x).squeeze(-1) * mask

    def mel_frames(self, durations: torch.Tensor) -> torch.Tensor:
        """Mel frames that units lasting `durations` unit frames fill."""
        return torch.round(durations.sum(-1) * self.config.mel_rate / self.config.unit_rate).long().clamp(min=1)

    def expand(
        self, x: torch.Tensor, durations: torch.Tensor, frames: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Each mel frame takes the state of the unit sounding at its time: (B, T, H) -> (B, F, H).
        Frames past the last unit's end (rounding) keep the last unit of their own row."""
        ends = durations.cumsum(-1).float()  # (B, T) end of each unit in unit frames
        t = (torch.arange(int(frames.max()), device=x.device) + 0.5) * self.config.unit_rate / self.config.mel_rate
        index = torch.searchsorted(ends.contiguous(), t.expand(x.shape[0], -1).contiguous(), right=True)
        index = torch.minimum(index, (lengths - 1)[:, None])
        return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))

    def decode(self, x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        mask = (torch.arange(x.shape[1], device=x.device) < frames[:, None]).float()
        x = x * mask[..., None]
        for block in self.decoder:
            x = block(x, mask)
        return self.out(x)

    def forward(
        self, units: torch.Tensor, lengths: torch.Tensor, durations: torch.Tensor, frames: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced: true durations, target mel length -> log-mel (B, F, n_mels), log-duration (B, T)."""
        x, _, log_durations = self.encode(units, lengths)
        return self.decode(self.expand(x, durations, frames, lengths), frames), log_durations

    @torch.no_grad()
    def generate(self, units: torch.Tensor, durations: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One unit sequence (T,) -> log-mel (F, n_mels) and the durations used (predicted unless given, float)."""
        units = units[None]
        lengths = torch.tensor([units.shape[1]], device=units.device)
        x, _, log_durations = self.encode(units, lengths)
        if durations is None:  # kept fractional: rounding each unit to whole frames made answers 5% too fast
            durations = torch.expm1(log_durations.float()).clamp(min=1)
        else:
            durations = durations[None].to(x.device, torch.float)
        frames = self.mel_frames(durations)
        mel = self.decode(self.expand(x, durations, frames, lengths), frames)[0]
        return self.mel_mean + (mel - self.mel_mean) * self.config.contrast, durations[0]

    def save_pretrained(
        self,
        directory: str | Path,
        state_dict: dict[str, torch.Tensor] | None = None,
        hifigan: str | Path | None = None,
    ) -> None:
        """`hifigan`: the mel vocoder checkpoint the model was trained for, recorded as given (pass it resolved)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(yaml.safe_dump(to_dict(self.config), sort_keys=False))
        state = state_dict if state_dict is not None else self.state_dict()
        save_weights(state, directory / WEIGHTS_FILE)
        if hifigan is not None:
            (directory / HIFIGAN_FILE).write_text(f"{hifigan}\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, contrast: float | None = None) -> UnitToMel:
        """`contrast` overrides the one the model was saved with."""
        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: not a unit-to-mel directory (no {CONFIG_FILE})")
        model = cls(from_dict(UnitToMelConfig, yaml.safe_load(path.read_text()), str(path)))
        if contrast is not None:
            model.config.contrast = contrast
        state = load_weights(directory / WEIGHTS_FILE)
        if "mel_mean" not in state:  # saved before `contrast` existed: it can only generate as trained
            if model.config.contrast != 1:
                raise ValueError(
                    f"{path}: contrast {model.config.contrast} needs the model's mel_mean, which "
                    f"{WEIGHTS_FILE} (saved before it existed) lacks; set contrast: 1 or retrain"
                )
            state["mel_mean"] = model.mel_mean
        model.load_state_dict(state)
        return model.eval()


def hifigan_reference(directory: str | Path) -> str | None:
    """The HiFi-GAN checkpoint a saved unit-to-mel model names (`save_pretrained(hifigan=...)`), if any; a relative
    name is beside the model (a distilled generator saved with it: `HifiGanGenerator.save_pretrained`)."""
    path = Path(directory) / HIFIGAN_FILE
    name = path.read_text().strip() if path.is_file() else ""
    return str(Path(directory) / name) if name else None


def unit_to_mel_loss(
    predicted: torch.Tensor,
    log_durations: torch.Tensor,
    batch: dict[str, torch.Tensor],
) -> torch.Tensor:
    """L1 on the log-mel frames plus MSE on log(1 + duration), both over real positions only."""
    mels, frames, lengths = batch["mels"], batch["frames"], batch["lengths"]
    frame_mask = torch.arange(mels.shape[1], device=mels.device) < frames[:, None]
    unit_mask = torch.arange(log_durations.shape[1], device=mels.device) < lengths[:, None]
    mel_loss = (predicted.float() - mels).abs()[frame_mask].mean()
    duration_loss = (log_durations.float() - torch.log1p(batch["durations"].float()))[unit_mask].pow(2).mean()
    return mel_loss + duration_loss
