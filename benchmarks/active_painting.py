"""Does painting where the model is unsure raise Dice faster than painting at random?

``python -m benchmarks.active_painting [--quick] [--seeds 3] [--rounds 4] [--out DIR]``

The painting loop, simulated on the real development images (``benchmarks/data``): a small
painting of the left half to start with (:func:`benchmarks.painting.paint_strokes`), a
model trained on it, then a few rounds of "paint more, fine-tune". Each round adds the
same amount of paint, in a few windows chosen either by
:meth:`Segmenter.suggest_where_to_paint` (the most uncertain unpainted windows of the left
half) or at random in the left half; inside a window, strokes are simulated from the
dense truth as in :mod:`benchmarks.painting`. Both strategies start from the same first
model and train the same fixed number of steps per round (steps, not seconds: the result
does not depend on how busy the machine is). Foreground Dice is scored on the right half,
which is never painted.
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.morphology import disk

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.metrics import dice
from napari_unetseg.core.predict import run_to_end

from .painting import _paint_class, paint_region, paint_strokes
from .real import CASES, load_case
from .records import write_results
from .suite import torch_threads

HERE = Path(__file__).resolve().parent
STRATEGIES = ("suggested", "random")
#: Strokes tried per class and window before giving up on a window's share (a window
#: with a sliver of one class cannot take a long stroke).
TRIES = 300


@dataclass(frozen=True)
class Settings:
    cases: tuple[str, ...] = ("tissue nuclei 0", "maize cell walls")
    seeds: int = 3
    rounds: int = 4
    #: share of the left half painted before the first round, and added per round
    first_fraction: float = 0.003
    round_fraction: float = 0.002
    windows: int = 4  # windows painted per round
    window: int = 64
    first_steps: int = 100
    round_steps: int = 40
    steps_per_epoch: int = 10
    batch_size: int = 4
    patch_size: int = 128
    base_width: int = 8
    depth: int = 4
    quick: bool = False


QUICK = Settings(
    cases=("tissue nuclei 0",),
    seeds=1,
    rounds=2,
    first_fraction=0.02,
    round_fraction=0.01,
    windows=2,
    window=32,
    first_steps=4,
    round_steps=2,
    steps_per_epoch=2,
    batch_size=2,
    patch_size=64,
    base_width=4,
    depth=2,
    quick=True,
)


# --------------------------------------------------------------------------- painting


def random_windows(
    region: np.ndarray, count: int, window: int, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """``count`` windows placed uniformly at random inside ``region`` (the left half)."""
    rows, cols = np.nonzero(region.any(1))[0], np.nonzero(region.any(0))[0]
    top_max = max(rows[0], rows[-1] + 1 - window)
    left_max = max(cols[0], cols[-1] + 1 - window)
    boxes = []
    for _ in range(count):
        top = int(rng.integers(rows[0], top_max + 1))
        left = int(rng.integers(cols[0], left_max + 1))
        boxes.append((top, left, top + window, left + window))
    return boxes


def paint_windows(
    painted: np.ndarray,
    foreground: np.ndarray,
    boxes: list[tuple[int, int, int, int]],
    n_pixels: int,
    rng: np.random.Generator,
    *,
    thin: bool,
    foreground_share: float = 0.4,
) -> np.ndarray:
    """A copy of ``painted`` with about ``n_pixels`` more paint, shared out over ``boxes``.

    Strokes follow the truth like :func:`benchmarks.painting.paint_strokes` (foreground 2,
    background 1), stay on the left half and off pixels painted before. A window that lacks
    one class gets the other class's share, so every round adds the same amount of paint.
    """
    painted = painted.copy()
    region = paint_region(painted.shape)
    inside_fg_all = ndi.binary_erosion(foreground, iterations=1 if thin else 2)
    inside_bg_all = ndi.binary_erosion(~foreground, disk(3))
    left = n_pixels
    for number, (top, left_x, bottom, right) in enumerate(boxes):
        share = left // (len(boxes) - number)
        window = (slice(top, bottom), slice(left_x, right))
        crop = painted[window]
        before = int((crop > 0).sum())
        free = region[window] & (crop == 0)
        fg, bg = inside_fg_all[window] & free, inside_bg_all[window] & free
        wanted_fg = int(share * foreground_share)
        if fg.any():
            length, width = ((10, 40), 1) if thin else ((10, 40), 3)
            _paint_class(crop, fg, 2, wanted_fg, rng, length, width, tries=TRIES)
        after_fg = int((crop > 0).sum()) - before
        if bg.any():
            _paint_class(crop, bg & (crop == 0), 1, share - after_fg, rng, (10, 40), 3, tries=TRIES)
        left -= int((crop > 0).sum()) - before
    return painted


# --------------------------------------------------------------------------- training


def train(
    segmenter: Segmenter, image: np.ndarray, painted: np.ndarray, steps: int, s: Settings, seed: int
) -> int:
    epochs = max(1, steps // s.steps_per_epoch)
    config = TrainConfig(
        max_seconds=None,
        max_epochs=epochs,
        steps_per_epoch=s.steps_per_epoch,
        batch_size=s.batch_size,
        patch_size=s.patch_size,
        seed=seed,
        device="cpu",
    )
    return segmenter.train(image, painted, config, progress=False).steps


def look(segmenter: Segmenter, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and uncertainty, in one tiled pass."""
    result = run_to_end(segmenter.predict_iter(image, probabilities=False, uncertainty=True))
    assert result.labels is not None and result.uncertainty is not None
    return result.labels, result.uncertainty


def copy_of(segmenter: Segmenter) -> Segmenter:
    model = Segmenter.create(
        in_channels=1, n_classes=2, base_width=segmenter.config.encoder_channels[0],
        depth=segmenter.config.depth, device="cpu",
    )  # fmt: skip
    model.model.load_state_dict(segmenter.model.state_dict())
    model.config = segmenter.config
    return model


def run_case(name: str, seed: int, s: Settings) -> dict[str, Any]:
    case = next(c for c in CASES if c.name == name)
    data = load_case(case, s.quick)
    thin = case.kind == "walls"
    rng = np.random.default_rng(seed)
    region = paint_region(data.foreground.shape)
    scored = ~region
    half = int(region.sum())
    first = paint_strokes(
        data.foreground, rng, instances=data.instances, thin=thin, fraction=s.first_fraction
    )
    torch.manual_seed(seed)
    start = Segmenter.create(base_width=s.base_width, depth=s.depth, device="cpu", seed=seed)
    train(start, data.image, first, s.first_steps, s, seed)
    labels, unsure = look(start, data.image)
    first_dice = dice(labels == 1, data.foreground, scored)
    per_round = int(s.round_fraction * half)
    curves: dict[str, Any] = {}
    for strategy in STRATEGIES:
        segmenter, painted = copy_of(start), first
        round_unsure = unsure
        strategy_rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
        dices, painted_pixels, boxes_seen = [first_dice], [int((first > 0).sum())], []
        for number in range(1, s.rounds + 1):
            if strategy == "suggested":
                found = suggest(round_unsure, painted, region, s)
                boxes = [x.box for x in found]
            else:
                boxes = random_windows(region, s.windows, s.window, strategy_rng)
            painted = paint_windows(
                painted, data.foreground, boxes, per_round, strategy_rng, thin=thin
            )
            train(segmenter, data.image, painted, s.round_steps, s, seed + number)
            labels, round_unsure = look(segmenter, data.image)
            dices.append(dice(labels == 1, data.foreground, scored))
            painted_pixels.append(int((painted > 0).sum()))
            boxes_seen.append([list(b) for b in boxes])
        curves[strategy] = {"dice": dices, "painted_pixels": painted_pixels, "boxes": boxes_seen}
    return {"case": name, "seed": seed, "curves": curves}


def suggest(unsure: np.ndarray, painted: np.ndarray, region: np.ndarray, s: Settings) -> list[Any]:
    from napari_unetseg.core.uncertainty import suggest_regions

    return suggest_regions(unsure, painted, count=s.windows, window=s.window, where=region)


# --------------------------------------------------------------------------- report


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread of Dice per round, per case and strategy, over seeds."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["case"] for r in rows):
        group = [r for r in rows if r["case"] == name]
        entry: dict[str, Any] = {}
        for strategy in STRATEGIES:
            curves = np.array([r["curves"][strategy]["dice"] for r in group])
            paint = np.array([r["curves"][strategy]["painted_pixels"] for r in group])
            entry[strategy] = {
                "mean": [round(float(v), 4) for v in curves.mean(0)],
                "std": [round(float(v), 4) for v in curves.std(0)],
                "painted_pixels_mean": [int(v) for v in paint.mean(0)],
            }
        gaps = [
            r["curves"]["suggested"]["dice"][-1] - r["curves"]["random"]["dice"][-1] for r in group
        ]
        entry["last_round_gain"] = round(float(np.mean(gaps)), 4)
        entry["seeds_where_suggested_wins_last_round"] = int(sum(g > 0 for g in gaps))
        area = [
            np.mean(r["curves"]["suggested"]["dice"][1:])
            - np.mean(r["curves"]["random"]["dice"][1:])
            for r in group
        ]
        entry["mean_gain_over_rounds"] = round(float(np.mean(area)), 4)
        out[name] = entry
    return out


def table(result: dict[str, Any]) -> str:
    rounds = len(next(iter(result.values()))["suggested"]["mean"])
    head = " | ".join(["start"] + [f"round {i}" for i in range(1, rounds)])
    lines = [f"| case | strategy | {head} |", "|---|---|" + "---:|" * rounds]
    for name, entry in result.items():
        for strategy in STRATEGIES:
            cells = [
                f"{m:.3f} ± {d:.3f}"
                for m, d in zip(entry[strategy]["mean"], entry[strategy]["std"], strict=True)
            ]
            lines.append(f"| {name} | {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.active_painting", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="a crop, a tiny model: checks it runs")
    parser.add_argument("--seeds", type=int, help="paintings per image (default 3)")
    parser.add_argument("--rounds", type=int, help="rounds of painting after the first (default 4)")
    parser.add_argument("--cases", nargs="+", help="case names (default: nuclei 0 and maize)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--name", default="active-painting", help="results file name")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    s = QUICK if args.quick else Settings()
    if args.seeds or args.rounds or args.cases:
        from dataclasses import replace

        s = replace(
            s,
            seeds=args.seeds or s.seeds,
            rounds=args.rounds or s.rounds,
            cases=tuple(args.cases or s.cases),
        )
    rows = []
    with torch_threads(args.threads):
        for name in s.cases:
            for seed in range(s.seeds):
                row = run_case(name, seed, s)
                rows.append(row)
                dices = {k: [round(v, 3) for v in c["dice"]] for k, c in row["curves"].items()}
                print(f"{name} seed {seed}: {dices}", flush=True)
    result = summary(rows)
    print()
    print(table(result))
    output = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
        "settings": {k: getattr(s, k) for k in Settings.__dataclass_fields__},
        "rows": rows,
        "summary": result,
    }
    write_results(args.out, args.name, args.quick, output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
