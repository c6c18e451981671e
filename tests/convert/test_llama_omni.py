"""LLaMA-Omni's released layout, loaded by omni, checked against an independent re-implementation of the
reference's forward (ictnlp/LLaMA-Omni, omni_speech/...) on a tiny random checkpoint of that layout
(`omni.tiny.tiny_llama_omni`)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
import whisper
from accelerate.state import AcceleratorState
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from omni.config import REFERENCE_SYSTEM_PROMPT, REFERENCE_USER_PROMPT
from omni.convert.llama_omni import convert_llama_omni, load_llama_omni
from omni.data import Example, SpeechCollator
from omni.generate import main as generate_main
from omni.model import OmniModel
from omni.speech_decoder import SpeechDecoder, ctc_greedy
from omni.speech_generator import SpeechGenerator
from omni.tiny import tiny_code_hifigan, tiny_llama_omni
from omni.vocoder.base import load_vocoder
from tests.conftest import ROOT, noise
from train import stage1, stage2

SPEECH, IGNORE = -200, -100
ANSWER = "one two three four"


# ---- the reference, re-implemented on the checkpoint's files with plain torch, openai-whisper and transformers ----
def reference_ids(tokenizer: PreTrainedTokenizerFast, response: str | None = None) -> tuple[list[int], list[int]]:
    """conversation.py's llama_3 prompt, tokenized by tokenizer_speech_token and masked by preprocess_llama_3."""
    sep = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    text = f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{REFERENCE_SYSTEM_PROMPT}<|eot_id|>"
    text += f"<|start_header_id|>user<|end_header_id|>\n\n{REFERENCE_USER_PROMPT.strip()}<|eot_id|>{sep}"
    prompt = text
    text += "" if response is None else response.strip() + "<|eot_id|>"

    def speech_token(text: str) -> list[int]:
        chunks = [tokenizer(chunk).input_ids for chunk in text.split("<speech>")]
        offset = int(bool(chunks[0]) and chunks[0][0] == tokenizer.bos_token_id)
        ids = chunks[0][:offset]
        for i, chunk in enumerate(chunks):
            ids += ([SPEECH] * (offset + 1))[offset:] if i else []
            ids += chunk[offset:]
        return ids

    ids = speech_token(text)
    masked = 1 + len(speech_token(prompt)) - 1
    return ids, [IGNORE] * masked + ids[masked:]


def release_state(directory: Path) -> dict[str, torch.Tensor]:
    state = {}
    for path in sorted(directory.glob("model-*.safetensors")):
        state |= load_file(path)
    return state


def reference_llm(directory: Path) -> LlamaForCausalLM:
    """OmniSpeech2SLlamaForCausalLM's LLM: a LlamaConfig of the whole config.json, the Llama tensors."""
    raw = json.loads((directory / "config.json").read_text())
    raw.pop("model_type")
    llm = LlamaForCausalLM(LlamaConfig.from_dict(raw))
    state = release_state(directory)
    llm.load_state_dict({k: v for k, v in state.items() if k in llm.state_dict()}, strict=True)
    return llm.eval()


def reference_speech(directory: Path, audio: np.ndarray) -> torch.Tensor:
    """infer.py's mel of the clip padded to 30 s -> openai-whisper's own encoder -> EncoderProjectorConcat."""
    raw = json.loads((directory / "config.json").read_text())
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)), n_mels=128)
    encoder = whisper.load_model(str(directory / raw["speech_encoder"]), device="cpu").encoder
    x = encoder(mel[None])
    k, state = raw["speech_encoder_ds_rate"], release_state(directory)
    x = x[:, : x.shape[1] // k * k].reshape(1, x.shape[1] // k, -1)
    p = "model.speech_projector."
    x = F.relu(F.linear(x, state[p + "linear1.weight"], state[p + "linear1.bias"]))
    return F.linear(x, state[p + "linear2.weight"], state[p + "linear2.bias"])[0]


def reference_embeds(llm: LlamaForCausalLM, ids: list[int], speech: torch.Tensor) -> torch.Tensor:
    at = ids.index(SPEECH)
    embed = llm.get_input_embeddings()
    return torch.cat([embed(torch.tensor(ids[:at])), speech, embed(torch.tensor(ids[at + 1 :]))])[None]


def llama3_inv_freq(head_dim: int, theta: float, scaling: dict) -> torch.Tensor:
    """Llama 3.1's rope frequencies (Meta's apply_scaling)."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    old, low, high, factor = (
        scaling[k] for k in ("original_max_position_embeddings", "low_freq_factor", "high_freq_factor", "factor")
    )
    wavelength = 2 * math.pi / inv
    scaled = torch.where(wavelength > old / low, inv / factor, inv)
    smooth = (old / wavelength - low) / (high - low)
    medium = (wavelength <= old / low) & (wavelength >= old / high)
    return torch.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled).float()


def reference_generator(directory: Path, states: torch.Tensor) -> torch.Tensor:
    """SpeechGeneratorCTC.predict before its log-softmax: input_proj, uniform upsampling, causal Llama layers with
    the main config's rope and RMS eps, output_proj. states (M, H) -> logits (lambda M, K + 1)."""
    raw, w = json.loads((directory / "config.json").read_text()), release_state(directory)
    layers, width, heads, _ = (int(x) for x in raw["ctc_decoder_config"].strip("()").split(","))
    up, eps, head_dim = raw["ctc_upsample_factor"], raw["rms_norm_eps"], width // heads
    x = F.linear(states, w["speech_generator.input_proj.weight"], w["speech_generator.input_proj.bias"])
    frames = up * len(states)
    x = x[(torch.arange(frames) / (frames / len(states))).long()]
    angles = torch.arange(frames)[:, None] * llama3_inv_freq(head_dim, raw["rope_theta"], raw["rope_scaling"])
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    def rope(t: torch.Tensor) -> torch.Tensor:
        half = t.shape[-1] // 2
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin

    causal = torch.full((frames, frames), float("-inf")).triu(1)
    for i in range(layers):
        p = f"speech_generator.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q, k, v = (
            F.linear(h, w[f"{p}self_attn.{n}_proj.weight"]).view(frames, heads, -1).transpose(0, 1) for n in "qkv"
        )
        scores = rope(q) @ rope(k).transpose(1, 2) / math.sqrt(head_dim) + causal
        attended = (scores.softmax(-1) @ v).transpose(0, 1).reshape(frames, width)
        x = x + F.linear(attended, w[p + "self_attn.o_proj.weight"])
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gate, value = F.linear(h, w[p + "mlp.gate_proj.weight"]), F.linear(h, w[p + "mlp.up_proj.weight"])
        x = x + F.linear(F.silu(gate) * value, w[p + "mlp.down_proj.weight"])
    return F.linear(x, w["speech_generator.output_proj.weight"], w["speech_generator.output_proj.bias"])


# ---- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    # an RMS eps far from omni's default, so that a decoder that does not inherit it shows
    return tiny_llama_omni(tmp_path_factory.mktemp("llama_omni") / "Llama-3.1-8B-Omni", rms_norm_eps=0.05)


@pytest.fixture(scope="module")
def loaded(release) -> tuple[OmniModel, SpeechDecoder]:
    return load_llama_omni(release)


@pytest.fixture(scope="module")
def vocoder_dir(tmp_path_factory) -> Path:
    return tiny_code_hifigan(tmp_path_factory.mktemp("vocoder") / "vocoder")


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    return noise(1.3, 5)


def batch(model: OmniModel, audio: np.ndarray, response: str | None = None) -> dict[str, torch.Tensor]:
    collate = SpeechCollator.for_model(model, "right", with_response=response is not None)
    return collate([Example("q", audio, response, None, None)])


# ---- tests ------------------------------------------------------------------------------------------------------
def test_loaded_as_released(loaded, release):
    model, decoder = loaded
    assert model.config.encoder.pad_to_30s and model.config.adaptor.stride == 5
    d = decoder.config
    assert (d.num_units, d.upsample, d.num_layers, d.hidden_size, d.num_heads, d.intermediate_size) == (
        1000,
        25,
        2,
        64,
        4,
        128,
    )
    assert (d.rope_theta, d.rope_scaling["rope_type"], d.rms_norm_eps, d.input.alignment) == (
        500000.0,
        "llama3",
        0.05,
        "predicting",
    )
    assert model.prompt.end_of_turn_ids == {
        model.tokenizer.convert_tokens_to_ids(t) for t in ("<|eot_id|>", "<|end_of_text|>")
    }


def test_prompt_holds_the_reference_tokens_with_both_bos(loaded, release, question):
    model, _ = loaded
    tokenizer = PreTrainedTokenizerFast.from_pretrained(release)
    ids, labels = reference_ids(tokenizer, ANSWER)
    b = batch(model, question, ANSWER)
    ours = b["input_ids"][0].tolist()
    assert ours[:3] == [
        tokenizer.bos_token_id,
        tokenizer.bos_token_id,
        tokenizer.convert_tokens_to_ids("<|start_header_id|>"),
    ]
    at = ids.index(SPEECH)
    speech = ours.count(SPEECH)
    assert speech == 300  # 30 s: 1500 encoder frames / 5
    assert ours == ids[:at] + [SPEECH] * speech + ids[at + 1 :]
    assert b["labels"][0].tolist() == labels[:at] + [IGNORE] * speech + labels[at + 1 :]


def test_a_tokenizer_that_adds_no_bos_is_warned_about(tmp_path, release):
    """The reference's tokenization differs then (one BOS, and the token after <speech> dropped); not Llama 3's."""
    plain = tmp_path / "plain"
    shutil.copytree(release, plain)
    tokenizer = json.loads((plain / "tokenizer.json").read_text())
    (plain / "tokenizer.json").write_text(json.dumps(tokenizer | {"post_processor": None}))
    with pytest.warns(UserWarning, match="adds no BOS"):
        load_llama_omni(plain)


def test_llm_logits_equal_the_reference_forward(loaded, release, question):
    model, _ = loaded
    llm = reference_llm(release)
    ids, _ = reference_ids(PreTrainedTokenizerFast.from_pretrained(release))
    with torch.no_grad():
        expected = llm(inputs_embeds=reference_embeds(llm, ids, reference_speech(release, question))).logits
        ours = model(batch(model, question)).logits
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("alignment", ["at_token", "predicting"])
def test_decoder_logits_equal_the_reference_generator(loaded, release, question, alignment):
    model, decoder = loaded
    llm = reference_llm(release)
    ids, labels = reference_ids(PreTrainedTokenizerFast.from_pretrained(release), ANSWER)
    with torch.no_grad():
        embeds = reference_embeds(llm, ids, reference_speech(release, question))
        hidden = llm(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1][0]
        at = ids.index(SPEECH)
        answer = torch.tensor(labels[:at] + [IGNORE] * 300 + labels[at + 1 :]) != IGNORE
        # training (the forward): the states at the answer's tokens; inference (generate): one position earlier
        positions = answer.nonzero()[:, 0] - int(alignment == "predicting")
        expected = reference_generator(release, hidden[positions])
        states, lengths = model.response_hidden_states(batch(model, question, ANSWER), alignment)
        ours, frames = decoder(states, lengths)
    assert frames.tolist() == [len(expected)]
    torch.testing.assert_close(ours[0], expected, atol=1e-4, rtol=1e-4)


def test_encoder_may_come_from_the_shards(tmp_path, loaded, question):
    inside = tiny_llama_omni(tmp_path / "inside", rms_norm_eps=0.05, encoder_in_shards=True, encoder_file=False)
    model, _ = load_llama_omni(inside)
    reference, _ = loaded  # the same seed: the same weights, its encoder read from the file
    audio = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")
    assert [getattr(model.encoder.dims, k) for k in audio] == [getattr(reference.encoder.dims, k) for k in audio]
    with torch.no_grad():
        torch.testing.assert_close(model(batch(model, question)).logits, reference(batch(reference, question)).logits)
    with pytest.raises(FileNotFoundError, match="Whisper encoder"):
        load_llama_omni(tiny_llama_omni(tmp_path / "neither", encoder_file=False))
    out = convert_llama_omni(inside, tmp_path / "converted")  # written as an openai-whisper checkpoint
    converted = OmniModel.from_pretrained(out / "model").eval()
    assert converted.config.encoder.name_or_path == str((out / "model" / "speech_encoder.pt").resolve())
    with torch.no_grad():
        torch.testing.assert_close(converted(batch(converted, question)).logits, model(batch(model, question)).logits)


def test_pytorch_bin_weights_load_the_same(tmp_path, loaded, release, question):
    as_bin = tmp_path / "bin"
    shutil.copytree(release, as_bin)
    for path in as_bin.glob("model*.safetensors*"):
        path.unlink()
    torch.save(release_state(release), as_bin / "pytorch_model.bin")
    model, decoder = load_llama_omni(as_bin)
    reference, reference_decoder = loaded
    with torch.no_grad():
        torch.testing.assert_close(model(batch(model, question)).logits, reference(batch(reference, question)).logits)
    for key, value in reference_decoder.state_dict().items():
        torch.testing.assert_close(decoder.state_dict()[key], value)


def rewrite(directory: Path, key: str, value: torch.Tensor | None) -> None:
    """Replace (None: delete) one tensor of the checkpoint in its shard."""
    path = directory / json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"][key]
    state = load_file(path)
    if value is None:
        del state[key]
    else:
        state[key] = value
    save_file(state, path, metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("speech_generator.output_proj.bias", None, "missing: speech_generator.output_proj.bias"),
        ("model.layers.1.mlp.up_proj.weight", None, "missing: model.layers.1.mlp.up_proj.weight"),
        (
            "model.speech_projector.linear1.weight",
            torch.zeros(32, 600),
            "mis-shaped: model.speech_projector.linear1.weight is [32, 600], expected [32, 640]",
        ),
    ],
)
def test_a_missing_or_misshaped_key_is_named(tmp_path, release, key, value, message):
    broken = tmp_path / "broken"
    shutil.copytree(release, broken)
    rewrite(broken, key, value)
    with pytest.raises(ValueError, match="not LLaMA-Omni's layout") as error:
        load_llama_omni(broken)
    assert message in str(error.value).splitlines()


def reference_answer(release: Path, audio: np.ndarray, max_new_tokens: int) -> tuple[list[int], list[int]]:
    """generate() with streaming_unit_gen=False, greedy: the tokens, then the units of the generator's greedy CTC
    over the last prompt state and the states at tokens 1..N-1."""
    llm = reference_llm(release)
    ids, _ = reference_ids(PreTrainedTokenizerFast.from_pretrained(release))
    ends = set(llm.generation_config.eos_token_id)
    embeds, tokens, states = reference_embeds(llm, ids, reference_speech(release, audio)), [], []
    with torch.no_grad():
        while len(tokens) < max_new_tokens and not ends & set(tokens):
            out = llm(inputs_embeds=embeds, output_hidden_states=True)
            states.append(out.hidden_states[-1][0, -1])
            tokens.append(int(out.logits[0, -1].argmax()))
            embeds = torch.cat([embeds, llm.get_input_embeddings()(torch.tensor([[tokens[-1]]]))], dim=1)
        logits = reference_generator(release, torch.stack(states))
    return tokens, ctc_greedy(logits[None], torch.tensor([len(logits)]), 1000)[0]


def test_text_and_units_stream_as_the_reference_answers(loaded, release, vocoder_dir, question):
    model, decoder = loaded
    tokens, units = reference_answer(release, question, max_new_tokens=10)
    for incremental in (True, False):
        generator = SpeechGenerator(model, decoder, load_vocoder(vocoder_dir), incremental=incremental)
        events = list(generator(question, chunk_size=3, max_new_tokens=10))
        kinds = {e.kind for e in events}
        assert {"prefill", "text", "units", "audio", "done"} <= kinds
        done = events[-1]
        assert done.units == units and len(units) >= 8
        assert done.text == model.tokenizer.decode(tokens, skip_special_tokens=True)
        assert len(done.audio) > 0 and done.sample_rate == 16000


def test_convert_then_generate_from_the_directories(tmp_path, loaded, release, vocoder_dir, question):
    out = convert_llama_omni(release, tmp_path / "converted", vocoder_dir)
    with pytest.raises(FileExistsError, match="already exists"):
        convert_llama_omni(release, out)
    model, decoder = OmniModel.from_pretrained(out / "model").eval(), SpeechDecoder.from_pretrained(out / "decoder")
    reference, reference_decoder = loaded
    assert model.config.encoder.pad_to_30s and decoder.config == reference_decoder.config
    with torch.no_grad():
        torch.testing.assert_close(model(batch(model, question)).logits, reference(batch(reference, question)).logits)
    assert sorted(p.name for p in (out / "vocoder").iterdir()) == ["config.json", "g_00500000"]
    soundfile.write(tmp_path / "q.wav", question, 16000)
    command = [sys.executable, "-m", "omni.generate", str(tmp_path / "q.wav"), "--model", str(out)]
    command += ["--max-new-tokens", "4", "--chunk-size", "10", "--first-chunk", "4", "-o", str(tmp_path / "a.wav")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    audio, rate = soundfile.read(tmp_path / "a.wav")
    assert rate == 16000 and len(audio) > 0 and "written to" in done.stdout


def test_generate_reads_the_release_itself(tmp_path, release, vocoder_dir, question, capsys):
    soundfile.write(tmp_path / "q.wav", question, 16000)
    args = [str(tmp_path / "q.wav"), "--model", str(release), "--max-new-tokens", "3", "-o", str(tmp_path / "a.wav")]
    with pytest.raises(FileNotFoundError, match="--vocoder"):
        generate_main(args)
    generate_main([*args, "--vocoder", str(vocoder_dir)])
    assert soundfile.info(tmp_path / "a.wav").samplerate == 16000


def recipe(main, name: str, *overrides: str) -> None:
    """A shipped recipe, run for one step at learning rate 0 (its weights stay as they started), from a fresh state."""
    AcceleratorState._reset_state(reset_partial_state=True)
    small = ["train.global_batch_size=null", "train.batch_size=2", "train.max_steps=1", "train.lr=0"]
    small += ["train.mixed_precision='no'", "train.num_workers=0", "train.save_every=0", "train.eval_every=0"]
    main(["--config", str(ROOT / "train" / "configs" / name), *overrides, *small, "data.eval=null"])


def test_fine_tuning_recipes_start_from_the_converted_weights(tmp_path, release, toy_dir):
    out = convert_llama_omni(release, tmp_path / "converted")
    converted = OmniModel.from_pretrained(out / "model").config
    recipe(
        stage1.main,
        "stage1_llama_omni.yaml",
        f"model.encoder.name_or_path={converted.encoder.name_or_path}",
        f"model.llm.name_or_path={converted.llm.name_or_path}",
        f"model.adaptor.init_from={out / 'model' / 'adaptor.safetensors'}",
        "model.adaptor.hidden_size=32",
        "model.llm.dtype=float32",
        "train.gradient_checkpointing=false",
        f"data.train={toy_dir / 'train.jsonl'}",
        f"train.output_dir={tmp_path / 'stage1'}",
    )
    trained = load_file(tmp_path / "stage1" / "model" / "adaptor.safetensors")
    for key, value in load_file(out / "model" / "adaptor.safetensors").items():
        torch.testing.assert_close(trained[key], value)

    recipe(
        stage2.main,
        "stage2_llama_omni.yaml",
        f"model={out / 'model'}",
        f"decoder.init_from={out / 'decoder'}",
        "decoder.hidden_size=64",
        "decoder.num_heads=4",
        "decoder.intermediate_size=128",
        "cache.enabled=false",
        f"data.train={toy_dir / 'train.jsonl'}",
        f"train.output_dir={tmp_path / 'stage2'}",
    )
    trained = SpeechDecoder.from_pretrained(tmp_path / "stage2" / "model").state_dict()
    for key, value in SpeechDecoder.from_pretrained(out / "decoder").state_dict().items():
        torch.testing.assert_close(trained[key], value)
