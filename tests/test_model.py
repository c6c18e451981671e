import pytest
import torch

from omni.data import Example, SpeechCollator
from omni.model import OmniModel
from omni.prompt import IGNORE_INDEX, SPEECH_TOKEN_ID
from tests.conftest import noise, with_llm


def examples():
    return [Example("a", noise(2.3, 1), "hello world", None, None), Example("b", noise(1.1, 2), "one two", None, None)]


def collate(model, **kwargs):
    return SpeechCollator.for_model(model, **kwargs)(examples())


@pytest.fixture
def model(model_config) -> OmniModel:
    torch.manual_seed(0)
    return OmniModel.from_config(model_config)


def test_speech_embeddings_land_in_their_slots(model):
    batch = collate(model)
    speech, lengths = model.embed_speech(batch["mels"], batch["mel_frames"], batch["windows_per_clip"])
    assert lengths.tolist() == [23, 11]  # 2.3 s -> 230 mel -> 115 encoder frames -> 23; 1.1 s -> 11
    embeds = model.splice(batch["input_ids"], speech, lengths)
    for row in range(2):
        slots = (batch["input_ids"][row] == SPEECH_TOKEN_ID).nonzero().squeeze(1)
        torch.testing.assert_close(embeds[row, slots], speech[row, : lengths[row]])
        text = batch["input_ids"][row] != SPEECH_TOKEN_ID
        torch.testing.assert_close(
            embeds[row, text], model.base_llm.get_input_embeddings()(batch["input_ids"][row, text])
        )
        assert (batch["labels"][row, slots] == IGNORE_INDEX).all()


def test_slot_count_mismatch_is_an_error(model):
    batch = collate(model)
    speech, lengths = model.embed_speech(batch["mels"], batch["mel_frames"], batch["windows_per_clip"])
    with pytest.raises(ValueError, match="speech slots per row"):
        model.splice(batch["input_ids"], speech, lengths + 1)


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_encoder_gets_no_gradient_and_adaptor_and_llm_do(model):
    model(collate(model)).loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.adaptor.parameters())
    assert not any(n.startswith("encoder.") for n in trainable(model))
    assert {n for n in trainable(model) if n.startswith("llm.")} == {
        "llm." + n for n, _ in model.llm.named_parameters()
    }


def test_lora_trains_only_adapters_and_adaptor(model_config):
    model = OmniModel.from_config(with_llm(model_config, train="lora"))
    names = trainable(model)
    assert names and all("lora_" in n or n.startswith("adaptor.") for n in names)
    assert any("lora_A" in n for n in names) and any(n.startswith("adaptor.") for n in names)
    frozen = OmniModel.from_config(with_llm(model_config, train="frozen"))
    assert all(n.startswith("adaptor.") for n in trainable(frozen))


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_save_load_round_trip_gives_identical_outputs(model_config, tmp_path, mode):
    torch.manual_seed(0)
    model = OmniModel.from_config(with_llm(model_config, train=mode))
    with torch.no_grad():  # move every trainable weight away from its initial value (LoRA B starts at zero)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert "adaptor.safetensors" in files and "omni_config.yaml" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    assert ("adapter_model.safetensors" in files) == (mode == "lora")
    loaded = OmniModel.from_pretrained(tmp_path / "m")
    model.eval(), loaded.eval()
    batch = collate(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, model(batch).logits, atol=0, rtol=0)
    assert trainable(loaded) == trainable(model)


def test_generate_answers_a_left_padded_batch(model):
    batch = collate(model, padding_side="left", with_response=False)
    assert (batch["attention_mask"][:, -1] == 1).all() and (batch["attention_mask"][1, 0] == 0)
    answers = model.generate(batch, max_new_tokens=6, min_new_tokens=6)
    for ex, answer in zip(examples(), answers, strict=True):
        alone = SpeechCollator.for_model(model, "left", False)([ex])
        assert model.generate(alone, max_new_tokens=6, min_new_tokens=6) == [answer]
    assert all(len(model.tokenizer(a)["input_ids"]) > 0 for a in answers)


def test_missing_model_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an omni model directory"):
        OmniModel.from_pretrained(tmp_path)
