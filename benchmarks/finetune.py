"""Training again on the same paint: does the class border stay where the first training put it?

``python -m benchmarks.finetune [--quick] [--rounds 3] [--cases NAME ...] [--out DIR]``

Each 2-D class case of :mod:`benchmarks.real` (painting seed 0, strokes on the left half) is
trained once with the default settings (300 steps, no time budget), then fine-tuned
``--rounds`` times for 100 steps on the same paint, as a user who presses Train again does.
After each training: Dice on the right half, the foreground share there, the foreground
log-odds in the output bias, and the class shares the training folded in. Two ways, in the
same run: as now (a fine-tune first takes out the last run's class shares and border step),
and as before the nineteenth session (``kept``: they stayed in, and the new ones were folded
in on top).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.metrics import dice
from napari_unetseg.core.prior import output_bias

from .painting import paint_region, paint_strokes
from .real import CASES, class_cases_named, load_case
from .records import load_average, write_results
from .suite import machine_info

HERE = Path(__file__).resolve().parent
DEFAULT_CASES = ("tissue nuclei 0", "maize cell walls")
WAYS = ("now", "kept")


@contextmanager
def shifts_kept(way: str) -> Iterator[None]:
    """``kept``: fine-tunes start from the output bias as it is, as before the change."""
    if way == "kept":
        with mock.patch("napari_unetseg.core.segmenter.folded_shift", return_value=None):
            yield
    else:
        yield


def foreground_log_odds(segmenter: Segmenter) -> float:
    bias = output_bias(segmenter.model)
    assert bias is not None
    values = bias.detach().cpu().numpy()
    return float(values[1] - values[0])


def run_case(name: str, way: str, rounds: int, quick: bool) -> dict[str, Any]:
    case = next(c for c in CASES if c.name == name)
    data = load_case(case, quick)
    painted = paint_strokes(
        data.foreground,
        np.random.default_rng(0),
        instances=data.instances,
        thin=case.kind == "walls",
    )
    scored = ~paint_region(data.foreground.shape)
    truth = data.foreground[scored]
    size = {"base_width": 4, "depth": 2} if quick else {}
    segmenter = Segmenter.create(**size)
    rows = []
    with shifts_kept(way):
        for step in range(rounds + 1):
            epochs = 12 if step == 0 else 4
            if quick:
                config = TrainConfig(max_seconds=None, max_epochs=1, steps_per_epoch=3, seed=step)
            else:
                config = TrainConfig(max_seconds=None, max_epochs=epochs, seed=step)
            history = segmenter.train(data.image, painted, config, progress=False)
            found = (segmenter.segment(data.image) == 1)[scored]
            rows.append(
                {
                    "training": step,
                    "steps": history.steps,
                    "dice": round(dice(found, truth), 4),
                    "foreground_percent": round(100 * float(found.mean()), 1),
                    "foreground_log_odds": round(foreground_log_odds(segmenter), 3),
                    "class_shares": history.class_shares,
                    "border_shift": history.border_shift,
                }
            )
            print(f"{name}, {way}: {rows[-1]}", file=sys.stderr, flush=True)
    return {
        "case": name,
        "way": way,
        "truth_foreground_percent": round(100 * float(truth.mean()), 1),
        "trainings": rows,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| image | way | Dice, training 0, 1, ... | foreground log-odds | foreground % (truth) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        rows = r["trainings"]
        scores = " → ".join(f"{t['dice']:.3f}" for t in rows)
        odds = " → ".join(f"{t['foreground_log_odds']:.2f}" for t in rows)
        share = " → ".join(f"{t['foreground_percent']:.1f}" for t in rows)
        lines.append(
            f"| {r['case']} | {r['way']} | {scores} | {odds} | {share} "
            f"({r['truth_foreground_percent']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.finetune", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a crop, a tiny model, 3 steps")
    parser.add_argument("--rounds", type=int, default=3, help="fine-tunes after the first training")
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="2-D class cases")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument("--name", default="finetune", help="results file name (without .json)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    class_cases_named(parser, args.cases)
    machine = machine_info()
    results = [
        run_case(name, way, args.rounds, args.quick) for name in args.cases for way in args.ways
    ]
    print(table(results))
    result = {
        "machine": machine | {"load_average_at_end": load_average()},
        "rounds": args.rounds,
        "results": results,
    }
    write_results(args.out, args.name, args.quick, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
