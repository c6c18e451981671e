"""Tiny random models with the real architectures, for tests and the quick demo.

    python -m omni.tiny .cache/tiny    # writes whisper_tiny.pt and llm/ (Llama + ChatML tokenizer)

They are real openai-whisper and Hugging Face Llama checkpoints with random weights, small enough
that a training step takes milliseconds; the code path is exactly the one the 8B model takes.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from whisper.model import ModelDimensions, Whisper

from omni.config import REFERENCE_SYSTEM_PROMPT, REFERENCE_USER_PROMPT

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
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


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    tiny_whisper(args.directory / "whisper_tiny.pt")
    tiny_llm(args.directory / "llm")
    print(f"tiny models written to {args.directory}")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
