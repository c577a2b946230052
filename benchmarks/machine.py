"""What every benchmark records about the machine it ran on, without importing torch (the
docking benchmark times the first import)."""

from __future__ import annotations

import os


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages; None where the system has none (Windows)."""
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return None
