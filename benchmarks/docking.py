"""How long docking the widget and starting training hold napari's event loop.

    python -m benchmarks.docking [--out benchmarks/results/docking.json]

Run in a fresh interpreter (the first docking of a process is the one users feel). A QTimer
ticking every 5 ms records the longest gap between two ticks ("stall") while:

- ``dock``: ``add_plugin_dock_widget`` runs (its wall time, and the CPU time of the main thread,
  which the machine's load hardly changes), then the next 3 s while the widget warms up (torch
  imported in a background thread);
- ``first step``: from Start training until the first training step has been plotted, on
  the bundled sample with the default model, live preview on.

Stalls are only as good as the machine: report them with its load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from .records import load_average

HERE = Path(__file__).resolve().parent


class StallMeter:
    """A 5 ms QTimer; the longest gap between two of its ticks, in seconds."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.longest = 0.0
        self._last = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self._last)
        self._last = now

    def start(self) -> None:
        self.longest = 0.0
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        self._tick()  # a stall still going on counts too
        return self.longest


def spin(seconds: float, until: object = None) -> None:
    """Run the event loop for ``seconds`` (or until ``until()`` is true)."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end and not (until is not None and until()):  # type: ignore[operator]
        QApplication.processEvents()
        time.sleep(0.001)


def measure(warm_seconds: float = 3.0) -> dict[str, float]:
    import napari

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-unetseg", "nuclei")
    spin(1.0)
    meter = StallMeter()
    meter.start()
    started, cpu_started = time.perf_counter(), time.thread_time()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unetseg", "U-Net Segmentation")
    dock_call = time.perf_counter() - started
    dock_call_cpu = time.thread_time() - cpu_started  # the main thread's own work
    spin(warm_seconds)
    dock_stall = meter.stop()
    spin(60.0, until=lambda: widget.warm_up is None)

    train = widget.train_section
    train.budget.setValue(5)
    train.live_preview.setChecked(True)
    viewer.layers.selection.active = viewer.layers["nuclei strokes"]
    meter.start()
    started = time.perf_counter()
    train.start_button.click()
    spin(120.0, until=lambda: len(train.plot.step_x) > 0)
    first_step = time.perf_counter() - started
    first_step_stall = meter.stop()
    spin(120.0, until=lambda: not widget.session.busy)
    viewer.close()
    load = load_average()
    return {
        "dock_call_ms": round(1000 * dock_call),
        "dock_call_cpu_ms": round(1000 * dock_call_cpu),
        "dock_stall_ms": round(1000 * dock_stall),
        "first_step_s": round(first_step, 2),
        "first_step_stall_ms": round(1000 * first_step_stall),
        "load_average_1min": None if load is None else round(load[0], 2),
        "cpu_count": os.cpu_count() or 0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.docking", description=__doc__)
    parser.add_argument("--out", type=Path, help="append the result to this JSON file")
    parser.add_argument("--label", default="", help="a name for this run in the JSON file")
    args = parser.parse_args(argv)
    result = {"label": args.label, **measure()}
    print(json.dumps(result))
    if args.out is not None:
        runs = json.loads(args.out.read_text()) if args.out.exists() else []
        args.out.write_text(json.dumps([*runs, result], indent=1) + "\n")


if __name__ == "__main__":
    main()
