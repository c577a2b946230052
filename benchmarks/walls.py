"""The wall step on the 2-D real images: Dice at each border move, and what tells walls apart.

    python -m benchmarks.walls [--cases NAME ...] [--seeds 3] [--threads 2] [--dark]
        [--training-seeds 1] [--start auto|random]

After training, a two-class model whose foreground cuts each plane's background into pieces
moves its border inward (``core/walls.py``). For each case and painting of
:mod:`benchmarks.real`, this trains the default 2-D model on the same paint, takes the wall
step's move back out of its foreground log-odds, and scores the unpainted half at each
shift, beside the move training took and the forest. It also gives the share of the
background outside its largest piece (``walls.background_split``) of the unmoved result,
which decides whether the step applies. ``--training-seeds`` trains each painting that many
times (training seeds 0, 1, ...), and ``--start random`` starts from random weights instead of
the shipped starting weights (``core/starting_weights.py``). Writes
``benchmarks/results/walls.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.starting_weights import Start
from napari_unetseg.core.walls import background_split

from .painting import paint_region, paint_strokes
from .real import DARK_HELP, RealCase, class_cases_named, forest, load_case
from .records import write_results
from .stacks import dice_on, foreground_log_odds

HERE = Path(__file__).resolve().parent
SHIFTS = (-3.0, -2.0, -1.5, -1.0, -0.5, 0.0)
DEFAULT_CASES = (
    "maize cell walls",
    "ovule membranes z16",
    "tissue nuclei 0",
    "tissue nuclei 1",
    "tissue nuclei 2",
)


def sweep(
    case: RealCase,
    seed: int,
    *,
    quick: bool,
    threads: int | None,
    training_seed: int = 0,
    start: Start = "auto",
) -> dict[str, Any]:
    """One painting and training: Dice at each shift of the unmoved foreground log-odds, and
    the forest's."""
    data = load_case(case, quick)
    painted = paint_strokes(
        data.foreground,
        np.random.default_rng(seed),
        instances=data.instances,
        thin=case.kind == "walls",
    )
    scored = ~paint_region(data.foreground.shape)
    size = {"base_width": 4, "depth": 2} if quick else {}
    segmenter = Segmenter.create(seed=training_seed, start=start, **size)
    config = TrainConfig(
        max_seconds=None,
        threads=threads,
        seed=training_seed,
        **({"max_epochs": 1} if quick else {}),
    )
    started = time.perf_counter()
    history = segmenter.train(data.image, painted, config, progress=False)
    trained = time.perf_counter() - started
    logits = foreground_log_odds(segmenter, data.image)
    unmoved = logits - (history.wall_shift or 0.0)
    return {
        "case": case.name,
        "seed": seed,
        "training_seed": training_seed,
        "start": start,
        "steps": history.steps,
        "train_seconds": round(trained, 1),
        "wall_shift_by_training": history.wall_shift,
        "border_shift_by_training": history.border_shift,
        "background_split": round(background_split(unmoved > 0), 3),
        "dice_by_shift": {
            f"{s:+.2f}": round(dice_on(unmoved + s > 0, data.foreground, scored), 4) for s in SHIFTS
        },
        "dice_as_trained": round(dice_on(logits > 0, data.foreground, scored), 4),
        "dice_without_border_steps": round(
            dice_on(logits - (history.border_shift or 0.0) > 0, data.foreground, scored), 4
        ),
        "forest_dice": round(
            dice_on(forest(data.image, painted, seed, quick) == 1, data.foreground, scored), 4
        ),
    }


def painting_suffix(row: dict[str, Any]) -> str:
    """ ", training 1" and ", random start" where a row has them."""
    seed = row.get("training_seed", 0)
    return (f", training {seed}" if seed else "") + (
        ", random start" if row.get("start") == "random" else ""
    )


def table(rows: list[dict[str, Any]]) -> str:
    shifts = " | ".join(f"{s:+.1f}" for s in SHIFTS)
    lines = [
        f"| case | painting | background split | {shifts} | as trained (wall move) "
        "| no border steps (all moves) | forest |",
        "|---|---:|---:|" + "---:|" * (len(SHIFTS) + 3),
    ]
    for r in rows:
        cells = " | ".join(f"{r['dice_by_shift'][f'{s:+.2f}']:.3f}" for s in SHIFTS)
        move = r["wall_shift_by_training"] or 0.0
        moves = r.get("border_shift_by_training") or 0.0
        unmoved = r.get("dice_without_border_steps", float("nan"))
        lines.append(
            f"| {r['case']} | {r['seed']}{painting_suffix(r)} | {r['background_split']:.3f} | {cells} | "
            f"{r['dice_as_trained']:.3f} ({move:+.2f}) | {unmoved:.3f} ({moves:+.2f}) | "
            f"{r['forest_dice']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny crop and model (smoke test)")
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="2-D cases")
    parser.add_argument("--seeds", type=int, default=3, help="paintings per case")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--dark", action="store_true", help=DARK_HELP)
    parser.add_argument("--training-seeds", type=int, default=1, help="trainings per painting")
    parser.add_argument(
        "--start",
        choices=("auto", "random"),
        default="auto",
        help="the weights training starts from",
    )
    parser.add_argument("--name", default="walls", help="results file name (without .json)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    cases = class_cases_named(parser, args.cases, args.dark)
    rows = []
    for case in cases:
        for seed in range(args.seeds):
            for training_seed in range(args.training_seeds):
                row = sweep(
                    case,
                    seed,
                    quick=args.quick,
                    threads=args.threads,
                    training_seed=training_seed,
                    start=args.start,
                )
                rows.append(row)
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    write_results(args.out, args.name, args.quick, {"shifts": list(SHIFTS), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
