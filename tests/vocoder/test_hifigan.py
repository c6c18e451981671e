"""HiFi-GAN vocoders: weight-norm folding, checkpoint checks, fairseq's unit vocoder, and real copy-synthesis."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F
import whisper
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from omni import assets
from omni.assets import hifigan_dir
from omni.tiny import TINY_CODE_HIFIGAN
from omni.vocoder import base
from omni.vocoder.base import load_vocoder
from omni.vocoder.code_hifigan import CodeHifiGan, CodeHifiGanConfig, load_code_hifigan
from omni.vocoder.hifigan import MEL_CONFIG, HifiGanConfig, HifiGanGenerator, load_hifigan
from omni.vocoder.mel import log_mel

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")  # Debian pocketsphinx-testdata, 16 kHz
SMALL = HifiGanConfig(upsample_initial_channel=32)
CODE_CONFIG = TINY_CODE_HIFIGAN  # fairseq's unit vocoder config.json keys, with small widths


def weight_normed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weight norm on every generator conv, as in training, with gains moved off ||v|| so folding them matters."""
    generator = torch.Generator().manual_seed(seed)
    convs = [
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv1d | nn.ConvTranspose1d) and not name.startswith("dur_predictor")  # no norm there
    ]
    for conv in convs:
        weight_norm(conv)
        g = conv.parametrizations.weight.original0
        g.data *= 0.5 + torch.rand(g.shape, generator=generator)
    return model.eval()


def original_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch's parametrization keys renamed to the `weight_g` / `weight_v` of the original checkpoints."""
    rename = {".parametrizations.weight.original0": ".weight_g", ".parametrizations.weight.original1": ".weight_v"}
    return {re.sub("|".join(map(re.escape, rename)), lambda m: rename[m.group()], k): v for k, v in state.items()}


def save_checkpoint(path: Path, state: dict, config: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"generator": state}, path)
    if config is not None:
        (path.parent / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture
def small_checkpoint(tmp_path) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    reference = weight_normed(HifiGanGenerator(SMALL))
    config = {"resblock": "1", "num_mels": 80, **{k: v for k, v in vars(SMALL).items() if k != "in_channels"}}
    return save_checkpoint(
        tmp_path / "g" / "generator.pth.tar", original_keys(reference.state_dict()), config
    ), reference


def test_output_is_hop_samples_per_frame():
    torch.manual_seed(0)
    with torch.inference_mode():
        audio = HifiGanGenerator(SMALL)(torch.randn(2, 80, 9))
    assert audio.shape == (2, 1, 9 * 256) and SMALL.hop_length == 256
    assert audio.abs().max() <= 1


def test_module_names_are_the_original_state_dict_keys():
    keys = HifiGanGenerator().state_dict().keys()
    assert {"conv_pre.weight", "ups.3.bias", "resblocks.11.convs1.2.weight", "resblocks.0.convs2.0.bias"} <= keys
    assert len(keys) == 234 - 78  # the universal checkpoint's 234 keys hold 78 (weight_g, weight_v) pairs


def test_weight_normed_checkpoint_loads_to_the_same_function(small_checkpoint):
    path, reference = small_checkpoint
    assert "ups.0.weight_g" in torch.load(path, weights_only=True)["generator"]
    model = load_hifigan(path)
    assert model.config == SMALL and not model.training
    assert "ups.0.weight" in model.state_dict() and not any(hasattr(m, "parametrizations") for m in model.modules())
    mel = torch.randn(1, 80, 12)
    with torch.inference_mode():
        assert torch.allclose(model(mel), reference(mel), atol=1e-5)
        assert not torch.allclose(model(mel), HifiGanGenerator(SMALL).eval()(mel), atol=1e-3)


def test_parametrization_keys_and_plain_weights_load_too(small_checkpoint, tmp_path):
    path, reference = small_checkpoint
    mel = torch.randn(1, 80, 5)
    with torch.inference_mode():
        expected = reference(mel)
        for name, state in [("param", reference.state_dict()), ("plain", load_hifigan(path).state_dict())]:
            other = save_checkpoint(
                tmp_path / name / "g.pt", state, json.loads((path.parent / "config.json").read_text())
            )
            assert torch.allclose(load_hifigan(other)(mel), expected, atol=1e-5)


def test_bad_checkpoints_are_named(small_checkpoint, tmp_path):
    path, _ = small_checkpoint
    state = torch.load(path, weights_only=True)["generator"]
    config = json.loads((path.parent / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_hifigan(tmp_path / "missing.pt")
    torch.save({"model": state}, tmp_path / "no_generator.pt")
    with pytest.raises(ValueError, match="no 'generator'.*found model"):
        load_hifigan(tmp_path / "no_generator.pt")
    nan = save_checkpoint(
        tmp_path / "nan" / "g.pt", {**state, "ups.1.weight_v": state["ups.1.weight_v"] * np.nan}, config
    )
    with pytest.raises(ValueError, match=r"tensor ups\.1\.weight_v holds NaN"):
        load_hifigan(nan)
    partial = {k: v for k, v in state.items() if not k.startswith("conv_post")}
    with pytest.raises(ValueError, match=r"missing keys: conv_post\.bias, conv_post\.weight"):
        load_hifigan(save_checkpoint(tmp_path / "partial" / "g.pt", partial, config))
    extra = save_checkpoint(tmp_path / "extra" / "g.pt", {**state, "mpd.weight": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match=r"unexpected keys: mpd\.weight"):
        load_hifigan(extra)
    lone_g = {k: v for k, v in state.items() if k != "conv_pre.weight_v"}
    with pytest.raises(ValueError, match=r"conv_pre\.weight_g has no matching conv_pre\.weight_v"):
        load_hifigan(save_checkpoint(tmp_path / "lone" / "g.pt", lone_g, config))
    with pytest.raises(ValueError, match=r"wrong shapes.*conv_pre\.weight \(32, 80, 7\) != \(512, 80, 7\)"):
        load_hifigan(save_checkpoint(tmp_path / "no_config" / "g.pt", state))  # V1 widths without its config


# fairseq's unit vocoder --------------------------------------------------------------------------------------------


@pytest.fixture
def code_checkpoint(tmp_path) -> tuple[Path, Path, nn.Module]:
    torch.manual_seed(0)
    reference = weight_normed(CodeHifiGan(CodeHifiGanConfig.from_dict(CODE_CONFIG)))
    reference.dur_predictor.proj.bias.data.fill_(1.4)  # exp(1.4) - 1 = 3: durations around 3 frames, not all 1
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CODE_CONFIG))
    return save_checkpoint(tmp_path / "g_00500000", original_keys(reference.state_dict())), config, reference


def expected_durations(state: dict[str, torch.Tensor], units: torch.Tensor) -> torch.Tensor:
    """fairseq's variance predictor and rounding, written out from the checkpoint tensors."""
    x = state["dict.weight"][units].T[None]  # (1, channels, T)
    for i in (1, 2):
        x = F.relu(
            F.conv1d(x, state[f"dur_predictor.conv{i}.0.weight"], state[f"dur_predictor.conv{i}.0.bias"], padding=1)
        )
        x = F.layer_norm(
            x.transpose(1, 2), (16,), state[f"dur_predictor.ln{i}.weight"], state[f"dur_predictor.ln{i}.bias"]
        )
        x = x.transpose(1, 2)
    log_durations = x.transpose(1, 2) @ state["dur_predictor.proj.weight"].T + state["dur_predictor.proj.bias"]
    return torch.clamp(torch.round(torch.exp(log_durations[0, :, 0]) - 1).long(), min=1)


def test_checkpoint_has_fairseq_key_names(code_checkpoint):
    path, _, _ = code_checkpoint
    keys = torch.load(path, weights_only=True)["generator"].keys()
    expected = {"dict.weight", "conv_pre.weight_g", "conv_pre.weight_v", "ups.4.weight_v", "conv_post.bias"}
    for layer in ("conv1.0", "ln1", "conv2.0", "ln2", "proj"):
        expected |= {f"dur_predictor.{layer}.weight", f"dur_predictor.{layer}.bias"}
    assert expected <= keys and "resblocks.14.convs2.2.weight_g" in keys


def test_units_are_stretched_by_predicted_durations(code_checkpoint):
    path, config, reference = code_checkpoint
    model = load_code_hifigan(path, config)
    state = torch.load(path, weights_only=True)["generator"]
    units = torch.tensor([[3, 999, 0, 41, 41, 500, 7]])
    with torch.inference_mode():
        durations = model.durations(units)
        audio = model(units)
        frames = state["dict.weight"][units[0]].repeat_interleave(durations, dim=0).T[None]
        expected = HifiGanGenerator.forward(reference, frames)[0, 0]
    assert torch.equal(durations, expected_durations(state, units[0])) and len(set(durations.tolist())) > 1
    assert audio.shape == (int(durations.sum()) * 320,)
    assert torch.allclose(audio, expected, atol=1e-5)
    assert torch.equal(model(units[0]), audio)  # (T,) works too, and dropout is off after loading


def test_a_bf16_vocoder_casts_only_its_hifigan(code_checkpoint, trio, monkeypatch):
    """Only the HiFi-GAN runs in bf16 (the costly part): unit table, durations and unit-to-mel stay fp32, so each unit
    lasts as long as in fp32. How it sounds: test_copy_synthesis_of_real_speech_keeps_its_words."""
    units = [3, 9, 0, 4, 4, 7, 5, 11]
    code, mel_unit = code_checkpoint[0].parent, trio / "vocoder"
    for directory, fp32_parts in ((code, ("dict", "dur_predictor")), (mel_unit, ())):
        fp32, bf16 = load_vocoder(directory, dtype="float32"), load_vocoder(directory, dtype="bfloat16")
        assert fp32.generator.conv_pre.weight.dtype == torch.float32
        assert bf16.generator.conv_pre.weight.dtype == bf16.generator.conv_post.weight.dtype == torch.bfloat16
        for name in fp32_parts:
            assert {p.dtype for p in getattr(bf16.generator, name).parameters()} == {torch.float32}
        (a, ends_a), (b, ends_b) = fp32.synthesize(units), bf16.synthesize(units)
        assert b.dtype == np.float32 and b.shape == a.shape and np.array_equal(ends_a, ends_b)
    assert {p.dtype for p in bf16.unit_to_mel.parameters()} == {torch.float32}
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):  # "auto": bf16 on a GPU that has it
        monkeypatch.setattr(base, "native_bf16", lambda device, native=native: native)
        assert base.waveform_dtype("auto", "cuda") == expected
        assert load_vocoder(code).generator.conv_pre.weight.dtype == torch.float32  # no faster on an AMX CPU
    with pytest.raises(ValueError, match="vocoder dtype must be auto, float32 or bfloat16; got 'float16'"):
        load_vocoder(code, dtype="float16")


def test_bad_units_are_rejected(code_checkpoint):
    model = load_code_hifigan(*code_checkpoint[:2])
    with pytest.raises(ValueError, match=r"outside \[0, 1000\): -1, 1000, 1234"):
        model(torch.tensor([[5, 1000, -1, 1234, 1000]]))
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"\(T,\) or \(1, T\)"):
        model(torch.zeros(2, 4, dtype=torch.long))


def test_bad_unit_vocoder_files_are_named(code_checkpoint, tmp_path):
    path, config, _ = code_checkpoint
    state = torch.load(path, weights_only=True)["generator"]
    no_dict = save_checkpoint(tmp_path / "no_dict" / "g", {k: v for k, v in state.items() if k != "dict.weight"})
    with pytest.raises(ValueError, match=r"missing keys: dict\.weight"):
        load_code_hifigan(no_dict, config)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_code_hifigan(path, tmp_path / "nope.json")
    for key, value in (("f0", True), ("multispkr", True), ("sampling_rate", 22050)):
        asks = tmp_path / f"{key}.json"
        asks.write_text(json.dumps({**CODE_CONFIG, key: value}))
        with pytest.raises(NotImplementedError, match=key):
            load_code_hifigan(path, asks)


# real weights ------------------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return text.lower().translate(str.maketrans("", "", string.punctuation)).split()


def word_edits(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def test_mel_config_is_the_real_generators():
    config = json.loads((hifigan_dir() / "config.json").read_text())
    assert (config["sampling_rate"], config["n_fft"], config["hop_size"], config["win_size"]) == (
        MEL_CONFIG.sample_rate,
        MEL_CONFIG.n_fft,
        MEL_CONFIG.hop,
        MEL_CONFIG.win,
    )
    assert (config["num_mels"], config["fmin"], config["fmax"]) == (MEL_CONFIG.n_mels, MEL_CONFIG.fmin, MEL_CONFIG.fmax)


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="needs Debian pocketsphinx-testdata (apt-get install it)")
def test_copy_synthesis_of_real_speech_keeps_its_words():
    vocoder = load_hifigan(hifigan_dir() / "generator_universal.pth.tar")
    audio, rate = sf.read(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0930.wav", dtype="float32")
    assert rate == 16000
    mel = log_mel(torch.from_numpy(soxr.resample(audio, rate, MEL_CONFIG.sample_rate)), MEL_CONFIG)
    asr = whisper.load_model(str(assets.ensure("whisper_tiny_en")), device="cpu")
    original = asr.transcribe(audio, language="en", temperature=0.0, fp16=False)["text"]
    assert word_edits(words(original), words("he might even have been made amiable himself")) <= 1
    for dtype in (torch.float32, torch.bfloat16):  # bf16: the vocoder's "auto" on a CPU with AMX, and on GPUs
        with torch.inference_mode():
            resynthesis = vocoder.cast(dtype)(mel[None])[0, 0].float()
        assert resynthesis.shape == (mel.shape[-1] * 256,)
        again = log_mel(resynthesis, MEL_CONFIG)[:, : mel.shape[-1]]
        assert (again - mel).abs().mean() < 0.5  # measured 0.34 (fp32); a flat spectrum at the mean level is 1.8 away
        back = soxr.resample(resynthesis.numpy(), MEL_CONFIG.sample_rate, rate).astype(np.float32)
        resynthesised = asr.transcribe(back, language="en", temperature=0.0, fp16=False)["text"]
        assert word_edits(words(original), words(resynthesised)) <= 1, (dtype, original, resynthesised)
