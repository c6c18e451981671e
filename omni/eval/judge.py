"""A judge's 1-5 scores of an answer's content and style, asked of any OpenAI-compatible chat endpoint.

    python -m data_recipes.builder.chat_server --model .cache/assets/smollm2-135m-instruct --port 8000 &
    python -m omni.eval.judge --base-url http://127.0.0.1:8000/v1 --model .cache/assets/smollm2-135m-instruct \\
        --sanity --out runs/judge
    python -m omni.eval.judge --base-url URL --model M --answers answers.jsonl --out runs/judge   # {question, answer}

The reference paper's S2TIF and S2SIF columns: the judge reads the question and an answer (the model's text answer
for S2TIF, the transcript of its spoken answer for S2SIF) and scores content (helpful and correct for the question)
and style (suited to being spoken) from 1 to 5 by the rubric below, at temperature 0. The client is omni's
(omni/endpoint.py: retries, timeouts, the key from an environment variable and never written). A small local judge
cannot be trusted blindly: `--sanity` scores items whose answer is known (arithmetic, capitals), each with a right
and a wrong answer, and reports its agreement (right scored 4-5, wrong 1-2) and how often it ranks the wrong one
below the right one. Every report records the judge's model, endpoint and prompt. Four worked examples
(`EXAMPLES`, none of them a sanity item) go before each answer as earlier turns: without them the demo's 135M judge
answers the question instead of grading it and no reply holds a score.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from omni.cli import command_parser
from omni.endpoint import LLMError, OpenAIChat

RUBRIC = (
    "You grade a voice assistant's answer to a user's spoken question. Give two scores from 1 to 5.\n"
    "content: 5 = correct, complete and helpful for the question; 3 = partly right or vague; 1 = wrong, off-topic "
    "or no answer.\n"
    "style: 5 = natural to hear read aloud: short plain sentences, no lists, symbols or markup; 1 = unfit to be "
    "spoken.\n"
    'Reply with JSON only, e.g. {"content": 4, "style": 5}.'
)
EXAMPLES = [  # (question, answer, the judge's reply): worked examples shown before each answer
    ("What is two plus two?", "Two plus two is four.", '{"content": 5, "style": 5}'),
    ("What is the capital of Italy?", "The capital of Italy is Paris.", '{"content": 1, "style": 5}'),
    ("How do I boil an egg?", "* pot\n* water\n* egg, 10 min", '{"content": 4, "style": 2}'),
    ("What is five minus two?", "Five minus two is seven.", '{"content": 1, "style": 5}'),
]
KNOWN = [  # (question, a right answer, a wrong answer): the sanity items
    ("What is seven plus five?", "Seven plus five is twelve.", "Seven plus five is fifteen."),
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Madrid."),
    ("How many legs does a spider have?", "A spider has eight legs.", "A spider has six legs."),
    ("What is ten minus four?", "Ten minus four is six.", "Ten minus four is nine."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo.", "The capital of Japan is Beijing."),
    ("Which planet is closest to the sun?", "Mercury is closest to the sun.", "Jupiter is closest to the sun."),
    ("What is three times three?", "Three times three is nine.", "Three times three is six."),
    ("What colour is a clear daytime sky?", "A clear daytime sky is blue.", "A clear daytime sky is green."),
]
SCORE = re.compile(r'"?(content|style)"?\s*[:=]\s*"?([1-5])')


@dataclass
class JudgeConfig:
    """The judge: an OpenAI-compatible endpoint and the model it serves (the local chat server by default)."""

    model: str = ".cache/assets/smollm2-135m-instruct"
    base_url: str | None = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    batch_size: int = 32
    concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 2
    max_new_tokens: int = 24
    temperature: float = 0.0
    seed: int = 0


def messages(question: str, answer: str) -> list[dict[str, str]]:
    """The rubric, the worked examples as earlier turns, then the answer to grade."""
    turns = [{"role": "system", "content": RUBRIC}]
    for example_question, example_answer, reply in EXAMPLES:
        turns.append({"role": "user", "content": f"Question: {example_question}\nAnswer: {example_answer}"})
        turns.append({"role": "assistant", "content": reply})
    return turns + [{"role": "user", "content": f"Question: {question}\nAnswer: {answer}"}]


def parse(reply: str) -> dict[str, int] | None:
    """The two scores in a reply (JSON or "content: 4, style: 5"), or None when it holds neither."""
    found = {key: int(value) for key, value in SCORE.findall(reply.lower())}
    return found if set(found) == {"content", "style"} else None


class Judge:
    def __init__(self, config: JudgeConfig):
        self.config = config
        self.client = OpenAIChat(config)

    def scores(self, pairs: list[tuple[str, str]]) -> list[dict[str, int] | None]:
        """Content and style of each (question, answer); None where the judge failed or its reply held no scores."""
        replies = self.client.chat([messages(q, a) for q, a in pairs])
        return [None if isinstance(r, LLMError) else parse(r) for r in replies]

    def record(self) -> dict:
        """What a report says of its judge (never the key)."""
        return {
            "model": self.config.model,
            "base_url": self.config.base_url,
            "rubric": RUBRIC,
            "examples": [list(e) for e in EXAMPLES],
        }


def mean_scores(scored: list[dict[str, int] | None]) -> dict[str, float | int | None]:
    """Mean content and style over the scored items, and how many the judge left unscored."""
    done = [s for s in scored if s is not None]
    return {
        "content": round(statistics.fmean(s["content"] for s in done), 3) if done else None,
        "style": round(statistics.fmean(s["style"] for s in done), 3) if done else None,
        "unscored": len(scored) - len(done),
    }


def sanity(judge: Judge) -> dict:
    """How far the judge can be trusted, on items whose answer is known."""
    scored = judge.scores([(q, a) for q, right, wrong in KNOWN for a in (right, wrong)])
    pairs = list(zip(scored[::2], scored[1::2], strict=True))
    both = [(r, w) for r, w in pairs if r is not None and w is not None]
    agree = [r["content"] >= 4 for r, _ in both] + [w["content"] <= 2 for _, w in both]
    return {
        "items": len(KNOWN),
        "agreement": round(statistics.fmean(agree), 3) if agree else None,
        "ranks_wrong_below_right": round(statistics.fmean(w["content"] < r["content"] for r, w in both), 3)
        if both
        else None,
        "unscored": sum(s is None for s in scored),
        "scores": [{"question": q, "right": r, "wrong": w} for (q, _, _), (r, w) in zip(KNOWN, pairs, strict=True)],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser(__doc__)
    parser.add_argument("--base-url", default=JudgeConfig.base_url, help="the judge's OpenAI-compatible endpoint")
    parser.add_argument("--model", default=JudgeConfig.model, help="the model name the endpoint serves")
    parser.add_argument("--api-key-env", default=JudgeConfig.api_key_env, help="variable holding the key, if any")
    parser.add_argument("--sanity", action="store_true", help="score the known items: agreement and ranking")
    parser.add_argument("--answers", type=Path, default=None, help="JSON lines with question and answer to score")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.sanity and args.answers is None:
        parser.error("nothing to judge: give --sanity, --answers or both")
    judge = Judge(JudgeConfig(model=args.model, base_url=args.base_url, api_key_env=args.api_key_env))
    report: dict = {"judge": judge.record()}
    if args.sanity:
        report["sanity"] = sanity(judge)
    if args.answers is not None:
        rows = [json.loads(line) for line in args.answers.read_text().splitlines() if line.strip()]
        scored = judge.scores([(r["question"], r["answer"]) for r in rows])
        report["answers"] = mean_scores(scored) | {"items": len(rows)}
        report["scored"] = [r | {"scores": s} for r, s in zip(rows, scored, strict=True)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "judge.json").write_text(json.dumps(report | {"config": asdict(judge.config)}, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "scored"}, indent=2))
    return report


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
