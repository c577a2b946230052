"""Memory of a 3-D model segmenting a stack larger than memory: a 200x2048x2048 uint16 memmap.

``python -m benchmarks.stack_memory [--tiles 30] [--out DIR] [--quick]``

The stack and the labels are numpy memmaps on disk (1.6 GB and 0.8 GB). The default 3-D
model segments it with ``Segmenter.predict_iter(..., out_labels=memmap)``; after ``--tiles``
tiles (more than one row of tiles, so finished rows have been handed on) the run stops, and
the peak of the process's anonymous memory (``RssAnon``: what the process itself allocated,
not the memmap's file pages, which are page cache the system can drop) above the level
after the model was built is reported. Memory is bounded by the tile and one slab of tile
rows, so it does not grow with more tiles; the issue's bound is 1 GiB above the model.
``--quick`` runs the same steps on a 40x200x200 stack, to check that the script works.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHAPE = (200, 2048, 2048)
QUICK_SHAPE = (40, 200, 200)


def rss_anon_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakSampler:
    """Samples RssAnon every few milliseconds in a thread; ``peak`` is the highest seen."""

    def __init__(self) -> None:
        self.peak = rss_anon_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon_mib())
            time.sleep(0.005)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_mib())


def main(argv: list[str] | None = None) -> int:
    import torch

    from napari_unetseg.core import Segmenter

    parser = argparse.ArgumentParser(prog="python -m benchmarks.stack_memory", description=__doc__)
    parser.add_argument("--tiles", type=int, default=30, help="tiles to predict before stopping")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true", help="a 40x200x200 stack, for a check")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else SHAPE
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        image = np.memmap(Path(folder) / "stack.u16", np.uint16, "w+", shape=shape)
        rng = np.random.default_rng(0)
        for z in range(min(48, shape[0])):  # the planes the first slab of tiles reads
            image[z] = rng.integers(100, 4000, shape[1:], dtype=np.uint16)
        image.flush()
        image = np.memmap(Path(folder) / "stack.u16", np.uint16, "r", shape=shape)
        labels = np.memmap(Path(folder) / "labels.u8", np.uint8, "w+", shape=shape)
        segmenter = Segmenter.create(spatial_dims=3, voxel_size=(1.0, 0.5, 0.5), device="cpu")
        baseline = rss_anon_mib()
        started = time.perf_counter()
        tiles = 0
        with PeakSampler() as sampler:
            events = segmenter.predict_iter(image, probabilities=False, out_labels=labels)
            for progress in events:
                tiles = progress.tiles_done
                if tiles >= args.tiles:
                    break
            events.close()
        seconds = time.perf_counter() - started
        config = segmenter._predict_config(None, {})
        tile = config.volume_tile_size
        result = {
            "stack": list(shape),
            "dtype": "uint16",
            "tile": list(tile),
            "tiles_predicted": tiles,
            "tiles_total": progress.tiles_total,
            "rss_anon_after_model_mib": round(baseline),
            "peak_rss_anon_above_model_mib": round(sampler.peak - baseline),
            "bound_mib": 1024,
            "within_bound": bool(sampler.peak - baseline <= 1024),
            "voxels_per_second": round(tiles * int(np.prod(tile)) / seconds),
            "note": "1 torch thread; docs/benchmarks.md says how busy the machine was",
        }
    print(json.dumps(result, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "stack-memory-quick" if args.quick else "stack-memory"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
