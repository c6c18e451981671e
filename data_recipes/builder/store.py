"""Step logs: one JSON line per finished record, appended and synced, so a build resumes after any crash.

A kill -9 can interrupt at most the line being written: reading drops a torn last line (and cuts it off the
file), so the record it held is simply done again. Files other than logs (wavs, manifests) are written under
a temporary name and renamed into place by their writers.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


class StepLog:
    """`{id: entry}` of one step of one shard; `add` appends an entry and makes it durable."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            data = path.read_bytes()
            whole = data[: data.rfind(b"\n") + 1]  # a torn last line is dropped, and cut off the file
            if len(whole) < len(data):
                with path.open("r+b") as f:
                    f.truncate(len(whole))
            for line in whole.decode().splitlines():
                entry = json.loads(line)
                self.entries[entry["id"]] = entry
        path.parent.mkdir(parents=True, exist_ok=True)

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.entries

    def add(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry) + "\n").encode()
        with self._lock, self.path.open("ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
            self.entries[entry["id"]] = entry
