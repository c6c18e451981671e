"""The data builder's command line.

    python -m data_recipes.builder build --config data_recipes/configs/local_endpoint.yaml
    python -m data_recipes.builder build --config C.yaml --processes 2            # 2 local processes, then merge
    python -m data_recipes.builder build --config C.yaml --num-shards 8 --shard-index $SLURM_ARRAY_TASK_ID
    python -m data_recipes.builder merge --config C.yaml                          # after every shard is built
    python -m data_recipes.builder annotate --write data_recipes/configs/*.yaml   # key comments from the docs

`build` with neither `--num-shards` nor `--processes` builds everything in this process and merges. Any config
key can be overridden as `key.path=value` after the options (e.g. `llm.base_url=http://127.0.0.1:8000/v1`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from data_recipes.builder.config import BuildConfig
from data_recipes.builder.pipeline import ShardBuild, merge, with_rate, write_report
from omni.cli import command_parser
from omni.config import annotate_yaml, load_config


def build_and_merge(config: BuildConfig) -> dict:
    ShardBuild(config).run()
    return finish(config)


def finish(config: BuildConfig) -> dict:
    """Merge the shards, then extract units when the config asks for them."""
    report = merge(config)
    if config.units.enabled:
        from data_recipes.builder.units import build_units_step  # torch and the encoder: only when asked for

        report = with_rate(report | {"units": build_units_step(config)})
        write_report(Path(config.out), report)
    return report


def run_processes(args: argparse.Namespace, config: BuildConfig) -> dict:
    """`--processes P`: P shard processes on this machine, then the merge. Each gets its share of the cores
    for its math threads: P processes each running on every core would fight over them."""
    base = [sys.executable, "-m", "data_recipes.builder", "build", "--config", args.config]
    threads = str(max(1, (os.cpu_count() or 1) // args.processes))
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    shard = ["--num-shards", str(args.processes)]
    children = [
        subprocess.Popen([*base, *shard, "--shard-index", str(i), *args.overrides], env=env)
        for i in range(args.processes)
    ]
    failed = [i for i, child in enumerate(children) if child.wait() != 0]
    if failed:
        raise RuntimeError(f"shard process(es) {failed} of {args.processes} failed (see their output above)")
    return finish(config)


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build shards (all of them, then merge, by default)")
    merging = commands.add_parser("merge", help="merge finished shards into the records and the report")
    for sub in (build, merging):
        sub.add_argument("--config", required=True, help="the build's YAML, e.g. data_recipes/configs/demo.yaml")
        sub.add_argument("overrides", nargs="*", help="key.path=value overrides")
    build.add_argument("--num-shards", type=int, default=None, help="build one shard of this many (no merge)")
    build.add_argument("--shard-index", type=int, default=0, help="which shard, from 0")
    build.add_argument("--processes", type=int, default=1, help="shards built by this many local processes")
    annotate = commands.add_parser("annotate", help="set each key's comment in build YAMLs to its field doc")
    annotate.add_argument("files", nargs="+", type=Path)
    annotate.add_argument("--write", action="store_true", help="rewrite the files instead of checking them")
    args = parser.parse_args(argv)

    if args.command == "annotate":
        stale = [p for p in args.files if annotate_yaml(p.read_text(), BuildConfig) != p.read_text()]
        for path in stale if args.write else []:
            path.write_text(annotate_yaml(path.read_text(), BuildConfig))
        if stale and not args.write:
            sys.exit(f"key comments out of date in {', '.join(map(str, stale))}: run with --write")
        return
    config = load_config(args.config, BuildConfig, args.overrides)
    if args.command == "merge":
        report = finish(config)
    elif args.num_shards is not None:
        summary = ShardBuild(config, args.shard_index, args.num_shards).run()
        done = f"{summary['built']} of its {summary['records']} records built"
        print(f"shard {args.shard_index} of {args.num_shards}: {done} (the rest skipped: see the merged report)")
        return
    elif args.processes > 1:
        report = run_processes(args, config)
    else:
        report = build_and_merge(config)
    print(Path(config.out, "report.md").read_text())
    print(f"records: {report['records']}; {config.out}/train.jsonl, heldout.jsonl, hf/, report.json and report.md")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
