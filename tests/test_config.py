import dataclasses
import re
from pathlib import Path

import pytest

from omni.config import ConfigError, EncoderConfig, ModelConfig, annotate_yaml, field_docs, from_dict, load_config
from train.config import SCHEMAS, Stage1Config, Stage2Config, main, schema_for

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"


def test_unknown_key_names_file_and_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  encoder:\n    pad_to_30sec: true\n")
    with pytest.raises(ConfigError, match=r"c\.yaml\.model\.encoder: unknown key\(s\) \['pad_to_30sec'\]"):
        load_config(path, Stage1Config)


def test_a_mistyped_override_is_blamed_on_the_command_line_with_the_nearest_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_steps: 3\n")
    with pytest.raises(
        ConfigError,
        match=r"command line override 'train\.max_stesp=4': unknown key 'max_stesp' in "
        r"train \(did you mean 'max_steps'\?\)",
    ):
        load_config(path, Stage1Config, ["train.max_stesp=4"])
    with pytest.raises(
        ConfigError,
        match=r"override 'modle\.llm\.train=full': unknown key 'modle' in the top level "
        r"\(did you mean 'model'\?\)",
    ):
        load_config(path, Stage1Config, ["modle.llm.train=full"])
    # free-form mappings (rope_scaling) take any key
    assert load_config(path, Stage2Config, ["decoder.rope_scaling.factor=8"]).decoder.rope_scaling == {"factor": 8}
    # a key mistyped in the file is the file's, with its nearest key too
    path.write_text("train:\n  lr_schedule: cosine\n")
    with pytest.raises(
        ConfigError, match=r"c\.yaml\.train: unknown key\(s\) \['lr_schedule'\] \(did you mean 'schedule'"
    ):
        load_config(path, Stage1Config)


def test_a_bare_no_is_the_option_no_not_false(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  mixed_precision: no\n")
    assert load_config(path, Stage1Config).train.mixed_precision == "no"
    assert load_config(path, Stage1Config, ["train.mixed_precision=no"]).train.mixed_precision == "no"


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


RECIPES = sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name.startswith(tuple(SCHEMAS)))


def schemas_within(schema: type) -> list[type]:
    nested = [f.default_factory for f in dataclasses.fields(schema) if dataclasses.is_dataclass(f.default_factory)]
    return [schema, *(s for n in nested for s in schemas_within(n))]


@pytest.mark.parametrize("schema", sorted({s for top in SCHEMAS.values() for s in schemas_within(top)}, key=str))
def test_every_config_field_has_a_one_line_doc(schema):
    docs = field_docs(schema)
    for field in dataclasses.fields(schema):
        assert docs.get(field.name), f"{schema.__name__}.{field.name} has no doc line under it"
        assert "\n" not in docs[field.name]


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipes_load_start_with_their_command_and_comment_keys_with_the_docs(name):
    path = CONFIGS / name
    load_config(path, schema_for(path))
    text = path.read_text()
    assert re.match(r"# (python -m train\.|accelerate launch .* \\\n#\s+-m train\.)", text), "no run command first"
    assert f"--config train/configs/{name}" in text.split("\n#", 2)[0] + text.split("\n#", 2)[1]
    assert annotate_yaml(text, schema_for(path)) == text, (
        "key comments differ from the field docs: python -m train.config --write"
    )
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*[A-Za-z_]+:", line):
            assert "#" in line, f"{name}:{number} has no comment: {line!r}"


def test_annotate_writes_docs_and_keeps_notes_and_quoted_hashes():
    text = (
        "# header\n"
        "model:\n"
        "  prompt:   # old words\n"
        "    # a recipe's own note\n"
        '    system: "Say # twice"  # stale\n'
        "  llm:\n"
        "    lora:\n"
        "      r: 4\n"
    )
    out = annotate_yaml(text, Stage1Config).splitlines()
    assert out[0] == "# header" and out[3] == "    # a recipe's own note"
    assert out[2].endswith("# " + field_docs(ModelConfig)["prompt"])
    assert out[4].startswith('    system: "Say # twice"') and out[4].endswith(
        "# system prompt; null for none (default: the reference's)"
    )
    assert out[7] == "      r: 4                  # LoRA rank"


def test_config_check_command_fails_on_stale_comments(tmp_path, capsys):
    stale = tmp_path / "stage2_x.yaml"
    stale.write_text("model: runs/m  # whatever\n")
    with pytest.raises(SystemExit, match="out of date"):
        main([str(stale)])
    main(["--write", str(stale)])
    assert stale.read_text() == f"{'model: runs/m':<28}# {field_docs(Stage2Config)['model']}\n"
    main([str(stale)])


def test_paper_config_holds_the_reference_numbers():
    config = load_config(CONFIGS / "stage1_llama31_8b.yaml", Stage1Config)
    assert config.model.encoder.name_or_path == "large-v3"
    assert config.model.llm.name_or_path == "meta-llama/Llama-3.1-8B-Instruct"
    assert config.model.llm.train == "full"
    assert (config.model.adaptor.stride, config.model.adaptor.hidden_size) == (5, 2048)
    t = config.train
    assert t.global_batch_size == 32 and t.accumulation_for(4) * t.batch_size * 4 == 32  # 4 GPUs, as the paper
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
    assert t.global_batch_size == 32 and t.accumulation_for(4) * t.batch_size * 4 == 32
    assert (t.epochs, t.lr, t.schedule, t.warmup_ratio) == (3, 2e-4, "cosine", 0.03)
