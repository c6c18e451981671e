"""`omni <command> ...`: the library's command-line entry points.

omni generate question.wav --chunk-size 40 -o answer.wav
omni units --data train.jsonl --out train_units.jsonl --whisper base --layer 2 --codebook km.npy
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "generate": "omni.generate",  # spoken question -> streamed text and speech
    "units": "omni.units",  # answers' speech -> unit sequences
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        print(f"usage: omni <command> [options]; commands: {names}; omni <command> --help for its options")
        sys.exit(2)
    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    main()
