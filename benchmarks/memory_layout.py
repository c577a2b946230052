"""One training step of the default 2-D and 3-D U-Nets, weights and batches laid out plainly
against channels-last (:func:`napari_unetseg.core.devices.channels_last_format`).

Training keeps the plain layout: channels-last steps were faster, but 3-D models trained
that way scored lower on the real stacks (docs/benchmarks.md, fourteenth session). This
script keeps the speed side of that measurement repeatable.

``python -m benchmarks.memory_layout [--threads 2] [--steps 8] [--quick] [--out DIR]``

Each step is forward, masked loss, backward and an AdamW step on a batch of the default
training size (8 patches of 128 x 128 in 2-D, 2 of 16 x 64 x 64 in 3-D). The median of
``--steps`` steps (after one warm-up) is reported for each layout, in the same process one
after the other, so the ratio holds on a noisy machine better than either time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def step_seconds(spatial_dims: int, channels_last: bool, steps: int, quick: bool) -> float:
    import torch

    from napari_unetseg.core import Segmenter, TrainConfig
    from napari_unetseg.core.devices import channels_last_format
    from napari_unetseg.core.losses import masked_loss

    size = {"base_width": 4, "depth": 2} if quick else {}
    seg = Segmenter.create(spatial_dims=spatial_dims, start="random", device="cpu", **size)
    config = TrainConfig()
    if spatial_dims == 3:
        shape = (config.volume_batch_size, 1, *config.volume_patch_size)
    else:
        shape = (config.batch_size, 1, config.patch_size, config.patch_size)
    if quick:
        shape = (*shape[:2], *(min(s, 16) for s in shape[2:]))
    layout = (
        channels_last_format(torch.device("cpu"), spatial_dims)
        if channels_last
        else torch.contiguous_format
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).contiguous(memory_format=layout)
    target = (torch.rand((shape[0], *shape[2:]), generator=generator) > 0.5).long()
    mask = torch.ones(target.shape)
    model = seg.model.train().to(memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for _ in range(steps + 1):
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = masked_loss("auto", model(x).float(), target, mask)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    from .suite import machine_info, torch_threads

    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_layout", description=__doc__)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per layout")
    parser.add_argument("--quick", action="store_true", help="a tiny model: checks the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"machine": machine_info(), "threads": args.threads}
    with torch_threads(args.threads):
        times = {
            dims: (
                step_seconds(dims, False, args.steps, args.quick),
                step_seconds(dims, True, args.steps, args.quick),
            )
            for dims in (2, 3)
        }
    for dims, (plain, last) in times.items():
        result[f"{dims}-D"] = {
            "plain_step_seconds": round(plain, 4),
            "channels_last_step_seconds": round(last, 4),
            "speed-up": round(plain / last, 2),
        }
        print(
            f"{dims}-D step: plain {plain:.3f} s, channels-last {last:.3f} s, {plain / last:.2f}x"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    name = "memory-layout-quick.json" if args.quick else f"memory-layout-{args.threads}t.json"
    (args.out / name).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
