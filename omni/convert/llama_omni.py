"""LLaMA-Omni's released checkpoint (ICTNLP/Llama-3.1-8B-Omni) in omni's modules, loaded or converted.

    python -m omni.convert.llama_omni Llama-3.1-8B-Omni --out runs/llama_omni --vocoder vocoder
    omni generate question.wav --model runs/llama_omni -o answer.wav    # model/, decoder/ and vocoder/ of --out
    omni generate question.wav --model Llama-3.1-8B-Omni --vocoder vocoder -o answer.wav    # without converting

`load_llama_omni` gives an `OmniModel` and a `SpeechDecoder` that compute what the reference computes (tested
against a re-implementation of its forward on a tiny checkpoint of this layout, `omni.tiny.tiny_llama_omni`), so
omni's streaming (incremental decoder, crossfade joins, batches) runs it; `convert_llama_omni` writes them as omni's
own hand-off directories, which training, evaluation and `omni generate` read unchanged. No flash-attn, any current
transformers. The layout relied on, as the reference code (github ictnlp/LLaMA-Omni, paths under omni_speech/)
reads and builds it:

- `config.json`: a Llama-3.1 config in transformers-4.43 names (`rope_theta`, `rope_scaling`, `rms_norm_eps`, ...)
  with `model_type: omni_speech2s_llama` and: `speech_encoder`, an openai-whisper checkpoint path, relative to the
  working directory (model/speech_encoder/speech_encoder.py: `whisper.load_model(name=config.speech_encoder)`);
  `speech_encoder_type: whisper`; `speech_encoder_hidden_size` (1280) and `speech_encoder_ds_rate` (k = 5)
  (model/speech_projector/speech_projector.py); `speech_projector_type: linear`; `speech_generator_type: ctc`;
  `ctc_decoder_config: "(layers,width,heads,ffn)"`, `ctc_upsample_factor` (lambda) and `unit_vocab_size` (K,
  1000 when absent: the default of `initialize_speech_generator` in model/language_model/omni_speech2s_llama.py).
  Other keys are training leftovers and are ignored.
- weights (`model*.safetensors`, sharded with `model.safetensors.index.json` or not, or `pytorch_model*.bin`, read
  with `weights_only=True`): the LLM under Llama's names; the adaptor `model.speech_projector.linear1` (2048 x 1280k)
  and `linear2` (hidden x 2048), with biases (`EncoderProjectorConcat`: drop T mod k frames, concatenate k, linear1,
  ReLU, linear2 - omni's `SpeechAdaptor`); the speech decoder at top level (model/speech_generator/
  speech_generator.py, `SpeechGeneratorCTC`): `speech_generator.input_proj` (width x hidden, bias), `.layers.{i}`
  (transformers `LlamaDecoderLayer`s built from a deep copy of the main config with width, heads = key-value heads and
  FFN replaced: so they inherit its RMS eps, rope theta and rope scaling, head dim = width / heads; causal through
  flash-attn, positions 0..lambda M - 1) and `.output_proj` ((K + 1) x width, bias; blank = K); no final norm.
  Whether the shards hold the encoder (`model.speech_encoder.*`) is not known: its module is an attribute of the
  model, but model/builder.py replaces it by a fresh load of the `speech_encoder` file after loading the weights.
  So, as the reference, we load that file (resolved against the working directory, then the checkpoint directory,
  or given as `whisper_path`), and read the shards' copy only when no file is found; its heads are then
  width / 64, as in every openai-whisper model.
- input: infer/infer.py pads or cuts every clip to 30 s (`whisper.pad_or_trim`, 128 mels: 1500 frames, 300
  embeddings). It is loaded with `pad_to_30s=True`; `pad_to_30s=False` (variable length, several times faster on
  short questions) feeds it a distribution it was never trained on.
- prompt: conversation.py's `llama_3` conversation (system prompt `REFERENCE_SYSTEM_PROMPT`, user turn
  `REFERENCE_USER_PROMPT`, each turn `<|start_header_id|>role<|end_header_id|>\\n\\n` + text.strip() + `<|eot_id|>`),
  whose text starts with a literal `<|begin_of_text|>`; `tokenizer_speech_token` (datasets/preprocess.py) tokenizes it
  with the tokenizer's special tokens on, and Llama-3's tokenizer adds its own `<|begin_of_text|>`: every training
  (`preprocess_llama_3`) and inference prompt began with two BOS tokens. omni tokenizes rendered templates without
  special tokens, so the converted tokenizer's template (`LLAMA_OMNI_TEMPLATE`) writes both. Llama-3.1's own
  template (knowledge-date lines in the system turn) is not used: the model never saw it.
- decoder input: its training forward reads the states at the answer's tokens (and the end-of-turn token); its
  inference (`generate` and the streaming `GenerationWithCTC`) the last prompt state, then the states at tokens
  1..N-1, i.e. the state that predicted each token. Loaded with `alignment="predicting"`, its inference's;
  "at_token" is its training's.
- vocoder: fairseq's unit HiFi-GAN, `g_00500000` + `config.json` (mHuBERT layer 11, K = 1000, 16 kHz, durations
  predicted), which `omni.vocoder.code_hifigan` loads without fairseq.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging
from whisper.model import AudioEncoder, ModelDimensions

from omni.adaptor import SpeechAdaptor
from omni.cli import command_parser
from omni.config import (
    REFERENCE_SYSTEM_PROMPT,
    REFERENCE_USER_PROMPT,
    AdaptorConfig,
    DecoderInputConfig,
    EncoderConfig,
    LLMConfig,
    ModelConfig,
    PromptConfig,
    SpeechDecoderConfig,
)
from omni.encoder import SpeechEncoder, load_whisper_encoder, whisper_checkpoint
from omni.model import DTYPES, OmniModel
from omni.speech_decoder import SpeechDecoder

MODEL_DIR, DECODER_DIR, VOCODER_DIR = "model", "decoder", "vocoder"  # what `convert_llama_omni` writes under --out
ENCODER_FILE = "speech_encoder.pt"  # the shards' encoder as an openai-whisper checkpoint, when there is no file
SPEECH_KEYS = {  # config.json keys that configure the speech parts; the rest that a LlamaConfig knows is the LLM's
    "speech_encoder",
    "speech_encoder_type",
    "speech_encoder_hidden_size",
    "speech_encoder_ds_rate",
    "speech_projector_type",
    "speech_generator_type",
    "ctc_decoder_config",
    "ctc_upsample_factor",
    "unit_vocab_size",
}
RENAMES = {  # omni's module -> (omni's state-dict prefix, the release's)
    "adaptor": [("proj.0.", "model.speech_projector.linear1."), ("proj.2.", "model.speech_projector.linear2.")],
    "decoder": [
        ("input.states_proj.", "speech_generator.input_proj."),
        ("layers.layers.", "speech_generator.layers."),
        ("output_proj.", "speech_generator.output_proj."),
    ],
    "encoder": [("", "model.speech_encoder.")],
}
WHISPER_HEAD_DIM = 64  # every openai-whisper model's
LLAMA_OMNI_TEMPLATE = (  # conversation.py's llama_3 conversation, with the second BOS its tokenization adds
    "<|begin_of_text|><|begin_of_text|>{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def is_llama_omni(directory: str | Path) -> bool:
    """Whether a directory holds a LLaMA-Omni checkpoint as released (its config.json names a speech generator)."""
    path = Path(directory) / "config.json"
    return path.is_file() and "speech_generator_type" in json.loads(path.read_text())


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no config.json (expected LLaMA-Omni's released checkpoint)")
    raw = json.loads(path.read_text())
    expected = {"speech_encoder_type": "whisper", "speech_projector_type": "linear", "speech_generator_type": "ctc"}
    for key, value in expected.items():
        if str(raw.get(key, "")).lower() != value:
            raise NotImplementedError(f"{path}: {key} is {raw.get(key)!r}; only {value!r} is supported")
    return raw


def llama_config(raw: dict) -> LlamaConfig:
    """The LLM's config: what a LlamaConfig knows of config.json (rope fields in any transformers' names)."""
    known = set(LlamaConfig().to_dict()) | {"rope_theta", "rope_scaling"}
    known -= {"model_type", "architectures", "transformers_version", "_name_or_path", "dtype"}
    fields = {k: v for k, v in raw.items() if k in known and k not in SPEECH_KEYS}
    if isinstance(fields.get("rope_scaling"), dict):
        fields["rope_scaling"] = dict(fields["rope_scaling"])  # transformers edits the dict it is given
    return LlamaConfig(**fields)


def decoder_config(raw: dict, alignment: str) -> SpeechDecoderConfig:
    """The speech decoder's: `ctc_decoder_config` and the main config's rope and norm settings it inherits."""
    try:
        layers, width, heads, ffn = (int(x) for x in raw["ctc_decoder_config"].strip("() ").split(","))
    except (KeyError, ValueError) as err:
        raise ValueError(f"config.json: ctc_decoder_config must be '(layers,width,heads,ffn)': {err}") from None
    if raw.get("hidden_act", "silu") != "silu" or raw.get("attention_bias") or raw.get("mlp_bias"):
        raise NotImplementedError("config.json: the speech decoder's layers need hidden_act silu and no biases")
    scaling = raw.get("rope_scaling") or raw.get("rope_parameters")
    scaling = {k: v for k, v in scaling.items() if k != "rope_theta"} if scaling else None
    if scaling and scaling.get("rope_type", scaling.get("type")) == "default":
        scaling = None
    return SpeechDecoderConfig(
        num_units=int(raw.get("unit_vocab_size", 1000)),
        upsample=int(raw["ctc_upsample_factor"]),
        hidden_size=width,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=ffn,
        rope_theta=float(raw.get("rope_theta", (raw.get("rope_parameters") or {}).get("rope_theta", 10000.0))),
        rope_scaling=scaling,
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        input=DecoderInputConfig(alignment=alignment),
    )


class Weights:
    """The checkpoint's tensors by name, read lazily from its safetensors or (weights only) .bin files."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.files: dict[str, Path] = {}
        self._opened: dict[Path, object] = {}
        for pattern in ("model*.safetensors", "pytorch_model*.bin"):
            for path in sorted(directory.glob(pattern)):
                for key in list(self._open(path).keys()):
                    self.files.setdefault(key, path)
            if self.files:
                break
        if not self.files:
            raise FileNotFoundError(f"{directory}: no model*.safetensors or pytorch_model*.bin weights")

    def _open(self, path: Path):
        if path.suffix == ".safetensors":
            return safe_open(str(path), framework="pt")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)

    def _file(self, key: str):
        path = self.files[key]
        if path not in self._opened:
            self._opened[path] = self._open(path)
        return self._opened[path]

    def shape(self, key: str) -> tuple[int, ...]:
        f = self._file(key)
        return tuple(f.get_slice(key).get_shape() if hasattr(f, "get_slice") else f[key].shape)

    def tensor(self, key: str) -> torch.Tensor:
        f = self._file(key)
        return f.get_tensor(key) if hasattr(f, "get_tensor") else f[key]

    def has_prefix(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.files)


def release_keys(part: str, module: nn.Module) -> dict[str, str]:
    """omni's state-dict keys of `module` -> the release's names for them."""
    out = {}
    for key in module.state_dict():
        ours, theirs = next((o, t) for o, t in RENAMES[part] if key.startswith(o))
        out[key] = theirs + key[len(ours) :]
    return out


def check_layout(weights: Weights, expected: dict[str, tuple[int, ...]]) -> None:
    """Every expected tensor is there with its shape; else one error naming every missing and mis-shaped key."""
    missing = [k for k in expected if k not in weights.files]
    wrong = [
        f"{k} is {list(weights.shape(k))}, expected {list(shape)}"
        for k, shape in expected.items()
        if k in weights.files and weights.shape(k) != tuple(shape)
    ]
    if missing or wrong:
        lines = [f"missing: {k}" for k in missing] + [f"mis-shaped: {w}" for w in wrong]
        raise ValueError(f"{weights.directory}: not LLaMA-Omni's layout ({len(lines)} problems)\n" + "\n".join(lines))


def find_whisper(directory: Path, raw: dict, whisper_path: str | None = None) -> str | None:
    """The Whisper checkpoint to load: `whisper_path` (a file or an openai-whisper name), else config.json's
    `speech_encoder` against the working directory, then the checkpoint's directory; None when not found."""
    if whisper_path is not None:
        return str(Path(whisper_path).resolve()) if Path(whisper_path).is_file() else whisper_path
    named = raw.get("speech_encoder")
    if not named:
        return None
    for base in (Path.cwd(), directory):
        if (base / named).is_file():
            return str((base / named).resolve())
    return None


def encoder_from_shards(weights: Weights) -> tuple[AudioEncoder, ModelDimensions]:
    """The Whisper encoder the shards hold (`model.speech_encoder.*`), its sizes read from the tensors' shapes."""
    prefix = RENAMES["encoder"][0][1]
    conv1, positions = weights.shape(prefix + "conv1.weight"), weights.shape(prefix + "positional_embedding")
    blocks = {int(k[len(prefix) :].split(".")[1]) for k in weights.files if k.startswith(prefix + "blocks.")}
    width = conv1[0]
    dims = ModelDimensions(conv1[1], positions[0], width, width // WHISPER_HEAD_DIM, len(blocks), 0, 0, 0, 0, 0)
    encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, width, dims.n_audio_head, dims.n_audio_layer)
    names = release_keys("encoder", encoder)
    check_layout(weights, {names[k]: v.shape for k, v in encoder.state_dict().items()})
    encoder.load_state_dict({k: weights.tensor(name) for k, name in names.items()})
    return encoder, dims


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers reports the speech tensors as unexpected in a Llama checkpoint: they are read here instead."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_llama_omni(
    directory: str | Path,
    pad_to_30s: bool = True,
    alignment: str = "predicting",
    whisper_path: str | None = None,
    dtype: str | None = None,
    attn_implementation: str = "sdpa",
) -> tuple[OmniModel, SpeechDecoder]:
    """The released checkpoint as omni's model and speech decoder (see the module docstring).

    `pad_to_30s=False` feeds questions at their own length (a distribution change); `alignment="at_token"` feeds
    the decoder what it was trained on instead of what the reference's inference feeds it; `whisper_path` names
    the Whisper checkpoint when config.json's `speech_encoder` does not resolve; `dtype` (default: config.json's
    `torch_dtype`) is the LLM's and the adaptor's, the encoder and the decoder load in float32 as omni's do.
    A missing or mis-shaped tensor stops the load with its name, before any weight is read. An encoder read from
    the shards has no file: `config.encoder.name_or_path` is then the checkpoint's directory, and
    `convert_llama_omni` (not `OmniModel.save_pretrained` alone) writes it out.
    """
    directory = Path(directory)
    raw = read_config(directory)
    llm_config = llama_config(raw)
    dtype = dtype or raw.get("torch_dtype") or raw.get("dtype") or "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {sorted(DTYPES)}")
    weights = Weights(directory)

    found = find_whisper(directory, raw, whisper_path)
    if found is not None:
        audio_encoder, dims = load_whisper_encoder(whisper_checkpoint(found))
    elif weights.has_prefix(RENAMES["encoder"][0][1]):
        audio_encoder, dims = encoder_from_shards(weights)
    else:
        raise FileNotFoundError(
            f"{directory}: the Whisper encoder {raw.get('speech_encoder')!r} is neither under the working directory "
            "nor under the checkpoint, and the shards do not hold it: name it (whisper_path / --whisper, e.g. large-v3)"
        )
    ds_rate, hidden = int(raw.get("speech_encoder_ds_rate", 5)), llm_config.hidden_size
    linear1 = "model.speech_projector.linear1.weight"  # its rows: the adaptor's width (2048 in the reference's code)
    width = weights.shape(linear1)[0] if linear1 in weights.files else 2048
    adaptor = SpeechAdaptor(dims.n_audio_state, hidden, ds_rate, width)
    decoder = SpeechDecoder(decoder_config(raw, alignment), hidden)

    with torch.device("meta"):
        llm_shapes = {k: v.shape for k, v in LlamaForCausalLM(llm_config).state_dict().items()}
    if llm_config.tie_word_embeddings:
        llm_shapes.pop("lm_head.weight", None)
    names = {part: release_keys(part, module) for part, module in (("adaptor", adaptor), ("decoder", decoder))}
    expected = dict(llm_shapes)
    for part, module in (("adaptor", adaptor), ("decoder", decoder)):
        expected |= {names[part][k]: v.shape for k, v in module.state_dict().items()}
    check_layout(weights, expected)
    for part, module in (("adaptor", adaptor), ("decoder", decoder)):
        module.load_state_dict({k: weights.tensor(name) for k, name in names[part].items()})

    with _quiet_transformers():
        llm = LlamaForCausalLM.from_pretrained(
            directory, config=llm_config, dtype=DTYPES[dtype], attn_implementation=attn_implementation
        )
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)  # Llama 3's; AutoTokenizer would read config.json
    if tokenizer("a").input_ids[:1] != [tokenizer.bos_token_id]:
        warnings.warn(
            f"{directory}: its tokenizer adds no BOS, unlike Llama 3's: the reference would then have tokenized its "
            "prompt with one BOS and without the newline after <speech>; omni keeps Llama 3's two BOS and newline",
            stacklevel=2,
        )
    tokenizer.chat_template = LLAMA_OMNI_TEMPLATE
    config = ModelConfig(
        encoder=EncoderConfig(name_or_path=found or str(directory), pad_to_30s=pad_to_30s),
        adaptor=AdaptorConfig(stride=ds_rate, hidden_size=adaptor.proj[0].out_features),
        llm=LLMConfig(name_or_path=str(directory), train="full", dtype=dtype, attn_implementation=attn_implementation),
        prompt=PromptConfig(system=REFERENCE_SYSTEM_PROMPT, user=REFERENCE_USER_PROMPT),
    )
    encoder = SpeechEncoder(audio_encoder, dims, config.encoder)
    model = OmniModel(config, encoder, adaptor.to(DTYPES[dtype]), llm, tokenizer)
    model.set_trainable()
    return model.eval(), decoder.eval()


def convert_llama_omni(src: str | Path, out: str | Path, vocoder: str | Path | None = None, **load_kwargs) -> Path:
    """Write omni's hand-off directories for the released checkpoint: `out/model` (a stage-1 model: config, adaptor,
    tokenizer, llm/ with the tokenizer too, so that a stage-1 recipe can name it as its LLM), `out/decoder` (the
    speech decoder, naming `out/model` as the model it reads) and, given fairseq's vocoder directory, `out/vocoder`.
    The Whisper encoder is referenced by path, or written to `out/model/speech_encoder.pt` when only the shards
    hold it. `load_kwargs` go to `load_llama_omni`."""
    src, out = Path(src), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; remove it to convert again")
    if vocoder is not None:  # fairseq's vocoder folder checked before the long load (it loads when it speaks)
        generators = [p for p in Path(vocoder).glob("g_*") if p.is_file()]
        if not (Path(vocoder) / "config.json").is_file() or len(generators) != 1:
            raise FileNotFoundError(f"{vocoder}: not fairseq's unit vocoder (expected config.json and one g_* file)")
    model, decoder = load_llama_omni(src, **load_kwargs)
    model_dir = out / MODEL_DIR
    encoder = model.config.encoder
    if find_whisper(src, read_config(src), load_kwargs.get("whisper_path")) is None:
        model_dir.mkdir(parents=True)
        dims, state = model.encoder.dims, model.encoder.whisper.state_dict()
        checkpoint = {"dims": asdict(dims), "model_state_dict": {f"encoder.{k}": v for k, v in state.items()}}
        torch.save(checkpoint, model_dir / ENCODER_FILE)
        encoder = replace(encoder, name_or_path=str((model_dir / ENCODER_FILE).resolve()))
    llm_dir = (model_dir / "llm").resolve()
    model.config = replace(model.config, encoder=encoder, llm=replace(model.config.llm, name_or_path=str(llm_dir)))
    model.save_pretrained(model_dir)
    model.tokenizer.save_pretrained(llm_dir)
    decoder.save_pretrained(out / DECODER_DIR, stage1_model=model_dir)
    if vocoder is not None:
        (out / VOCODER_DIR).mkdir()
        for path in Path(vocoder).iterdir():
            if path.name == "config.json" or path.name.startswith("g_"):
                shutil.copy2(path, out / VOCODER_DIR / path.name)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("src", type=Path, help="the released checkpoint directory (config.json, weights, tokenizer)")
    parser.add_argument("--out", type=Path, required=True, help="where model/, decoder/ (and vocoder/) are written")
    parser.add_argument("--vocoder", type=Path, help="fairseq's unit vocoder directory: g_00500000 and config.json")
    parser.add_argument(
        "--whisper", help="Whisper checkpoint or openai-whisper name, if speech_encoder does not resolve"
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="LLM weights dtype (default: the checkpoint's)")
    parser.add_argument(
        "--variable-length",
        action="store_true",
        help="questions at their own length, not padded to 30 s (faster; a distribution the model was not trained on)",
    )
    parser.add_argument(
        "--alignment",
        choices=["predicting", "at_token"],
        default="predicting",
        help="decoder input: the state that predicted each token (the reference's inference) or the state at it",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = convert_llama_omni(
        args.src,
        args.out,
        args.vocoder,
        pad_to_30s=not args.variable_length,
        alignment=args.alignment,
        whisper_path=args.whisper,
        dtype=args.dtype,
    )
    print(f"wrote {out / MODEL_DIR}, {out / DECODER_DIR}" + (f" and {out / VOCODER_DIR}" if args.vocoder else ""))


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
