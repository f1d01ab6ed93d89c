"""``vlnce data build``: the embedded VLN-CE benchmark in the R2R_VLNCE_v1-3 schema."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="generate the benchmark (deterministic, versioned)")
    b.add_argument("--out", default=None, help="output directory (default: the cache, where `vlnce eval` looks)")
    b.add_argument("--scenes", type=int, default=None, help="number of training houses (default 40)")
    b.add_argument("--workers", type=int, default=2, help="processes")
    b.add_argument("--force", action="store_true", help="rebuild even if the directory holds a benchmark")


def run(args) -> int:
    import dataclasses
    import json
    from pathlib import Path

    from sim.tasks.benchmark import BenchmarkConfig, build_benchmark, default_benchmark_dir
    from vlnce.errors import ConfigError

    config = BenchmarkConfig()
    if args.scenes is not None:
        if args.scenes < 1:
            raise ConfigError(f"--scenes must be >= 1, got {args.scenes}")
        config = dataclasses.replace(config, train_houses=args.scenes)
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    out = Path(args.out) if args.out else default_benchmark_dir()
    if (out / "benchmark.json").is_file() and not args.force:
        print(f"{out} already holds a benchmark (use --force to rebuild)")
        return 0
    summary = build_benchmark(out, config, workers=args.workers)
    print(json.dumps({"out": str(out), **{k: summary[k] for k in ("version", "sizes", "vocab_size")}}, indent=1))
    return 0
