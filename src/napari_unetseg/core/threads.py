"""Torch's CPU thread count for a training loop, chosen from measured step times.

When another process keeps a core busy (napari drawing, a browser, a second job), torch's
OpenMP threads wait for each other at every operation and a step can take 3-20 times
longer; with one thread fewer the loop runs at the speed of the cores it really has. The
tuner times a few steps at each candidate count now and then, and keeps the fastest.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

#: Steps timed per candidate when exploring (after one warm-up step).
WINDOW = 4
#: Seconds between explorations once a count is chosen; contention comes and goes. Each
#: exploration that keeps the count doubles the wait, up to LONGEST_PERIOD.
PERIOD = 15.0
LONGEST_PERIOD = 60.0
#: No exploration before this many seconds: short runs keep the count they started with.
FIRST_EXPLORATION = 2.0


def candidate_counts(threads: int) -> list[int]:
    """The current count first, then one fewer, then half."""
    return sorted({threads, max(1, threads - 1), max(1, threads // 2)}, reverse=True)


class ThreadTuner:
    """Call :meth:`before_step` and :meth:`after_step` around each step; :meth:`restore` at the end."""

    def __init__(
        self,
        threads: int | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        set_threads: Callable[[int], None] = torch.set_num_threads,
        window: int = WINDOW,
        first_exploration: float = FIRST_EXPLORATION,
    ) -> None:
        """``window`` steps are timed per candidate; the first exploration waits
        ``first_exploration`` seconds (prediction, whose batches are few and long, looks at once)."""
        self.window = window
        self.first_exploration = first_exploration
        self.original = torch.get_num_threads()
        self.candidates = candidate_counts(threads or self.original)
        self.clock = clock
        self.set_threads = set_threads
        self.current = self.candidates[0]
        self.started = clock()
        self.last_exploration = self.started
        self.recent: list[float] = []  # step times at the current count
        self.queue: list[int] = []  # candidates still to time in this exploration
        self.timings: dict[int, list[float]] = {}
        self.switches = 0
        self.period = PERIOD / 2  # doubled to PERIOD by the first exploration that keeps the count
        self._active = self.original
        if len(self.candidates) > 1 or self.current != self.original:
            self.set_threads(self.current)
            self._active = self.current

    def before_step(self) -> None:
        if len(self.candidates) == 1:
            return
        now = self.clock()
        if (
            not self.queue
            and now - self.started >= self.first_exploration
            and now - self.last_exploration
            >= (self.period if self.timings else self.first_exploration)
            and len(self.recent) >= self.window
        ):
            self.timings = {self.current: sorted(self.recent[-self.window :])}
            self.queue = [c for c in self.candidates if c != self.current]
        wanted = self.queue[0] if self.queue else self.current
        if wanted != self._active:
            self.set_threads(wanted)
            self._active = wanted

    def after_step(self, seconds: float) -> None:
        if len(self.candidates) == 1:
            return
        if not self.queue:
            self.recent = [*self.recent[-(self.window - 1) :], seconds]
            return
        trying = self.queue[0]
        measured = self.timings.setdefault(trying, [])
        measured.append(seconds)
        if len(measured) < self.window + 1:
            return
        self.timings[trying] = sorted(measured[1:])  # the first step warms the new pool up
        self.queue.pop(0)
        if not self.queue:
            best = min(self.timings, key=lambda c: self.timings[c][len(self.timings[c]) // 2])
            if best != self.current:
                self.switches += 1
                self.current = best
                self.period = PERIOD
            else:
                self.period = min(LONGEST_PERIOD, 2 * self.period)
            self.recent = []
            self.last_exploration = self.clock()

    def restore(self) -> None:
        if self._active != self.original:
            self.set_threads(self.original)
            self._active = self.original
