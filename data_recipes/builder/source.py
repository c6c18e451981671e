"""Text instructions from a file, a datasets directory or the hub, mapped onto records and filtered.

Shapes covered (`source.shape`, guessed from the columns with `auto`):
- alpaca: `instruction` plus an optional `input` (joined by a blank line), the input also read from the seed-task
  layout's `instances: [{input, output}]` (one instance per row; more are refused, never dropped);
- messages / conversations (ShareGPT, UltraChat): a list of turns, `{role, content}` or `{from, value}`; the first
  user (human) turn is the instruction;
- text: a plain `text` column; field: any column named by `instruction_field`.
Every row either becomes a `SourceRecord` or is dropped with its reason: malformed rows, empty instructions,
filters, repeats. Reading is deterministic, so every shard of a build sees the same records.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_recipes.builder.config import FilterConfig, SourceConfig

USER_ROLES = {"user", "human"}


@dataclass
class SourceRecord:
    id: str
    instruction: str
    index: int  # row number in the source: the order of the output
    fields: dict[str, Any] = field(default_factory=dict)  # source.keep_fields, plus audio/response/heldout if mapped


@dataclass
class Dropped:
    id: str
    index: int
    reason: str


def read_rows(config: SourceConfig) -> list[dict[str, Any] | str]:
    """The source's rows as dicts (a JSON line that is blank or not an object comes back as its reason), through
    `datasets` for everything but JSON lines, which are read one by one so that a bad line costs only itself."""
    import datasets

    path = Path(config.path)
    kinds = {".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
    if path.suffix == ".jsonl" and path.is_file():
        lines = path.read_text().splitlines()
        return [_json_row(line) if line.strip() else "empty line" for line in lines[: config.limit]]
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        rows = loaded[config.split] if isinstance(loaded, datasets.DatasetDict) else loaded
    elif path.is_file():
        if path.suffix not in kinds:
            raise ValueError(f"{path}: expected a .jsonl, .csv or .parquet file or a datasets directory")
        rows = datasets.load_dataset(kinds[path.suffix], data_files=str(path), split="train")
    elif path.suffix in kinds:
        raise FileNotFoundError(f"{path}: no such source file")
    else:  # a hub dataset name
        rows = datasets.load_dataset(config.path, split=config.split)
    if config.limit is not None:
        rows = rows.select(range(min(config.limit, len(rows))))
    return rows.to_list()


def _json_row(line: str) -> dict[str, Any] | str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return f"malformed row: invalid JSON: {err}"
    return row if isinstance(row, dict) else f"malformed row: expected a JSON object, got {type(row).__name__}"


def guess_shape(row: dict[str, Any]) -> str:
    """The shape a row has, by its filled columns (a table gives every row every column, some empty)."""
    for shape, column in (("messages", "messages"), ("conversations", "conversations"), ("alpaca", "instruction")):
        if row.get(column) is not None:
            return shape
    return "text" if row.get("text") is not None else "field"


def instruction_of(row: dict[str, Any], config: SourceConfig) -> str:
    """The row's instruction text; a ValueError says why there is none."""
    shape = guess_shape(row) if config.shape == "auto" else config.shape
    if shape == "alpaca":
        text = "\n\n".join(str(part).strip() for part in (row.get("instruction"), alpaca_input(row)) if part)
    elif shape in ("messages", "conversations"):
        turns = row.get(shape)
        if not isinstance(turns, list):
            raise ValueError(f"{shape}: expected a list of turns")
        users = [t for t in turns if isinstance(t, dict) and (t.get("role") or t.get("from")) in USER_ROLES]
        if not users:
            raise ValueError(f"{shape}: no user turn")
        text = users[0].get("content") or users[0].get("value") or ""
    else:
        column = "text" if shape == "text" else config.instruction_field
        if column not in row:
            raise ValueError(f"no column {column!r} (columns: {sorted(row)})")
        text = row[column]
    if not isinstance(text, str):
        raise ValueError(f"expected text, got {type(text).__name__}")
    return text.strip()


def alpaca_input(row: dict[str, Any]) -> Any:
    """The row's `input`, or its one seed-task instance's (Alpaca's seed_tasks.jsonl)."""
    instances = row.get("instances")
    if row.get("input") or instances is None:
        return row.get("input")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        count = len(instances) if isinstance(instances, list) else type(instances).__name__
        raise ValueError(f"instances: expected one {{input, output}} object, got {count}; give each its own row")
    return instances[0].get("input")


def normalised(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def record_id(row: dict[str, Any], instruction: str, config: SourceConfig) -> str:
    given = row.get(config.id_field) if config.id_field else None
    if given is not None and str(given).strip():
        return str(given).strip()
    return "r" + hashlib.sha1(instruction.encode()).hexdigest()[:12]


def filter_reason(text: str, config: FilterConfig) -> str | None:
    """Why an instruction is dropped, or None; the language first, since a script written without spaces
    (Chinese, Japanese) would otherwise be counted as one long word."""
    letters = [c for c in text if c.isalpha()]
    if config.language == "en" and letters and sum(c.isascii() for c in letters) < 0.8 * len(letters):
        return "not English (mostly non-Latin letters)"
    words = len(text.split())
    if words < config.min_words:
        return "empty instruction" if words == 0 else f"fewer than {config.min_words} words"
    if words > config.max_words:
        return f"more than {config.max_words} words"
    return None


def load_source(source: SourceConfig, filters: FilterConfig) -> tuple[list[SourceRecord], list[Dropped]]:
    """Every row mapped and filtered: the records to build, and those dropped with their reasons."""
    kept: list[SourceRecord] = []
    dropped: list[Dropped] = []
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    mapped = {"audio": source.audio_field, "response": source.response_field, "heldout": source.heldout_field}
    mapped["follow_ups"] = source.follow_ups_field
    for index, row in enumerate(read_rows(source)):
        if isinstance(row, str):
            dropped.append(Dropped(f"row{index}", index, row))
            continue
        try:
            text = instruction_of(row, source)
        except (ValueError, KeyError, TypeError) as err:
            name = row.get(source.id_field) if source.id_field else None
            dropped.append(Dropped(str(name or f"row{index}"), index, f"malformed row: {err}"))
            continue
        rid = record_id(row, text, source)
        reason = filter_reason(text, filters)
        if reason is None and rid in seen_ids:
            reason = "duplicate id"
        if reason is None and filters.dedup and normalised(text) in seen_texts:
            reason = "repeated instruction"
        if reason is not None:
            dropped.append(Dropped(rid, index, reason))
            continue
        seen_ids.add(rid)
        seen_texts.add(normalised(text))
        fields = {k: row.get(k) for k in source.keep_fields}
        fields |= {name: row.get(column) for name, column in mapped.items() if column and row.get(column) is not None}
        kept.append(SourceRecord(rid, text, index, fields))
    return kept, dropped
