"""Command line: ``napari-unetseg demo|train|segment|info|export`` (also ``python -m napari_unetseg``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any


def run_headless_demo(seconds: float, objects: bool = False) -> dict[str, float]:
    """Train on the bundled sample with a progress bar and print the Dice it reaches."""
    from napari_unetseg.core import Segmenter, TrainConfig
    from napari_unetseg.core.metrics import dice, object_f1
    from napari_unetseg.core.sample import tissue_nuclei

    scene = tissue_nuclei()
    painted = scene.painted_objects if objects else scene.painted
    print(
        f"Bundled sample: {scene.image.shape[0]}x{scene.image.shape[1]} image of nuclei in "
        f"tissue (Kromp et al. 2020), {100 * (painted > 0).mean():.1f} % of pixels painted, "
        "all on the left half; scored on the right half."
    )
    segmenter = Segmenter.create(task="objects" if objects else "semantic")
    print(
        f"Training a fresh U-Net for up to {seconds:g} s or {TrainConfig().max_epochs} epochs on "
        f"{segmenter.describe().splitlines()[-1][8:]}"
    )
    started = time.perf_counter()
    history = segmenter.train(scene.image, painted, TrainConfig(max_seconds=seconds))
    trained = time.perf_counter() - started
    labels = segmenter.segment(scene.image)
    right = (slice(None), slice(scene.image.shape[1] // 2, None))
    result = {
        "train_seconds": trained,
        "steps": float(history.steps),
        "dice_right_half": dice(labels[right], scene.classes[right]),
    }
    print(f"Trained {history.steps} steps in {trained:.1f} s.")
    adjusted = history.adjustment_note(segmenter.config.names)
    if adjusted:
        print(adjusted)
    for warning in history.warnings:
        print(f"Note: {warning}")
    print(
        f"Foreground Dice on the right half (nothing painted there): {result['dice_right_half']:.3f}"
    )
    if objects:
        result["object_f1"] = object_f1(scene.instances[right], labels[right], 0.5)
        print(
            f"Object F1 at IoU 0.5 on the right half: {result['object_f1']:.3f} "
            f"({labels.max()} objects found in the whole image)"
        )
    return result


def _read_image(path: str):  # type: ignore[no-untyped-def]
    import numpy as np

    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    import tifffile

    return tifffile.imread(path)


def no_display_reason(
    environ: dict[str, str] | None = None, platform: str = sys.platform
) -> str | None:
    """Why Qt cannot open a window here (Linux without X11 or Wayland), or None."""
    environ = dict(os.environ) if environ is None else environ
    if not platform.startswith("linux") or environ.get("QT_QPA_PLATFORM"):
        return None
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    return "no display is available (neither DISPLAY nor WAYLAND_DISPLAY is set)"


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.headless:
        run_headless_demo(args.seconds, objects=args.objects)
        return 0
    reason = no_display_reason()
    if reason is not None:
        print(
            f"The napari demo needs a screen, but {reason}.\n"
            "Run it without one: napari-unetseg demo --headless (trains on the sample in the "
            "terminal), or start a virtual display: xvfb-run napari-unetseg demo.",
            file=sys.stderr,
        )
        return 2
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


def _default_dims(image: Any, channels: int, axes: str | None) -> int:
    """3 for a stack (the measured better choice, see docs/benchmarks.md), 2 for one plane."""
    from napari_unetseg.core.layout import resolve_layout

    return 3 if resolve_layout(image, channels, axes).stack_shape else 2


def _cmd_train(args: argparse.Namespace) -> int:
    from napari_unetseg.core import Segmenter, TrainConfig
    from napari_unetseg.core.config import DEFAULT_SECONDS
    from napari_unetseg.core.weights import check_save_target

    # Everything that can fail is checked before the training budget is spent.
    output = check_save_target(args.output)
    epochs = {} if args.epochs is None else {"max_epochs": args.epochs}
    seconds = DEFAULT_SECONDS[2] if args.seconds is None else args.seconds
    config = TrainConfig(mode=args.mode, max_seconds=seconds, **epochs)
    if args.weights:  # a missing file is an error, never a silent start from scratch
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
            spatial_dims=args.dims or _default_dims(image, channels, args.axes),
            voxel_size=args.voxel_size,
            start=args.start,
            members=args.members,
        )
    if args.seconds is None:  # the widget's default for the model's dims
        config = config.replace(max_seconds=DEFAULT_SECONDS[3 if segmenter.is_3d else 2])
    images = [_read_image(p) for p in args.image]
    labels = [_read_image(p) for p in args.labels]
    history = segmenter.train(images, labels, config, axes=args.axes)
    saved = segmenter.save(output)
    print(
        f"{history.steps} steps in {history.elapsed:.1f} s; best validation Dice {history.best_validation_dice}"
    )
    print(f"Saved {saved}")
    return 0


def _batch_client(args: argparse.Namespace) -> Any:
    """A dask.distributed client for --workers or --scheduler, else None (this process)."""
    if args.workers is None and args.scheduler is None:
        return None
    from napari_unetseg.core.errors import InputError

    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError(
            "--workers and --scheduler need dask.distributed: "
            "pip install 'napari-unetseg[distributed]'."
        ) from None
    if args.scheduler is not None:
        try:
            return Client(args.scheduler, timeout="20s")
        except (OSError, TimeoutError) as error:
            raise InputError(
                f"cannot reach the dask scheduler at {args.scheduler}: {error}"
            ) from None
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, not {args.workers}.")
    if args.threads is None:
        import os

        args.threads = max(1, (os.cpu_count() or 1) // args.workers)
    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    return Client(cluster)


def _close(client: Any) -> None:
    if client is not None:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None:
            cluster.close()


def _segment_split(args: argparse.Namespace) -> int:
    """One large image in strips of rows over the workers (--split-rows)."""
    from tqdm.auto import tqdm

    from napari_unetseg.core.batch import describe_failure, plan_batch, segment_large_image
    from napari_unetseg.core.errors import InputError, UnetSegError

    plan = plan_batch(args.images, args.output_dir, "zarr")
    if len(plan.jobs) != 1:
        raise InputError(
            f"--split-rows segments one image; {len(plan.jobs)} were given. "
            "Leave it out to segment many files."
        )
    job = plan.jobs[0]
    if job.output.exists() and not args.overwrite:
        print(f"skip {job.input}: {job.output} exists (use --overwrite)")
        return 0
    client = _batch_client(args)
    try:
        with tqdm(unit="strip", desc=job.input.name, leave=False) as bar:

            def show(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            segment_large_image(
                args.weights,
                job.input,
                job.output,
                client,
                strip_rows=args.split_rows,
                axes=args.axes,
                tile_size=args.tile_size,
                device=args.device,
                overwrite=args.overwrite,
                trust_code=args.trust_code,
                threads_per_worker=args.threads,
                on_progress=show,
            )
    except UnetSegError:
        raise
    except Exception as error:  # a worker's failure: one line, like every other error
        raise InputError(f"{job.input}: {describe_failure(error)}") from None
    finally:
        _close(client)
    print(f"{job.input} -> {job.output}")
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from napari_unetseg.core.batch import FileResult, plan_batch, segment_files

    if args.split_rows is not None:
        return _segment_split(args)
    plan_batch(args.images, args.output_dir, args.format)  # input problems, before any start-up
    client = _batch_client(args)
    counts = {"done": 0, "skipped": 0, "failed": 0, "ignored": 0}
    bars: list[Any] = []  # made at the first result, so that early errors print alone

    def show(result: FileResult, finished: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="file", desc="segment", leave=False))
        bar = bars[0]
        bar.update(finished - bar.n)
        if result.status == "done":
            bar.write(f"{result.input} -> {result.output} ({result.seconds:.1f} s)")
        elif result.status == "skipped":
            bar.write(f"skip {result.input}: {result.output} exists (use --overwrite)")
        else:
            bar.write(f"FAILED {result.input}: {result.message}", file=sys.stderr)

    try:
        results = segment_files(
            args.weights,
            args.images,
            args.output_dir,
            client,
            output_format=args.format,
            overwrite=args.overwrite,
            axes=args.axes,
            tile_size=args.tile_size,
            device=args.device,
            threads_per_worker=args.threads,
            on_result=show,
            trust_code=args.trust_code,
        )
    finally:
        for bar in bars:
            bar.close()
        _close(client)
    for result in results:
        counts[result.status] += 1
        if result.status == "ignored":
            print(f"left out {result.input}: {result.message}")
    print(
        f"{counts['done']} segmented, {counts['skipped']} already done, "
        f"{counts['failed']} failed, {counts['ignored']} left out."
    )
    return 1 if counts["failed"] else 0


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
        "for files from a source you trust (default: off)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-unetseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo_command(sub)
    _add_train_command(sub)
    _add_segment_command(sub)
    _add_info_command(sub)
    _add_export_command(sub)
    return parser


def _add_demo_command(sub: Any) -> None:
    """``demo``: napari with the sample, or training in the terminal."""
    demo = sub.add_parser("demo", help="open napari with the sample and the plugin docked")
    demo.add_argument(
        "--headless", action="store_true", help="train on the sample in the terminal instead"
    )
    demo.add_argument("--seconds", type=float, default=60.0, help="training budget for --headless")
    demo.add_argument("--objects", action="store_true", help="--headless: train an object model")
    demo.set_defaults(run=_cmd_demo)


def _add_train_command(sub: Any) -> None:
    """``train``: train or fine-tune from image and label files."""
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
    train.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="training budget; default 60 s for a 2-D model, 180 s for a 3-D one (as the widget)",
    )
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--axes", default=None, help="e.g. YX, CYX, ZYX, YXC")
    train.add_argument(
        "--dims",
        type=int,
        choices=[2, 3],
        default=None,
        help="new model: 2-D (plane by plane) or 3-D (a stack as one volume; Z is the last "
        "stack axis). Default: 3 for a stack, 2 for a single image",
    )
    train.add_argument(
        "--voxel-size",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        default=None,
        help="a 3-D model's voxel spacing (any one unit): it pools in Z only where Z is fine",
    )
    train.add_argument(
        "--start",
        default="auto",
        choices=["auto", "synthetic", "random"],
        help="new model's first weights: 'auto' (default) starts a two-class 2-D model from "
        "weights trained on synthetic scenes and any other from random ones; 'synthetic' "
        "insists on those weights; 'random'",
    )
    train.add_argument(
        "--members",
        type=int,
        default=None,
        help="new model: U-Nets trained one after the other and averaged; default 2 for a 3-D class "
        "model, 1 otherwise",
    )
    train.add_argument("--device", default="auto")
    _add_trust_code(train)
    train.set_defaults(run=_cmd_train)


def _add_segment_command(sub: Any) -> None:
    """``segment``: segment files, here or on a dask cluster."""
    segment = sub.add_parser(
        "segment",
        help="segment image files (TIFF, .npy, .zarr) with a weights file",
        description="Segment image files with a weights file, here or on a dask cluster. "
        "Each result is named <image name>_unetseg.<format>; label files (*_labels.*, "
        "*_mask.*) and earlier results are never taken as images, existing results are "
        "skipped (a rerun resumes), and a file that fails is reported while the rest go on.",
    )
    segment.add_argument("weights", help="weights file (.safetensors, .pth, ...)")
    segment.add_argument(
        "images",
        nargs="+",
        help="image files, folders (all their images) or quoted glob patterns ('plate/*.tif')",
    )
    segment.add_argument(
        "--output-dir",
        default=None,
        help="folder for the results, created if missing (default: beside each image)",
    )
    segment.add_argument(
        "--format",
        default="tif",
        choices=["tif", "npy", "zarr"],
        help="file format of the results; zarr is written tile row by tile row (default: tif)",
    )
    where = segment.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="start N local worker processes with dask.distributed (default: none, one "
        "file after the other in this process)",
    )
    where.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="use a running dask scheduler, e.g. tcp://10.0.0.5:8786 (default: none)",
    )
    segment.add_argument(
        "--split-rows",
        type=int,
        default=None,
        metavar="ROWS",
        help="segment ONE large image (zarr) in strips of ROWS rows spread over the workers, "
        "into <name>_unetseg.zarr; class models only (default: off, one file per task)",
    )
    segment.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="T",
        help="torch threads in each worker (default: the cores divided among --workers; "
        "with --scheduler, as the workers were started)",
    )
    segment.add_argument(
        "--axes", default=None, help="axes of the images, e.g. YX, CYX, ZYX (default: guessed)"
    )
    segment.add_argument(
        "--tile-size",
        type=int,
        default=None,
        help="tile side in px (default: PredictConfig's, 576)",
    )
    segment.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: auto)"
    )
    segment.add_argument(
        "--overwrite",
        action="store_true",
        help="replace results that exist (default: skip them)",
    )
    _add_trust_code(segment)
    segment.set_defaults(run=_cmd_segment)


def _add_info_command(sub: Any) -> None:
    """``info``: describe a weights file."""
    info = sub.add_parser("info", help="describe a weights file")
    info.add_argument("weights")
    _add_trust_code(info)
    info.set_defaults(run=_cmd_info)


def _add_export_command(sub: Any) -> None:
    """``export``: write a model for other tools."""
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from napari_unetseg.core.errors import UnetSegError

    try:
        return int(args.run(args))
    except UnetSegError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a file that cannot be read or written: one line, no traceback
        where = f": {error.filename}" if error.filename else ""
        print(f"error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
