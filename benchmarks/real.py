"""Accuracy on real images from simulated painting: our default training against the random forest
that ilastik, APOC and napari's pixel classifiers use, and Otsu, on the same paint.

``python -m benchmarks.real [--quick] [--seeds 3] [--cases NAME ...] [--busy] [--out DIR]``

Strokes (or whole objects) are painted on the left half of each image, simulated from its
dense ground truth (:mod:`benchmarks.painting`); the right half is scored: foreground Dice for
class models, object F1 at IoU 0.5 for object models. Every contender sees the same paint.
``--busy`` keeps one core busy with another process while each contender trains, as a
laptop running a browser does. One case is painted by a person instead: the two region
scribbles drawn by hand on the maize section, scored on every unpainted pixel against the
region of cells smaller than ``SMALL_CELL_AREA``. Images: ``benchmarks/data`` (see its ``SOURCE.txt``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import disk
from skimage.segmentation import find_boundaries

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.metrics import dice, object_f1

from .painting import paint_discs, paint_objects, paint_region, paint_strokes
from .records import load_average, write_results

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
CaseT = TypeVar("CaseT")


@dataclass(frozen=True)
class RealCase:
    name: str
    stem: str
    # "nuclei": objects on background; "walls": thin bright lines between cells;
    # "regions": tissue of small cells (the foreground) among large ones
    kind: str
    plane: int | None = None  # a plane of a stack
    objects: bool = False
    scribbles: str | None = None  # a person's own paint (a file stem), instead of simulated
    dark: bool = False  # the image inverted: dark walls on a bright ground, as in EM or brightfield


#: The maize section's small-cell region is its largest connected group of cells smaller
#: than this (pixels). The hand-drawn scribbles cross cells of 136-652 pixels (10th-90th
#: percentile) for that region and of 3,902-10,386 for the large-cell tissue.
SMALL_CELL_AREA = 1600


CASES = [
    RealCase("tissue nuclei 0", "kromp_gnb_0", "nuclei"),
    RealCase("tissue nuclei 1", "kromp_gnb_1", "nuclei"),
    RealCase("tissue nuclei 2", "kromp_gnb_2", "nuclei"),
    RealCase("maize cell walls", "maize_clsm", "walls"),
    RealCase("ovule membranes z16", "ovule_membranes", "walls", plane=16),
    RealCase("tissue nuclei 0, objects", "kromp_gnb_0", "nuclei", objects=True),
    RealCase("tissue nuclei 1, objects", "kromp_gnb_1", "nuclei", objects=True),
    RealCase("tissue nuclei 2, objects", "kromp_gnb_2", "nuclei", objects=True),
    RealCase(
        "maize regions, hand scribbles", "maize_clsm", "regions", scribbles="maize_clsm_scribbles"
    ),
]


@dataclass(frozen=True)
class RealImage:
    image: np.ndarray
    foreground: np.ndarray
    instances: np.ndarray | None
    painted: np.ndarray | None = None  # a person's paint, where the case has it


def load_case(case: RealCase, quick: bool = False) -> RealImage:
    image = tifffile.imread(DATA / f"{case.stem}_image.tif")
    labels = tifffile.imread(DATA / f"{case.stem}_labels.tif")
    if case.plane is not None:
        image, labels = image[case.plane], labels[case.plane]
    if case.dark:
        image = inverted(image)
    if case.scribbles is not None:
        painted = tifffile.imread(DATA / f"{case.scribbles}.tif")
        if quick:  # around the scribbles
            rows, cols = np.nonzero(painted)
            window = np.s_[rows.min() : rows.min() + 192, cols.min() : cols.min() + 192]
            image, labels, painted = image[window], labels[window], painted[window]
        small = np.bincount(labels.ravel())[labels] < SMALL_CELL_AREA
        pieces, _ = ndi.label(small)  # the tissue, not the odd small cell among large ones
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        return RealImage(image, pieces == np.argmax(sizes), None, painted)
    if quick:
        image, labels = image[:128, :192], labels[:128, :192]
    if case.kind == "walls":
        # walls a few pixels wide, as in the images; every pixel of these labels is a cell
        walls = ndi.binary_dilation(find_boundaries(labels, mode="thick"), disk(1))
        return RealImage(image, walls, None)
    return RealImage(image, labels > 0, labels)


DARK_HELP = "invert each image, so that the foreground is the darker class"


def darkened(case: CaseT) -> CaseT:
    """The case with its image inverted, so that its foreground is the darker class (walls
    dark on a bright ground, as in electron or brightfield microscopy)."""
    return dataclasses.replace(case, name=f"{case.name}, dark", dark=True)


def class_cases_named(
    parser: argparse.ArgumentParser, names: list[str], dark: bool = False
) -> list[RealCase]:
    """The 2-D class cases of ``names`` (simulated paint, no objects), inverted when ``dark``;
    a usage error for a name that is none of them."""
    known = {c.name: c for c in CASES if not c.objects and c.scribbles is None}
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"not a 2-D class case: {unknown}; choose from {sorted(known)}")
    return [darkened(known[name]) if dark else known[name] for name in names]


def inverted(image: np.ndarray) -> np.ndarray:
    """The image with bright and dark swapped, in its own dtype."""
    return np.asarray(image.max() - image, dtype=image.dtype)


# --------------------------------------------------------------------------- contenders


def scaled(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1, 99.8])
    return ((image - low) / max(high - low, 1e-6)).astype(np.float32)


def forest_features(image: np.ndarray) -> np.ndarray:
    from skimage.feature import multiscale_basic_features

    return multiscale_basic_features(
        scaled(image), intensity=True, edges=True, texture=True, sigma_min=1, sigma_max=16
    )


def forest(
    image: np.ndarray, painted: np.ndarray, seed: int, quick: bool, n_jobs: int = -1
) -> np.ndarray:
    """The ilastik-style pixel classifier: filter features, a random forest on painted pixels.

    2-D or 3-D: the filters work in the image's own dimensions.
    """
    from sklearn.ensemble import RandomForestClassifier

    features = forest_features(image)
    where = painted > 0
    target = np.minimum(painted[where], 2)  # objects: every id from 2 is foreground
    model = RandomForestClassifier(
        n_estimators=10 if quick else 100, n_jobs=n_jobs, random_state=seed
    )
    model.fit(features[where], target)
    predicted = model.predict(features.reshape(-1, features.shape[-1]))
    return (predicted.reshape(image.shape) == 2).astype(np.uint8)


def otsu(image: np.ndarray, painted: np.ndarray) -> np.ndarray:
    """A global Otsu threshold, on the side the foreground paint is."""
    values = scaled(image)
    bright = values[painted >= 2].mean() > values[painted == 1].mean()
    threshold = threshold_otsu(values)
    return ((values > threshold) if bright else (values <= threshold)).astype(np.uint8)


def components(foreground: np.ndarray, min_size: int = 15) -> np.ndarray:
    ids, _ = ndi.label(foreground)
    sizes = np.bincount(ids.ravel())
    small = sizes < min_size
    small[0] = False
    ids[small[ids]] = 0
    return ids


def ours(
    image: np.ndarray,
    painted: np.ndarray,
    objects: bool,
    seconds: float,
    options: dict[str, Any],
) -> tuple[np.ndarray, dict[str, Any]]:
    segmenter = Segmenter.create(task="objects" if objects else "semantic")
    config = TrainConfig(**({"max_seconds": seconds} | options))
    history = segmenter.train(image, painted, config, progress=False)
    labels = segmenter.segment(image)
    info = {
        "steps": history.steps,
        "seconds": round(history.elapsed, 1),
        "stop_reason": history.stop_reason,
        "best_epoch": history.best_epoch,
        "epochs": history.epochs,
        "best_validation_dice": history.best_validation_dice,
        "validation_curve": history.validation_dice,
    }
    for name in ("class_shares", "class_shares_applied", "border_shift", "threads", "warnings"):
        info[name] = getattr(history, name, None)  # absent before these existed
    return labels, info


# --------------------------------------------------------------------------- contention


def _spin(stop: Any) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


@contextmanager
def one_core_busy(enabled: bool) -> Iterator[None]:
    """Another process keeps one core busy (a browser, a second job) while the block runs."""
    if not enabled:
        yield
        return
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    process = context.Process(target=_spin, args=(stop,), daemon=True)
    process.start()
    try:
        yield
    finally:
        stop.set()
        process.join(5)
        if process.is_alive():  # pragma: no cover
            process.kill()


# --------------------------------------------------------------------------- one case


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def run_case(
    case: RealCase,
    seed: int,
    *,
    quick: bool,
    seconds: float,
    object_seconds: float,
    busy: bool,
    options: dict[str, Any],
    figures: Path | None = None,
    paint: str = "lines",
) -> dict[str, Any]:
    """``paint="discs"`` paints a nuclei case's classes as dabs instead of lines."""
    data = load_case(case, quick)
    rng = np.random.default_rng(seed)
    scored = ~paint_region(data.foreground.shape)  # the right half: nothing is painted there
    if data.painted is not None:  # a person's paint: score every pixel left unpainted
        painted, how = data.painted, "a person's"
        scored = painted == 0
    elif case.objects:
        assert data.instances is not None
        painted = paint_objects(data.instances, rng, n_objects=8 if quick else 30)
        how = "whole objects"
    elif paint == "discs" and case.kind == "nuclei":
        painted, how = paint_discs(data.foreground, rng, instances=data.instances), "discs"
    else:
        painted = paint_strokes(
            data.foreground, rng, instances=data.instances, thin=case.kind == "walls"
        )
        how = "lines"
    part = "whole image" if data.painted is not None else "left half"
    row: dict[str, Any] = {
        "case": case.name,
        "seed": seed,
        "objects": case.objects,
        "paint": how,
        "painted_part": part,
        "painted_percent": round(
            100 * float((painted > 0).mean()) * (1 if part == "whole image" else 2), 2
        ),
        "busy_core": busy,
    }
    budget = object_seconds if case.objects else seconds
    with one_core_busy(busy):
        (labels, info), took = timed(
            lambda: ours(data.image, painted, case.objects, budget, options)
        )
        forest_fg, forest_took = timed(lambda: forest(data.image, painted, seed, quick))
    otsu_fg = otsu(data.image, painted)
    if figures is not None:
        save_figure(
            figures / f"{case.name.replace(' ', '_').replace(',', '')}_seed{seed}.png",
            data,
            painted,
            labels,
            forest_fg,
            case.objects,
        )
    row["ours"] = {**info, "wall_seconds": round(took, 1)}
    row["forest_seconds"] = round(forest_took, 1)
    right = (slice(None), slice(painted.shape[1] // 2, None))
    if case.objects:
        assert data.instances is not None
        truth = data.instances[right]
        row["f1"] = {
            "ours": object_f1(truth, labels[right]),
            "forest": object_f1(truth, components(forest_fg)[right]),
            "otsu": object_f1(truth, components(otsu_fg)[right]),
        }
        row["dice"] = {
            "ours": dice(labels > 0, data.foreground, scored),
            "forest": dice(forest_fg, data.foreground, scored),
            "otsu": dice(otsu_fg, data.foreground, scored),
        }
    else:
        row["dice"] = {
            "ours": dice(labels == 1, data.foreground, scored),
            "forest": dice(forest_fg, data.foreground, scored),
            "otsu": dice(otsu_fg, data.foreground, scored),
        }
    return row


# --------------------------------------------------------------------------- report


def save_figure(
    path: Path,
    data: RealImage,
    painted: np.ndarray,
    ours_labels: np.ndarray,
    forest_fg: np.ndarray,
    objects: bool,
) -> None:
    """Image with paint, then errors of ours and of the forest (red: missed, blue: extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours_fg = ours_labels > 0 if objects else ours_labels == 1
    figure, axes = plt.subplots(1, 3, figsize=(15, 5.5))
    axes[0].imshow(data.image, cmap="gray")
    overlay = np.zeros((*painted.shape, 4))
    overlay[painted == 1] = (0.1, 0.5, 1, 1)
    overlay[painted >= 2] = (1, 0.4, 0, 1)
    axes[0].imshow(overlay)
    axes[0].set_title(
        "a person's paint; scored: every unpainted pixel"
        if data.painted is not None
        else "paint (left half); scored: right half"
    )
    shade = data.image / max(float(data.image.max()), 1e-9)
    for axis, predicted, name in ((axes[1], ours_fg, "ours"), (axes[2], forest_fg > 0, "forest")):
        axis.imshow(error_colours(shade, predicted, data.foreground))
        axis.set_title(f"{name}: red missed, blue extra")
    save_without_axes(figure, axes, path)


def error_colours(shade: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RGB: found in light grey, missed in red, extra in blue, over the dimmed image
    (``shade``, scaled to [0, 1])."""
    errors = np.repeat(shade[..., None] * 0.6, 3, axis=2)
    errors[predicted & truth] = (0.9, 0.9, 0.9)
    errors[~predicted & truth] = (1, 0, 0)
    errors[predicted & ~truth] = (0, 0.5, 1)
    return errors


def save_without_axes(figure: Any, axes: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=70)
    plt.close(figure)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | seed | painted % | ours Dice | forest Dice | Otsu Dice | ours F1 | forest+CC F1 "
        "| Otsu+CC F1 | steps | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d, f = r["dice"], r.get("f1")
        f1 = f"{f['ours']:.3f} | {f['forest']:.3f} | {f['otsu']:.3f}" if f else "– | – | –"
        lines.append(
            f"| {r['case']}{' (busy core)' if r['busy_core'] else ''} | {r['seed']} | "
            f"{r['painted_percent']} | {d['ours']:.3f} | {d['forest']:.3f} | "
            f"{d['otsu']:.3f} | {f1} | {r['ours']['steps']} | {r['ours']['seconds']} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means per case over seeds, and the checks the accuracy issue asks for."""
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault(r["case"], []).append(r)
    out: dict[str, Any] = {"cases": {}}
    class_gaps, object_gaps, wins = [], [], []
    for name, group in by_case.items():
        entry: dict[str, Any] = {}
        for metric in ("dice", "f1"):
            if metric in group[0]:
                entry[metric] = {
                    k: round(float(np.mean([g[metric][k] for g in group])), 4)
                    for k in ("ours", "forest", "otsu")
                }
        if group[0]["painted_part"] == "whole image":  # a person's paint: reported apart
            out[f"{name}: Dice ours - forest"] = round(
                float(np.mean([g["dice"]["ours"] - g["dice"]["forest"] for g in group])), 4
            )
        elif group[0]["objects"]:
            object_gaps += [g["f1"]["ours"] - g["f1"]["forest"] for g in group]
        else:
            class_gaps += [g["dice"]["ours"] - g["dice"]["forest"] for g in group]
            wins += [g["dice"]["ours"] >= g["dice"]["forest"] for g in group]
        out["cases"][name] = entry
    if class_gaps:
        out["classes: mean Dice ours - forest"] = round(float(np.mean(class_gaps)), 4)
        out["classes: ours >= forest on every image and seed"] = bool(all(wins))
    if object_gaps:
        out["objects: min F1 ours - (forest + CC)"] = round(float(np.min(object_gaps)), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a crop, 4 training steps: checks it runs"
    )
    parser.add_argument("--seeds", type=int, default=3, help="painting variants per image")
    parser.add_argument("--first-seed", type=int, default=0, help="the first painting seed")
    parser.add_argument("--cases", nargs="+", help="case names to run (default: all)")
    parser.add_argument("--seconds", type=float, default=60.0, help="class training budget")
    parser.add_argument("--object-seconds", type=float, default=90.0, help="object budget")
    parser.add_argument("--busy", action="store_true", help="keep one core busy meanwhile")
    parser.add_argument(
        "--paint",
        choices=("lines", "discs"),
        default="lines",
        help="how the nuclei class cases are painted: lines, or round dabs of the brush",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="train this many epochs instead of for a time budget (accuracy per step, not per second)",
    )
    parser.add_argument(
        "--train-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig setting to try instead of the default (repeatable)",
    )
    parser.add_argument(
        "--stacks",
        action="store_true",
        help="the 3-D stacks instead: 2-D against 3-D U-Nets, forest and Otsu on unpainted planes "
        "(with --epochs; default 8)",
    )
    parser.add_argument("--figures", type=Path, help="write a picture of each case's errors here")
    parser.add_argument("--dark", action="store_true", help=DARK_HELP)
    parser.add_argument("--name", default="real", help="results file name (without .json)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    from .suite import machine_info  # here: suite imports this module

    machine = machine_info()  # with the load average before the run
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.train_option)}
    if args.epochs:
        options |= {"max_seconds": None, "max_epochs": args.epochs}
    elif args.quick:  # a few steps, not seconds: a busy machine still runs some
        options |= {"max_seconds": None, "max_epochs": 1, "steps_per_epoch": 4}
    if args.stacks:
        return run_stacks(args, options, machine)
    cases = [c for c in CASES if not args.cases or c.name in args.cases]
    if args.quick:
        cases = [CASES[0], CASES[5], CASES[-1]]  # classes, objects, a person's scribbles
    if args.dark:
        cases = [darkened(c) for c in cases]
    seconds = 2.0 if args.quick else args.seconds
    object_seconds = 2.0 if args.quick else args.object_seconds
    rows = []
    for case in cases:
        painted_by_hand = case.scribbles is not None  # one painting: seeds only change the forest
        for seed in range(1 if args.quick or painted_by_hand else args.seeds):
            row = run_case(
                case,
                seed,
                quick=args.quick,
                seconds=seconds,
                object_seconds=object_seconds,
                busy=args.busy,
                options=options,
                figures=args.figures,
                paint=args.paint,
            )
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    result = {
        "machine": machine | {"load_average_at_end": load_average()},
        "settings": {
            "seconds": seconds,
            "object_seconds": object_seconds,
            "busy": args.busy,
            "paint": args.paint,
            "train_options": options,
        },
        "rows": rows,
        "summary": summary(rows),
    }
    print(json.dumps(result["summary"], indent=1))
    write_results(args.out, args.name, args.quick, result)
    if args.quick:  # the stacks too, on a tiny crop
        args.name = "real-stacks"
        run_stacks(args, {"max_epochs": 1, "steps_per_epoch": 2}, machine)
    return 0


def run_stacks(args: argparse.Namespace, options: dict[str, Any], machine: dict[str, Any]) -> int:
    """The 3-D cases of :mod:`benchmarks.stacks`, written to ``<name>.json``."""
    from .stacks import STACK_CASES, run_stack_case, stack_summary, stack_table

    epochs = int(options.pop("max_epochs", None) or args.epochs or 8)
    options.pop("max_seconds", None)
    cases = [c for c in STACK_CASES if not args.cases or c.name in args.cases]
    if args.quick:
        cases = cases[:1]
    if args.dark:
        cases = [darkened(c) for c in cases]
    rows = []
    for case in cases:
        first = args.first_seed
        for seed in range(first, first + (1 if args.quick else args.seeds)):
            row = run_stack_case(case, seed, quick=args.quick, epochs=epochs, options=options)
            rows.append(row)
            print(stack_table([row]).splitlines()[-1], flush=True)
    print()
    print(stack_table(rows))
    result = {
        "machine": machine | {"load_average_at_end": load_average()},
        "settings": {"epochs": epochs, "train_options": options},
        "rows": rows,
        "summary": stack_summary(rows),
    }
    print(json.dumps(result["summary"], indent=1))
    write_results(args.out, args.name, args.quick, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
