import re
from pathlib import Path

import pytest

from omni.config import ConfigError, EncoderConfig, ModelConfig, from_dict, load_config
from train.config import Stage1Config, Stage2Config, VocoderConfig

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"


def test_unknown_key_names_file_and_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  encoder:\n    pad_to_30sec: true\n")
    with pytest.raises(ConfigError, match=r"c\.yaml\.model\.encoder: unknown key\(s\) \['pad_to_30sec'\]"):
        load_config(path, Stage1Config)


def test_wrong_type_and_literal_are_rejected():
    with pytest.raises(ConfigError, match=r"config\.pad_to_30s: expected bool"):
        from_dict(EncoderConfig, {"pad_to_30s": "yes"})
    with pytest.raises(ConfigError, match=r"long_audio: expected one of \['window', 'error'\]"):
        from_dict(EncoderConfig, {"long_audio": "truncate"})


def test_nested_values_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  llm:\n    train: lora\n")
    config = load_config(path, Stage1Config, ["model.llm.lora.r=4", "train.lr=1e-4", "model.encoder.download_root=/x"])
    assert config.model.llm.train == "lora"
    assert config.model.llm.lora.r == 4
    assert config.train.lr == pytest.approx(1e-4)
    assert config.model.encoder.download_root == "/x"
    assert isinstance(config.model, ModelConfig)


def test_bad_override_syntax(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(path, Stage1Config, ["train.lr"])


SCHEMAS = {"stage1": Stage1Config, "stage2": Stage2Config, "vocoder": VocoderConfig}


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name.startswith(tuple(SCHEMAS))))
def test_shipped_configs_load_and_comment_every_key(name):
    path = CONFIGS / name
    load_config(path, SCHEMAS[name.split("_")[0]])
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if re.match(r"^\s*[A-Za-z_]+:", line):
            assert "#" in line, f"{name}:{number} has no comment: {line!r}"


def test_paper_config_holds_the_reference_numbers():
    config = load_config(CONFIGS / "stage1_llama31_8b.yaml", Stage1Config)
    assert config.model.encoder.name_or_path == "large-v3"
    assert config.model.llm.name_or_path == "meta-llama/Llama-3.1-8B-Instruct"
    assert config.model.llm.train == "full"
    assert (config.model.adaptor.stride, config.model.adaptor.hidden_size) == (5, 2048)
    t = config.train
    assert t.batch_size * t.gradient_accumulation_steps * 4 == 32  # 4 GPUs, as the paper
    assert (t.epochs, t.lr, t.schedule, t.warmup_ratio) == (3, 2e-5, "cosine", 0.03)


def test_stage2_paper_config_holds_the_reference_numbers():
    config = load_config(CONFIGS / "stage2_llama31_8b.yaml", Stage2Config)
    d = config.decoder
    assert (d.num_units, d.upsample, d.hidden_size, d.num_layers, d.num_heads, d.intermediate_size) == (
        1000,
        25,
        4096,
        2,
        32,
        11008,
    )
    t = config.train
    assert t.batch_size * t.gradient_accumulation_steps * 4 == 32
    assert (t.epochs, t.lr, t.schedule, t.warmup_ratio) == (3, 2e-4, "cosine", 0.03)
