"""CTranslate2 -> openai-whisper conversion, checked on the real Whisper tiny.en export and real speech."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
import soundfile as sf
import torch
import whisper
from whisper.model import ModelDimensions, Whisper
from whisper.normalizers import EnglishTextNormalizer

from omni import assets
from omni.convert.ctranslate2_whisper import DTYPES, ModelBinError, convert, read_model_bin

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")  # Debian pocketsphinx-testdata
TINY_EN_DIMS = ModelDimensions(
    n_mels=80,
    n_audio_ctx=1500,
    n_audio_state=384,
    n_audio_head=6,
    n_audio_layer=4,
    n_vocab=51864,
    n_text_ctx=448,
    n_text_state=384,
    n_text_head=6,
    n_text_layer=4,
)
TYPE_IDS = {dtype: type_id for type_id, dtype in DTYPES.items()}


@pytest.fixture(scope="session")
def tiny_en_bin() -> Path:
    return assets.ensure("whisper_tiny_en_ct2")


@pytest.fixture(scope="session")
def tiny_en(tiny_en_bin, tmp_path_factory) -> Path:
    return convert(tiny_en_bin, tmp_path_factory.mktemp("ct2") / "tiny_en.pt")


@pytest.fixture(scope="session")
def checkpoint(tiny_en) -> dict:
    return torch.load(tiny_en, map_location="cpu", weights_only=True)


def write_model_bin(path: Path, variables: dict[str, torch.Tensor], aliases: dict[str, str], spec: str = "WhisperSpec"):
    """The CTranslate2 binary layout (version 6), to build files the converter must accept or reject."""

    def string(text: str) -> bytes:
        data = text.encode() + b"\0"
        return struct.pack("<H", len(data)) + data

    with open(path, "wb") as f:
        f.write(struct.pack("<I", 6) + string(spec) + struct.pack("<II", 3, len(variables)))
        for name, value in variables.items():
            data = value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            f.write(string(name) + struct.pack(f"<B{value.ndim}I", value.ndim, *value.shape))
            f.write(struct.pack("<BI", TYPE_IDS[value.dtype], len(data)) + data)
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            f.write(string(alias) + string(target))
    return path


def wer(reference: list[str], hypothesis: list[str]) -> float:
    """Word error rate: word-level edit distance over the reference length."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref != hyp))
    return row[-1] / len(reference)


def librivox_transcripts() -> dict[Path, str]:
    """The 5 LibriVox clips (16 kHz, 25 s in all) with their reference transcripts."""
    transcripts = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        *words, utterance = line.split()
        transcripts[LIBRIVOX / f"{utterance.strip('()')}.wav"] = " ".join(w for w in words if w not in ("<s>", "</s>"))
    return transcripts


def test_dimensions_and_parameter_count(checkpoint):
    assert ModelDimensions(**checkpoint["dims"]) == TINY_EN_DIMS
    state = checkpoint["model_state_dict"]
    assert sum(v.numel() for v in state.values()) == 37_760_256  # 37,184,256 parameters + 576,000 encoder positions
    assert {v.dtype for v in state.values()} == {torch.float16}  # the export's dtype, as OpenAI ships its own


def test_state_dict_is_openai_whispers(checkpoint):
    state = checkpoint["model_state_dict"]
    assert not [k for k in state if k.endswith("key.bias")]
    reference = Whisper(TINY_EN_DIMS).state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.items()}


def test_fused_projections_are_split_in_order(tiny_en_bin, checkpoint):
    raw, state = read_model_bin(tiny_en_bin).variables, checkpoint["model_state_dict"]
    qkv = raw["decoder/layer_1/self_attention/linear_0/weight"]
    assert torch.equal(state["decoder.blocks.1.attn.value.weight"], qkv[768:])
    assert torch.equal(
        state["decoder.blocks.1.attn.query.bias"], raw["decoder/layer_1/self_attention/linear_0/bias"][:384]
    )
    kv = raw["decoder/layer_1/attention/linear_1/weight"]
    assert torch.equal(state["decoder.blocks.1.cross_attn.key.weight"], kv[:384])
    assert torch.equal(
        state["decoder.blocks.1.cross_attn.out.weight"], raw["decoder/layer_1/attention/linear_2/weight"]
    )


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="needs Debian pocketsphinx-testdata (apt-get install it)")
def test_converted_model_transcribes_real_speech(tiny_en):
    model = whisper.load_model(str(tiny_en), device="cpu")
    normalise = EnglishTextNormalizer()
    reference, hypothesis = [], []
    for wav, transcript in librivox_transcripts().items():
        audio, rate = sf.read(wav, dtype="float32")
        assert rate == whisper.audio.SAMPLE_RATE
        text = model.transcribe(audio, language="en", temperature=0, fp16=False)["text"]
        reference += normalise(transcript).split()
        hypothesis += normalise(text).split()
    error = wer(reference, hypothesis)
    assert error <= 0.1, f"WER {error:.3f}: {' '.join(hypothesis)}"  # measured 3/71 = 0.042


def test_parts_are_read_as_one_file(tiny_en_bin, tmp_path):
    data = tiny_en_bin.read_bytes()
    cuts = [0, 3, 1000, len(data) // 2 + 7, len(data)]  # inside the version word, a name, a tensor
    parts = [tmp_path / f"model.bin.part{i}" for i in range(len(cuts) - 1)]
    for part, start, end in zip(parts, cuts[:-1], cuts[1:], strict=True):
        part.write_bytes(data[start:end])
    joined, whole = read_model_bin(parts), read_model_bin(tiny_en_bin)
    assert joined.variables.keys() == whole.variables.keys()
    assert all(torch.equal(joined.variables[k], v) for k, v in whole.variables.items())


@pytest.mark.parametrize("size", [2, 30, 1_000_000, 75_537_501])
def test_truncated_file_fails_naming_it(tiny_en_bin, tmp_path, size):
    truncated = tmp_path / "model.bin"
    with open(tiny_en_bin, "rb") as f:
        truncated.write_bytes(f.read(size))
    with pytest.raises(ModelBinError, match="truncated") as error:
        convert(truncated, tmp_path / "out.pt")
    assert str(truncated) in str(error.value)
    assert not (tmp_path / "out.pt").exists()


def test_other_files_are_rejected_clearly(tiny_en, tmp_path):
    with pytest.raises(ModelBinError, match=re.escape(f"{tiny_en}: not a CTranslate2 model.bin")):
        read_model_bin(tiny_en)  # a zip (torch.save), not a model.bin
    other = write_model_bin(tmp_path / "model.bin", {"encoder/num_heads": torch.tensor(8, dtype=torch.int16)}, {}, "T5")
    with pytest.raises(ModelBinError, match="holds a 'T5', not a 'WhisperSpec'"):
        convert(other, tmp_path / "out.pt")


def test_unsupported_dtype_and_trailing_bytes_are_rejected(tmp_path):
    path = write_model_bin(tmp_path / "model.bin", {"w": torch.zeros(2, dtype=torch.float32)}, {})
    data = bytearray(path.read_bytes())
    data[data.index(b"w\0") + 2 + 1 + 4] = 9  # the dtype id after name, rank and one dimension
    path.write_bytes(bytes(data))
    with pytest.raises(ModelBinError, match="unsupported dtype id 9"):
        read_model_bin(path)
    path = write_model_bin(tmp_path / "model.bin", {"w": torch.zeros(2, dtype=torch.bfloat16)}, {})
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelBinError, match="unexpected bytes after the aliases"):
        read_model_bin(path)


def test_aliases_are_materialised(tmp_path):
    variables = {"a": torch.arange(6, dtype=torch.int32).reshape(2, 3)}
    model = read_model_bin(write_model_bin(tmp_path / "model.bin", variables, {"b": "a"}))
    assert model.variables["b"] is model.variables["a"]
    assert torch.equal(model.variables["a"], variables["a"])


def test_int8_quantised_export_is_dequantised(tiny_en_bin, checkpoint, tmp_path):
    """CTranslate2's int8 export: q = round(w * scale) per output row, scale = 127 / max|row|."""
    variables = dict(read_model_bin(tiny_en_bin).variables)
    variables.pop("decoder/projection/weight")
    for name in [n for n in variables if "/linear_" in n and n.endswith("/weight")]:
        weight = variables[name].float()
        scale = 127 / weight.abs().amax(dim=1)
        variables[name] = torch.round(weight * scale[:, None]).to(torch.int8)
        variables[f"{name}_scale"] = scale
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    int8 = write_model_bin(tmp_path / "model.bin", variables, aliases)
    state = torch.load(convert(int8, tmp_path / "int8.pt"), weights_only=True)["model_state_dict"]
    for name, value in checkpoint["model_state_dict"].items():
        tolerance = value.float().abs().amax() / 254 + 1e-3  # half a quantisation step, plus fp16 rounding
        assert (state[name].float() - value.float()).abs().max() <= tolerance, name


@pytest.mark.slow  # downloads 145 MB when the packages are not installed yet
@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="needs Debian pocketsphinx-testdata (apt-get install it)")
def test_split_base_model_transcribes_real_speech(tmp_path):
    parts = [assets.ensure("whisper_base_ct2_part1"), assets.ensure("whisper_base_ct2_part2")]
    model = whisper.load_model(str(convert(parts, tmp_path / "base.pt")), device="cpu")
    assert model.dims.n_audio_state == 512 and model.dims.n_vocab == 51865
    normalise = EnglishTextNormalizer()
    reference, hypothesis = [], []
    for wav, transcript in librivox_transcripts().items():
        audio, _ = sf.read(wav, dtype="float32")
        reference += normalise(transcript).split()
        hypothesis += normalise(model.transcribe(audio, language="en", temperature=0, fp16=False)["text"]).split()
    assert wer(reference, hypothesis) <= 0.05  # measured 1/71: the reader's own "a more a amiable"
