"""Peak resident memory of one ``Segmenter.segment`` call, run in a fresh process.

``python -m benchmarks.memory WEIGHTS SIZE`` loads the model and a SIZE x SIZE image, takes
that as the baseline, then segments and prints one JSON line: the peak above the baseline.
The peak is the kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs where
allowed), cross-checked by sampling the resident size every few milliseconds.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

MIB = 1024**2


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _reset_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def resident_bytes() -> int:
    """This process's resident set size, from psutil or /proc (0 where neither is available)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Samples this process's resident size in a thread; ``peak`` is the largest seen (bytes)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


def measure(weights: str, size: int, seed: int = 0) -> dict[str, float | int | bool | None]:
    import torch

    from napari_unetseg.core import Segmenter

    from .suite import scene_image

    seg = Segmenter.load(weights, device="cpu")
    image = scene_image(size, seed)
    # Warm up on a small crop so one-off allocations (thread pools, oneDNN kernels) are in the baseline.
    seg.segment(image[: min(size, 256), : min(size, 256)])
    baseline = resident_bytes()
    hwm_reset = _reset_high_water_mark()
    start = time.perf_counter()
    with RssSampler() as sampler:
        labels = seg.segment(image)
    seconds = time.perf_counter() - start
    hwm_kib = _status_kib("VmHWM")
    peak_hwm = hwm_kib * 1024 if (hwm_kib is not None and hwm_reset) else None
    peak = max(sampler.peak, peak_hwm or 0)
    return {
        "size": size,
        "threads": torch.get_num_threads(),
        "baseline_mib": baseline / MIB,
        "image_mib": image.nbytes / MIB,
        "labels_mib": labels.nbytes / MIB,
        "peak_above_baseline_mib": (peak - baseline) / MIB,
        "sampled_peak_above_baseline_mib": (sampler.peak - baseline) / MIB,
        "hwm_peak_above_baseline_mib": None if peak_hwm is None else (peak_hwm - baseline) / MIB,
        "hwm_reset": hwm_reset,
        "seconds": seconds,
        "foreground_fraction": float(np.mean(labels > 0)),
    }


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(measure(args[0], int(args[1]))))


if __name__ == "__main__":
    main()
