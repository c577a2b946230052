"""Stacks painted on a few planes: 2-D plane by plane against a 3-D U-Net, the random forest on
3-D filter features, Otsu and Gaussian + Otsu, scored on the planes nobody painted.

Run through ``python -m benchmarks.real --stacks`` (see :mod:`benchmarks.real`). Every
contender sees the same paint: strokes simulated from the dense ground truth on a few planes
spread through the stack (:func:`paint_planes`). Both U-Nets train the same number of steps
(``--epochs``), so the comparison is per step, not per second of a loaded machine; speed
(voxels per second) and peak memory are reported beside it.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.filters import gaussian, threshold_otsu
from skimage.morphology import disk
from skimage.segmentation import find_boundaries

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.metrics import object_f1
from napari_unetseg.core.training_events import TrainingHistory

from .painting import paint_objects, paint_strokes

DATA_NOTE = "benchmarks/data (see SOURCE.txt)"


@dataclass(frozen=True)
class StackCase:
    name: str
    stem: str
    kind: str  # "nuclei" or "walls"
    voxel_size: tuple[float, float, float]
    crop: tuple[slice, ...] | None = None
    noise: float = 0.0  # Gaussian noise, as a share of the 1-99.8 % intensity range
    n_planes: int = 3
    objects: bool = False  # whole objects painted, object models trained (F1 is the score)
    # "planes": a wall is where a plane's cells meet; "3-D": where the cells meet in any
    # direction, so the tops and bottoms of cells, which lie along the planes, are wall too
    walls: Literal["planes", "3-D"] = "planes"
    dark: bool = False  # the image inverted: dark walls on a bright ground


STACK_CASES = [
    StackCase("gonuclear nuclei 3-D", "gonuclear_nuclei", "nuclei", (0.284, 0.127, 0.127)),
    # A stand-in for the noisy 31x61x57 nuclei stack of the issue: a crop of the same size,
    # with noise added.
    StackCase(
        "gonuclear crop 31x61x57 + noise",
        "gonuclear_nuclei",
        "nuclei",
        (0.284, 0.127, 0.127),
        crop=(slice(35, 66), slice(20, 81), slice(22, 79)),
        noise=0.25,
    ),
    StackCase("ovule membranes 3-D", "ovule_membranes", "walls", (0.235, 0.15, 0.15)),
    StackCase(
        "gonuclear nuclei 3-D, objects",
        "gonuclear_nuclei",
        "nuclei",
        (0.284, 0.127, 0.127),
        objects=True,
    ),
    StackCase(
        "ovule membranes, 3-D walls", "ovule_membranes", "walls", (0.235, 0.15, 0.15), walls="3-D"
    ),
]

#: Objects painted whole on each painted plane of an object case (30 in all, as in 2-D).
OBJECTS_PER_PLANE = 10


@dataclass(frozen=True)
class Stack:
    image: np.ndarray
    foreground: np.ndarray
    instances: np.ndarray | None


def load_stack(case: StackCase, quick: bool, seed: int) -> Stack:
    from .real import DATA, inverted

    image = tifffile.imread(DATA / f"{case.stem}_image.tif")
    labels = tifffile.imread(DATA / f"{case.stem}_labels.tif")
    if case.crop is not None:
        image, labels = image[case.crop], labels[case.crop]
    if quick:
        image, labels = image[:16, :64, :64], labels[:16, :64, :64]
    if case.dark:
        image = inverted(image)
    if case.noise:
        low, high = np.percentile(image, [1, 99.8])
        noise = np.random.default_rng(1000 + seed).normal(0, case.noise * (high - low), image.shape)
        image = image.astype(np.float32) + noise.astype(np.float32)
    if case.kind == "walls":
        if case.walls == "3-D":
            boundaries = find_boundaries(labels, mode="thick")
        else:
            boundaries = np.stack([find_boundaries(p, mode="thick") for p in labels])
        walls = np.stack([ndi.binary_dilation(b, disk(1)) for b in boundaries])
        return Stack(image, walls, None)
    return Stack(image, labels > 0, labels)


def painted_planes(depth: int, n_planes: int) -> list[int]:
    """Planes spread evenly through the stack, away from its ends."""
    return [round((k + 1) * depth / (n_planes + 1)) for k in range(n_planes)]


def paint_planes(
    stack: Stack, planes: list[int], rng: np.random.Generator, thin: bool
) -> np.ndarray:
    """Strokes on the given planes (each painted over its whole area), 0 elsewhere."""
    painted = np.zeros(stack.foreground.shape, np.uint8)
    for z in planes:
        instances = None if stack.instances is None else stack.instances[z]
        painted[z] = paint_strokes(
            stack.foreground[z], rng, instances=instances, thin=thin, fraction=0.05, part="all"
        )
    return painted


def paint_plane_objects(
    instances: np.ndarray, planes: list[int], rng: np.random.Generator, per_plane: int
) -> np.ndarray:
    """Whole objects (their cut through each plane) and background strokes on the given
    planes; every painted object has its own id across the stack, from 2."""
    painted = np.zeros(instances.shape, np.uint16)
    next_id = 2
    for z in planes:
        plane = paint_objects(instances[z], rng, n_objects=per_plane, part="all")
        objects = plane >= 2
        painted[z][plane == 1] = 1
        painted[z][objects] = plane[objects] - 2 + next_id
        next_id += int(plane.max()) - 1 if objects.any() else 0
    return painted


# --------------------------------------------------------------------------- contenders


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unet(
    stack: Stack,
    painted: np.ndarray,
    case: StackCase,
    spatial_dims: int,
    options: dict[str, Any],
    quick: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Our default U-Net, 2-D (plane by plane) or 3-D, trained on the painted planes
    (``quick``: a tiny one, to check that the benchmark runs)."""
    voxel = case.voxel_size if spatial_dims == 3 else None
    size = {"base_width": 4, "depth": 2} if quick else {}
    task = "objects" if case.objects else "semantic"
    segmenter = Segmenter.create(spatial_dims=spatial_dims, voxel_size=voxel, task=task, **size)
    config = TrainConfig(**({"mode": "objects"} if case.objects else {}) | options)
    started = time.perf_counter()
    history = segmenter.train(stack.image, painted, config, progress=False)
    trained = time.perf_counter() - started
    started = time.perf_counter()
    labels = segmenter.segment(stack.image)
    predicted = time.perf_counter() - started
    per_step = voxels_per_step(segmenter, config, stack.image.shape)
    return labels, {
        "steps": history.steps,
        "train_seconds": round(trained, 1),
        "train_voxels_per_second": round(history.steps * per_step / max(trained, 1e-9)),
        "predict_seconds": round(predicted, 1),
        "predict_voxels_per_second": round(stack.image.size / max(predicted, 1e-9)),
        "best_validation_dice": history.best_validation_dice,
        "border_shift": history.border_shift,
        "wall_shift": history.wall_shift,
        "float32_retries": history.float32_retries,
        "warnings": history.warnings,
        "peak_rss_mib_so_far": round(_peak_rss_mib()),
    }


def voxels_per_step(segmenter: Segmenter, config: TrainConfig, shape: tuple[int, ...]) -> int:
    """Voxels in one training batch, with patches cut to the stack as training cuts them."""
    multiples = segmenter.config.multiples
    if segmenter.is_3d:
        sides = [
            max(m, min(want, -(-n // m) * m) // m * m)
            for want, n, m in zip(config.volume_patch_size, shape, multiples, strict=True)
        ]
        return config.volume_batch_size * math.prod(sides)
    m = multiples[-1]
    side = max(m, min(config.patch_size, -(-max(shape[1:]) // m) * m))
    return config.batch_size * side * side


def forest_3d(image: np.ndarray, painted: np.ndarray, seed: int, quick: bool) -> np.ndarray:
    """The ilastik-style random forest on 3-D filter features (σ 1-16 voxels)."""
    from .real import forest

    return forest(image, painted, seed, quick, n_jobs=1) == 1


def otsu_3d(image: np.ndarray, painted: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """A global Otsu threshold (after Gaussian smoothing when ``sigma``), on the painted side."""
    from .real import scaled

    values = scaled(image)
    if sigma:
        values = gaussian(values, sigma)
    bright = values[painted >= 2].mean() > values[painted == 1].mean()
    threshold = threshold_otsu(values)
    return (values > threshold) if bright else (values <= threshold)


# --------------------------------------------------------------------------- scoring


def foreground_log_odds(segmenter: Segmenter, image: np.ndarray) -> np.ndarray:
    """A two-class model's foreground log-odds on ``image``, from its predicted probabilities:
    adding a shift to them is moving the border by that shift."""
    probability = segmenter.predict_proba(image)[1].astype(np.float64)
    return np.log(np.clip(probability, 1e-6, 1)) - np.log(np.clip(1 - probability, 1e-6, 1))


def dice_on(predicted: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    p, t = predicted[where], truth[where]
    total = p.sum() + t.sum()
    return float(2 * (p & t).sum() / total) if total else 1.0


def f1_on_planes(
    predicted: np.ndarray, instances: np.ndarray, planes: np.ndarray, objects: bool = False
) -> float:
    """Object F1 at IoU 0.5 on the unpainted planes: of 3-D connected components of a
    foreground, or of an object model's own ids (``objects``)."""
    if objects:
        return float(object_f1(instances[planes], predicted[planes]))
    ids, _ = ndi.label(predicted)
    sizes = np.bincount(ids.ravel())
    small = sizes < 15
    small[0] = False
    ids[small[ids]] = 0
    return float(object_f1(instances[planes], ids[planes]))


def painted_stack(
    case: StackCase, seed: int, quick: bool
) -> tuple[Stack, list[int], np.ndarray, np.ndarray]:
    """A case's stack, its painted planes, the paint (seeded by ``seed``), and the planes
    left unpainted (a bool per plane), where every contender is scored."""
    stack = load_stack(case, quick, seed)
    rng = np.random.default_rng(seed)
    planes = painted_planes(stack.image.shape[0], case.n_planes)
    if case.objects:
        assert stack.instances is not None
        per_plane = 3 if quick else OBJECTS_PER_PLANE
        painted = paint_plane_objects(stack.instances, planes, rng, per_plane)
    else:
        painted = paint_planes(stack, planes, rng, thin=case.kind == "walls")
    unpainted = np.ones(stack.image.shape[0], bool)
    unpainted[planes] = False
    return stack, planes, painted, unpainted


def add_stack_case_arguments(
    parser: argparse.ArgumentParser, default_cases: tuple[str, ...]
) -> None:
    """The options of a benchmark that trains the default 3-D model on class stack cases:
    ``--quick``, ``--cases``, ``--seeds``, ``--epochs`` and ``--dark``."""
    from .real import DARK_HELP

    parser.add_argument("--quick", action="store_true", help="a tiny crop and model (smoke test)")
    parser.add_argument("--cases", nargs="+", default=list(default_cases), help="stack cases")
    parser.add_argument("--seeds", type=int, default=2, help="paintings per case")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (default's cap)")
    parser.add_argument("--dark", action="store_true", help=DARK_HELP)


def class_stacks_named(
    parser: argparse.ArgumentParser, names: list[str], dark: bool
) -> list[StackCase]:
    """The class (not object) stack cases of ``names``, inverted when ``dark``; a usage error
    for a name that is none of them."""
    known = {case.name: case for case in STACK_CASES if not case.objects}
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(known)}")
    from .real import darkened

    return [darkened(known[name]) if dark else known[name] for name in names]


@dataclass(frozen=True)
class TrainedOnStack:
    """The default 3-D model trained on one painting of a stack case, with what scores it."""

    stack: Stack
    painted: np.ndarray
    unpainted: np.ndarray  # a bool per plane
    segmenter: Segmenter
    history: TrainingHistory
    train_seconds: float

    @property
    def scored(self) -> np.ndarray:
        """A bool per voxel: the unpainted planes, where every contender is scored."""
        scored = np.zeros(self.stack.image.shape, bool)
        scored[self.unpainted] = True
        return scored


def train_default_3d(
    case: StackCase, seed: int, *, quick: bool, epochs: int, threads: int | None
) -> TrainedOnStack:
    """The default 3-D model (``quick``: a tiny one), trained ``epochs`` epochs on the painting
    ``seed`` of ``case``."""
    stack, _planes, painted, unpainted = painted_stack(case, seed, quick)
    size = {"base_width": 4, "depth": 2} if quick else {}
    segmenter = Segmenter.create(spatial_dims=3, voxel_size=case.voxel_size, **size)
    config = TrainConfig(max_seconds=None, max_epochs=epochs, threads=threads)
    started = time.perf_counter()
    history = segmenter.train(stack.image, painted, config, progress=False)
    seconds = time.perf_counter() - started
    return TrainedOnStack(stack, painted, unpainted, segmenter, history, seconds)


def run_stack_case(
    case: StackCase, seed: int, *, quick: bool, epochs: int, options: dict[str, Any]
) -> dict[str, Any]:
    stack, planes, painted, unpainted = painted_stack(case, seed, quick)
    scored = np.zeros(stack.image.shape, bool)
    scored[unpainted] = True
    train = {"max_seconds": None, "max_epochs": epochs} | options
    results: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    labels: dict[str, np.ndarray] = {}
    for name, dims in (("2-D", 2), ("3-D", 3)):
        labels[name], info[name] = unet(stack, painted, case, dims, train, quick)
        results[name] = labels[name] >= 1 if case.objects else labels[name] == 1
    started = time.perf_counter()
    results["forest"] = forest_3d(stack.image, painted, seed, quick)
    info["forest"] = {"seconds": round(time.perf_counter() - started, 1)}
    results["otsu"] = otsu_3d(stack.image, painted)
    results["gaussian+otsu"] = otsu_3d(stack.image, painted, sigma=1.0)
    row: dict[str, Any] = {
        "case": case.name,
        "seed": seed,
        "shape": list(stack.image.shape),
        "painted_planes": planes,
        "painted_percent_of_painted_planes": round(100 * float((painted[planes] > 0).mean()), 2),
        "objects_painted": int(np.unique(painted[painted >= 2]).size),
        "truth_foreground_percent": round(100 * float(stack.foreground[scored].mean()), 1),
        "epochs": epochs,
        "info": info,
        "dice": {k: round(dice_on(v, stack.foreground, scored), 4) for k, v in results.items()},
        "foreground_percent": {
            k: round(100 * float(v[scored].mean()), 1) for k, v in results.items()
        },
    }
    if stack.instances is not None:
        # an object case scores the 3-D model's own ids; 2-D ids stop at each plane, so 2-D,
        # like the others, is scored on the 3-D components of its foreground
        own_ids = {"3-D": labels["3-D"]} if case.objects else {}
        row["f1"] = {
            k: round(f1_on_planes(v, stack.instances, unpainted, k in own_ids), 4)
            for k, v in (results | own_ids).items()
        }
    return row


CONTENDERS = ("2-D", "3-D", "forest", "otsu", "gaussian+otsu")


def stack_table(rows: list[dict[str, Any]]) -> str:
    names = " | ".join(CONTENDERS)
    lines = [
        f"| stack | seed | Dice: {names} | F1: {names} | steps | train voxels/s 2-D, 3-D "
        "| predict voxels/s 2-D, 3-D |",
        "|---|---:|" + "---:|" * (2 * len(CONTENDERS) + 3),
    ]
    for r in rows:
        dice = " | ".join(f"{r['dice'][k]:.3f}" for k in CONTENDERS)
        f1 = (
            " | ".join(f"{r['f1'][k]:.3f}" for k in CONTENDERS)
            if "f1" in r
            else " | ".join("–" for _ in CONTENDERS)
        )
        two, three = r["info"]["2-D"], r["info"]["3-D"]
        lines.append(
            f"| {r['case']} | {r['seed']} | {dice} | {f1} | {two['steps']} | "
            f"{two['train_voxels_per_second']:,}, {three['train_voxels_per_second']:,} | "
            f"{two['predict_voxels_per_second']:,}, {three['predict_voxels_per_second']:,} |"
        )
    return "\n".join(lines)


def stack_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault(r["case"], []).append(r)
    out: dict[str, Any] = {}
    for name, group in by_case.items():
        entry = {
            "dice": {k: round(float(np.mean([g["dice"][k] for g in group])), 4) for k in CONTENDERS}
        }
        if "f1" in group[0]:
            entry["f1"] = {
                k: round(float(np.mean([g["f1"][k] for g in group])), 4) for k in CONTENDERS
            }
        out[name] = entry
    return out
