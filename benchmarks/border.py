"""Moving the border by hand on a painted stack: Dice for each shift, beside the forest.

    python -m benchmarks.border [--cases NAME ...] [--seeds 2] [--threads 1] [--figure PATH]

Strokes keep away from borders, so nothing painted says where one lies. On the membrane
stack the default 3-D model draws the walls 1.7-2.3 times as thick as they are. For each case
and painting, this trains the default model once, then moves its border with
``Segmenter.move_border`` over a range of shifts. Each shift is scored on the unpainted
planes, beside the random forest on the same paint. It writes
``benchmarks/results/border.json`` and prints a table. ``--figure`` draws the middle unpainted
plane of the first painting: the image, then the errors of the default, of the best shift
and of the forest.

The shifts are those a person could pick with the Segment section's border slider. The best
one is found here with the truth, which a person does not have, but the picture on screen
shows them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .real import error_colours, save_without_axes
from .records import write_results
from .stacks import (
    StackCase,
    add_stack_case_arguments,
    class_stacks_named,
    dice_on,
    forest_3d,
    train_default_3d,
)

HERE = Path(__file__).resolve().parent
#: Shifts of the foreground log-odds tried, in the slider's steps of 0.25.
SHIFTS = tuple(float(s) for s in np.arange(-4.0, 2.01, 0.5).round(2))
DEFAULT_CASES = ("ovule membranes 3-D",)


def border_sweep(
    case: StackCase, seed: int, *, quick: bool, epochs: int, threads: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One painting: the default's Dice at each shift, and the forest's. Also returns what
    a figure needs."""
    run = train_default_3d(case, seed, quick=quick, epochs=epochs, threads=threads)
    stack, painted, unpainted, scored = run.stack, run.painted, run.unpainted, run.scored
    segmenter, history = run.segmenter, run.history
    default = segmenter.segment(stack.image) == 1
    dice: dict[str, float] = {}
    share: dict[str, float] = {}
    best_shift, best, best_dice = 0.0, default, -1.0
    for shift in SHIFTS:
        segmenter.move_border(shift - segmenter.config.border_moved)
        predicted = default if shift == 0 else segmenter.segment(stack.image) == 1
        key = f"{shift:+.2f}"
        dice[key] = round(dice_on(predicted, stack.foreground, scored), 4)
        share[key] = round(100 * float(predicted[scored].mean()), 1)
        if dice[key] > best_dice:
            best_shift, best, best_dice = shift, predicted, dice[key]
    forest = forest_3d(stack.image, painted, seed, quick)
    row = {
        "case": case.name,
        "seed": seed,
        "painted_planes": np.flatnonzero(~unpainted).tolist(),
        "truth_foreground_percent": round(100 * float(stack.foreground[scored].mean()), 1),
        "steps": history.steps,
        "train_seconds": round(run.train_seconds, 1),
        "border_shift_by_training": history.border_shift,
        "dice_by_shift": dice,
        "foreground_percent_by_shift": share,
        "best_shift": best_shift,
        "forest_dice": round(dice_on(forest, stack.foreground, scored), 4),
        "forest_foreground_percent": round(100 * float(forest[scored].mean()), 1),
    }
    masks = {
        "image": stack.image,
        "truth": stack.foreground,
        "default": default,
        "best": best,
        "forest": forest,
        "plane": _middle(np.flatnonzero(unpainted)),
    }
    return row, masks


def _middle(planes: np.ndarray) -> int:
    return int(planes[len(planes) // 2])


def table(rows: list[dict[str, Any]]) -> str:
    shown = [s for s in SHIFTS if s in (-4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 1.0)]
    head = " | ".join(f"{s:+.1f}" for s in shown)
    lines = [
        f"| case | painting | {head} | best | forest | truth fg % |",
        "|---|---:|" + "---:|" * (len(shown) + 3),
    ]
    for r in rows:
        cells = " | ".join(
            f"{r['dice_by_shift'][f'{s:+.2f}']:.3f} ({r['foreground_percent_by_shift'][f'{s:+.2f}']:.0f} %)"
            for s in shown
        )
        best = r["dice_by_shift"][f"{r['best_shift']:+.2f}"]
        lines.append(
            f"| {r['case']} | {r['seed']} | {cells} | {best:.3f} at {r['best_shift']:+.1f} | "
            f"{r['forest_dice']:.3f} ({r['forest_foreground_percent']:.0f} %) | "
            f"{r['truth_foreground_percent']:.1f} |"
        )
    return "\n".join(lines)


def save_figure(path: Path, row: dict[str, Any], masks: dict[str, Any]) -> None:
    """One unpainted plane: the image, then errors (red: missed, blue: extra) of three."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = masks["plane"]
    image = masks["image"][z].astype(np.float32)
    low, high = np.percentile(image, [1, 99.8])
    image = np.clip((image - low) / max(high - low, 1e-9), 0, 1)
    truth = masks["truth"][z]
    panels = [
        ("default", masks["default"][z], row["dice_by_shift"]["+0.00"]),
        (
            f"border moved {row['best_shift']:+.1f}",
            masks["best"][z],
            row["dice_by_shift"][f"{row['best_shift']:+.2f}"],
        ),
        ("forest", masks["forest"][z], row["forest_dice"]),
    ]
    figure, axes = plt.subplots(1, 4, figsize=(16, 5.0))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title(f"{row['case']}\nunpainted plane {z}", fontsize=10)
    for axis, (name, predicted, score) in zip(axes[1:], panels, strict=True):
        axis.imshow(error_colours(image, predicted, truth))
        axis.set_title(f"{name}: Dice {score:.3f} (stack)\nred missed, blue extra", fontsize=10)
    save_without_axes(figure, axes, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stack_case_arguments(parser, DEFAULT_CASES)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1 makes a run repeatable"
    )
    parser.add_argument("--figure", type=Path, help="write a picture of the first painting here")
    parser.add_argument("--name", default="border", help="results file name (without .json)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    cases = class_stacks_named(parser, args.cases, args.dark)
    epochs = 1 if args.quick else args.epochs
    rows: list[dict[str, Any]] = []
    for case in cases:
        for seed in range(args.seeds):
            row, masks = border_sweep(
                case, seed, quick=args.quick, epochs=epochs, threads=args.threads
            )
            rows.append(row)
            if args.figure is not None and len(rows) == 1:
                save_figure(args.figure, row, masks)
            print(f"{case.name}, painting {seed}: best {row['best_shift']:+.1f}", flush=True)
    text = table(rows)
    print(text)
    write_results(args.out, args.name, args.quick, {"shifts": list(SHIFTS), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
