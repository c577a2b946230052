"""Command line: ``napari-unetseg demo|train|segment|info|export`` (also ``python -m napari_unetseg``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def _dice(predicted, truth, where) -> float:  # type: ignore[no-untyped-def]
    p, t = predicted[where] > 0, truth[where] > 0
    denominator = p.sum() + t.sum()
    return float(2 * (p & t).sum() / denominator) if denominator else 1.0


def run_headless_demo(seconds: float, objects: bool = False) -> dict[str, float]:
    """Train on the bundled sample with a progress bar and print the Dice it reaches."""
    from napari_unetseg.core import Segmenter, TrainConfig
    from napari_unetseg.core.metrics import object_f1
    from napari_unetseg.core.synthetic import nuclei_scene

    scene = nuclei_scene()
    painted = scene.painted_objects if objects else scene.painted
    print(
        f"Bundled sample: {scene.image.shape[0]}x{scene.image.shape[1]} nuclei image, "
        f"{100 * (painted > 0).mean():.1f} % of pixels painted."
    )
    segmenter = Segmenter.create(task="objects" if objects else "semantic")
    print(
        f"Training a fresh U-Net for {seconds:g} s on {segmenter.describe().splitlines()[-1][8:]}"
    )
    started = time.perf_counter()
    history = segmenter.train(scene.image, painted, TrainConfig(max_seconds=seconds))
    trained = time.perf_counter() - started
    labels = segmenter.segment(scene.image)
    unpainted = painted == 0
    result = {
        "train_seconds": trained,
        "steps": float(history.steps),
        "dice_unpainted": _dice(labels, scene.classes, unpainted),
    }
    print(f"Trained {history.steps} steps in {trained:.1f} s.")
    print(f"Foreground Dice on the unpainted pixels: {result['dice_unpainted']:.3f}")
    if objects:
        result["object_f1"] = object_f1(scene.instances, labels, 0.5)
        print(f"Object F1 at IoU 0.5: {result['object_f1']:.3f} ({labels.max()} objects found)")
    return result


def _read_image(path: str):  # type: ignore[no-untyped-def]
    import numpy as np

    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    import tifffile

    return tifffile.imread(path)


def _write_labels(path: str, labels) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from napari_unetseg.core.weights import atomic_write

    if path.endswith(".npy"):

        def write_npy(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a handle, so numpy does not append ".npy"
                np.save(handle, labels, allow_pickle=False)

        atomic_write(Path(path), write_npy)
    else:
        import tifffile

        atomic_write(Path(path), lambda tmp: tifffile.imwrite(tmp, labels, compression="zlib"))


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.headless:
        run_headless_demo(args.seconds, objects=args.objects)
        return 0
    try:
        from napari_unetseg._widgets._demo import launch_demo
    except ImportError as error:
        print(
            f"The napari demo needs napari and a Qt binding ({error}).\n"
            "Install them with: pip install 'napari-unetseg[napari]', or run with --headless.",
            file=sys.stderr,
        )
        return 2
    launch_demo()
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from napari_unetseg.core import Segmenter, TrainConfig

    if args.weights and Path(args.weights).exists():
        segmenter = Segmenter.load(args.weights, device=args.device, trust_code=args.trust_code)
    else:
        image = _read_image(args.image[0])
        channels = (
            1
            if args.axes is None or "C" not in args.axes.upper()
            else image.shape[args.axes.upper().index("C")]
        )
        segmenter = Segmenter.create(
            in_channels=channels,
            n_classes=args.classes,
            task="objects" if args.mode.startswith("objects") else "semantic",
            device=args.device,
        )
    images = [_read_image(p) for p in args.image]
    labels = [_read_image(p) for p in args.labels]
    config = TrainConfig(mode=args.mode, max_seconds=args.seconds, max_epochs=args.epochs)
    history = segmenter.train(images, labels, config, axes=args.axes)
    saved = segmenter.save(args.output)
    print(
        f"{history.steps} steps in {history.elapsed:.1f} s; best validation Dice {history.best_validation_dice}"
    )
    print(f"Saved {saved}")
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from napari_unetseg.core import Segmenter
    from napari_unetseg.core.predict import PredictProgress, run_to_end

    segmenter = Segmenter.load(args.weights, device=args.device, trust_code=args.trust_code)
    for path in args.images:
        out = Path(args.output_dir or Path(path).parent) / (Path(path).stem + "_labels.tif")
        if out.exists() and not args.overwrite:
            print(f"skip {path}: {out} exists (use --overwrite)", file=sys.stderr)
            continue
        image = _read_image(path)
        tiling = {} if args.tile_size is None else {"tile_size": args.tile_size}
        events = segmenter.predict_iter(image, axes=args.axes, probabilities=False, **tiling)
        with tqdm(
            total=1.0,
            desc=Path(path).name,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}",
        ) as bar:

            def show(progress: PredictProgress, bar: Any = bar) -> None:
                bar.n = progress.fraction
                bar.refresh()

            labels = run_to_end(events, show).labels
        _write_labels(str(out), labels)
        print(f"{path} -> {out} ({labels.dtype}, max label {labels.max()})")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from napari_unetseg.core import Segmenter
    from napari_unetseg.core.trust import describe_untrusted

    # A file that holds code is described from its zip entries only, unless the user trusts it.
    summary = None if args.trust_code else describe_untrusted(args.weights)
    if summary is None:
        summary = Segmenter.load(args.weights, device="cpu", trust_code=args.trust_code).describe()
    print(summary)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from napari_unetseg.core import Segmenter

    segmenter = Segmenter.load(args.model, device="cpu", trust_code=args.trust_code)
    details: dict[str, Any] = {}
    if args.author:
        details["authors"] = args.author
    if args.cite:
        details["cite"] = [
            {"text": text, ("url" if where.startswith("http") else "doi"): where}
            for text, where in args.cite
        ]
    for key in ("name", "description", "license"):
        if getattr(args, key) is not None:
            details[key] = getattr(args, key)
    if args.sample:
        details["sample"] = _read_image(args.sample)
    saved = segmenter.export(args.output, args.format, **details)
    print(f"Exported {args.model} to {saved}")
    return 0


def _add_trust_code(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-code",
        action="store_true",
        help="allow weights that contain code (TorchScript); it runs with your rights, so only "
        "for files from a source you trust",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-unetseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="open napari with the sample and the plugin docked")
    demo.add_argument(
        "--headless", action="store_true", help="train on the sample in the terminal instead"
    )
    demo.add_argument("--seconds", type=float, default=60.0, help="training budget for --headless")
    demo.add_argument("--objects", action="store_true", help="--headless: train an object model")
    demo.set_defaults(run=_cmd_demo)

    train = sub.add_parser("train", help="train or fine-tune on image/labels files (TIFF or .npy)")
    train.add_argument("--image", nargs="+", required=True)
    train.add_argument("--labels", nargs="+", required=True)
    train.add_argument("--weights", help="fine-tune this weights file instead of a new model")
    train.add_argument("--output", required=True, help="where to save (.safetensors)")
    train.add_argument(
        "--mode", default="sparse", choices=["sparse", "dense", "objects", "objects-dense"]
    )
    train.add_argument(
        "--classes", type=int, default=2, help="classes incl. background (new model)"
    )
    train.add_argument("--seconds", type=float, default=60.0)
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--axes", default=None, help="e.g. YX, CYX, ZYX, YXC")
    train.add_argument("--device", default="auto")
    _add_trust_code(train)
    train.set_defaults(run=_cmd_train)

    segment = sub.add_parser(
        "segment", help="segment image files (TIFF or .npy) with a weights file"
    )
    segment.add_argument("weights")
    segment.add_argument("images", nargs="+")
    segment.add_argument("--output-dir", default=None)
    segment.add_argument("--axes", default=None)
    segment.add_argument(
        "--tile-size", type=int, default=None, help="tile side in px (default: PredictConfig's)"
    )
    segment.add_argument("--device", default="auto")
    segment.add_argument("--overwrite", action="store_true")
    _add_trust_code(segment)
    segment.set_defaults(run=_cmd_segment)

    info = sub.add_parser("info", help="describe a weights file")
    info.add_argument("weights")
    _add_trust_code(info)
    info.set_defaults(run=_cmd_info)

    export = sub.add_parser(
        "export",
        help="write a weights file as a bioimage.io package (.zip), ONNX (.onnx) or "
        "TorchScript (.ts)",
    )
    export.add_argument("model", help="any weights file napari-unetseg reads")
    export.add_argument("output", help="the file to write; its suffix picks the format")
    export.add_argument("--format", choices=["bioimageio", "onnx", "torchscript"], default=None)
    export.add_argument(
        "--author", action="append", help="bioimage.io: an author's name (required; repeat)"
    )
    export.add_argument("--license", default=None, help="bioimage.io: SPDX id (CC-BY-4.0)")
    export.add_argument(
        "--cite",
        nargs=2,
        action="append",
        metavar=("TEXT", "DOI_OR_URL"),
        help="bioimage.io: a citation (default: the U-Net paper; repeat)",
    )
    export.add_argument("--name", default=None, help="bioimage.io: the model's name")
    export.add_argument("--description", default=None, help="bioimage.io: one paragraph")
    export.add_argument(
        "--sample",
        default=None,
        help="bioimage.io: a (Y, X) or (C, Y, X) TIFF/.npy plane for test tensors and cover",
    )
    _add_trust_code(export)
    export.set_defaults(run=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from napari_unetseg.core.errors import UnetSegError

    try:
        return int(args.run(args))
    except UnetSegError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
