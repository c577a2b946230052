"""The wall step's limit on painted wall, on the stacks: Dice under each limit, same trainings.

    python -m benchmarks.wall_limit [--cases NAME ...] [--seeds 2] [--dark] [--threads 2]

After training, a wall network's border moves inward by up to 1.5 on the foreground log-odds,
only as far as no more than ``walls.MAX_WALL_PAINT_LOST`` of the painted foreground changes
class (``core/walls.py``). At 1 %, the limit until the twenty-fourth session, that held most
3-D moves to 0 to -1.25; this benchmark is what raised it to 5 %. For each case and painting
of :mod:`benchmarks.stacks`, this trains the default 3-D model once, takes the move training
made back out of its foreground log-odds, and replays the step under each limit of
``LIMITS``: the move it takes and the Dice on the unpainted planes, beside fixed moves and the
forest on the same paint.

The replay reads the two networks' averaged prediction of the whole stack, where training reads
each network on crops of the painted planes, so its move under 1 % can differ a little from
training's; the "as trained" column is what training did. Writes
``benchmarks/results/wall_limit.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from napari_unetseg.core.walls import background_split, wall_shift

from .records import write_results
from .stacks import (
    StackCase,
    add_stack_case_arguments,
    class_stacks_named,
    dice_on,
    foreground_log_odds,
    forest_3d,
    train_default_3d,
)

HERE = Path(__file__).resolve().parent
#: Shares of the painted foreground the move may turn to background.
LIMITS = (0.01, 0.02, 0.05, 0.1, 1.0)
FIXED_MOVES = (0.0, -1.0, -1.5, -2.0, -2.5)
DEFAULT_CASES = ("ovule membranes 3-D", "ovule membranes, 3-D walls")


def replay(
    case: StackCase, seed: int, *, quick: bool, epochs: int, threads: int | None
) -> dict[str, Any]:
    """One painting: the move and Dice under each limit, from one training."""
    run = train_default_3d(case, seed, quick=quick, epochs=epochs, threads=threads)
    stack, painted, scored = run.stack, run.painted, run.scored
    segmenter, history = run.segmenter, run.history
    as_trained = segmenter.segment(stack.image) == 1
    logits = foreground_log_odds(segmenter, stack.image)
    unmoved = logits - (history.wall_shift or 0.0)
    paint = painted.astype(np.int64).ravel() - 1  # 1 foreground, 0 background, -1 unpainted
    moves = {
        f"{limit:g}": wall_shift(unmoved.ravel(), [unmoved.shape], paint, max_paint_lost=limit)
        for limit in LIMITS
    }

    def dice_at(move: float) -> float:
        return round(dice_on(unmoved + move > 0, stack.foreground, scored), 4)

    return {
        "case": case.name,
        "seed": seed,
        "painted_planes": np.flatnonzero(~run.unpainted).tolist(),
        "steps": history.steps,
        "train_seconds": round(run.train_seconds, 1),
        "wall_shift_by_training": history.wall_shift,
        "background_split": round(background_split(unmoved > 0), 3),
        "move_by_limit": moves,
        "dice_by_limit": {key: dice_at(move) for key, move in moves.items()},
        "dice_by_move": {f"{m:+.2f}": dice_at(m) for m in FIXED_MOVES},
        "dice_as_trained": round(dice_on(as_trained, stack.foreground, scored), 4),
        "forest_dice": round(
            dice_on(forest_3d(stack.image, painted, seed, quick), stack.foreground, scored), 4
        ),
    }


def table(rows: list[dict[str, Any]]) -> str:
    limits = " | ".join(f"limit {100 * lim:g} %" for lim in LIMITS)
    fixed = " | ".join(f"{m:+.1f}" for m in FIXED_MOVES)
    lines = [
        f"| case | painting | as trained (move) | {limits} | {fixed} | forest |",
        "|---|---:|---:|" + "---:|" * (len(LIMITS) + len(FIXED_MOVES) + 1),
    ]
    for r in rows:
        by_limit = " | ".join(
            f"{r['dice_by_limit'][k]:.3f} ({r['move_by_limit'][k]:+.2f})"
            for k in r["move_by_limit"]
        )
        by_move = " | ".join(f"{v:.3f}" for v in r["dice_by_move"].values())
        move = r["wall_shift_by_training"] or 0.0
        lines.append(
            f"| {r['case']} | {r['seed']} | {r['dice_as_trained']:.3f} ({move:+.2f}) | "
            f"{by_limit} | {by_move} | {r['forest_dice']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stack_case_arguments(parser, DEFAULT_CASES)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--name", default="wall_limit", help="results file name (without .json)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    cases = class_stacks_named(parser, args.cases, args.dark)
    epochs = 1 if args.quick else args.epochs
    rows = []
    for case in cases:
        for seed in range(args.seeds):
            rows.append(replay(case, seed, quick=args.quick, epochs=epochs, threads=args.threads))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    result = {"limits": list(LIMITS), "fixed_moves": list(FIXED_MOVES), "rows": rows}
    write_results(args.out, args.name, args.quick, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
