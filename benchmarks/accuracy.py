"""Accuracy within a training budget on the synthetic scenes.

``python -m benchmarks.accuracy [--quick] [--out benchmarks/results]``

Each case trains a fresh default model, segments the whole image and scores the pixels (or
objects) that were not painted. It prints a table and writes ``accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.devices import cpu_has_native_bfloat16
from napari_unetseg.core.metrics import dice, match_objects
from napari_unetseg.core.synthetic import Scene, nuclei_scene, shapes_scene

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Case:
    name: str
    scene: str
    size: int
    seed: int
    objects: bool
    seconds: float | None = None
    epochs: int | None = None


CASES = [
    # The headless demo: the bundled sample, default budget.
    Case("nuclei, classes (demo)", "nuclei", 512, 0, False, seconds=60),
    # The scene of the slow accuracy test, by epochs and by time.
    Case("ellipses among shapes (test)", "shapes", 256, 0, False, epochs=3),
    Case("ellipses among shapes, 60 s", "shapes", 256, 0, False, seconds=60),
    Case("touching nuclei, objects (test)", "nuclei", 512, 1, True, epochs=5),
    Case("touching nuclei, objects, 90 s", "nuclei", 512, 2, True, seconds=90),
]


def make_scene(case: Case, quick: bool) -> Scene:
    size = 96 if quick else case.size
    factory = nuclei_scene if case.scene == "nuclei" else shapes_scene
    return factory((size, size), seed=case.seed)


def run_case(case: Case, quick: bool) -> dict[str, object]:
    scene = make_scene(case, quick)
    painted = scene.painted_objects if case.objects else scene.painted
    seconds = 2.0 if quick else case.seconds
    epochs = 1 if quick and case.epochs else case.epochs
    segmenter = Segmenter.create(task="objects" if case.objects else "semantic")
    started = time.perf_counter()
    history = segmenter.train(
        scene.image, painted, TrainConfig(max_seconds=seconds, max_epochs=epochs), progress=False
    )
    trained = time.perf_counter() - started
    labels = segmenter.segment(scene.image)
    row: dict[str, object] = {
        **asdict(case),
        "painted_percent": round(100 * float((painted > 0).mean()), 2),
        "train_seconds": round(trained, 1),
        "steps": history.steps,
        "dice_unpainted": round(dice(labels, scene.classes, mask=painted == 0), 4),
    }
    if case.objects:
        match = match_objects(scene.instances, labels, 0.5)
        row["object_f1"] = round(match.f1, 4)
        row["objects_true_found_missed"] = [
            int(scene.instances.max()),
            match.true_positives + match.false_positives,
            match.false_negatives,
        ]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny scenes and budgets (smoke test)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    rows = []
    print("| case | painted | budget | steps | train s | Dice (unpainted) | object F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case in CASES:
        row = run_case(case, args.quick)
        rows.append(row)
        budget = f"{case.seconds:g} s" if case.seconds else f"{case.epochs} epochs"
        f1 = row.get("object_f1", "")
        print(
            f"| {case.name} | {row['painted_percent']} % | {budget} | {row['steps']} | "
            f"{row['train_seconds']} | {row['dice_unpainted']} | {f1} |",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    name = "accuracy-quick.json" if args.quick else "accuracy.json"
    result = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "bf16": cpu_has_native_bfloat16(),
        },
        "cases": rows,
    }
    (args.out / name).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
