"""`omni <command> ...`: the library's command-line entry points.

omni generate question.wav --chunk-size 40 -o answer.wav
omni units --data train.jsonl --out train_units.jsonl --whisper base --layer 2 --codebook km.npy
omni eval --bench data/voicebench/records.jsonl --items 40 --out runs/eval

Every entry point (these and each `python -m` recipe) answers a failure with one line on stderr,
`error: <what is wrong>` (a list of bad records follows it, indented), and exit status 1; `--debug` (or
OMNI_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

# OpenMP threads that spin while they wait take the cores from any other job and lose their own turns when the cores
# are busy: an answer of 0.3 s took 2-12 s beside a competing job, 0.4-0.8 s waiting passively (docs/results.md).
# Set before torch is imported (the commands import it after this module); the user's own value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COMMANDS = {
    "generate": "omni.generate",  # spoken question -> streamed text and speech
    "units": "omni.units",  # answers' speech -> unit sequences
    "serve": "omni.serve.app",  # a streaming voice server and its web page
    "eval": "omni.eval.latency",  # latency, ASR-WER, judge scores and MOS per chunk size, on any spoken set
}
DEBUG_FLAG = "--debug"
FIRST_CHUNK_HELP = "an answer's first units, spoken alone as soon as they exist (a sooner first sound); 0 = Omega's"


def command_parser(description: str | None) -> argparse.ArgumentParser:
    """An entry point's argument parser: its docstring as the description, and `--debug` listed (`run_command`
    reads it before the parser sees the arguments)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    debug = "show an error's traceback instead of its one line (also OMNI_DEBUG=1)"
    parser.add_argument(DEBUG_FLAG, action="store_true", help=debug)
    return parser


def error_message(err: BaseException) -> str:
    """The exception's message (its class name when it has none); a message of several lines, such as a
    dataset's list of bad records, keeps its first line as the summary and the rest indented under it."""
    first, *rest = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    return "\n".join([f"{first} ({DEBUG_FLAG} shows the traceback)", *(f"  {line}" for line in rest)])


def run_command(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run `main(argv)` as a command: an exception becomes one `error:` line on stderr and exit status 1,
    unless `--debug` is in argv (it is removed) or OMNI_DEBUG=1, when it propagates with its traceback.
    argparse's own usage errors (exit status 2) and Ctrl-C are left as they are."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get("OMNI_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    if debug:
        main(argv)
        return
    try:
        main(argv)
    except Exception as err:
        sys.stdout.flush()
        print(f"error: {error_message(err)}", file=sys.stderr, flush=True)
        sys.exit(1)


def dispatch(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        usage = f"usage: omni <command> [options]; commands: {names}; omni <command> --help for its options"
        asked = argv[:1] in (["-h"], ["--help"])
        print(usage, file=sys.stdout if asked else sys.stderr)
        sys.exit(0 if asked else 2)
    sys.argv[0] = f"omni {argv[0]}"  # the command's usage line names it, as `omni generate --help` is typed
    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


def main(argv: list[str] | None = None) -> None:
    run_command(dispatch, argv)


if __name__ == "__main__":
    main()
