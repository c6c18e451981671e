"""The data builder end to end: a real chat endpoint process, real espeak-ng, real SIGKILLs, shards and merge."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import soundfile
import yaml

from data_recipes.builder.config import BuildConfig, FilterConfig, SourceConfig
from data_recipes.builder.pipeline import STEPS, merge, work_dir
from data_recipes.builder.source import load_source
from data_recipes.builder.store import StepLog
from omni.config import load_config
from omni.data import SpeechInstructionDataset
from omni.serve.launch import free_port

ROOT = Path(__file__).resolve().parents[2]
ECHO = Path(__file__).with_name("echo_chat_server.py")

INSTRUCTIONS = [
    {"id": "q1", "instruction": "What is the capital of France?"},
    {"id": "q2", "instruction": "Name a colour of the sky."},
    {"id": "q3", "instruction": "Give me a LIST of fruits."},  # the endpoint answers with code: unspeakable
    {"id": "q4", "instruction": ""},  # empty: dropped by the source
    {"id": "q5", "instruction": "what is the capital of france"},  # a repeat of q1
    {"id": "q6", "instruction": "How many legs does a spider have?"},
    {"id": "q7", "instruction": "Why is the sea salty?"},
    {"id": "q8", "instruction": "Show me a TABLE of planets."},  # a table: rewritten for speech, then kept
    {"id": "q9", "instruction": "What do bees make?"},
    {"id": "q10", "instruction": "Which planet is the largest?"},
]


@pytest.fixture
def endpoint(launch):
    """A real chat-completions server process on loopback; yields a function that (re)starts it."""

    def start(delay: float = 0.0, port: int | None = None, *options: str) -> str:
        port = port or free_port()
        command = [sys.executable, str(ECHO), "--port", str(port), "--delay", str(delay), *options]
        return launch(command, port, "the echo endpoint")

    return start


def write_config(tmp_path: Path, base_url: str, rows=INSTRUCTIONS, **extra) -> Path:
    source = tmp_path / "instructions.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "out": str(tmp_path / "out"),
        "source": {"path": str(source), "shape": "field"},
        "llm": {"backend": "openai", "model": "echo", "base_url": base_url, "batch_size": 4, "max_retries": 0},
        "instruction_tts": {"backend": "espeak", "voices": ["en-us", "en-gb+f3", "en-us+m3"], "rates": [150, 180]},
        "answer_tts": {"backend": "espeak", "voices": ["en-us"], "rates": [170]},
        "split": {"heldout": 0.3},
    } | extra
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def build(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "data_recipes.builder", "build", "--config", str(config), *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert not check or result.returncode == 0, result.stderr[-3000:]
    return result


def records(out: Path) -> dict[str, list[dict]]:
    return {
        name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        for name in ("train", "heldout")
    }


def test_source_shapes_filters_and_bad_rows(tmp_path):
    rows = [
        {"instruction": "Translate this", "input": "bonjour"},
        {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi there, who are you?"}]},
        {"conversations": [{"from": "human", "value": "Tell me a joke."}, {"from": "gpt", "value": "No."}]},
        {"conversations": [{"from": "gpt", "value": "Only me."}]},
        {"text": "Какая столица России?"},
        {"text": "one two three four five six"},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n[1, 2]\n")
    kept, dropped = load_source(SourceConfig(path=str(path)), FilterConfig(max_words=5))
    assert [r.instruction for r in kept] == ["Translate this\n\nbonjour", "Hi there, who are you?", "Tell me a joke."]
    assert [d.reason for d in dropped][:3] == [
        "malformed row: conversations: no user turn",
        "not English (mostly non-Latin letters)",
        "more than 5 words",
    ]
    assert dropped[3].reason.startswith("malformed row: invalid JSON") and dropped[3].id == "row6"
    assert dropped[4].reason == "malformed row: expected a JSON object, got list"
    assert kept[0].id.startswith("r") and kept[0].index == 0 and dropped[0].index == 3
    # the same rows as CSV, parquet and a datasets directory
    table = datasets.Dataset.from_list([{"id": f"x{i}", "prompt": f"Question number {i}?"} for i in range(4)])
    table.to_csv(tmp_path / "t.csv")
    table.to_parquet(tmp_path / "t.parquet")
    table.save_to_disk(str(tmp_path / "t_dir"))
    for name in ("t.csv", "t.parquet", "t_dir"):
        config = SourceConfig(path=str(tmp_path / name), shape="field", instruction_field="prompt", limit=3)
        kept, _ = load_source(config, FilterConfig())
        assert [(r.id, r.instruction) for r in kept] == [(f"x{i}", f"Question number {i}?") for i in range(3)]


def test_every_source_row_has_a_fate_and_seed_tasks_keep_their_input(tmp_path):
    """Alpaca's seed-task layout (input inside `instances`), a blank line and an unspaced Chinese instruction."""
    seed = {"id": "seed_task_1", "instruction": "What is the relation between the given pairs?"}
    rows = [
        json.dumps(seed | {"instances": [{"input": "Night : Day :: Right : Left", "output": "Opposites."}]}),
        "   ",
        json.dumps({"id": "zh", "instruction": "中国的首都是哪座城市请告诉我"}),
        json.dumps({"id": "two", "instruction": "Sort these.", "instances": [{"input": "b a"}, {"input": "d c"}]}),
    ]
    path = tmp_path / "seed_tasks.jsonl"
    path.write_text("\n".join(rows) + "\n")
    kept, dropped = load_source(SourceConfig(path=str(path)), FilterConfig())
    assert [(r.id, r.instruction) for r in kept] == [
        ("seed_task_1", "What is the relation between the given pairs?\n\nNight : Day :: Right : Left")
    ]
    assert [(d.id, d.reason) for d in dropped] == [
        ("row1", "empty line"),
        ("zh", "not English (mostly non-Latin letters)"),
        ("two", "malformed row: instances: expected one {input, output} object, got 2; give each its own row"),
    ]


def test_build_writes_records_datasets_and_a_report(tmp_path, endpoint):
    out = tmp_path / "out"
    build(write_config(tmp_path, endpoint()))
    built = records(out)
    every = built["train"] + built["heldout"]
    assert sorted(r["id"] for r in every) == ["q1", "q10", "q2", "q6", "q7", "q8", "q9"]
    assert built["heldout"] and built["train"]
    q1 = next(r for r in every if r["id"] == "q1")
    assert q1["response"] == "You asked what is the capital of france." and q1["voice"] in (
        "en-us",
        "en-gb+f3",
        "en-us+m3",
    )
    for record in every:
        for key, seconds in (("audio", "duration"), ("response_audio", "response_duration")):
            info = soundfile.info(str(out / record[key]))
            assert info.samplerate == 16000 and info.channels == 1 and abs(info.duration - record[seconds]) < 0.01
    assert {r["voice"] for r in every} != {"en-us"}  # instructions in several voices
    assert len(SpeechInstructionDataset(out / "train.jsonl")) == len(built["train"])
    assert len(datasets.load_from_disk(str(out / "hf" / "heldout"))) == len(built["heldout"])
    report = json.loads((out / "report.json").read_text())
    assert report["source_rows"] == 10 and report["records"] == {k: len(v) for k, v in built.items()}
    assert report["steps"]["source"]["skipped"] == {"empty instruction": 1, "repeated instruction": 1}
    assert report["steps"]["answer"]["skipped"] == {"code, after a rewrite for speech": 1}
    assert report["steps"]["respeak"] == {"done": 1, "skipped": {}, "seconds": report["steps"]["respeak"]["seconds"]}
    assert next(r for r in every if r["id"] == "q8")["response"] == "Mars has two moons."
    assert report["steps"]["speech"]["done"] == 7 and report["steps"]["answer_speech"]["done"] == 7
    assert {(s["id"], s["step"]) for s in report["skipped"]} == {("q4", "source"), ("q5", "source"), ("q3", "answer")}
    markdown = (out / "report.md").read_text()
    assert "| answer | 6 | 1 |" in markdown and "10 source rows -> 5 train and 2 held-out records (70%" in markdown
    assert report["records_per_minute"] > 0 and report["seconds"] == pytest.approx(
        sum(s.get("seconds", 0) for s in report["steps"].values()), abs=0.1
    )
    assert all(re.fullmatch(r"\d+\.\d", line.split(" | ")[3]) for line in markdown.splitlines()[7:11])
    # a rerun redoes nothing: no request, no synthesis
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "wavs").iterdir()}
    logs = {s: (work_dir(out, 0, 1) / f"{s}.jsonl").read_text() for s in ("answer", "speech")}
    build(write_config(tmp_path, "http://127.0.0.1:9/v1"))  # nothing listens there: nothing may be asked
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert logs == {s: (work_dir(out, 0, 1) / f"{s}.jsonl").read_text() for s in ("answer", "speech")}


def test_dialogues_from_given_and_written_follow_ups_carry_their_history(tmp_path, endpoint):
    rows = [
        {"id": "d1", "instruction": "What is the largest country?", "follow_ups": ["And what is its capital?"]},
        {"id": "d2", "instruction": "Name a colour of the sky."},
        {"id": "d3", "instruction": "Give me a LIST of fruits.", "follow_ups": ["And another?"]},  # unspeakable
    ]
    source = {"path": str(tmp_path / "instructions.jsonl"), "shape": "field", "follow_ups_field": "follow_ups"}
    config = write_config(tmp_path, endpoint(), rows, source=source, dialogue={"turns": 3}, split={"heldout": 0.0})
    build(config)
    out = tmp_path / "out"
    built = {r["id"]: r for r in records(out)["train"]}
    assert sorted(built) == ["d1", "d1-t1", "d1-t2", "d2", "d2-t1", "d2-t2"]  # d3 dropped, its follow-up with it
    given = built["d1-t1"]
    assert given["instruction"] == "And what is its capital?" and given["turn"] == 1 and given["dialogue"] == "d1"
    assert given["response"] == "You asked and what is its capital after what is the largest country."
    assert given["history"] == [
        {"role": "user", "text": "What is the largest country?", "audio": built["d1"]["audio"]},
        {"role": "assistant", "text": built["d1"]["response"]},
    ]
    written = built["d2-t1"]  # the LLM wrote it from the dialogue so far
    assert written["instruction"] == "And why is that, after one questions?" and len(written["history"]) == 2
    assert built["d2-t2"]["instruction"] == "And why is that, after two questions?"
    assert [t["role"] for t in built["d2-t2"]["history"]] == ["user", "assistant"] * 2
    assert built["d2-t2"]["history"][2]["text"] == written["instruction"]
    assert "history" not in built["d1"] and "follow_ups" not in built["d1"]
    data = SpeechInstructionDataset(out / "train.jsonl")  # the contract takes the dialogues, audio and all
    assert [len(ex.history) for ex in (data[i] for i in range(len(data)))] == [0, 2, 4, 0, 2, 4]
    hf = datasets.load_from_disk(str(out / "hf" / "train"))
    assert Path(hf[1]["history"][0]["audio"]).is_absolute()
    report = json.loads((out / "report.json").read_text())
    assert report["later_turns"] == {"train": 4, "heldout": 0}
    assert {(s["id"], s["step"]) for s in report["skipped"]} == {("d3", "answer")}


def test_instructions_spread_over_engines_voices_rates_and_pitches(tmp_path, endpoint):
    """espeak-ng at three pitches beside flite's voices (Debian's second engine): the report counts each."""
    rows = [{"id": f"v{i}", "instruction": f"Question number {i}, what is it?"} for i in range(12)]
    flite = {"backend": "command", "command": "flite -voice {voice} --setf duration_stretch={rate} -o {out}"}
    config = write_config(
        tmp_path,
        endpoint(),
        rows,
        instruction_tts={"backend": "espeak", "voices": ["en-us", "en-gb+m2"], "rates": [160], "pitches": [30, 70]},
        instruction_engines=[flite | {"voices": ["slt", "rms"], "rates": [0.9, 1.1]}],
        speak_answers=False,
    )
    build(config)
    built = [r for v in records(tmp_path / "out").values() for r in v]
    assert len(built) == 12 and {r["engine"] for r in built} == {"espeak", "flite"}
    assert {r["pitch"] for r in built if r["engine"] == "espeak"} <= {30, 70}
    assert not any("pitch" in r for r in built if r["engine"] == "flite")  # flite's pitch is its voice's own
    for record in built:
        info = soundfile.info(str(tmp_path / "out" / record["audio"]))
        assert info.samplerate == 16000 and info.duration > 0.5
    variety = json.loads((tmp_path / "out" / "report.json").read_text())["instruction_speech"]
    assert sum(variety["voices"].values()) == 12 and set(variety["voices"]) <= {
        "espeak en-us", "espeak en-gb+m2", "flite slt", "flite rms"
    }  # fmt: skip
    assert "Instruction speech: " in (tmp_path / "out" / "report.md").read_text()


def test_a_dead_endpoint_fails_the_step_and_a_rerun_retries(tmp_path, endpoint):
    port = free_port()
    config = write_config(tmp_path, f"http://127.0.0.1:{port}/v1")
    failed = build(config, check=False)
    assert failed.returncode == 1
    (line,) = failed.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: step 'answer' failed for all 8 records") and "Traceback" not in failed.stderr
    endpoint(port=port)
    build(config)
    assert sum(len(v) for v in records(tmp_path / "out").values()) == 7


def test_sigkill_loses_nothing_finished(tmp_path, endpoint):
    url = endpoint(delay=0.3)
    rows = [{"id": f"k{i}", "instruction": f"Question number {i}, what is it?"} for i in range(24)]
    config = write_config(tmp_path, url, rows)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "data_recipes.builder", "build", "--config", str(config)]
    for log_name, least in (("answer", 5), ("speech", 3)):
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = work_dir(out, 0, 1) / f"{log_name}.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and (not log.is_file() or log.read_text().count("\n") < least):
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert log.read_text().count("\n") < 24, "the kill came too late to test anything"
    with (work_dir(out, 0, 1) / "answer.jsonl").open("a") as f:
        f.write('{"id": "k3", "raw": "torn')  # a line cut by the kill: dropped on reading
    done = {s: StepLog(work_dir(out, 0, 1) / f"{s}.jsonl").entries.keys() for s in STEPS}
    build(config)
    built = records(out)
    assert sorted(r["id"] for v in built.values() for r in v) == sorted(r["id"] for r in rows)
    # the answers' time counts every run's: 24 answers asked 4 at a time, each request waiting 0.3 s
    assert json.loads((out / "report.json").read_text())["steps"]["answer"]["seconds"] >= 6 * 0.3
    assert not list(out.rglob("*.partial*")), "a half-written file was left"
    for step in ("answer", "speech"):  # what was finished before the kill was not done again
        lines = (work_dir(out, 0, 1) / f"{step}.jsonl").read_text().splitlines()
        ids = [json.loads(line)["id"] for line in lines]
        assert len(ids) == len(set(ids)) == 24 and set(done[step]) <= set(ids)


def test_a_slow_endpoint_is_asked_what_it_serves_each_question_once(tmp_path, endpoint):
    """The endpoint answers two at a time in 0.3 s each; the builder may keep 16 in flight with a 2 s timeout:
    asking all 16 at once would leave the last waiting 2.4 s, past the timeout, and ask them again."""
    served = tmp_path / "served.txt"
    url = endpoint(0.3, None, "--capacity", "2", "--served", str(served))
    rows = [{"id": f"s{i}", "instruction": f"Question number {i}, what is it?"} for i in range(24)]
    llm = {"backend": "openai", "model": "echo", "base_url": url, "batch_size": 24, "concurrency": 16}
    config = write_config(tmp_path, url, rows, llm=llm | {"timeout_s": 2.0, "max_retries": 4})
    build(config, "speak_answers=false")
    assert sum(len(v) for v in records(tmp_path / "out").values()) == 24  # none lost
    asked = served.read_text().splitlines()
    assert len(asked) == len(set(asked)) == 24  # none answered twice
    log = (work_dir(tmp_path / "out", 0, 1) / "answer.jsonl").read_text().splitlines()
    assert len(log) == 24 and not any("retry" in json.loads(line) for line in log)


def test_sharded_build_gives_the_same_records(tmp_path, endpoint):
    url = endpoint()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    build(write_config(tmp_path / "a", url))
    sharded = write_config(tmp_path / "b", url)
    for shard in range(3):
        result = build(sharded, "--num-shards", "3", "--shard-index", str(shard))
        assert re.search(rf"shard {shard} of 3: \d of its \d records built", result.stdout)
    merged = subprocess.run(
        [sys.executable, "-m", "data_recipes.builder", "merge", "--config", str(sharded)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert merged.returncode == 0, merged.stderr[-2000:]
    assert records(tmp_path / "a" / "out") == records(tmp_path / "b" / "out")
    for record in records(tmp_path / "a" / "out")["train"]:
        a = soundfile.read(tmp_path / "a" / "out" / record["audio"])[0]
        b = soundfile.read(tmp_path / "b" / "out" / record["audio"])[0]
        assert (a == b).all()
    (tmp_path / "c").mkdir()  # two local processes, then the merge
    build(write_config(tmp_path / "c", url), "--processes", "2")
    assert records(tmp_path / "c" / "out") == records(tmp_path / "a" / "out")
    report = json.loads((tmp_path / "b" / "out" / "report.json").read_text())
    assert report["shards"] == 3 and len(list((tmp_path / "b" / "out" / "work").glob("shard-*-of-00003"))) == 3


def test_merge_refuses_unfinished_shards(tmp_path, endpoint):
    config_path = write_config(tmp_path, endpoint())
    build(config_path, "--num-shards", "2", "--shard-index", "1")
    config = load_config(config_path, BuildConfig)
    with pytest.raises(FileNotFoundError, match=r"shards \[0\] of 2 are not finished"):
        merge(config)


def test_shipped_build_configs_load_and_document_every_key():
    from omni.config import annotate_yaml

    for path in sorted((ROOT / "data_recipes" / "configs").glob("*.yaml")):
        load_config(path, BuildConfig)
        text = path.read_text()
        assert text.startswith("# python -m data_recipes.builder build --config data_recipes/configs/" + path.name)
        assert annotate_yaml(text, BuildConfig) == text, (
            f"{path.name}: run python -m data_recipes.builder annotate --write"
        )
