"""The judge through a real endpoint process on loopback: its sanity checks, a scored answers file, the parser."""

import json

from omni.eval.judge import EXAMPLES, RUBRIC, Judge, JudgeConfig, main, parse, sanity
from omni.serve.launch import free_port


def test_a_judge_that_knows_passes_its_sanity_checks_and_a_contrary_one_fails(judge_url):
    good = sanity(Judge(JudgeConfig(model="judge", base_url=judge_url())))
    assert good["items"] == 8 and good["agreement"] == 1.0 and good["ranks_wrong_below_right"] == 1.0
    assert good["unscored"] == 0 and good["scores"][0]["right"] == {"content": 5, "style": 5}
    bad = sanity(Judge(JudgeConfig(model="judge", base_url=judge_url("--contrary"))))
    assert bad["agreement"] == 0.0 and bad["ranks_wrong_below_right"] == 0.0


def test_answers_are_scored_and_the_report_names_its_judge(judge_url, tmp_path):
    answers = tmp_path / "answers.jsonl"
    rows = [
        {"question": "What is the capital of France?", "answer": "The capital of France is Paris."},
        {"question": "What is seven plus five?", "answer": "Seven plus five is fifteen."},
        {"question": "Name a fruit.", "answer": "1. An apple."},
    ]
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    url = judge_url()
    report = main(["--base-url", url, "--model", "judge", "--answers", str(answers), "--out", str(tmp_path / "j")])
    assert report["answers"] == {"content": 3.0, "style": 4.0, "unscored": 0, "items": 3}  # (5+1+3)/3, (5+5+2)/3
    saved = json.loads((tmp_path / "j" / "judge.json").read_text())
    assert saved["judge"] == {
        "model": "judge",
        "base_url": url,
        "rubric": RUBRIC,
        "examples": [list(e) for e in EXAMPLES],
    }
    assert [r["scores"]["content"] for r in saved["scored"]] == [5, 1, 3]


def test_a_dead_judge_leaves_items_unscored(tmp_path):
    judge = Judge(JudgeConfig(model="judge", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0))
    assert judge.scores([("q", "a")]) == [None]


def test_scores_are_read_from_json_or_prose_and_nothing_else():
    assert parse('{"content": 4, "style": 5}') == {"content": 4, "style": 5}
    assert parse("Content: 2\nStyle = 3.") == {"content": 2, "style": 3}
    assert parse("content 9, style 5") is None and parse("I think it is good.") is None
