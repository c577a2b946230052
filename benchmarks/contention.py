"""Training throughput against a bare loop, and training and prediction with one core busy.

Steps per minute are accuracy per minute: our loop (patch sampling, augmentation,
validation, the thread tuner) should run at least 0.8x a bare loop of the same model,
batch, precision and optimiser, and keep at least 0.45x its quiet speed while another
process keeps a core busy. Each ratio is taken within one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from napari_unetseg.core import Segmenter, TrainConfig
from napari_unetseg.core.devices import cpu_has_native_bfloat16
from napari_unetseg.core.losses import masked_loss

from .real import one_core_busy


def bare_loop(seg: Segmenter, batch_size: int, patch_size: int, seconds: float, seed: int) -> float:
    """Steps per second of forward, loss, backward and AdamW on one fixed batch, nothing else."""
    model = seg.model.train()
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, 1, patch_size, patch_size, generator=generator)
    y = torch.randint(0, 2, (batch_size, patch_size, patch_size), generator=generator)
    m = (torch.rand(batch_size, patch_size, patch_size, generator=generator) < 0.05).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    use_bf16 = cpu_has_native_bfloat16()
    steps = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)
        loss = masked_loss("bce+dice", logits.float(), y, m)
        loss.backward()
        optimizer.step()
        steps += 1
    model.eval()
    return steps / (time.perf_counter() - started)


def our_loop(image: Any, painted: Any, config: TrainConfig, seed: int) -> dict[str, Any]:
    seg = Segmenter.create(device="cpu", seed=seed)
    history = seg.train(image, painted, config, progress=False)
    return {
        "steps": history.steps,
        "seconds": history.elapsed,
        "steps_per_second": history.steps / history.elapsed,
        "threads_chosen": history.threads,
    }


def contention_benchmark(
    scene: Any,
    predict_image: Any,
    seconds: float,
    batch_size: int,
    patch_size: int,
    seed: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    config = TrainConfig(
        max_seconds=seconds, seed=seed, batch_size=batch_size, patch_size=patch_size
    )
    log(f"training throughput: ours and a bare loop, {seconds:.0f} s each, quiet ...")
    quiet = our_loop(scene.image, scene.painted, config, seed)
    bare = bare_loop(
        Segmenter.create(device="cpu", seed=seed), batch_size, patch_size, seconds, seed
    )
    log("the same with one core kept busy by another process ...")
    with one_core_busy(True):
        busy = our_loop(scene.image, scene.painted, config, seed)
        bare_busy = bare_loop(
            Segmenter.create(device="cpu", seed=seed), batch_size, patch_size, seconds, seed
        )
    seg = Segmenter.create(device="cpu", seed=seed)
    seg.predict_proba(predict_image)  # warm-up
    log("prediction, quiet and with one core busy ...")
    predict_quiet = _best_of(lambda: seg.predict_proba(predict_image), 3)
    with one_core_busy(True):
        predict_busy = _best_of(lambda: seg.predict_proba(predict_image), 3)
    return {
        "seconds": seconds,
        "ours_quiet": quiet,
        "ours_busy_core": busy,
        "bare_loop_steps_per_second": bare,
        "bare_loop_busy_core_steps_per_second": bare_busy,
        "ours_vs_bare_loop": quiet["steps_per_second"] / bare,
        "ours_busy_vs_quiet": _ratio(busy["steps_per_second"], quiet["steps_per_second"]),
        "bare_loop_busy_vs_quiet": bare_busy / bare,
        "prediction_side": int(predict_image.shape[-1]),
        "prediction_seconds_quiet": predict_quiet,
        "prediction_seconds_busy_core": predict_busy,
        "prediction_busy_vs_quiet": predict_quiet / predict_busy,
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _best_of(function: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.contention [--seconds 60] [--predict-size 4096]``: this part alone."""
    import argparse
    import json
    import sys
    from pathlib import Path

    from .suite import Settings, _scene, scene_image

    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contention", description=__doc__)
    parser.add_argument("--seconds", type=float, default=defaults.contention_seconds)
    parser.add_argument("--predict-size", type=int, default=defaults.contention_predict_size)
    parser.add_argument(
        "--scene", type=int, default=defaults.train_scene, help="training scene side"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "contention.json",
        help="the JSON file to write, or a folder to write contention.json in",
    )
    args = parser.parse_args(argv)
    if args.out.is_dir():  # known before minutes of timing, not after
        args.out = args.out / "contention.json"
    result = contention_benchmark(
        _scene(args.scene, defaults.seed),
        scene_image(args.predict_size, defaults.seed),
        args.seconds,
        defaults.train_batch_size,
        defaults.train_patch_size,
        defaults.seed,
        log=lambda text: print(text, file=sys.stderr, flush=True),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for key, value in result.items():
        if not isinstance(value, dict):
            print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
