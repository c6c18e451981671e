"""The README's commands as a user types them: in a plain shell with `.venv` activated, every make target exists,
every command and module answers `--help` and takes the flags the README gives it, and the first commands of
"Start here" run as written."""

from __future__ import annotations

import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ACTIVATE = ROOT / ".venv" / "bin" / "activate"


def shell_commands() -> list[str]:
    """Each command of the README's bash blocks, continuations joined, comments and `&` dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    commands = [re.sub(r"\s+#.*$", "", line).strip().rstrip("&").strip() for line in lines]
    return [command for command in commands if command]


def plain_shell(command: str, cwd: Path = ROOT, timeout: int = 120) -> subprocess.CompletedProcess:
    """`command` in bash after `. .venv/bin/activate`, nothing else of this process's environment but PATH/HOME."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home()), "LANG": "C.UTF-8"}
    script = f". {shlex.quote(str(ACTIVATE))} && {command}"
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_readme_is_a_short_guide():
    assert len(README.splitlines()) <= 250
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        assert (ROOT / link).exists(), link


def test_every_make_target_in_the_readme_exists():
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    used = {word for command in shell_commands() if command.startswith("make ") for word in command.split()[1:2]}
    used |= set(re.findall(r"`make ([a-z][a-z0-9-]*)`", README))
    assert used and used <= targets, used - targets


def readme_programs() -> dict[str, list[list[str]]]:
    """The README's `omni <command>` and `python -m <module>` lines, grouped by the program they run."""
    programs: dict[str, list[list[str]]] = {}
    for command in shell_commands():
        words = shlex.split(command)
        if words[0] == "omni":
            program = words[:2]
        elif words[:2] == ["python", "-m"]:
            program = words[:3]
            if words[2] == "data_recipes.builder" and words[3] in ("build", "merge"):
                program = words[:4]
        else:
            continue
        programs.setdefault(" ".join(program), []).append(words)
    return programs


def test_every_command_takes_the_flags_the_readme_gives_it():
    """`--help` works in the activated shell and lists each flag the README passes (the programs run side by side)."""
    programs = readme_programs()
    assert {"omni generate", "omni serve", "python -m train.stage2"} <= set(programs)
    with ThreadPoolExecutor(max_workers=3) as pool:
        helps = dict(zip(programs, pool.map(lambda key: plain_shell(f"{key} --help"), programs), strict=True))
    for key, lines in programs.items():
        assert helps[key].returncode == 0, (key, helps[key].stderr)
        for words in lines:
            for flag in (word.split("=")[0] for word in words if word.startswith("--")):
                assert re.search(rf"{re.escape(flag)}\b", helps[key].stdout), f"{key} has no {flag}"


def test_every_config_the_readme_names_exists():
    for path in set(re.findall(r"(?:train|data_recipes)/configs/[\w.]+\.yaml", README)):
        assert (ROOT / path).is_file(), path


@pytest.mark.parametrize("line", ["omni generate data/toy/eval/00000.wav --tiny -o answer.wav"])
def test_start_here_speaks_as_written(tmp_path, line):
    """The "Start here" line, typed in a plain shell (the toy question stands in for make demo-tiny's)."""
    assert line in README
    question = tmp_path / "data" / "toy" / "eval" / "00000.wav"
    question.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(question, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    result = plain_shell(line, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(tmp_path / "answer.wav")
    assert rate > 0 and len(audio) > 0
