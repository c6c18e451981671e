"""Convert a Llama-architecture GGUF chat model into a plain Hugging Face directory (safetensors).

    python -m omni.convert.gguf_llm SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2-135m-instruct [--dtype bfloat16]

The only real chat LLM installable offline is a GGUF file. transformers de-quantises GGUF on every load
(about 19 s for SmolLM2-135M) and refuses to `save_pretrained` such a model, so we copy its weights into
a fresh `LlamaForCausalLM` without the GGUF quantisation config and save that once; it then reloads in
about a second, like any Hugging Face checkpoint, for training and LoRA.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from omni.atomic import atomic_path
from omni.cli import command_parser

CHATML_END_OF_TURN = "<|im_end|>"


def _free(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; remove it to convert again")
    return out_dir


def load_gguf(gguf_path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The de-quantised float32 model and the tokenizer (with chat template) stored in a GGUF file."""
    gguf_path = Path(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, model_max_length=model.config.max_position_embeddings
    )
    return model, tokenizer


def plain_model(model: PreTrainedModel, dtype: torch.dtype) -> LlamaForCausalLM:
    """A Llama without the GGUF quantisation config (which blocks saving), holding `model`'s weights."""
    config = copy.deepcopy(model.config)
    if config.model_type != "llama":
        raise ValueError(f"expected a Llama-architecture GGUF, got model_type {config.model_type!r}")
    del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(model.state_dict(), strict=True)  # raises on any missing or unexpected key
    plain.config.dtype = dtype
    return plain.to(dtype).eval()


def generation_config(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """Generation defaults whose eos ends a chat turn, so `generate` stops where the assistant's answer does."""
    eos = model.generation_config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    if CHATML_END_OF_TURN in (tokenizer.chat_template or ""):
        eos_ids.append(tokenizer.convert_tokens_to_ids(CHATML_END_OF_TURN))
    eos_ids = list(dict.fromkeys(eos_ids))
    pad = model.generation_config.pad_token_id
    return GenerationConfig(
        bos_token_id=model.generation_config.bos_token_id,
        eos_token_id=eos_ids[0] if len(eos_ids) == 1 else eos_ids,
        pad_token_id=eos_ids[0] if pad is None else pad,
    )


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path, dtype: torch.dtype) -> Path:
    """Write model (safetensors), tokenizer and generation config to `out_dir`, atomically."""
    out_dir = _free(out_dir)
    with atomic_path(out_dir) as partial:
        plain = plain_model(model, dtype)
        plain.generation_config = generation_config(model, tokenizer)
        plain.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    return out_dir


def convert(gguf_path: Path, out_dir: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Convert a GGUF chat model into a Hugging Face directory loadable with `from_pretrained(out_dir)`."""
    _free(out_dir)  # fail now rather than after the slow load
    model, tokenizer = load_gguf(gguf_path)
    return save(model, tokenizer, out_dir, dtype)


def main(argv: Sequence[str] | None = None) -> None:
    parser = command_parser(__doc__.split("\n\n")[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True, help="output directory (must not exist)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args(argv)
    out = convert(args.gguf, args.output, getattr(torch, args.dtype))
    print(f"wrote {out}")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
