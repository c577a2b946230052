"""What the benchmarks record: the machine's load average, and their results files. Nothing
here imports torch (the docking benchmark times the first import)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages; None where the system has none (Windows)."""
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return None


def write_results(folder: Path, name: str, quick: bool, result: Any) -> Path:
    """``result`` as ``folder/<name>.json`` (``<name>-quick.json`` for a quick run), written
    whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-quick.json" if quick else folder / f"{name}.json"
    temporary = path.with_suffix(f".json.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path
