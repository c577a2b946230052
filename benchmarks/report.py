"""The printed table, the JSON file and the throughput plot."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .suite import Results

ORDER = (
    "ours default",
    "ours float32",
    "ours bfloat16",
    "MONAI float32",
    "MONAI bfloat16",
    "floor float32",
    "floor bfloat16",
    "floor fused float32",
    "floor fused bfloat16",
)


def _fmt(value: Any, digits: int = 2, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if percent:
        return f"{100 * value:.2f} %"
    return f"{value:.{digits}f}"


def table(r: Results) -> str:
    """A Markdown table of the results, the same text the docs page shows."""
    sizes = sorted(int(k) for k in r.speed)
    names = [n for n in ORDER if any(n in r.speed[str(s)] for s in sizes)]
    lines = ["| MPix/s | " + " | ".join(f"{s}²" for s in sizes) + " |"]
    lines.append("|---|" + "---:|" * len(sizes))
    for name in names:
        cells = [_fmt(r.speed[str(s)].get(name)) for s in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| measure | value |")
    lines.append("|---|---:|")
    for key, value in r.ratios.items():
        per_round = r.round_ratios.get(key)
        spread = f" (rounds {min(per_round):.2f}–{max(per_round):.2f})" if per_round else ""
        lines.append(f"| {key.replace('_', ' ')} | {_fmt(value)}×{spread} |")
    for key, value in r.agreement.items():
        lines.append(f"| agreement {key.replace('_', ' ')} | {_fmt(value, percent=True)} |")
    if r.scaling:
        s = r.scaling
        lines.append(
            f"| time {s['sizes'][1]}² / time {s['sizes'][0]}² | {_fmt(s['ratio'])} (ideal {s['ideal']:.1f}) |"
        )
    m = r.memory
    if "peak_above_baseline_mib" in m:
        lines.append(
            f"| peak RSS above model + image, segment {m['size']}² | {m['peak_above_baseline_mib']:.0f} MiB |"
        )
    elif m:
        lines.append(f"| memory | {m.get('error', 'n/a')} |")
    t = r.training
    if t:
        lines.append(
            f"| training steps/s (batch {t['batch_size']} x {t['patch_size']}²) | {_fmt(t['steps_per_second'])} |"
        )
        lines.append(
            f"| training time to validation Dice 0.9 | {_fmt(t['seconds_to_dice_0.9'], 1)} s |"
        )
        lines.append(f"| best validation Dice | {_fmt(t['best_validation_dice'], 3)} |")
        p = t["profile"]
        lines.append(
            f"| training step parts (ms): sample / augment / forward+backward+step | "
            f"{1e3 * p['sample']:.1f} / {1e3 * p['augment']:.1f} / {1e3 * p['forward_backward_step']:.1f} |"
        )
        lines.append(
            f"| share of a step spent on data | {_fmt(p['data_fraction'], percent=True)} |"
        )
    c = r.contention
    if c:
        lines.append(
            f"| training steps/s: ours / bare loop (same model, batch, precision, optimiser) | "
            f"{_fmt(c['ours_quiet']['steps_per_second'])} / {_fmt(c['bare_loop_steps_per_second'])} "
            f"= {_fmt(c['ours_vs_bare_loop'])}x |"
        )
        lines.append(
            f"| one core busy: ours steps/s, busy / quiet (threads chosen) | "
            f"{_fmt(c['ours_busy_core']['steps_per_second'])} / {_fmt(c['ours_quiet']['steps_per_second'])} "
            f"= {_fmt(c['ours_busy_vs_quiet'])}x ({c['ours_busy_core']['threads_chosen']}) |"
        )
        lines.append(
            f"| one core busy: bare loop at torch's thread count, busy / quiet | "
            f"{_fmt(c['bare_loop_busy_vs_quiet'])}x |"
        )
        lines.append(
            f"| one core busy: prediction {c['prediction_side']}², quiet / busy seconds | "
            f"{_fmt(c['prediction_seconds_quiet'])} / {_fmt(c['prediction_seconds_busy_core'])} "
            f"= {_fmt(c['prediction_busy_vs_quiet'])}x |"
        )
    lines.append("")
    lines.append("| target | met |")
    lines.append("|---|:---:|")
    for key, value in r.targets.items():
        lines.append(f"| {key.replace('_', ' ')} | {_fmt(value)} |")
    return "\n".join(lines)


def write_json(r: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(r), indent=2, default=str) + "\n")


def plot(r: Results, path: Path) -> Path | None:
    """Throughput against image size, one line per contender; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sizes = sorted(int(k) for k in r.speed)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for name in ORDER:
        xs = [s for s in sizes if name in r.speed[str(s)]]
        if not xs:
            continue
        ys = [r.speed[str(s)][name] for s in xs]
        style = "-o" if name.startswith("ours") else ("s" if name.startswith("MONAI") else "--.")
        ax.plot(
            [s * s / 1e6 for s in xs], ys, style, label=name, markersize=7 if "MONAI" in name else 5
        )
    ax.set_xscale("log")
    ax.set_xlabel("image size (megapixels)")
    ax.set_ylabel("throughput (MPix/s)")
    ax.set_xticks([s * s / 1e6 for s in sizes], [f"{s}²" for s in sizes])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(
        f"U-Net prediction, {r.machine.get('cpu', 'CPU')}, {r.machine.get('torch_threads')} threads",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
