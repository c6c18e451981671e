"""What the speech decoder reads (omni/decoder_input.py): fusion, frames, token embeddings and answer features."""

import json

import pytest
import torch
from safetensors.torch import save_file

from omni.config import DecoderInputConfig
from omni.data import SpeechCollator, SpeechInstructionDataset
from omni.decoder_input import (
    DecoderInput,
    TextEmbeddings,
    answer_features,
    answer_prompt,
    load_input_embeddings,
)
from omni.model import OmniModel
from omni.prompt import IGNORE_INDEX
from train.decoder_tts import TextAnswers

TABLE = torch.randn(40, 8, generator=torch.Generator().manual_seed(0))


def make(fusion: str = "none", frame_offsets: bool = False, upsample: int = 3) -> DecoderInput:
    torch.manual_seed(0)
    return DecoderInput(DecoderInputConfig(fusion, frame_offsets=frame_offsets), 8, 6, upsample, TextEmbeddings(TABLE))


def test_frames_repeat_each_token_lambda_times_or_stretch_to_the_units():
    d = make()
    torch.nn.init.eye_(d.states_proj.weight), torch.nn.init.zeros_(d.states_proj.bias)  # frames show their states
    x = torch.arange(2 * 4, dtype=torch.float).view(2, 4, 1).expand(2, 4, 8)
    lengths = torch.tensor([4, 2])
    frames = d.frame_lengths(lengths)
    assert frames.tolist() == [12, 6]
    up = d(x, None, lengths, frames)[..., 0]
    assert torch.equal(up[0], x[0, :, 0].repeat_interleave(3))
    assert torch.equal(up[1, :6], x[1, :2, 0].repeat_interleave(3))
    # 2 tokens but 9 units: extended to 9 frames, each token's vector in order; not extended under "skip"
    stretched = d.frame_lengths(lengths, torch.tensor([5, 9]))
    assert stretched.tolist() == [12, 9] and d.frame_lengths(lengths, torch.tensor([5, 9]), extend=False).tolist() == [
        12,
        6,
    ]
    row = d(x, None, lengths, stretched)[1, :9, 0].tolist()
    assert row == sorted(row) and set(row) == {4.0, 5.0}


def test_frame_offsets_tell_a_tokens_copies_apart_and_spread_over_stretched_rows():
    d = make(frame_offsets=True)
    x = torch.zeros(2, 4, 8)  # states that say nothing: what is left is the offsets (and the bias)
    lengths = torch.tensor([4, 2])
    frames = d(x, None, lengths, torch.tensor([12, 9])) - d.states_proj.bias
    places = d.frame_offsets.weight
    torch.testing.assert_close(frames[0], places.repeat(4, 1))
    # 2 tokens stretched over 9 frames: 5 frames of the first (places 0 0 1 2 2), 4 of the second (0 1 1 2)
    torch.testing.assert_close(frames[1, :9], places[[0, 0, 1, 2, 2, 0, 1, 1, 2]])
    assert "frame_offsets.weight" in d.state_dict() and "frame_offsets.weight" not in make().state_dict()


def test_fusions_mix_states_and_token_embeddings_as_documented():
    states, tokens = torch.randn(2, 3, 8), torch.randint(0, 40, (2, 3))
    e = TABLE[tokens] / TABLE.norm(dim=-1).mean()
    none, add, gate = make("none"), make("add"), make("gate")
    h = none.states_proj(states)
    torch.testing.assert_close(none.fuse(states, tokens), h)
    torch.testing.assert_close(add.fuse(states, tokens), add.states_proj(states) + add.text_proj(e))
    # the gate starts at 1/2 (both count alike), then mixes per feature by what it learns
    torch.testing.assert_close(gate.fuse(states, tokens), (gate.states_proj(states) + gate.text_proj(e)) / 2)
    with torch.no_grad():
        gate.gate.bias.fill_(-30.0)  # closed: the text alone
    torch.testing.assert_close(gate.fuse(states, tokens), gate.text_proj(e))
    # no states: the text path alone (TTS pretraining); a states-only decoder refuses to go without them
    torch.testing.assert_close(add.fuse(None, tokens), add.text_proj(e))
    assert none.text_proj is None and none.gate is None and add.gate is None
    with pytest.raises(ValueError, match="reads LLM states alone"):
        none.fuse(None, tokens)
    with pytest.raises(ValueError, match="reads the answer's token ids"):
        gate.fuse(states, None)


def test_text_embeddings_are_the_llms_table_scaled_to_unit_mean_norm(tmp_path, tiny_dir):
    table = TextEmbeddings(TABLE)
    assert table(torch.arange(40)).norm(dim=-1).mean().item() == pytest.approx(1.0, abs=1e-5)
    model = OmniModel.from_config(_config(tiny_dir))
    shared = TextEmbeddings.from_model(model)
    assert shared.table.data_ptr() == model.base_llm.get_input_embeddings().weight.data_ptr()  # no copy
    read = TextEmbeddings.from_pretrained(tiny_dir / "llm")  # one tensor read from the safetensors
    torch.testing.assert_close(read.table.float(), shared.table.float())
    assert read.source == str((tiny_dir / "llm").resolve())
    # a sharded checkpoint: the index names the shard holding the table
    save_file({"model.embed_tokens.weight": TABLE}, tmp_path / "model-00002-of-00002.safetensors")
    index = {"weight_map": {"model.embed_tokens.weight": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    torch.testing.assert_close(load_input_embeddings(tmp_path), TABLE)
    # an omni model directory reads its LLM's table (full: llm/; LoRA or frozen: the base LLM's)
    model.save_pretrained(tmp_path / "omni")
    torch.testing.assert_close(load_input_embeddings(tmp_path / "omni").float(), shared.table.float())
    with pytest.raises(FileNotFoundError, match="no LLM directory"):
        load_input_embeddings(tmp_path / "missing")


def test_answer_features_are_the_answer_states_and_tokens_and_match_text_answers(tiny_dir, toy_dir):
    model = OmniModel.from_config(_config(tiny_dir)).eval()
    data = SpeechInstructionDataset(toy_dir / "train.jsonl")
    examples = [data[0], data[1]]
    batch = SpeechCollator.for_model(model)(examples)
    states, tokens, lengths = answer_features(model, batch, "at_token")
    expected, counts = model.response_hidden_states(batch)
    torch.testing.assert_close(states, expected)
    assert torch.equal(lengths, counts)
    for row in range(2):
        labels = batch["labels"][row]
        assert tokens[row, : lengths[row]].tolist() == labels[labels != IGNORE_INDEX].tolist()
    # the same answers given as text (TTS pretraining) are the same tokens, end of turn last
    model.save_pretrained(tiny_dir.parent / "omni_for_prompt")
    text = TextAnswers(answer_prompt(tiny_dir.parent / "omni_for_prompt"))  # the TTS recipe's batches
    for ex in examples:
        ex.units = [1, 2]
    batch = text(examples)
    assert torch.equal(batch["lengths"], lengths) and torch.equal(batch["tokens"], tokens)
    assert batch["units"].tolist() == [[1, 2], [1, 2]]


def _config(tiny_dir):
    from omni.config import AdaptorConfig, EncoderConfig, LLMConfig, ModelConfig

    return ModelConfig(
        encoder=EncoderConfig(name_or_path=str(tiny_dir / "whisper_tiny.pt")),
        adaptor=AdaptorConfig(stride=5, hidden_size=32),
        llm=LLMConfig(name_or_path=str(tiny_dir / "llm"), train="full"),
    )
