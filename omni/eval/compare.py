"""Two evaluations side by side: per Omega, each model's first packet, ASR-WER, judge scores and MOS.

    omni eval --model A/model --decoder A/decoder --vocoder A/vocoder --bench data/b/records.jsonl --out runs/eval_a
    omni eval --model B/model ... --out runs/eval_b
    python -m omni.eval.compare runs/eval_a runs/eval_b --out runs/eval_compare

Reads each folder's latency.json (omni/eval/latency.py) and writes compare.json, compare.csv, compare.md and
compare.png: the columns of "ours" (the streaming way) of each, and B minus A. The two should be run on the same
questions (`--bench`, `--items`): a difference in questions is said in the table's heading.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from omni.atomic import write_atomic
from omni.cli import command_parser

COLUMNS = {  # summary key -> heading
    "first_packet_ms_median": "first packet (ms)",
    "asr_wer": "ASR-WER",
    "s2tif_content": "S2TIF content",
    "s2tif_style": "S2TIF style",
    "s2sif_content": "S2SIF content",
    "s2sif_style": "S2SIF style",
    "quality_mos_mean": "MOS (DNSMOS)",
}


def load_report(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "latency.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (run `omni eval ... --out {folder}` first)")
    report = json.loads(path.read_text())
    if "summary" not in report:
        raise ValueError(f"{path}: no `summary`: not a report of omni.eval.latency")
    return report


def side_by_side(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per Omega both reports have: each column of A, of B, and B - A where both have it."""
    rows = []
    for omega in [o for o in a["summary"] if o in b["summary"]]:
        left, right = a["summary"][omega]["ours"], b["summary"][omega]["ours"]
        row: dict[str, Any] = {"omega": omega}
        for key in COLUMNS:
            x, y = left.get(key), right.get(key)
            row |= {f"{key}_a": x, f"{key}_b": y, f"{key}_diff": y - x if x is not None and y is not None else None}
        rows.append(row)
    return rows


def _questions(report: dict[str, Any]) -> list[str]:
    return sorted({r["question"] for r in report.get("runs", []) if "question" in r})


def markdown(rows: list[dict[str, Any]], a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> str:
    same = _questions(a) == _questions(b)
    lines = [
        f"A = {names[0]} ({a['environment']['model']}), B = {names[1]} ({b['environment']['model']}); "
        f"{a['items']} and {b['items']} questions, {'the same' if same else 'NOT the same'} questions; medians "
        "of the streaming way; each cell A / B (B - A)",
        "",
        "| Omega | " + " | ".join(COLUMNS.values()) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for row in rows:
        cells = [_cell(row, key) for key in COLUMNS]
        lines.append(f"| {row['omega']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(row: dict[str, Any], key: str) -> str:
    digits = 0 if key.endswith("_ms_median") else 3 if key == "asr_wer" else 2
    x, y, d = row[f"{key}_a"], row[f"{key}_b"], row[f"{key}_diff"]
    if x is None and y is None:
        return ""
    show = lambda v: "-" if v is None else f"{v:.{digits}f}"  # noqa: E731
    return f"{show(x)} / {show(y)}" + ("" if d is None else f" ({d:+.{digits}f})")


def plot(rows: list[dict[str, Any]], names: tuple[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["omega"] for r in rows]
    keys = ["first_packet_ms_median", "asr_wer"] + [k for k in ("s2sif_content", "quality_mos_mean") if any(
        r[f"{k}_a"] is not None or r[f"{k}_b"] is not None for r in rows)]  # fmt: skip
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.8))
    for ax, key in zip(axes, keys, strict=True):
        for side, name, marker in (("a", names[0], "o"), ("b", names[1], "s")):
            values = [r[f"{key}_{side}"] for r in rows]
            ax.plot(labels, [float("nan") if v is None else v for v in values], marker=marker, label=name)
        ax.set_title(COLUMNS[key])
        ax.set_xlabel("Omega (units per chunk)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare(a_dir: Path, b_dir: Path, out: Path, names: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    a, b = load_report(a_dir), load_report(b_dir)
    names = names or (Path(a_dir).name, Path(b_dir).name)
    rows = side_by_side(a, b)
    if not rows:
        raise ValueError(f"{a_dir} and {b_dir} share no Omega: nothing to put side by side")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "compare.json", json.dumps({"a": str(a_dir), "b": str(b_dir), "rows": rows}, indent=2))
    with (out / "compare.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = markdown(rows, a, b, names)
    write_atomic(out / "compare.md", table)
    plot(rows, names, out / "compare.png")
    print(table)
    print(f"wrote {out}/compare.json, compare.csv, compare.md and compare.png")
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = command_parser(__doc__)
    parser.add_argument("a", type=Path, help="an evaluation's folder (its latency.json)")
    parser.add_argument("b", type=Path, help="the other's")
    parser.add_argument("--names", nargs=2, default=None, help="what to call A and B (default: the folders' names)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    return compare(args.a, args.b, args.out, tuple(args.names) if args.names else None)


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
