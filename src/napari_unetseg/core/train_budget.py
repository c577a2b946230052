"""A training run's budget: how far along it is, its learning rate, and how long its end takes.

A run ends at its time budget or its epoch cap, whichever comes first. The time budget keeps
room for the work after the last step (the last validation, the class shares and their
check), estimated from the measured cost of a forward pass per pixel.
"""

from __future__ import annotations

import math
import time
from typing import Literal

from .config import TrainConfig

#: The search for the brightness step (:mod:`.borders`) per class-share pixel: 0.47 s for a
#: million pixels measured on a 2-core CPU, doubled. It runs on the CPU whatever the device.
BORDER_SECONDS_PER_PIXEL = 1e-6


def learning_rate_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to 5 % of the base rate."""
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 0.05)
    span = max(1e-9, 1 - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / span)))


class FinishEstimate:
    """How long the end of a run takes (the last validation, the class shares, the border
    step and their check), from the measured cost of a forward pass per pixel, so the run
    fits its budget."""

    def __init__(self, region_pixels: int, share_pixels: int, step_pixels: int) -> None:
        self.region_pixels = region_pixels
        self.share_pixels = share_pixels
        self.step_pixels = step_pixels  # a step is about three forward passes of the batch
        self.validation_seconds = 0.0
        self.seconds_per_pixel: float | None = None
        self._from_validation = False

    def paint_changed(self, region_pixels: int, share_pixels: int) -> None:
        """New paint: new amounts to score; the measured cost per pixel still holds."""
        self.region_pixels, self.share_pixels = region_pixels, share_pixels

    def validated(self, seconds: float) -> None:
        self.validation_seconds += seconds
        if self.region_pixels:
            rate = seconds / self.region_pixels
            old = self.seconds_per_pixel if self._from_validation else None
            self.seconds_per_pixel = rate if old is None else 0.5 * old + 0.5 * rate
            self._from_validation = True

    def stepped(self, seconds: float) -> None:
        if not self._from_validation:
            rate = seconds / self.step_pixels
            old = self.seconds_per_pixel
            self.seconds_per_pixel = rate if old is None else 0.8 * old + 0.2 * rate

    def seconds(self) -> float:
        if self.seconds_per_pixel is None:
            return 0.0
        checks = 2 if self.share_pixels and self.region_pixels else 1
        pixels = self.share_pixels + checks * self.region_pixels
        return self.seconds_per_pixel * pixels + BORDER_SECONDS_PER_PIXEL * self.share_pixels


class TrainingClock:
    """Elapsed time, progress through the budget, and the learning rate that follows from it.

    The clock starts when it is made. ``until_stopped``: no budget, so no progress; the rate
    warms up over the first epoch and then stays at its full value.
    """

    def __init__(self, config: TrainConfig, finish: FinishEstimate, until_stopped: bool) -> None:
        self.config = config
        self.finish = finish
        self.until_stopped = until_stopped
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def training_seconds(self) -> float | None:
        """The time budget less what scoring and the class shares will take at the end."""
        max_seconds = self.config.max_seconds
        if max_seconds is None:
            return None
        return max(0.5 * max_seconds, max_seconds - self.finish.seconds())

    def progress(self, steps: int) -> float:
        if self.until_stopped:
            return 0.0  # no budget: no epoch but the last competes for "best"
        done = []
        budget = self.training_seconds()
        if budget is not None:
            done.append(self.elapsed() / budget)
        if self.config.max_epochs is not None:
            done.append(steps / (self.config.max_epochs * self.config.steps_per_epoch))
        return min(1.0, max(done))

    def remaining(self, steps: int) -> float | None:
        if self.until_stopped:
            return None
        fraction = self.progress(steps)
        if fraction <= 0:
            return self.config.max_seconds
        return max(0.0, self.elapsed() * (1 - fraction) / fraction)

    def rate_factor(self, steps: int) -> float:
        if self.until_stopped:  # warm up over the first epoch, then the full rate
            return min(1.0, max(0.05, steps / self.config.steps_per_epoch))
        return learning_rate_factor(self.progress(steps), self.config.warmup_fraction)

    def spent(self, epochs: int) -> Literal["time", "epochs"] | None:
        """Why the budget is spent ("time" or "epochs"), or None while it lasts."""
        if self.until_stopped:
            return None
        seconds = self.training_seconds()
        if seconds is not None and self.elapsed() >= seconds:
            return "time"
        if self.config.max_epochs is not None and epochs >= self.config.max_epochs:
            return "epochs"
        return None
