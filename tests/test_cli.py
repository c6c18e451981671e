"""Command-line entry points answer bad input with one `error:` line and exit status 1, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile

from omni.audio import MAX_QUESTION_SECONDS
from omni.cli import main as omni_main
from omni.cli import run_command
from tests.questions import bad_questions

ROOT = Path(__file__).resolve().parents[1]
HINT = "(--debug shows the traceback)"
ENTRY_POINTS = [
    "omni/units.py",
    "omni/generate.py",
    "omni/assets.py",
    "omni/convert/gguf_llm.py",
    "omni/convert/ctranslate2_whisper.py",
    "omni/eval/text_parity.py",
    "omni/eval/latency.py",
    "omni/eval/quality.py",
    "omni/eval/compare.py",
    "omni/eval/speech_units.py",
    "omni/eval/vocoder.py",
    "omni/tiny.py",
    "data_recipes/demo/instructions.py",
    "data_recipes/builder/units.py",
    "data_recipes/builder/__main__.py",
    "data_recipes/toy.py",
    "train/stage1.py",
    "train/stage2.py",
    "train/decoder_tts.py",
    "train/vocoder.py",
    "data_recipes/builder/wordnet.py",
    "train/config.py",
]


# In process: what run_command does with each kind of outcome.


def fails(message: str) -> object:
    def main(argv: list[str] | None) -> None:
        raise ValueError(message)

    return main


def test_error_is_one_line_and_exit_status_1(capsys, monkeypatch):
    monkeypatch.delenv("OMNI_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        run_command(fails("question.wav: unreadable audio file"), [])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == f"error: question.wav: unreadable audio file {HINT}\n"


def test_a_list_follows_its_summary_line_and_empty_message_names_the_class(capsys, monkeypatch):
    monkeypatch.delenv("OMNI_DEBUG", raising=False)
    with pytest.raises(SystemExit):
        run_command(fails("a.jsonl: 2 of 9 records are bad\na.jsonl, line 1: x\n\na.jsonl, line 4: y\n"), [])
    assert (
        capsys.readouterr().err
        == f"error: a.jsonl: 2 of 9 records are bad {HINT}\n  a.jsonl, line 1: x\n  a.jsonl, line 4: y\n"
    )

    def empty(argv):
        raise RuntimeError()

    with pytest.raises(SystemExit):
        run_command(empty, [])
    assert capsys.readouterr().err == f"error: RuntimeError {HINT}\n"


def test_debug_flag_is_removed_and_lets_the_exception_through(monkeypatch):
    monkeypatch.delenv("OMNI_DEBUG", raising=False)
    seen = []
    run_command(seen.append, ["a", "--debug", "b"])
    run_command(seen.append, ["a", "b"])
    assert seen == [["a", "b"], ["a", "b"]]
    with pytest.raises(ValueError, match="boom"):
        run_command(fails("boom"), ["--debug"])
    monkeypatch.setenv("OMNI_DEBUG", "1")
    with pytest.raises(ValueError, match="boom"):
        run_command(fails("boom"), [])


def test_usage_errors_and_interrupts_are_left_alone(monkeypatch, capsys):
    monkeypatch.delenv("OMNI_DEBUG", raising=False)

    def usage(argv):
        sys.exit(2)

    def interrupted(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        run_command(usage, [])
    assert exit_.value.code == 2
    with pytest.raises(KeyboardInterrupt):
        run_command(interrupted, [])
    assert capsys.readouterr().err == ""


def test_omni_without_a_command_prints_usage(capsys):
    for argv in ([], ["nope"]):
        with pytest.raises(SystemExit) as exit_:
            omni_main(argv)
        assert exit_.value.code == 2
        assert capsys.readouterr().err.startswith("usage: omni <command>")
    with pytest.raises(SystemExit) as exit_:
        omni_main(["--help"])
    assert exit_.value.code == 0
    assert "generate" in capsys.readouterr().out


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_every_entry_point_runs_through_run_command(path):
    source = (ROOT / path).read_text()
    block = source.split('if __name__ == "__main__":')[-1]
    assert "run_command(main)" in block, f"{path}: its __main__ block should call run_command(main)"


# Real processes: the line a user sees.


def run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OMNI_DEBUG"}
    env |= {"PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def assert_one_error(result: subprocess.CompletedProcess, *names: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and lines[0].endswith(HINT), lines[0]
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_models(tmp_path) -> list[str]:
    """Model flags that point nowhere: a bad question must be refused before any model is looked for."""
    return [f"--{flag}={tmp_path / ('no_' + flag)}" for flag in ("model", "decoder", "vocoder")]


def test_generate_not_audio(tmp_path, no_models):
    question = tmp_path / "notaudio.wav"
    question.write_text("this is text, not audio\n")
    line = assert_one_error(run("-m", "omni.cli", "generate", str(question), *no_models), str(question))
    assert "unreadable audio file" in line


def test_generate_missing_audio_with_debug_shows_the_traceback(tmp_path, no_models):
    question = tmp_path / "missing.wav"
    line = assert_one_error(run("-m", "omni.cli", "generate", str(question), *no_models), str(question))
    assert "not found" in line
    result = run("-m", "omni.generate", str(question), *no_models, "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "AudioError" in result.stderr


@pytest.mark.parametrize("case", list(bad_questions(MAX_QUESTION_SECONDS)))
def test_generate_refuses_a_bad_question_as_the_server_does_before_loading_anything(tmp_path, no_models, case):
    body, _, message = bad_questions(MAX_QUESTION_SECONDS)[case]
    question = tmp_path / "question.wav"
    question.write_bytes(body)
    assert_one_error(run("-m", "omni.cli", "generate", str(question), *no_models), f"{question}: {message}")


def test_generate_checks_its_arguments_before_the_heavy_imports(tmp_path):
    """A missing question or model is refused before torch and transformers load (seconds sooner)."""
    probe = (
        "import sys\n"
        "from omni.generate import main\n"
        "for argv in (['missing.wav'], [sys.argv[1], '--model', 'no_such_model']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except Exception as err:\n"
        "        print(type(err).__name__, err)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'whisper') if m in sys.modules))\n"
    )
    question = tmp_path / "q.wav"
    soundfile.write(question, np.zeros(8000, np.float32), 16000)  # half a second: a question by its limits
    result = run("-c", probe, str(question))
    lines = result.stdout.splitlines()
    assert lines[0].startswith("AudioError missing.wav: audio file not found"), result.stdout + result.stderr
    assert "--model no_such_model: no such model directory" in lines[1] and "--tiny" in lines[1]
    assert lines[2] == "[]"


def test_help_names_the_command_and_the_debug_flag():
    commands = [("omni.cli", command) for command in ("generate", "serve", "units")]
    with ThreadPoolExecutor(max_workers=2) as pool:  # side by side: each start-up imports torch
        *omni, stage2 = pool.map(lambda args: run("-m", *args, "--help"), [*commands, ("train.stage2",)])
    for (_, command), result in zip(commands, omni, strict=True):
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: omni {command}") and "--debug" in result.stdout
    assert "--debug" in stage2.stdout


def test_units_missing_codebook(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"response_audio": "a.wav"}\n')
    codebook = tmp_path / "km.npy"
    args = ["--data", str(data), "--out", str(tmp_path / "out.jsonl"), "--codebook", str(codebook)]
    result = run("-m", "omni.units", *args, "--whisper", str(tmp_path / "whisper.pt"), "--layer", "2")
    assert_one_error(result, str(codebook), "not found")


def test_train_config_missing_or_with_an_unknown_key(tmp_path):
    missing, bad = tmp_path / "missing.yaml", tmp_path / "bad.yaml"
    bad.write_text((ROOT / "train/configs/stage1_tiny.yaml").read_text() + "\nbogus_key: 1\n")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda config: run("-m", "train.stage1", "--config", str(config)), [missing, bad]))
    assert_one_error(results[0], str(missing), "not found")
    assert_one_error(results[1], str(bad), "bogus_key")
