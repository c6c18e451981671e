"""Files and folders that appear whole or not at all: written under a hidden partial name beside their place, then
renamed onto it (a rename within one folder is atomic), so a crash or a kill -9 never leaves half of one that a
rerun would trust. The one way every writer of results, checkpoints, caches, models and data in omni does it.

    with atomic_path(out / "model") as partial:     # a folder: write into `partial`, it becomes `out/model`
        model.save_pretrained(partial)
    write_atomic(out / "report.json", text)          # a text file
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUFFIX = ".partial"


def partial_of(path: Path, unique: bool = False) -> Path:
    """The hidden partial name of `path` (`.name.partial`; `.name.<random>.partial` for one of several writers)."""
    tag = f".{uuid.uuid4().hex[:8]}" if unique else ""
    return path.with_name(f".{path.name}{tag}{SUFFIX}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path, unique: bool = False) -> Iterator[Path]:
    """A partial path to write a file or a folder into; when the block ends without error it replaces `path`
    (a folder already there is removed first), else it is removed. A killed run's leftover partial is cleared.
    `unique`: several writers may write the same path at once (each its own partial; the last rename wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_of(path, unique)
    _remove(partial)
    try:
        yield partial
        if path.is_dir() and partial.is_dir():
            shutil.rmtree(path)
        os.replace(partial, path)
    finally:
        _remove(partial)


def write_atomic(path: str | Path, text: str) -> None:
    """A whole text file, or none."""
    with atomic_path(path) as partial:
        partial.write_text(text)


def clear_partials(folder: Path, name: str) -> None:
    """Every writer's leftover partial of `folder / name` (of a killed run)."""
    for stale in folder.glob(f".{glob.escape(name)}.*{SUFFIX}"):
        _remove(stale)
