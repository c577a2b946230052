"""Run-to-run spread of the default 3-D training: the same paint trained with several seeds,
against the random forest on the same paint, and each model scored again with its border
step undone, so the step's effect is read on the same weights. Every two of a painting's
models are also scored with their foreground probabilities averaged: what a model made of
two trained networks would give.

``python -m benchmarks.spread [--quick] [--train-seeds 6] [--pairs 0:0 2:1 ...] [--out DIR]``

A pair is ``CASE:PAINT``: an index into :data:`benchmarks.stacks.STACK_CASES` and the painting
seed. Training runs the default number of steps with no time budget, so a GPU gives the same
figures as a CPU, only sooner (up to the GPU's own rounding). A single run of a stack differs
from the next by more than most settings change it; this says by how much.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.predict import run_to_end

from .records import write_results
from .stacks import STACK_CASES, dice_on, forest_3d, painted_stack

HERE = Path(__file__).resolve().parent
DEFAULT_PAIRS = ("0:0", "0:1", "2:0", "2:1")  # GoNuclear and the membranes, two paintings each


def one_run(
    stack: Any, painted: np.ndarray, scored: np.ndarray, case: Any, seed: int, quick: bool
) -> tuple[dict[str, Any], np.ndarray]:
    """One default training of ``stack`` from ``seed``: Dice as trained and without the
    border step, on the same weights; and its foreground probabilities."""
    size = {"base_width": 4, "depth": 2} if quick else {}
    seg = Segmenter.create(spatial_dims=3, voxel_size=case.voxel_size, seed=seed, **size)
    steps = {"max_epochs": 1, "steps_per_epoch": 3} if quick else {}
    config = TrainConfig(max_seconds=None, seed=seed, **steps)
    started = time.perf_counter()
    history = seg.train(stack.image, painted, config, progress=False)
    predicted = run_to_end(seg.predict_iter(stack.image))  # labels and probabilities, one pass
    seconds = time.perf_counter() - started
    labels, foreground = predicted.labels, predicted.probabilities[1]
    shift = float(history.border_shift or 0.0)
    if shift:
        seg.move_border(-shift)  # the same weights, without the border step
        plain = seg.segment(stack.image)
    else:
        plain = labels
    row = {
        "train_seed": seed,
        "ours": round(dice_on(labels == 1, stack.foreground, scored), 4),
        "no_border_step": round(dice_on(plain == 1, stack.foreground, scored), 4),
        "border_shift": shift,
        "float32_retries": history.float32_retries,
        "seconds": round(seconds, 1),
    }
    return row, foreground


def run_pair(pair: str, train_seeds: int, quick: bool) -> dict[str, Any]:
    case_index, paint_seed = (int(part) for part in pair.split(":"))
    case = STACK_CASES[case_index]
    stack, _planes, painted, unpainted = painted_stack(case, paint_seed, quick)
    scored = np.zeros(stack.image.shape, bool)
    scored[unpainted] = True
    forest = forest_3d(stack.image, painted, paint_seed, quick)
    result: dict[str, Any] = {
        "case": case.name,
        "paint": paint_seed,
        "forest": round(dice_on(forest, stack.foreground, scored), 4),
        "runs": [],
    }
    foregrounds = []
    for seed in range(train_seeds):
        run, foreground = one_run(stack, painted, scored, case, seed, quick)
        result["runs"].append(run)
        foregrounds.append(foreground)
        print(f"{case.name}, painting {paint_seed}: {run}", file=sys.stderr, flush=True)
    two = [
        round(dice_on((a + b) / 2 > 0.5, stack.foreground, scored), 4)
        for a, b in itertools.combinations(foregrounds, 2)
    ]
    ours = [r["ours"] for r in result["runs"]]
    plain = [r["no_border_step"] for r in result["runs"]]
    result["summary"] = {
        "mean": round(statistics.mean(ours), 4),
        "sd": round(statistics.stdev(ours), 4) if len(ours) > 1 else None,
        "min": min(ours),
        "max": max(ours),
        "runs_at_or_above_forest": sum(o >= result["forest"] for o in ours),
        "mean_without_border_step": round(statistics.mean(plain), 4),
        "two_models_averaged": two,
        "two_models_mean": round(statistics.mean(two), 4) if two else None,
    }
    return result


def table(pairs: list[dict[str, Any]]) -> str:
    lines = [
        "| stack, painting | forest | ours: mean ± sd | min–max | runs ≥ forest | "
        "mean without the border step | two models averaged: mean |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in pairs:
        s = p["summary"]
        sd = f" ± {s['sd']:.3f}" if s["sd"] is not None else ""
        two = f"{s['two_models_mean']:.3f}" if s["two_models_mean"] is not None else "–"
        lines.append(
            f"| {p['case']}, {p['paint']} | {p['forest']:.3f} | {s['mean']:.3f}{sd} | "
            f"{s['min']:.3f}–{s['max']:.3f} | {s['runs_at_or_above_forest']}/{len(p['runs'])} | "
            f"{s['mean_without_border_step']:.3f} | {two} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spread", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a crop, a tiny model, 3 steps")
    parser.add_argument("--train-seeds", type=int, default=6, help="training seeds per pair")
    parser.add_argument("--pairs", nargs="+", default=DEFAULT_PAIRS, help="CASE:PAINT pairs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="spread", help="file stem of the JSON written")
    args = parser.parse_args(argv)
    class_cases = [i for i, case in enumerate(STACK_CASES) if not case.objects]
    for pair in args.pairs:
        parts = pair.split(":")
        if (
            len(parts) != 2
            or not all(p.isdigit() for p in parts)
            or int(parts[0]) not in class_cases
        ):
            parser.error(f"a pair is CASE:PAINT with CASE one of {class_cases}, not {pair!r}")
    pairs = [run_pair(pair, args.train_seeds, args.quick) for pair in args.pairs]
    print(table(pairs))
    write_results(args.out, args.name, args.quick, {"pairs": pairs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
