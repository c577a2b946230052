"""``python -m benchmarks [--quick] [--sizes 512 1024 2048 4096] [--out benchmarks/results]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .report import plot, table, write_json
from .suite import Settings, run

HERE = Path(__file__).resolve().parent


def parse(argv: list[str] | None) -> tuple[Settings, Path, str]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and budgets: checks the suite runs"
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="image sides for the throughput plot")
    parser.add_argument(
        "--compare-size", type=int, help="side where MONAI and the floors are compared"
    )
    parser.add_argument(
        "--memory-size", type=int, help="side of the image whose peak memory is measured"
    )
    parser.add_argument("--rounds", type=int, help="timing rounds (median reported)")
    parser.add_argument(
        "--train-seconds", type=float, help="training budget on the benchmark scene"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: torch's choice); 1 is steadier on a busy machine",
    )
    parser.add_argument("--no-monai", action="store_true", help="skip the MONAI comparison")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="folder for JSON and plot"
    )
    parser.add_argument("--name", default="latest", help="file stem for the JSON and plot")
    args = parser.parse_args(argv)
    if args.quick:
        settings = Settings(
            sizes=(64, 96),
            compare_size=128,
            scale_sizes=(64, 96),
            memory_size=128,
            rounds=1,
            train_seconds=2.0,
            train_scene=128,
            train_batch_size=2,
            train_patch_size=64,
            profile_steps=1,
            contention_seconds=1.0,
            contention_predict_size=96,
        )
    else:
        settings = Settings()
    if args.sizes:
        settings.sizes = tuple(args.sizes)
    if args.compare_size:
        settings.compare_size = args.compare_size
    if args.memory_size:
        settings.memory_size = args.memory_size
    if args.rounds:
        settings.rounds = args.rounds
    if args.train_seconds:
        settings.train_seconds = args.train_seconds
    settings.monai = not args.no_monai
    if args.threads:
        settings.threads = args.threads
    return settings, args.out, args.name


def main(argv: list[str] | None = None) -> int:
    settings, out, name = parse(argv)
    start = time.perf_counter()
    results = run(settings, log=lambda text: print(text, file=sys.stderr, flush=True))
    results.machine["benchmark_seconds"] = time.perf_counter() - start
    print(table(results))
    write_json(results, out / f"{name}.json")
    png = plot(results, out / f"{name}.png")
    print(f"\nwrote {out / f'{name}.json'}" + (f" and {png}" if png else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
