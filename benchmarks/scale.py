"""Scale-out: files per second over dask workers, and a 20000² zarr image in bounded memory.

``python -m benchmarks.scale [--quick] [--out benchmarks/results]``

1. **Batch throughput**: ``core.batch.segment_files`` on ``--files`` uint16 TIFFs of
   ``--file-size``², in this process and on a ``LocalCluster`` of 1 and 2 worker processes
   (the cores divided among them). Each cluster first segments one file per worker, so
   start-up and model loading are left out; then the timed batch runs. Reported: images/s
   and each worker's peak resident memory (``ru_maxrss``: model, torch and the largest
   image it handled).
2. **A large zarr image**: a ``--zarr-size``² uint16 zarr on disk (tiles of the synthetic
   nuclei scene) segmented with ``Segmenter.segment(image, out=zarr_labels)`` in a fresh
   process. Reported: the peak resident memory above the baseline taken after loading the
   model and a warm-up on a small crop, i.e. above the model (target: ≤ 1 GiB at 20000²).

``--quick`` runs both on tiny sizes, with the large image read by tile rows all the same:
it checks that the benchmark works, not how fast anything is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MIB = 1024**2


def _model(folder: Path) -> Path:
    from napari_unetseg.core import Segmenter

    path = folder / "model.safetensors"
    Segmenter.create(device="cpu", seed=0).save(path)  # speed and memory do not need training
    return path


def _scene(size: int, seed: int) -> np.ndarray:
    from napari_unetseg.core.synthetic import nuclei_scene

    image: np.ndarray = nuclei_scene((size, size), seed=seed).image
    return image


def _worker_peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def batch_throughput(folder: Path, files: int, size: int, workers: list[int]) -> dict[str, Any]:
    import tifffile

    from napari_unetseg.core.batch import segment_files

    model = _model(folder)
    images = folder / "images"
    images.mkdir()
    for k in range(files + max(workers)):
        tifffile.imwrite(images / f"im{k:03d}.tif", _scene(size, k % 7))
    names = sorted(images.iterdir())
    warm, timed = names[files:], names[:files]
    result: dict[str, Any] = {"files": files, "size": size, "cores": os.cpu_count()}

    segment_files(model, warm[:1], folder / "here-warm")  # oneDNN's first-call set-up
    start = time.perf_counter()
    done = segment_files(model, timed, folder / "here")
    seconds = time.perf_counter() - start
    assert all(r.status == "done" for r in done), done
    result["in_process"] = {"seconds": seconds, "images_per_s": files / seconds}

    from distributed import Client, LocalCluster

    for n in workers:
        threads = max(1, (os.cpu_count() or 1) // n)
        with (
            LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            out = folder / f"workers{n}"
            segment_files(model, warm[:n], out / "warm", client, threads_per_worker=threads)
            start = time.perf_counter()
            done = segment_files(model, timed, out, client, threads_per_worker=threads)
            seconds = time.perf_counter() - start
            assert all(r.status == "done" for r in done), done
            peaks = client.run(_worker_peak_mib)
            result[f"workers_{n}"] = {
                "torch_threads_per_worker": threads,
                "seconds": seconds,
                "images_per_s": files / seconds,
                "files_per_worker": sorted(
                    sum(r.worker == w for r in done) for w in client.scheduler_info()["workers"]
                ),
                "peak_rss_per_worker_mib": sorted(peaks.values()),
            }
    return result


def make_zarr(path: Path, size: int, chunk: int) -> None:
    """A size² uint16 zarr of tiles of the nuclei scene, written one band of rows at a time."""
    import zarr

    tile = _scene(min(size, 2048), 0)
    out = zarr.open_array(
        str(path), mode="w", shape=(size, size), chunks=(chunk, chunk), dtype="uint16"
    )
    for top in range(0, size, chunk):
        rows = min(chunk, size - top)
        band = np.tile(tile, (chunk // tile.shape[0] + 2, size // tile.shape[1] + 1))
        offset = top % tile.shape[0]
        out[top : top + rows] = band[offset : offset + rows, :size]


def large_zarr_memory(
    model: Path, image: Path, output: Path, lazy_bytes: int | None
) -> dict[str, Any]:
    """Run in a fresh process: peak memory above the loaded, warmed-up model."""
    import torch
    import zarr

    from napari_unetseg.core import Segmenter
    from napari_unetseg.core import predict as predict_module

    from .memory import RssSampler, _reset_high_water_mark, _status_kib, resident_bytes

    if lazy_bytes is not None:
        predict_module.LAZY_PLANE_BYTES = lazy_bytes
    seg = Segmenter.load(model, device="cpu")
    source = zarr.open_array(str(image), mode="r")
    seg.segment(np.asarray(source[:256, :256]))  # one-off allocations go into the baseline
    out = zarr.open_array(
        str(output), mode="w", shape=source.shape, chunks=source.chunks, dtype="uint8"
    )
    baseline = resident_bytes()
    hwm_reset = _reset_high_water_mark()
    start = time.perf_counter()
    with RssSampler(0.02) as sampler:
        seg.segment(source, out=out)
    seconds = time.perf_counter() - start
    hwm_kib = _status_kib("VmHWM")
    peak_hwm = hwm_kib * 1024 if (hwm_kib is not None and hwm_reset) else None
    peak = max(sampler.peak, peak_hwm or 0)
    return {
        "size": source.shape[0],
        "dtype": str(source.dtype),
        "threads": torch.get_num_threads(),
        "baseline_mib": baseline / MIB,
        "image_on_disk": True,
        "output_on_disk": True,
        "peak_above_model_mib": (peak - baseline) / MIB,
        "sampled_peak_above_model_mib": (sampler.peak - baseline) / MIB,
        "hwm_reset": hwm_reset,
        "seconds": seconds,
        "mpix_per_s": source.shape[0] * source.shape[1] / 1e6 / seconds,
        "foreground_fraction_first_rows": float(np.mean(out[:512] > 0)),
    }


def large_zarr(folder: Path, size: int, quick: bool) -> dict[str, Any]:
    model = folder / "model.safetensors"
    if not model.exists():
        _model(folder)
    image = folder / "large.zarr"
    make_zarr(image, size, 1024 if size >= 4096 else 128)
    command = [
        sys.executable,
        "-m",
        "benchmarks.scale",
        "--measure-large",
        str(model),
        str(image),
        str(folder / "large_labels.zarr"),
    ]
    if quick:
        command += ["--lazy-bytes", "0"]  # tiny planes are read by tile rows all the same
    done = subprocess.run(
        command, cwd=HERE.parent, capture_output=True, text=True, check=False, env=os.environ
    )
    if done.returncode != 0:
        raise RuntimeError(f"the large-image run failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["under_1_gib"] = result["peak_above_model_mib"] <= 1024
    return result


def table(results: dict[str, Any]) -> str:
    batch = results["batch"]
    lines = [
        f"Batch: {batch['files']} files of {batch['size']}² uint16 on {batch['cores']} cores",
        "",
        "| run | images/s | torch threads per worker | peak RSS per worker (MiB) |",
        "|---|---:|---:|---|",
        f"| in this process | {batch['in_process']['images_per_s']:.3f} | | |",
    ]
    for key in sorted(k for k in batch if k.startswith("workers_")):
        row = batch[key]
        peaks = ", ".join(f"{p:.0f}" for p in row["peak_rss_per_worker_mib"])
        lines.append(
            f"| {key.split('_')[1]} worker(s) | {row['images_per_s']:.3f} | "
            f"{row['torch_threads_per_worker']} | {peaks} |"
        )
    large = results["large"]
    lines += [
        "",
        f"Large image: {large['size']}² {large['dtype']} zarr -> zarr labels, "
        f"{large['threads']} threads: peak {large['peak_above_model_mib']:.0f} MiB above the "
        f"model (≤ 1 GiB: {large['under_1_gib']}), {large['seconds']:.1f} s, "
        f"{large['mpix_per_s']:.2f} MPix/s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks it runs")
    parser.add_argument("--files", type=int, help="files in the timed batch (default 16; quick 4)")
    parser.add_argument("--file-size", type=int, help="side of each file (default 1024; quick 96)")
    parser.add_argument(
        "--zarr-size", type=int, help="side of the large zarr image (default 20000; quick 300)"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="where the images are written (default: a temporary folder)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON")
    parser.add_argument(
        "--measure-large", nargs=3, metavar=("MODEL", "IMAGE", "OUTPUT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--lazy-bytes", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_large:
        model, image, output = (Path(p) for p in args.measure_large)
        print(json.dumps(large_zarr_memory(model, image, output, args.lazy_bytes)))
        return 0
    files = args.files or (4 if args.quick else 16)
    file_size = args.file_size or (96 if args.quick else 1024)
    zarr_size = args.zarr_size or (300 if args.quick else 20000)
    with tempfile.TemporaryDirectory(dir=args.work_dir, prefix="unetseg-scale-") as work:
        folder = Path(work)
        results = {
            "quick": args.quick,
            "batch": batch_throughput(folder, files, file_size, [1, 2]),
            "large": large_zarr(folder, zarr_size, args.quick),
        }
    print(table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "scale-quick.json" if args.quick else "scale.json"
    (args.out / name).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
